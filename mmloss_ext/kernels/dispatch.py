"""Whether a call takes its fused kernel.

Every hot loss takes ``impl='auto'|'eager'|'fused'`` (see :mod:`mmloss_ext.core.impl`, which
also reads ``MMLOSS_EXT_IMPL`` and ``MMLOSS_EXT_FUSED_MIN_NUMEL``) and asks :func:`use_fused`
once, after validating its inputs, naming its operation (``op='boxes'``). ``'fused'`` takes the
kernel whenever it supports the call (else eager, silently: e.g. the softmax focal loss,
``pos_weight``, probabilities, a ``target``/``weight`` that requires grad); ``'auto'`` does so
from ``MIN_NUMEL`` elements on. Where the kernels run is :mod:`.backends`' table.

The fused backward is once-differentiable: use ``impl='eager'`` for double backward. The kernels
are custom operators (:mod:`.operators`): ``torch.compile`` traces a fused call as one node (no
graph break) and ``torch.export`` keeps it. TorchScript takes the eager path.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import Tensor

from ..core.impl import ENV_IMPL, ENV_MIN_NUMEL, IMPLS, admits, disabled, resolve_impl
from . import backends

__all__ = ['ENV_IMPL', 'ENV_MIN_NUMEL', 'IMPLS', 'fused_available', 'resolve_impl', 'use_fused']

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def fused_available(device: Optional[torch.device] = None, op: Optional[str] = None) -> bool:
    """Whether a fused kernel of the operation ``op`` (any, when None) runs on ``device`` (default:
    the CPU): see :func:`.backends.has_kernel`."""
    return backends.has_kernel(op, device)


def use_fused(name: str, impl: str, pred: Tensor, *, op: str, supported: bool = True,
              others: Iterable[Optional[Tensor]] = ()) -> bool:
    """Whether ``name`` runs fused for this call (see the module docstring).

    Args:
        name: the loss's name (error messages).
        impl: the loss's ``impl`` keyword.
        pred: the (validated) prediction.
        op: the fused operation the loss calls (a folder of :mod:`mmloss_ext.kernels`).
        supported: False when the kernel lacks an option of this call.
        others: the other tensors of the call (targets, weights); fused only if none needs a gradient.
    """
    impl = resolve_impl(name, impl)  # a bad impl is an error whatever the call
    if op not in backends.OPERATIONS:  # a name no operation registered (its entry point defines it)
        raise ValueError(f'{name}: no fused operation {op!r}; the operations are {sorted(backends.OPERATIONS)}')
    if not supported or not isinstance(pred, Tensor) or pred.dtype not in _FLOATS:
        return False
    if not admits(impl, pred):  # before the kernels are loaded (or compiled)
        return False
    if torch.jit.is_scripting() or disabled(name, pred.device.type):
        return False
    if any(isinstance(t, Tensor) and t.requires_grad for t in others):
        return False
    return backends.has_kernel(op, pred.device)
