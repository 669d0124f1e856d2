"""The one weighting/reduction core: ``weight_reduce_loss`` with mmdet 3.x semantics.

Every loss in the package reduces through :func:`weight_reduce_loss`; no loss writes its own
``if reduction == ...``.

Semantics (identical to ``mmdet.models.losses.utils.weight_reduce_loss``):

* ``weight`` multiplies the elementwise loss;
* ``'none'`` returns the (weighted) elementwise loss;
* ``'mean'`` without ``avg_factor`` is the mean over all elements;
* ``'mean'`` with ``avg_factor`` is ``sum / (avg_factor + finfo(float32).eps)``;
* ``'sum'`` is the sum; ``'sum'`` with ``avg_factor`` raises ``ValueError``.

Additions: the reduction is validated, ``weight``'s shape is checked (a per-sample ``(N,)`` weight
broadcasts over the trailing dims of an ``(N, ...)`` loss), and the mean of an empty loss is a zero
that stays connected to the graph instead of ``nan``.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, Optional, Union

import torch
from torch import Tensor

from .errors import LossValueError
from .inputs import check_same_device, check_tensor

REDUCTIONS = ('none', 'mean', 'sum')
_FLOAT32_EPS = torch.finfo(torch.float32).eps

AvgFactor = Optional[Union[float, int, Tensor]]


def check_reduction(loss: str, reduction: str, avg_factor: AvgFactor = None, arg: str = 'reduction') -> None:
    """``reduction`` must be one of ``REDUCTIONS``; ``avg_factor`` is refused with ``'sum'``. ``arg``:
    the argument that carried ``reduction`` (``'reduction_override'`` for a call's)."""
    if reduction not in REDUCTIONS:
        raise LossValueError(f'{loss}: `{arg}` expected one of {", ".join(map(repr, REDUCTIONS))}, got {reduction!r}')
    _check_avg_factor(loss, avg_factor)
    if avg_factor is not None and reduction == 'sum':
        raise LossValueError(f"{loss}: `avg_factor` can not be used with reduction='sum' "
                         f"(expected reduction='mean' or 'none'), got avg_factor={avg_factor!r}")


def _check_avg_factor(loss: str, avg_factor: AvgFactor) -> None:
    """A number >= 0 (finite), or a one-element tensor (not read: that would sync an accelerator)."""
    if avg_factor is None:
        return
    if isinstance(avg_factor, Tensor):
        if avg_factor.numel() != 1 or avg_factor.is_complex() or avg_factor.dtype == torch.bool:
            raise LossValueError(f'{loss}: `avg_factor` expected a number or a one-element real tensor, '
                             f'got a {avg_factor.dtype} tensor of shape {tuple(avg_factor.shape)}')
        return
    if isinstance(avg_factor, bool) or not isinstance(avg_factor, numbers.Real):
        raise TypeError(f'{loss}: `avg_factor` expected a number or a tensor, '
                        f'got {type(avg_factor).__name__} {avg_factor!r}')
    if not (math.isfinite(avg_factor) and avg_factor >= 0):
        raise LossValueError(f'{loss}: `avg_factor` expected a finite value >= 0, got {avg_factor!r}')


def _sum_to_reduction(total: Tensor, numel: int, reduction: str, avg_factor: AvgFactor) -> Tensor:
    """'sum' or 'mean' of a loss from its (weighted) sum ``total`` over ``numel`` elements."""
    if avg_factor is not None:
        return total / (avg_factor + _FLOAT32_EPS)
    if reduction == 'sum' or numel == 0:
        return total
    return total / numel


def count_avg_factor(reduction: str, count: Optional[Tensor], avg_factor: AvgFactor = None, *,
                     min_count: Optional[float] = None) -> AvgFactor:
    """The ``avg_factor`` of a loss whose ``'mean'`` divides by a count (the valid, kept or
    positive elements, as mmdet's) rather than by every element: ``avg_factor`` itself when given,
    for ``'sum'``/``'none'`` or without a ``count``; else ``count``, at least ``min_count``.

    Example:
        >>> count_avg_factor('mean', torch.tensor(0.0), min_count=1.0), count_avg_factor('sum', torch.tensor(3.0))
        (tensor(1.), None)
        >>> count_avg_factor('mean', torch.tensor(3.0), avg_factor=8.0)
        8.0
    """
    if avg_factor is not None or reduction != 'mean' or count is None:
        return avg_factor
    return count if min_count is None else count.clamp(min=min_count)


def reduce_summed(elementwise: Callable[[], Tensor], total: Callable[[], Tensor], numel: int,
                  reduction: str = 'mean', avg_factor: AvgFactor = None, *, name: str = 'loss') -> Tensor:
    """:func:`weight_reduce_loss` for a loss that can be summed without materialising it (the fused
    kernels): ``elementwise()`` gives the weighted elementwise loss (``'none'``), ``total()`` its sum
    over ``numel`` elements (``'mean'``/``'sum'``); same rules and checks."""
    check_reduction(name, reduction, avg_factor)
    if reduction == 'none':
        return elementwise()
    return _sum_to_reduction(total(), numel, reduction, avg_factor)


def adapt_weight(loss_name: str, weight: Tensor, loss: Tensor) -> Tensor:
    """Return ``weight`` viewed so that it broadcasts to ``loss`` without changing its shape.

    Accepted: the loss's own shape; any shape that broadcasts to it; and a per-sample ``(N,)``
    weight for an ``(N, ...)`` loss (viewed as ``(N, 1, ...)``).
    """
    check_tensor(loss_name, 'weight', weight, floating=False)
    check_same_device(loss_name, loss, weight, ('pred', 'weight'))
    if weight.shape == loss.shape:
        return weight
    if weight.dim() == 1 and loss.dim() > 1 and weight.shape[0] == loss.shape[0]:
        return weight.view(-1, *([1] * (loss.dim() - 1)))
    try:
        if torch.broadcast_shapes(weight.shape, loss.shape) == loss.shape:
            return weight
    except RuntimeError:
        pass
    raise LossValueError(f'{loss_name}: `weight` expected shape {tuple(loss.shape)} (or one that broadcasts '
                     f'to it, or ({loss.shape[0] if loss.dim() else 1},) per sample), '
                     f'got {tuple(weight.shape)}')


def per_box_weight(weight: Optional[Tensor], boxes: Tensor) -> Optional[Tensor]:
    """mmdet's rule for box losses: an ``(N, 4)`` weight is averaged over the 4 coordinates."""
    if weight is not None and weight.dim() == boxes.dim() and weight.shape == boxes.shape:
        return weight.mean(-1)
    return weight


def weight_reduce_loss(loss: Tensor, weight: Optional[Tensor] = None, reduction: str = 'mean',
                       avg_factor: AvgFactor = None, *, name: str = 'loss') -> Tensor:
    """Apply an elementwise ``weight`` and reduce, with mmdet 3.x semantics.

    Args:
        loss: elementwise loss of any shape.
        weight: elementwise weight, see :func:`adapt_weight` for the accepted shapes.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        avg_factor: divisor for ``'mean'`` (``sum / (avg_factor + eps)``), e.g. the number of
            positive samples. Not allowed with ``'sum'``.
        name: the loss's name, used in error messages.

    Example:
        >>> loss = torch.tensor([1.0, 2.0, 3.0])
        >>> weight_reduce_loss(loss, torch.tensor([1.0, 0.0, 1.0]), 'sum')
        tensor(4.)
        >>> round(float(weight_reduce_loss(loss, reduction='mean', avg_factor=2)), 5)
        3.0
    """
    check_reduction(name, reduction, avg_factor)  # before the weight: the cheaper error first
    if weight is not None:
        loss = loss * adapt_weight(name, weight, loss)
    return reduce_summed(lambda: loss, loss.sum, loss.numel(), reduction, avg_factor, name=name)
