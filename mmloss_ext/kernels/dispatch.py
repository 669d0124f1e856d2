"""The one switch between a loss's eager path and its fused kernel.

Every hot loss takes ``impl='auto'|'eager'|'fused'`` (a constructor keyword, so config-settable)
and asks :func:`use_fused` once, after validating its inputs:

* ``'eager'``: always the readable eager path;
* ``'fused'``: the fused kernel whenever it supports the call (else eager, silently: e.g. the
  softmax focal loss, ``pos_weight``, probabilities, a ``target``/``weight`` that requires grad);
* ``'auto'`` (default): as ``'fused'`` for inputs of at least :data:`MIN_NUMEL` elements, eager
  below (the dispatch costs more than it saves on tiny tensors).

The environment variable ``MMLOSS_EXT_IMPL`` (``auto``/``eager``/``fused``) replaces ``'auto'``
for every loss at once; an explicit ``impl='eager'`` or ``'fused'`` keeps precedence.
``MMLOSS_EXT_FUSED_MIN_NUMEL`` overrides :data:`MIN_NUMEL`. Both are read at each call.

The fused backward is once-differentiable: use ``impl='eager'`` for double backward. Under
``torch.compile`` / TorchScript the eager path is used, so that the compiler sees the formula.
"""
from __future__ import annotations

import os
from typing import Iterable, Optional

import torch
from torch import Tensor

from ..losses.inputs import check_choice

IMPLS = ('auto', 'eager', 'fused')
ENV_IMPL = 'MMLOSS_EXT_IMPL'
ENV_MIN_NUMEL = 'MMLOSS_EXT_FUSED_MIN_NUMEL'
#: 'auto' takes the fused path from this many elements of ``pred`` on
MIN_NUMEL = 4096

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _load_extension():
    try:
        from .. import _fused
    except ImportError:
        return None
    # built for the build machine's vector ISA: use it only where the running CPU has that ISA
    have = torch.backends.cpu.get_cpu_capability()
    ok = {'DEFAULT': True, 'AVX2': have in ('AVX2', 'AVX512'), 'AVX512': have == 'AVX512'}
    return _fused if ok.get(getattr(_fused, 'isa', 'DEFAULT'), False) else None


EXT = _load_extension()


def fused_available(device: Optional[torch.device] = None) -> bool:
    """Whether a fused kernel exists for ``device`` (CPU only: the C++ extension)."""
    device = torch.device('cpu') if device is None else torch.device(device)
    return EXT is not None and device.type == 'cpu'


def resolve_impl(name: str, impl: str) -> str:
    """Validate ``impl`` and apply ``MMLOSS_EXT_IMPL`` to ``'auto'``."""
    check_choice(name, 'impl', impl, IMPLS)
    if impl == 'auto':
        impl = os.environ.get(ENV_IMPL, 'auto') or 'auto'
        check_choice(name, f'${ENV_IMPL}', impl, IMPLS)
    return impl


def min_numel() -> int:
    value = os.environ.get(ENV_MIN_NUMEL)
    return MIN_NUMEL if value is None else int(value)


def use_fused(name: str, impl: str, pred: Tensor, *, supported: bool = True,
              others: Iterable[Optional[Tensor]] = ()) -> bool:
    """Whether ``name`` runs fused for this call (see the module docstring).

    Args:
        name: the loss's name (error messages).
        impl: the loss's ``impl`` keyword.
        pred: the (validated) prediction.
        supported: False when the kernel lacks an option of this call.
        others: the other tensors of the call (targets, weights); fused only if none needs a gradient.
    """
    impl = resolve_impl(name, impl)
    if (impl == 'eager' or not supported or not isinstance(pred, Tensor) or pred.dtype not in _FLOATS
            or not fused_available(pred.device)):
        return False
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False
    if any(isinstance(t, Tensor) and t.requires_grad for t in others):
        return False
    return impl == 'fused' or pred.numel() >= min_numel()
