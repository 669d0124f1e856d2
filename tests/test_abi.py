"""The kernels' ids and constants are written once, in mmloss_ext/core/abi.py: the C++ build, the
Triton kernels, the autograd Functions and the eager losses all agree with it, and a build made from
another version of it is refused (warned, the losses run eagerly)."""
import copy
import importlib
import inspect
import os
import re
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch

import mmloss_ext
from mmloss_ext.core import abi
from mmloss_ext.core.abi import BOX_HP, DICE_HP, ELEMENTWISE_HP, GAUSSIAN_FOCAL_HP, BoxKind, ElementwiseKind, OutMode
from mmloss_ext.kernels import backends, boxes, build, common, elementwise
from mmloss_ext.losses.regression import smooth_l1_loss

from environment import TRITON_INTERPRETER
from helpers import FUSED_TOL as TOL

ROOT = Path(__file__).resolve().parents[1]
ABI_PY = ROOT / 'mmloss_ext' / 'core' / 'abi.py'
ABI_H = ROOT / 'mmloss_ext' / 'kernels' / 'cpp' / 'abi.h'


# --- core/abi.py itself ---------------------------------------------------------------------------

def test_abi_module_loads_by_path_without_torch_or_the_package():
    # setup.py reads it before torch or mmloss_ext can be imported
    code = ('import runpy, sys; g = runpy.run_path(sys.argv[1]); '
            'assert not {"torch", "mmloss_ext"} & set(sys.modules), sorted(sys.modules); '
            'print(dict(g["cpp_macros"]())["MMLOSS_ABI"])')
    res = subprocess.run([sys.executable, '-c', code, str(ABI_PY)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(abi.ABI)


def test_ids_are_dense_and_every_kind_has_its_hyper_parameters():
    for enum_cls in (ElementwiseKind, BoxKind, OutMode):
        assert sorted(int(k) for k in enum_cls) == list(range(len(enum_cls)))
    assert set(ELEMENTWISE_HP) == set(ElementwiseKind) and set(BOX_HP) == set(BoxKind)


def test_fixed_layouts_and_pack():
    assert DICE_HP == ('sigmoid', 'naive', 'eps', 'has_ignore', 'ignore_index')
    assert GAUSSIAN_FOCAL_HP == ('alpha', 'gamma', 'pos_weight', 'neg_weight')
    iface = abi.interface()
    assert iface['DiceHp'] == {'SIGMOID': 0, 'NAIVE': 1, 'EPS': 2, 'HAS_IGNORE': 3, 'IGNORE_INDEX': 4, 'SIZE': 5}
    assert iface['GaussianFocalHp'] == {'ALPHA': 0, 'GAMMA': 1, 'POS_WEIGHT': 2, 'NEG_WEIGHT': 3, 'SIZE': 4}
    macros = dict(abi.cpp_macros())
    assert macros['MMLOSS_DICE_HP_EPS'] == '2' and macros['MMLOSS_DICE_HP_SIZE'] == '5'
    assert macros['MMLOSS_GAUSSIAN_FOCAL_HP_NEG_WEIGHT'] == '3' and macros['MMLOSS_GAUSSIAN_FOCAL_HP_SIZE'] == '4'
    # pack orders by the layout, whatever the keyword order; bools become 0.0 / 1.0
    assert abi.pack(DICE_HP, eps=1e-3, ignore_index=255, naive=False, has_ignore=True, sigmoid=True) == [
        1.0, 0.0, 1e-3, 1.0, 255.0]
    assert abi.pack(BOX_HP[BoxKind.SIOU], neg_gamma=1) == [1.0] and abi.pack(BOX_HP[BoxKind.GIOU]) == []
    with pytest.raises(ValueError, match=r"missing neg_weight; unexpected neg_wieght"):
        abi.pack(GAUSSIAN_FOCAL_HP, alpha=2.0, gamma=4.0, pos_weight=1.0, neg_wieght=1.0)
    with pytest.raises(ValueError, match=r"\('beta',\): unexpected gamma$"):
        abi.pack(ELEMENTWISE_HP[ElementwiseKind.SMOOTH_L1], beta=1.0, gamma=2.0)


def test_kernels_read_the_fixed_layouts_by_name():
    # the Dice and Gaussian-focal kernels index their lists by the layout's names (abi.h), never by a number
    for op, name in (('dice', 'kDiceHpEps'), ('gaussian_focal', 'kGaussianFocalHpNegWeight')):
        text = (ROOT / 'mmloss_ext' / 'kernels' / op / f'{op}.cpp').read_text()
        assert name in text and not re.findall(r'\bh[p]?(?:\[|\.at\()\s*\d', text), op


def test_cpp_macros_cover_the_interface_and_read_back_exactly():
    macros = dict(abi.cpp_macros())
    iface = abi.interface()
    n = sum(len(v) if isinstance(v, dict) else 1 for v in iface.values())
    assert len(macros) == n
    assert macros['MMLOSS_BOX_SIOU'] == str(int(BoxKind.SIOU))
    assert macros['MMLOSS_BOX_HP_IOU_LOG'] == '1' and macros['MMLOSS_ELEMENTWISE_HP_VARIFOCAL'] == '3'
    for name in ('SMOOTH_L1_MIN_BETA', 'SIOU_EXP_MAX', 'SIOU_OFFSET2_MIN', 'DICE_DENOMINATOR_MIN', 'GAUSSIAN_FOCAL_EPS'):
        assert float(macros[f'MMLOSS_{name}']) == getattr(abi, name) == iface[name]
    assert all(re.fullmatch(r'[-+.0-9e]+', v) for v in macros.values())  # safe on any compiler command line


def test_abi_header_uses_every_macro_and_writes_no_value():
    # cpp/abi.h is the only C++ reader of the macros: every one is used there, and none is made up
    header = ABI_H.read_text()
    used = set(re.findall(r'\bMMLOSS_[A-Z0-9_]+', header))
    assert used == set(dict(abi.cpp_macros())), used ^ set(dict(abi.cpp_macros()))
    for path in build.sources() + build.depends():  # no other file reads an MMLOSS_ value macro
        if os.path.relpath(path, build.KERNELS) != os.path.join('cpp', 'abi.h') and path.endswith(('.cpp', '.h')):
            assert not set(re.findall(r'\bMMLOSS_[A-Z0-9_]+', Path(path).read_text())) & used, path
    for line in header.splitlines():
        if re.search(r'\bk[A-Z]\w* = ', line):  # an enumerator or constant: from a macro
            assert 'MMLOSS_' in line, line


def test_box_kind_names():
    assert boxes.BOX_KINDS == {'iou_linear': 0, 'iou_square': 1, 'iou_log': 2, 'giou': 3, 'diou': 4, 'ciou': 5,
                               'extended_iou': 6, 'siou': 7, 'efficient_iou': 8, 'wiou': 9}
    assert all(abi.box_kind(name) is kind for name, kind in boxes.BOX_KINDS.items())
    for bad in ('GIoU', 'nope', 3, None):
        with pytest.raises(ValueError, match="unknown box kind.*'giou'"):
            abi.box_kind(bad)


def test_entry_points_use_the_enums():
    assert (elementwise.FOCAL, elementwise.QUALITY_FOCAL, elementwise.VARIFOCAL, elementwise.SMOOTH_L1,
            elementwise.BALANCED_L1) == tuple(ElementwiseKind)
    assert (common.TOTAL, common.ELEMENTS, common.ROWS) == tuple(OutMode)
    assert backends.ABI == abi.ABI


def test_eager_losses_use_the_shared_constants():
    boxes = importlib.import_module('mmloss_ext.losses._boxes')
    segmentation = importlib.import_module('mmloss_ext.losses.segmentation')
    assert boxes.SIOU_EXP_MAX is abi.SIOU_EXP_MAX and boxes.SIOU_OFFSET2_MIN is abi.SIOU_OFFSET2_MIN
    assert 'SMOOTH_L1_MIN_BETA' in inspect.unwrap(smooth_l1_loss).__globals__
    assert segmentation.DICE_DENOMINATOR_MIN is abi.DICE_DENOMINATOR_MIN  # the eager Dice's floor, the kernel's too
    heatmap = importlib.import_module('mmloss_ext.losses.classification.heatmap')
    assert heatmap.GAUSSIAN_FOCAL_EPS is abi.GAUSSIAN_FOCAL_EPS
    assert not hasattr(importlib.import_module('mmloss_ext.kernels.gaussian_focal'), 'EPS')  # no copy beside the kernel


def test_unknown_box_kind_is_a_clear_error():
    p = torch.rand(4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown box kind 'gio'"):
        boxes.box_family('GIoULoss', 'gio', p, p, eps=1e-6)


# --- the C++ extension ---------------------------------------------------------------------------------

def _built():
    """The C++ kernels: built with the package (`make install`) or compiled on first use."""
    ext = backends.cpu_kernels()
    if ext is None:
        pytest.fail(f'the C++ kernels are missing ({backends.cpu_kernels_origin()[1]}): run `make install`')
    return ext


def test_extension_reports_what_core_abi_says():
    ext = _built()
    assert ext.abi == abi.ABI, 'a stale build: rebuild with `python setup.py build_ext --inplace`'
    assert ext.interface == abi.interface()
    assert backends._stale(ext) is None


def _fake_build(**changes):
    """A module that reports core/abi.py's interface with ``changes`` (``'BoxKind.GIOU': 4`` sets one id)."""
    iface = copy.deepcopy(abi.interface())
    for key, value in changes.items():
        group, _, name = key.partition('.')
        if name:
            iface[group][name] = value
        else:
            iface[group] = value
    fake = types.ModuleType('mmloss_ext._fused')
    fake.__file__ = '/nowhere/_fused.so'
    fake.abi, fake.interface, fake.isa = iface['abi'], iface, 'DEFAULT'
    return fake


@pytest.mark.parametrize('changes, says', [
    (dict(abi=abi.ABI - 1), f"interface {abi.ABI - 1}, expected {abi.ABI}"),
    ({'BoxKind.GIOU': 4}, 'built with other BoxKind'),
    ({'ElementwiseKind.FOCAL': 1, 'ElementwiseKind.QUALITY_FOCAL': 0}, 'built with other ElementwiseKind'),
    ({'BoxHp.SIOU': 0}, 'built with other BoxHp'),
    ({'DiceHp.EPS': 3, 'DiceHp.HAS_IGNORE': 2}, 'built with other DiceHp'),
    ({'GaussianFocalHp.SIZE': 5}, 'built with other GaussianFocalHp'),
    ({'OutMode.ROWS': 3}, 'built with other OutMode'),
    (dict(SIOU_EXP_MAX=40.0), 'built with other SIOU_EXP_MAX'),
    (dict(SMOOTH_L1_MIN_BETA=1e-6, DICE_DENOMINATOR_MIN=1e-10), 'DICE_DENOMINATOR_MIN, SMOOTH_L1_MIN_BETA'),
    (dict(interface=None), 'does not report its ids and constants'),
])
def test_stale_build_warns_and_runs_eagerly(monkeypatch, changes, says):
    fake = _fake_build(**{k: v for k, v in changes.items() if k != 'interface'})
    if 'interface' in changes:
        del fake.interface
    monkeypatch.setitem(sys.modules, 'mmloss_ext._fused', fake)
    monkeypatch.setattr(mmloss_ext, '_fused', fake, raising=False)
    with pytest.warns(UserWarning, match=f'stale build.*{re.escape(says)}'):
        assert backends._load_cpu_kernels() is None


def test_matching_build_loads_without_warning(monkeypatch):
    fake = _fake_build()
    monkeypatch.setitem(sys.modules, 'mmloss_ext._fused', fake)
    monkeypatch.setattr(mmloss_ext, '_fused', fake, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert backends._load_cpu_kernels() is fake


@pytest.mark.parametrize('kind, hp', [(ElementwiseKind.FOCAL, [0.25]), (ElementwiseKind.SMOOTH_L1, []),
                                      (ElementwiseKind.BALANCED_L1, [0.5, 1.5, 1.0, 0.0]), (5, [1.0]), (-1, [])])
def test_cpp_checks_elementwise_kind_and_hyper_parameters(kind, hp):
    ext = _built()
    x = torch.zeros(2, 3)
    with pytest.raises(RuntimeError, match='unknown elementwise kind' if kind in (5, -1) else 'hyper-parameters'):
        ext.elementwise_forward(kind, hp, x, x, None, None, None, None, 1)


def test_cpp_checks_the_fixed_layouts_sizes():
    ext = _built()
    x = torch.zeros(2, 3)
    with pytest.raises(RuntimeError, match='Dice: expects 5 hyper-parameters, got 4'):
        ext.dice_forward([1.0, 0.0, 1e-6, 0.0], x, x, None, OutMode.TOTAL)
    with pytest.raises(RuntimeError, match='Gaussian focal: expects 4 hyper-parameters, got 5'):
        ext.heatmap_forward([2.0, 4.0, 1.0, 1.0, 0.0], x, x, None, None, OutMode.TOTAL)
    with pytest.raises(RuntimeError, match='Gaussian focal: expects 4 hyper-parameters, got 3'):
        ext.heatmap_backward([2.0, 4.0, 1.0], x, x, None, None, 1.0, None)


def test_cpp_checks_out_mode():
    ext = _built()
    x, b = torch.zeros(2, 3), torch.zeros(2, 4)
    with pytest.raises(RuntimeError, match='out_mode 3'):
        ext.elementwise_forward(ElementwiseKind.SMOOTH_L1, [1.0], x, x, None, None, None, None, 3)
    with pytest.raises(RuntimeError, match='out_mode 2'):  # rows: elementwise kernels only
        ext.box_forward(BoxKind.GIOU, 1e-6, [], b, b, None, OutMode.ROWS)
    with pytest.raises(RuntimeError, match='unknown box kind 10'):
        ext.box_forward(10, 1e-6, [], b, b, None, OutMode.TOTAL)


# --- the Triton kernels ----------------------------------------------------------------------------

def _triton(op):
    """The Triton module of the operation ``op``."""
    pytest.importorskip('triton', reason='triton is not installed (a test dependency: make install)')
    return importlib.import_module(f'mmloss_ext.kernels.{op}.{op}_triton')


def test_triton_kind_constants_are_the_enums():
    import triton.language as tl
    for op, kinds in (('elementwise', ElementwiseKind), ('boxes', BoxKind)):
        module = _triton(op)
        for kind in kinds:
            const = getattr(module, f'_{kind.name}')
            assert isinstance(const, tl.constexpr) and const.value == int(kind), kind
    gpu = _triton('boxes')
    assert gpu._SIOU_EXP_MAX.value == abi.SIOU_EXP_MAX and gpu._SIOU_OFFSET2_MIN.value == abi.SIOU_OFFSET2_MIN
    heatmap = _triton('gaussian_focal')
    assert [heatmap._ALPHA.value, heatmap._GAMMA.value, heatmap._POS_WEIGHT.value, heatmap._NEG_WEIGHT.value,
            heatmap._EPS.value] == [abi.GAUSSIAN_FOCAL_HP.index(n) for n in abi.GAUSSIAN_FOCAL_HP] + [4]


@pytest.mark.parametrize('path', sorted((ROOT / 'mmloss_ext' / 'kernels').glob('*/*_triton.py')), ids=lambda p: p.name)
def test_triton_source_has_no_bare_kind_ids(path):
    source = path.read_text()
    assert not re.findall(r'\b(?:KIND|kind) *[=!<>]=? *\d', source)
    assert not re.findall(r'\b(?:50\.0|1e-5|1e-12)\b', source)


def test_triton_checks_kind_hyper_parameters_and_out_mode():
    gpu = _triton('elementwise')
    x, b = torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r'FOCAL takes 2 hyper-parameters \[.alpha., .gamma.\], got 1'):
        gpu.elementwise_forward(ElementwiseKind.FOCAL, [0.25], x, x, None, None, None, None, OutMode.ELEMENTS)
    with pytest.raises(ValueError, match='unknown ElementwiseKind 5'):
        gpu.elementwise_forward(5, [1.0], x, x, None, None, None, None, OutMode.ELEMENTS)
    with pytest.raises(ValueError, match='unknown BoxKind 10'):
        _triton('boxes').box_forward(10, 1e-6, [], b, b, None, OutMode.TOTAL)
    with pytest.raises(ValueError, match='out_mode 2'):
        _triton('boxes').box_forward(BoxKind.GIOU, 1e-6, [], b, b, None, OutMode.ROWS)
    with pytest.raises(ValueError, match='out_mode 7'):
        gpu.elementwise_forward(ElementwiseKind.SMOOTH_L1, [1.0], x, x, None, None, None, None, 7)


# --- the shared constants take effect on both backends ---------------------------------------------

def _backends():
    """``(backend, device)`` of the C++ extension and (when it can run here) Triton."""
    out = [('cpp', 'cpu')] if backends.cpu_kernels() is not None else []
    if not TRITON_INTERPRETER:  # no GPU and no interpreter: the Triton kernels cannot run here
        return out
    return out + [('triton', 'cuda' if torch.cuda.is_available() else 'cpu')]  # else: its interpreter


@pytest.mark.parametrize('factor', [0.5, 2.0])
def test_smooth_l1_cut_off_is_the_same_on_every_path(factor, gen, monkeypatch):
    # just below the cut-off every path computes L1, just above it smooth L1 (they differ by beta / 2 here)
    beta = abi.SMOOTH_L1_MIN_BETA * factor
    x = torch.randn(16, 8, generator=gen, dtype=torch.float64) * 2
    t = torch.randn(16, 8, generator=gen, dtype=torch.float64)
    eager = smooth_l1_loss(x, t, beta=beta, impl='eager', reduction='none')
    assert torch.equal(eager, (x - t).abs()) == (factor < 1)
    routes = _backends()
    assert routes, 'neither the C++ extension nor triton is available'
    for name, device in routes:
        monkeypatch.setitem(backends.DEVICE_BACKENDS, 'cpu', name)  # Triton's interpreter, without a GPU
        xd = x.to(device).requires_grad_()
        out = smooth_l1_loss(xd, t.to(device), beta=beta, impl='fused', reduction='none')
        assert common.ran_fused(out), name
        torch.testing.assert_close(out.detach().cpu(), eager, **TOL[torch.float64], msg=name)
