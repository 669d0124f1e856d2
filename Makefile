# mmloss_ext: install, test, demo.
#
#   make install   create .venv/ and install the stack (idempotent: each step is skipped when its
#                  check passes; the first run builds mmcv's ops from source, ~15 min on 2 cores)
#   make test      install if needed, then pytest over tests/ and the doctests of mmloss_ext/
#   make demo      install if needed, then a usage example and the training demo (shapes RetinaNet)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
MMCV_VERSION := 2.1.0
PYTEST_ARGS ?=

.PHONY: install test demo gpu-check clean-venv

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
	@$(PY) -c "import kornia, monai, pytest, hypothesis, triton" 2>/dev/null \
	  || { echo "[install] test references and runner"; $(PIP) install -q -r requirements/tests.txt; }
	@$(PY) -I -c "import importlib.util as u, os, sys; s = u.find_spec('mmloss_ext'); sys.exit(s is None or os.path.dirname(s.origin) != '$(CURDIR)/mmloss_ext')" 2>/dev/null \
	  || { echo "[install] mmloss_ext (editable)"; $(PIP) install -q --no-build-isolation --no-deps -e .; }
	@$(PY) -c "import sys; from mmloss_ext.kernels.dispatch import EXT; sys.exit(EXT is None)" 2>/dev/null \
	  || { echo "[install] fused C++ kernels mmloss_ext._fused (~1 min)"; \
	       $(PY) setup.py -q build_ext --inplace || echo "[install] fused kernels not built: the losses run eagerly"; }
	@echo "[install] ok: $(VENV) is ready"

test: install
	$(PY) -m pytest tests mmloss_ext --doctest-modules $(PYTEST_ARGS)

demo: install
	$(PY) tools/demo.py
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) tools/train_demo.py

# On a machine with a CUDA GPU, torch and triton (no .venv: see tools/gpu_check.py for the pure-Python
# packages `import mmloss_ext` needs there): fused-vs-eager parity, Triton's compile times and the
# CUDA benchmark, written to gpu_check.md and gpu_check.json.
GPU_PY ?= python3
gpu-check:
	$(GPU_PY) tools/gpu_check.py --out gpu_check

clean-venv:
	rm -rf $(VENV)
