"""Where the fused kernels run, and whether a call takes them.

Every hot loss takes ``impl='auto'|'eager'|'fused'`` (see :mod:`mmloss_ext.core.impl`, which
also reads ``MMLOSS_EXT_IMPL`` and ``MMLOSS_EXT_FUSED_MIN_NUMEL``) and asks :func:`use_fused`
once, after validating its inputs. ``'fused'`` takes the kernel whenever it supports the call
(else eager, silently: e.g. the softmax focal loss, ``pos_weight``, probabilities, a
``target``/``weight`` that requires grad); ``'auto'`` does so from ``MIN_NUMEL`` elements on.

Where the fused kernels run: a call site names the device types its kernels cover with
``devices=`` (default ``('cpu',)``). On the CPU the kernels are the C++ extension
(``mmloss_ext._fused``, or the same sources compiled on first use: :func:`cpu_kernels`); on CUDA they are the Triton kernels of :mod:`.gpu`
(the sigmoid-focal, residual and IoU families), available when ``triton`` imports.
:func:`backend` returns the module implementing the kernels for a device.

The fused backward is once-differentiable: use ``impl='eager'`` for double backward. The kernels
are custom operators (:mod:`.ops`): ``torch.compile`` traces a fused call as one node (no graph
break) and ``torch.export`` keeps it. TorchScript takes the eager path.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import warnings
from types import ModuleType
from typing import Dict, Iterable, Optional, Tuple

import torch
from torch import Tensor

from ..core import abi
from ..core.abi import ABI  # the interface version a build must report
from . import build
from ..core.compat import outside_graph
from ..core.impl import ENV_IMPL, ENV_MIN_NUMEL, IMPLS, MIN_NUMEL, disabled, may_fuse, min_numel, resolve_impl  # noqa: F401

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


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


#: the device types of the families with both a C++ and a Triton kernel (focal, residual, box)
CPU_AND_CUDA = ('cpu', 'cuda')


def fused_available(device: Optional[torch.device] = None, devices: Tuple[str, ...] = ('cpu',)) -> bool:
    """Whether a fused kernel exists for ``device`` (default: the CPU) among ``devices``:
    ``'cpu'``, the C++ extension; ``'cuda'``, the Triton kernels."""
    device = torch.device('cpu') if device is None else torch.device(device)
    if device.type not in devices:
        return False
    if device.type == 'cpu':
        return cpu_kernels() is not None
    return device.type == 'cuda' and triton_available()


def backend(device) -> ModuleType:
    """The kernels for ``device``: :func:`cpu_kernels` on the CPU, the Triton module :mod:`.gpu` on
    CUDA (imported on first use: ``TRITON_INTERPRET`` is read when its kernels are decorated)."""
    if torch.device(device).type == 'cuda':
        from . import gpu
        return gpu
    return cpu_kernels()


def use_fused(name: str, impl: str, pred: Tensor, *, supported: bool = True,
              others: Iterable[Optional[Tensor]] = (), devices: Tuple[str, ...] = ('cpu',)) -> bool:
    """Whether ``name`` runs fused for this call (see the module docstring).

    Args:
        name: the loss's name (error messages).
        impl: the loss's ``impl`` keyword.
        pred: the (validated) prediction.
        supported: False when the kernel lacks an option of this call.
        others: the other tensors of the call (targets, weights); fused only if none needs a gradient.
        devices: the device types with a kernel for this loss (``'cpu'``, ``'cuda'``).
    """
    impl = resolve_impl(name, impl)  # a bad impl is an error whatever the call
    if not supported or not isinstance(pred, Tensor) or pred.dtype not in _FLOATS:
        return False
    if not may_fuse(name, impl, pred):  # before the kernels are loaded (or compiled)
        return False
    if torch.jit.is_scripting() or disabled(name, pred.device.type):
        return False
    if any(isinstance(t, Tensor) and t.requires_grad for t in others):
        return False
    return fused_available(pred.device, devices)


@contextlib.contextmanager
def triton_on_cpu():
    """Within the block, the fused calls of CPU tensors run the Triton kernels (every family's
    CUDA module) instead of the C++ ones: how ``tools/gpu_check.py --interpret`` exercises the
    CUDA code path without a GPU. Set ``TRITON_INTERPRET=1`` before :mod:`triton` is first
    imported, so that Triton's interpreter runs the kernels on the host."""
    from . import ghm, gpu, gpu_ghm, gpu_heatmap, heatmap, ops
    patches = [(ops, 'backend', lambda device: gpu), (heatmap, 'backend', lambda device: gpu_heatmap),
               (heatmap, 'available', lambda device: True), (ghm, 'backend', lambda device: gpu_ghm),
               (ghm, 'supported', lambda x, bins: bins <= ghm.TRITON_MAX_BINS),
               (sys.modules[__name__], 'fused_available', lambda device=None, devices=('cpu',): True)]
    saved = [(module, attr, getattr(module, attr)) for module, attr, _ in patches]
    try:
        for module, attr, value in patches:
            setattr(module, attr, value)
        yield
    finally:
        for module, attr, value in saved:
            setattr(module, attr, value)
