"""Shared pieces of the classification losses: the family's base class, label checks, class masks,
per-class weights and probability-space logs. Private to the family; every loss computes through
these helpers.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.errors import LossValueError
from ...core.hparams import Choice
from ...core.inputs import check_int_tensor, check_label_range, check_same_device, check_tensor, upcast
from ...core.reduction import AvgFactor, weight_reduce_loss
from ..base import BaseLoss


class ClassificationLoss(BaseLoss):
    """Base of the classification family: class scores on dim 1."""
    family = 'classification'


#: the declaration of ``use_sigmoid`` for the losses mmdet defines for the sigmoid only (it keeps
#: the flag, which must be True)
SIGMOID_ONLY = Choice(True)

#: torch's ``binary_cross_entropy`` clamps ``log`` at this value
LOG_FLOOR = -100.0


def check_logits(name: str, pred, *, min_dim: int = 1) -> Tensor:
    """``pred`` must be a floating-point tensor with at least ``min_dim`` dims; returns it in the
    compute dtype (float32 for half inputs)."""
    check_tensor(name, 'pred', pred)
    if pred.dim() < min_dim:
        raise LossValueError(f'{name}: `pred` expected at least {min_dim} dims (N, C, ...), '
                         f'got shape {tuple(pred.shape)}')
    return upcast(pred)[0]


def check_class_labels(name: str, pred: Tensor, labels, high: int, *, arg: str = 'target',
                       ignore_index: Optional[int] = None) -> Tensor:
    """Integer labels shaped like ``pred`` without its class dim 1, values in ``[0, high]``."""
    check_int_tensor(name, arg, labels)
    expected = (pred.shape[0], *pred.shape[2:]) if pred.dim() >= 2 else None
    if expected is None or tuple(labels.shape) != expected:
        raise LossValueError(f'{name}: `{arg}` expected integer labels of shape {expected} for `pred` of '
                         f'shape {tuple(pred.shape)} (classes on dim 1), got {tuple(labels.shape)}')
    check_same_device(name, pred, labels, ('pred', arg))
    check_label_range(name, arg, labels, 0, high, ignore_index)
    return labels


def check_target_like(name: str, pred: Tensor, target, arg: str = 'target') -> Tensor:
    """A numeric target of ``pred``'s shape, returned in ``pred``'s (compute) dtype."""
    check_tensor(name, arg, target, floating=False)
    if target.shape != pred.shape:
        raise LossValueError(f'{name}: `pred` and `{arg}` expected the same shape, '
                         f'got {tuple(pred.shape)} and {tuple(target.shape)}')
    check_same_device(name, pred, target, ('pred', arg))
    return target.to(pred.dtype)


def class_mask(labels: Tensor, num_classes: int) -> Tensor:
    """Bool one-hot of ``labels`` (N, ...) as (N, C, ...); labels outside ``[0, C)`` give an all-false
    row (mmdet's background label C, ignored labels)."""
    classes = torch.arange(num_classes, device=labels.device).view(1, -1, *([1] * (labels.dim() - 1)))
    return labels.unsqueeze(1) == classes


def gather_class(x: Tensor, labels: Tensor) -> Tensor:
    """``x[n, labels[n], ...]``: (N, C, ...) and (N, ...) -> (N, ...)."""
    return x.gather(1, labels.unsqueeze(1)).squeeze(1)


def per_class(name: str, arg: str, value, ref: Tensor, length: int, *, allow_one: bool = False) -> Optional[Tensor]:
    """A per-class weight given as a list (from a config), number or tensor, as a 1-D tensor of
    ``length`` values (or 1 with ``allow_one``) in ``ref``'s dtype and device."""
    if value is None:
        return None
    try:
        # built on the host, then an asynchronous copy: a blocking host-to-device copy syncs CUDA
        w = torch.as_tensor(value, dtype=ref.dtype).to(ref.device, non_blocking=True).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f'{name}: `{arg}` expected a list of numbers or a tensor, '
                        f'got {type(value).__name__} {value!r}') from err
    if w.numel() != length and not (allow_one and w.numel() == 1):
        raise LossValueError(f'{name}: `{arg}` expected {length} values (one per class{" or one" if allow_one else ""}), '
                         f'got {w.numel()}')
    return w


def along_dim1(w: Tensor, ndim: int) -> Tensor:
    """View a (C,) tensor as (1, C, 1, ...) to broadcast over the class dim of an ``ndim`` tensor."""
    return w.view(1, -1, *([1] * (ndim - 2)))


def clamped_log(p: Tensor) -> Tensor:
    """``log(p)`` clamped below at -100 as torch's ``binary_cross_entropy`` does, with a zero (not
    ``nan``) gradient where clamped, so probabilities of exactly 0 or 1 stay finite."""
    floor = max(math.exp(LOG_FLOOR), torch.finfo(p.dtype).tiny)
    return torch.where(p > floor, torch.log(p.clamp_min(floor)), LOG_FLOOR)


def bce(x: Tensor, t: Tensor, pos_weight: Optional[Tensor] = None, *, activated: bool = False) -> Tensor:
    r"""Elementwise binary cross-entropy :math:`-[w_+ t \log p + (1-t)\log(1-p)]` of logits ``x``
    (``p = sigmoid(x)``, computed in logit space) or, when ``activated``, of probabilities ``x``."""
    if not activated:
        return F.binary_cross_entropy_with_logits(x, t, pos_weight=pos_weight, reduction='none')
    pos = t * clamped_log(x)
    if pos_weight is not None:
        pos = pos * pos_weight
    return -(pos + (1.0 - t) * clamped_log(1.0 - x))


def finish(name: str, loss: Tensor, pred: Tensor, weight: Optional[Tensor], reduction: str,
           avg_factor: AvgFactor) -> Tensor:
    """Weight, reduce and cast back to the input dtype."""
    return weight_reduce_loss(loss, weight, reduction, avg_factor, name=name).to(pred.dtype)
