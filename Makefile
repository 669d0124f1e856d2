# mmloss_ext: install, test, demo.
#
#   make install   create .venv/ and install the stack (idempotent: each step is skipped when its
#                  check passes; the first run builds mmcv's ops from source, ~15 min on 2 cores)
#   make test      install if needed, then pytest over tests/ and the doctests of mmloss_ext/
#   make demo      install if needed, then a usage example and the training demo (shapes RetinaNet)
#   make demo-seg  install if needed, then the instance-segmentation demo (shapes SOLOv2, Dice masks)
#
# The other ends of the compatibility table (CI runs both after `make test`):
#   make test-compat      the common mmdet 3.3 stack in .venv-compat/: torch 2.1.2, numpy<2, mmengine
#                         0.10.7, mmcv-lite 2.1.0, mmdet 3.3.0; the package installed by a plain
#                         `pip install .`; the loss tests that need no mmcv compiled ops
#   make test-torch-only  torch alone in .venv-torch/: the wheel `python -m build` makes, installed;
#                         plain-PyTorch use, with the fused CPU kernels compiled on first use
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
MMCV_VERSION := 2.1.0
PYTEST_ARGS ?=

.PHONY: install test demo demo-seg gpu-check clean-venv compat-install test-compat torch-only-install test-torch-only

install:
	@test -x $(PY) || { echo "[install] creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@$(PY) -c "import sys; assert sys.version_info[:2] == (3, 11), sys.version" \
	  || { echo "[install] $(VENV) is not Python 3.11; remove it and run make install again"; exit 1; }
	@$(PY) -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
	  || { echo "[install] torch==2.13.0 (CPU)"; $(PIP) install -q torch==2.13.0; }
	@$(PY) -c "import mmengine, sys; sys.exit(mmengine.__version__ != '0.10.7')" 2>/dev/null \
	  || { echo "[install] mmengine 0.10.7"; $(PIP) install -q mmengine==0.10.7; }
	@$(PY) -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$(MMCV_VERSION)')" 2>/dev/null \
	  || { echo "[install] mmcv $(MMCV_VERSION) with compiled ops, built from source (~15 min the first time on 2 cores; pip caches the wheel)"; \
	       $(PIP) install -q "setuptools<70" wheel ninja; \
	       MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=$$(nproc) $(PIP) install --no-build-isolation mmcv==$(MMCV_VERSION); \
	       $(PY) -c "import mmcv.ops" || { echo "[install] mmcv.ops does not import"; exit 1; }; }
	@$(PY) -c "import pkg_resources, mmdet, mmdet.models, mmdet.datasets, mmdet.evaluation, sys; sys.exit(mmdet.__version__ != '3.3.0')" 2>/dev/null \
	  || { echo "[install] mmdet 3.3.0 (and a setuptools that still ships pkg_resources)"; $(PIP) install -q -r requirements/runtime.txt; }
	@$(PY) -c "import kornia, monai, pytest, hypothesis, triton, vermin" 2>/dev/null \
	  || { echo "[install] test references and runner"; $(PIP) install -q -r requirements/tests.txt; }
	@$(PY) -I -c "import importlib.util as u, os, sys; s = u.find_spec('mmloss_ext'); sys.exit(s is None or os.path.dirname(s.origin) != '$(CURDIR)/mmloss_ext')" 2>/dev/null \
	  || { echo "[install] mmloss_ext (editable)"; $(PIP) install -q --no-build-isolation --no-deps -e .; }
	@MMLOSS_EXT_JIT=0 $(PY) -c "import sys; from mmloss_ext.kernels.backends import cpu_kernels_origin as o; sys.exit(o()[0] != 'built')" 2>/dev/null \
	  || { echo "[install] fused C++ kernels mmloss_ext._fused (~1 min)"; \
	       $(PY) setup.py -q build_ext --inplace || echo "[install] fused kernels not built: the losses run eagerly"; }
	@echo "[install] ok: $(VENV) is ready"

test: install
	$(PY) -m pytest tests mmloss_ext --doctest-modules $(PYTEST_ARGS)

demo: install
	$(PY) tools/demo.py
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) tools/train_demo.py

