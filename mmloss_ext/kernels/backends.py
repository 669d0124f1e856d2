"""Where a fused kernel runs: one table from device type to backend, and the backends themselves.

* ``'cpp'`` -- the C++ extension (``mmloss_ext._fused``, built from every operation's ``.cpp`` by
  ``setup.py``, or compiled on first use into torch's extension cache: :func:`cpu_kernels`);
* ``'triton'`` -- the operation's Triton module, ``kernels/<op>/<op>_triton.py`` (imported on first
  use: ``TRITON_INTERPRET`` is read when its kernels are decorated).

:data:`DEVICE_BACKENDS` maps a device type to its backend (CPU: the extension; CUDA: Triton);
:func:`triton_on_cpu` maps the CPU to Triton for a block (Triton's interpreter runs the kernels
on the host: how the tests and ``tools/gpu_check.py --interpret`` exercise the CUDA code path
without a GPU). Each operation says which backends have its kernels when it defines its operator
(:data:`OPERATIONS`, filled by :func:`~.operators.define`); :func:`has_kernel` and
:func:`kernels` answer for an operation and a device.

This module imports no other module of :mod:`mmloss_ext.kernels` but :mod:`.build`.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import re
import sys
import warnings
from types import ModuleType
from typing import Dict, Iterator, Optional, Tuple

import torch

from ..core import abi
from ..core.abi import ABI  # the interface version a build must report
from ..core.compat import outside_graph
from . import build

__all__ = ['BACKENDS', 'DEVICE_BACKENDS', 'OPERATIONS', 'backend_of', 'cpu_kernels', 'cpu_kernels_origin',
           'has_kernel', 'kernels', 'triton_available', 'triton_on_cpu']

#: the backends a kernel can have
BACKENDS = ('cpp', 'triton')
#: the backend of each device type (a device type not listed has no fused kernels)
DEVICE_BACKENDS: Dict[str, str] = {'cpu': 'cpp', 'cuda': 'triton'}
#: every fused operation (a folder of :mod:`mmloss_ext.kernels`) and the backends with its kernels
OPERATIONS: Dict[str, Tuple[str, ...]] = {}


def _stale(module: ModuleType) -> Optional[str]:
    """How the build ``module`` differs from :mod:`mmloss_ext.core.abi` (its version, then the ids
    and constants it reports as ``interface``), or None when it matches."""
    built = getattr(module, 'abi', 1)  # the first builds had no version
    if built != ABI:
        return f'interface {built}, expected {ABI}'
    reported, expected = getattr(module, 'interface', None), abi.interface()
    if not isinstance(reported, dict):
        return 'it does not report its ids and constants'
    diff = sorted(k for k in reported.keys() | expected.keys() if reported.get(k) != expected.get(k))
    return f'built with other {", ".join(diff)}' if diff else None


#: how the C++ kernels were obtained: ``'built'`` (with the package), ``'compiled'`` (on first use,
#: into torch's extension cache) or ``'absent'``, and where or why (:func:`cpu_kernels_origin`)
_ORIGIN: Dict[str, str] = {}


def _jit_build(cpp_extension) -> Tuple[str, dict]:
    """The module name and ``torch.utils.cpp_extension.load`` arguments of a build on first use.
    The name carries the torch release (an extension is bound to the torch it was compiled
    against) and a digest of the sources and flags, so that a cached build is found by its name
    alone and a changed one is built under a new name."""
    args = dict(sources=build.sources(), extra_cflags=build.compile_args() + build.define_flags(),
                extra_ldflags=build.link_args())
    digest = hashlib.sha256(repr(sorted(args.items())).encode())
    for path in build.sources() + build.depends():
        with open(path, 'rb') as f:
            digest.update(f.read())
    return f'mmloss_ext_fused_torch_{re.sub(r"[^0-9a-zA-Z]", "_", torch.__version__)}_{digest.hexdigest()[:12]}', args


def _first_error(err: BaseException) -> str:
    """The line of a failed build that says what went wrong: the compiler's first error, else the
    last line of the message."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    return next((line for line in lines if 'error:' in line.lower()), lines[-1])


def _compile_on_first_use() -> Optional[ModuleType]:
    """The C++ kernels compiled into torch's extension cache (once per torch release and source
    version; later processes load the cached build), or None, with one message saying why."""
    if build.jit_disabled():
        _ORIGIN.update(origin='absent', detail=f'not built with the package; compiling on first use is off '
                                               f'(${build.ENV_JIT}=0)')
        return None
    from torch.utils import cpp_extension
    name, args = _jit_build(cpp_extension)
    where = cpp_extension._get_build_directory(name, verbose=False)
    if not os.path.exists(os.path.join(where, name + '.so')):  # else torch loads the cached build
        print(f'[mmloss_ext] compiling the fused CPU kernels into {where} (once per torch release and source '
              f'version; about a minute; {build.ENV_JIT}=0 turns this off)', file=sys.stderr, flush=True)
    try:
        module = cpp_extension.load(name, verbose=False, **args)
    except Exception as err:  # noqa: BLE001 - no compiler, no ninja, no Python headers, a torch whose headers differ
        reason = _first_error(err)
        _ORIGIN.update(origin='absent', detail=f'compiling them failed: {reason}')
        warnings.warn(f'mmloss_ext: the fused CPU kernels could not be compiled ({reason}); the losses run eagerly '
                      f'on the CPU.', RuntimeWarning, stacklevel=4)
        return None
    _ORIGIN.update(origin='compiled', detail=module.__file__)
    return module


