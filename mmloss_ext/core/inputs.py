"""Input validation and the float32 compute policy, shared by the losses and the fused kernels.

Every check raises ``TypeError`` (wrong kind or dtype) or ``ValueError`` (wrong shape, range or
choice) with a message that names the loss, the argument, what was expected and what was given.
No check reads a CUDA tensor's values on the host (that would force a device sync in the hot path):
value checks run on CPU tensors and are enqueued as asynchronous device asserts elsewhere.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch
from torch import Tensor
from .compat import is_compiling
from .errors import LossValueError

_HALF = (torch.float16, torch.bfloat16)


def _shape(x: Tensor) -> tuple:
    return tuple(x.shape)


def check_tensor(loss: str, arg: str, x, *, floating: bool = True) -> Tensor:
    """``x`` must be a tensor, and a floating-point one when ``floating``."""
    if not isinstance(x, Tensor):
        raise TypeError(f'{loss}: `{arg}` expected a torch.Tensor, got {type(x).__name__}')
    if x.is_complex():  # no loss takes complex input; casting would silently drop the imaginary part
        raise TypeError(f'{loss}: `{arg}` expected a real tensor, got dtype {x.dtype}')
    if floating and not x.is_floating_point():
        raise TypeError(f'{loss}: `{arg}` expected a floating-point tensor, got dtype {x.dtype}')
    return x


def check_int_tensor(loss: str, arg: str, x) -> Tensor:
    """``x`` must be an integer (not bool, not float) tensor, e.g. class labels."""
    check_tensor(loss, arg, x, floating=False)
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f'{loss}: `{arg}` expected an integer tensor (class indices), got dtype {x.dtype}')
    return x


def check_same_shape(loss: str, a: Tensor, b: Tensor, names: Sequence[str] = ('pred', 'target')) -> None:
    if a.shape != b.shape:
        raise LossValueError(f'{loss}: `{names[0]}` and `{names[1]}` expected the same shape, '
                         f'got {_shape(a)} and {_shape(b)}')


def check_ndim(loss: str, arg: str, x: Tensor, ndim: int | Iterable[int]) -> None:
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if x.dim() not in allowed:
        want = ' or '.join(str(d) for d in allowed)
        raise LossValueError(f'{loss}: `{arg}` expected a {want}-D tensor, got shape {_shape(x)}')


def check_boxes(loss: str, pred: Tensor, target: Tensor) -> None:
    """Decoded boxes: float tensors of the same shape ``(..., 4)`` in ``(x1, y1, x2, y2)`` order."""
    check_tensor(loss, 'pred', pred)
    check_tensor(loss, 'target', target)
    if pred.dim() < 1 or pred.shape[-1] != 4:
        raise LossValueError(f'{loss}: `pred` expected boxes of shape (N, 4) as (x1, y1, x2, y2), '
                         f'got shape {_shape(pred)}')
    check_same_shape(loss, pred, target)
    check_same_device(loss, pred, target)


def check_same_device(loss: str, a: Tensor, b: Tensor, names: Sequence[str] = ('pred', 'target')) -> None:
    if a.device != b.device:
        raise LossValueError(f'{loss}: `{names[0]}` and `{names[1]}` expected to be on the same device, '
                         f'got {a.device} and {b.device}')


def check_label_range(loss: str, arg: str, labels: Tensor, low: int, high: int,
                      ignore_index: Optional[int] = None) -> None:
    """Labels (other than ``ignore_index``) must lie in ``[low, high]``.

    On CPU the check is exact and raises ``ValueError``. On an accelerator, and under
    ``torch.compile``, it is an asynchronous device assert (no boolean indexing, no host read): it
    never forces a sync or breaks the graph, and fails as a ``RuntimeError``.
    """
    if labels.numel() == 0:
        return
    ok = (labels >= low) & (labels <= high)
    if ignore_index is not None:
        ok |= labels == ignore_index
    if labels.device.type != 'cpu' or is_compiling():
        torch._assert_async(ok.all(), f'{loss}: `{arg}` has values outside [{low}, {high}]')
    elif not bool(ok.all()):
        bad = labels[~ok]
        extra = '' if ignore_index is None else f' (or ignore_index={ignore_index})'
        raise LossValueError(f'{loss}: `{arg}` expected values in [{low}, {high}]{extra}, '
                         f'got values in [{int(bad.min())}, {int(bad.max())}] outside it')


def check_values(loss: str, arg: str, ok: Tensor, expected: str) -> None:
    """Every entry of the bool tensor ``ok`` must be true: an exact ``ValueError`` on the CPU, an
    asynchronous device assert elsewhere and under ``torch.compile`` (no host read)."""
    if ok.numel() == 0:
        return
    if ok.device.type == 'cpu' and not is_compiling():
        bad = int((~ok).sum())
        if bad:
            raise LossValueError(f'{loss}: `{arg}` expected {expected}, got {bad} value(s) outside')
    else:
        torch._assert_async(ok.all(), f'{loss}: `{arg}` expected {expected}')


def upcast(*xs: Optional[Tensor]) -> tuple:
    """Cast half-precision tensors to float32 (``None`` passes through)."""
    return tuple(x.float() if x is not None and x.dtype in _HALF else x for x in xs)