demo-seg: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) tools/train.py configs/shapes/solov2_r18s_fpn_shapes_dice.py \
	  --work-dir work_dirs/shapes_demo_seg

# On a machine with a CUDA GPU, torch and triton (no .venv, nothing of OpenMMLab needed): fused-vs-eager
# parity, Triton's compile times and the CUDA benchmark, written to gpu_check.md and gpu_check.json.
GPU_PY ?= python3
gpu-check:
	$(GPU_PY) tools/gpu_check.py --out gpu_check

COMPAT_VENV := .venv-compat
COMPAT_PY := $(COMPAT_VENV)/bin/python
COMPAT_PIP := $(COMPAT_PY) -m pip --disable-pip-version-check

compat-install:
	@test -x $(COMPAT_PY) || { echo "[compat] creating $(COMPAT_VENV) with $(PYTHON)"; $(PYTHON) -m venv $(COMPAT_VENV); }
	@$(COMPAT_PY) -c "import torch, numpy, mmengine, mmcv, mmdet, kornia, monai, pytest, hypothesis, vermin, sys; sys.exit(torch.__version__.split('+')[0] != '2.1.2' or numpy.__version__ >= '2')" 2>/dev/null \
	  || { echo "[compat] torch 2.1.2 (a CUDA build, ~2.5 GB), numpy<2, mmengine, mmcv-lite, mmdet, the test references"; \
	       $(COMPAT_PIP) install -q -r requirements/compat.txt; }
	@rm -rf build/lib build/bdist.*  # setuptools' staging of an earlier build would go into the wheel as well
	@echo "[compat] mmloss_ext: a plain \`pip install .\`"; $(COMPAT_PIP) install -q .
	@$(COMPAT_PY) -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.1.2')" \
	  || { echo "[compat] \`pip install .\` replaced torch 2.1.2"; exit 1; }

# pytest's console script (not `python -m pytest`, which would import the source tree): the
# installed package is tested; the C++ kernels are compiled on first use against torch 2.1's headers
test-compat: compat-install
	$(COMPAT_VENV)/bin/pytest tests -p no:cacheprovider $(PYTEST_ARGS)

TORCH_VENV := .venv-torch
TORCH_PY := $(TORCH_VENV)/bin/python
TORCH_PIP := $(TORCH_PY) -m pip --disable-pip-version-check
DIST := dist

torch-only-install:
	@test -x $(TORCH_PY) || { echo "[torch-only] creating $(TORCH_VENV) with $(PYTHON)"; $(PYTHON) -m venv $(TORCH_VENV); }
	@$(TORCH_PY) -c "import torch, pytest, build, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
	  || { echo "[torch-only] torch==2.13.0 (CPU), pytest, build"; $(TORCH_PIP) install -q torch==2.13.0 pytest==8.4.2 build; }
	@echo "[torch-only] python -m build: an sdist, and a wheel built from it"; rm -rf $(DIST); $(TORCH_PY) -m build -q --outdir $(DIST) . >/dev/null
	@$(TORCH_PIP) install -q --force-reinstall --no-deps $(DIST)/*.whl && $(TORCH_PIP) install -q $(DIST)/*.whl
	@$(TORCH_PY) -c "import importlib.util as u, sys; found = [m for m in ('mmdet', 'mmcv', 'mmengine') if u.find_spec(m)]; sys.exit(f'[torch-only] installed: {found}' if found else 0)"

test-torch-only: torch-only-install
	$(TORCH_VENV)/bin/pytest tests/test_plain_torch.py -p no:cacheprovider $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV) $(COMPAT_VENV) $(TORCH_VENV)