def _load_cpu_kernels() -> Optional[ModuleType]:
    """The C++ extension, or None: not built and not compilable, a stale build (warned: it was built
    from another version of ``core/abi.py``), or built for a vector ISA the running CPU lacks."""
    try:
        from .. import _fused as module
        _ORIGIN.update(origin='built', detail=module.__file__)
    except ImportError:
        module = _compile_on_first_use()
        if module is None:
            return None
    stale = _stale(module)
    if stale is not None:
        _ORIGIN.update(origin='absent', detail=f'stale build at {module.__file__} ({stale})')
        warnings.warn(f'mmloss_ext: the fused C++ kernels at {module.__file__} are a stale build ({stale}); the losses '
                      'run eagerly. Rebuild with `make install` or `python setup.py build_ext --inplace`.')
        return None
    # built for the build machine's vector ISA: use it only where the running CPU has that ISA
    have = torch.backends.cpu.get_cpu_capability()
    isa = getattr(module, 'isa', 'DEFAULT')
    if not {'DEFAULT': True, 'AVX2': have in ('AVX2', 'AVX512'), 'AVX512': have == 'AVX512'}.get(isa, False):
        _ORIGIN.update(origin='absent', detail=f'{module.__file__} is built for {isa}; this CPU has {have}')
        return None
    return module


_UNLOADED = object()
#: the loaded kernels (a plain global, which TorchDynamo reads as a constant; an ``lru_cache`` it
#: would trace through)
_CPU_KERNELS = _UNLOADED


def cpu_kernels() -> Optional[ModuleType]:
    """The C++ kernels of the CPU (loaded on first use): ``mmloss_ext._fused`` when the install
    built it, else compiled now into torch's extension cache (:mod:`.build`; once per torch
    release, ``MMLOSS_EXT_JIT=0`` turns this off), else None (the losses run eagerly)."""
    global _CPU_KERNELS
    if _CPU_KERNELS is _UNLOADED:
        _CPU_KERNELS = outside_graph(_load_cpu_kernels)()  # a first use inside a compiled region: loaded eagerly
    return _CPU_KERNELS


def cpu_kernels_origin() -> Tuple[str, str]:
    """``(origin, detail)`` of the C++ kernels, loading them if need be: ``'built'`` or
    ``'compiled'`` with the module's path, or ``'absent'`` with the reason."""
    cpu_kernels()
    return _ORIGIN['origin'], _ORIGIN['detail']


def _import_triton() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # ImportError, or a broken install
        return False
    return True


_TRITON = _UNLOADED


def triton_available() -> bool:
    """Whether ``triton`` imports (checked once, on the first CUDA call; a plain global, as
    :func:`cpu_kernels`)."""
    global _TRITON
    if _TRITON is _UNLOADED:
        _TRITON = outside_graph(_import_triton)()
    return _TRITON


def backend_of(device) -> Optional[str]:
    """The backend of ``device``'s type (:data:`DEVICE_BACKENDS`), or None."""
    return DEVICE_BACKENDS.get(torch.device(device).type)


def has_kernel(op: Optional[str], device=None) -> bool:
    """Whether the operation ``op`` has a kernel for ``device`` (default: the CPU) that can run
    here: its backend for that device is one of the operation's, and is installed (the C++
    extension loads; ``triton`` imports). ``op=None``: whether the device's backend is installed."""
    backend = backend_of('cpu' if device is None else device)
    if backend is None or (op is not None and backend not in OPERATIONS.get(op, ())):
        return False
    return cpu_kernels() is not None if backend == 'cpp' else triton_available()


def kernels(op: str, device) -> ModuleType:
    """The kernels of the operation ``op`` for ``device``: the C++ extension, or the operation's
    Triton module (imported here on first use; an older Triton that cannot import it raises)."""
    backend = backend_of(device)
    if backend == 'cpp':
        return cpu_kernels()
    if backend == 'triton':
        return importlib.import_module(f'{__package__}.{op}.{op}_triton')
    raise ValueError(f'mmloss_ext: no fused kernels for device {device}')


@contextlib.contextmanager
def triton_on_cpu() -> Iterator[None]:
    """Within the block, CPU tensors take the Triton kernels instead of the C++ ones. Set
    ``TRITON_INTERPRET=1`` before :mod:`triton` is first imported, so that Triton's interpreter
    runs them on the host."""
    saved = DEVICE_BACKENDS['cpu']
    DEVICE_BACKENDS['cpu'] = 'triton'
    try:
        yield
    finally:
        DEVICE_BACKENDS['cpu'] = saved
