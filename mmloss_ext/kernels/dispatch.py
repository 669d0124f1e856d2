"""Where the fused kernels run, and whether a call takes them.

Every hot loss takes ``impl='auto'|'eager'|'fused'`` (see :mod:`mmloss_ext.core.impl`, which
also reads ``MMLOSS_EXT_IMPL`` and ``MMLOSS_EXT_FUSED_MIN_NUMEL``) and asks :func:`use_fused`
once, after validating its inputs. ``'fused'`` takes the kernel whenever it supports the call
(else eager, silently: e.g. the softmax focal loss, ``pos_weight``, probabilities, a
``target``/``weight`` that requires grad); ``'auto'`` does so from ``MIN_NUMEL`` elements on.

Where the fused kernels run: a call site names the device types its kernels cover with
``devices=`` (default ``('cpu',)``). On the CPU the kernels are the C++ extension
(``mmloss_ext._fused``, :data:`EXT`); on CUDA they are the Triton kernels of :mod:`.gpu`
(the sigmoid-focal, residual and IoU families), available when ``triton`` imports.
:func:`backend` returns the module implementing the kernels for a device.

The fused backward is once-differentiable: use ``impl='eager'`` for double backward. The kernels
are custom operators (:mod:`.ops`): ``torch.compile`` traces a fused call as one node (no graph
break) and ``torch.export`` keeps it. TorchScript takes the eager path.
"""
from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from types import ModuleType
from typing import Iterable, Optional, Tuple

import torch
from torch import Tensor

from ..core import abi
from ..core.abi import ABI  # the interface version a build must report
from ..core.impl import ENV_IMPL, ENV_MIN_NUMEL, IMPLS, MIN_NUMEL, disabled, min_numel, resolve_impl  # noqa: F401

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


def _load_extension():
    """The C++ extension, or None: not built, a stale build (warned: it was built from another
    version of ``core/abi.py``), or built for a vector ISA the running CPU lacks."""
    try:
        from .. import _fused
    except ImportError:
        return None
    stale = _stale(_fused)
    if stale is not None:
        warnings.warn(f'mmloss_ext: the fused C++ kernels at {_fused.__file__} are a stale build ({stale}); the losses '
                      'run eagerly. Rebuild with `make install` or `python setup.py build_ext --inplace`.')
        return None
    # built for the build machine's vector ISA: use it only where the running CPU has that ISA
    have = torch.backends.cpu.get_cpu_capability()
    ok = {'DEFAULT': True, 'AVX2': have in ('AVX2', 'AVX512'), 'AVX512': have == 'AVX512'}
    return _fused if ok.get(getattr(_fused, 'isa', 'DEFAULT'), False) else None


EXT = _load_extension()


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether ``triton`` imports (checked once, on the first CUDA call)."""
    try:
        import triton  # noqa: F401
    except Exception:  # ImportError, or a broken install
        return False
    return True


#: the device types of the families with both a C++ and a Triton kernel (focal, residual, box)
CPU_AND_CUDA = ('cpu', 'cuda')


def fused_available(device: Optional[torch.device] = None, devices: Tuple[str, ...] = ('cpu',)) -> bool:
    """Whether a fused kernel exists for ``device`` (default: the CPU) among ``devices``:
    ``'cpu'``, the C++ extension; ``'cuda'``, the Triton kernels."""
    device = torch.device('cpu') if device is None else torch.device(device)
    if device.type not in devices:
        return False
    if device.type == 'cpu':
        return EXT is not None
    return device.type == 'cuda' and triton_available()


def backend(device) -> ModuleType:
    """The kernels for ``device``: :data:`EXT` on the CPU, the Triton module :mod:`.gpu` on CUDA
    (imported on first use: ``TRITON_INTERPRET`` is read when its kernels are decorated)."""
    if torch.device(device).type == 'cuda':
        from . import gpu
        return gpu
    return EXT


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
    impl = resolve_impl(name, impl)
    if (impl == 'eager' or not supported or not isinstance(pred, Tensor) or pred.dtype not in _FLOATS
            or not fused_available(pred.device, devices)):
        return False
    if torch.jit.is_scripting() or disabled(name, pred.device.type):
        return False
    if any(isinstance(t, Tensor) and t.requires_grad for t in others):
        return False
    return impl == 'fused' or pred.numel() >= min_numel()


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
