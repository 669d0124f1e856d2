import importlib.abc
import importlib.machinery
import os
import sys
import types

import pytest
import torch

# without a GPU the Triton kernels run in Triton's CPU interpreter; read when they are decorated,
# so before anything imports a Triton module of mmloss_ext.kernels (or triton)
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')
os.environ.setdefault('OMP_NUM_THREADS', '2')
# the tests hold every kernel to the eager spec themselves: the self-check of a new device (CUDA
# here), which would answer a wrong kernel eagerly and add kernel calls, is off but where a test
# turns it on (tests/test_selfcheck.py)
os.environ.setdefault('MMLOSS_EXT_SELF_CHECK', '0')
torch.set_num_threads(min(2, torch.get_num_threads()))

from environment import MMCV_OPS, TRITON_INTERPRETER, has_module  # noqa: E402


class NeedsCompiledOps(RuntimeError):
    """An op of :class:`_NoCompiledOps` was used: the test needs mmcv's compiled ops."""


class _NoCompiledOps(types.ModuleType):
    """``mmcv.ops`` of an mmcv without compiled ops: every name is a class that refuses to be used.

    mmdet imports ``mmcv.ops`` at import time (NMS, RoIAlign, DeformConv, ...), though its losses
    are plain PyTorch (its focal loss calls mmcv's op only on CUDA). With this stand-in, mmdet's
    loss classes -- the references the tests compare against -- import beside mmcv-lite; a test
    that builds or runs a compiled op (a whole detector) is skipped there, saying which op, and
    a test whose subprocess imports mmdet's models is marked ``needs_mmcv_ops``."""

    def __getattr__(self, name):
        if name.startswith('__'):
            raise AttributeError(name)

        def refuse(*args, **kwargs):
            raise NeedsCompiledOps(f'{self.__name__}.{name} needs mmcv with compiled ops (mmcv-lite has none)')

        stand_in = type(name, (torch.nn.Module,), {'__init__': refuse, '__call__': refuse})
        setattr(self, name, stand_in)
        return stand_in


class _NoCompiledOpsFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname == 'mmcv.ops' or fullname.startswith('mmcv.ops.'):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _NoCompiledOps(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


if has_module('mmcv') and not MMCV_OPS:
    sys.meta_path.insert(0, _NoCompiledOpsFinder())


@pytest.fixture
def gen():
    """A seeded generator: every test draws its random inputs from it."""
    return torch.Generator().manual_seed(0)


class _Recorder:
    """A backend's kernels, recording the name of every function called."""

    def __init__(self, kernels, calls):
        self._kernels, self._calls = kernels, calls

    def __getattr__(self, name):
        fn = getattr(self._kernels, name)
        if not callable(fn):
            return fn

        def record(*args, **kwargs):
            self._calls.append(name)
            return fn(*args, **kwargs)

        return record


@pytest.fixture
def on_triton(monkeypatch):
    """Every fused call runs its Triton kernel (on CUDA where there is one, else under Triton's
    interpreter on the CPU: the CPU's backend is Triton for the test), whatever the C++ build;
    gives the list of the names of the kernel functions called."""
    pytest.importorskip('triton', reason='triton is not installed (a test dependency: make install)')
    from mmloss_ext.kernels import backends
    calls, recorders, real = [], {}, backends.kernels

    def recording(op, device):
        kernels = real(op, device)
        return recorders.setdefault(id(kernels), _Recorder(kernels, calls))

    monkeypatch.setattr(backends, 'kernels', recording)
    with backends.triton_on_cpu():
        yield calls


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: end-to-end training runs (still part of make test)')
    config.addinivalue_line('markers', "needs_mmcv_ops: runs mmcv's compiled ops (skipped beside mmcv-lite)")
    config.addinivalue_line('markers', "triton_interpreter: runs the Triton kernels on CPU tensors (Triton's "
                                       "interpreter, triton 3.0+)")


def pytest_collection_modifyitems(config, items):
    skips = {
        'needs_mmcv_ops': None if MMCV_OPS else pytest.mark.skip(
            reason="needs mmcv's compiled ops (mmcv.ops); this mmcv has none (mmcv-lite)"),
        'triton_interpreter': None if TRITON_INTERPRETER else pytest.mark.skip(
            reason="runs the Triton kernels on the CPU, which needs Triton's interpreter (triton 3.0+); "
                   "this triton has none"),
    }
    for item in items:
        if 'on_triton' in getattr(item, 'fixturenames', ()):  # the fixture that routes calls to Triton
            item.add_marker(pytest.mark.triton_interpreter)
        for marker, skip in skips.items():
            if skip is not None and marker in item.keywords:
                item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    try:
        return (yield)
    except NeedsCompiledOps as err:
        pytest.skip(f"needs mmcv's compiled ops: {err}")


def pytest_report_header(config):
    import mmloss_ext
    from mmloss_ext.kernels.backends import cpu_kernels_origin
    origin, detail = cpu_kernels_origin()
    return [f'mmloss_ext {mmloss_ext.__version__} from {os.path.dirname(mmloss_ext.__file__)}; torch {torch.__version__}; '
            f'C++ kernels: {origin} ({detail})',
            f"mmcv compiled ops: {'yes' if MMCV_OPS else 'no'}; Triton interpreter: "
            f"{'yes' if TRITON_INTERPRETER else 'no'}"]
