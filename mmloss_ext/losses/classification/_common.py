"""Shared pieces of the classification losses: label checks, class masks, per-class weights and
probability-space logs. Private to the family; every loss computes through these helpers.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..inputs import (NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, check_int_tensor, check_label_range,
                      check_same_device, check_tensor, upcast)
from ..reduction import AvgFactor, weight_reduce_loss

#: hyper-parameter ranges of the family's losses: checked by each functional (``check_ranges``) and at
#: build time by each class (``hparam_ranges``)
RANGES = {
    'CrossEntropyLoss': dict(label_smoothing=UNIT_INTERVAL),
    'KLDivLoss': dict(temperature=POSITIVE),  # mmdet's KD loss asserts T >= 1; any T > 0 is valid here
    'BalancedCrossEntropyLoss': dict(beta=dict(low=0.0, high=1.0, high_open=True)),
    'FocalLoss': dict(gamma=NON_NEGATIVE, alpha=UNIT_INTERVAL),
    'QualityFocalLoss': dict(beta=NON_NEGATIVE),
    'VarifocalLoss': dict(alpha=NON_NEGATIVE, gamma=NON_NEGATIVE),  # mmdet asserts alpha >= 0
    'HingeLoss': dict(margin=NON_NEGATIVE),
}

#: torch's ``binary_cross_entropy`` clamps ``log`` at this value
LOG_FLOOR = -100.0


def check_logits(name: str, pred, *, min_dim: int = 1) -> Tensor:
    """``pred`` must be a floating-point tensor with at least ``min_dim`` dims; returns it in the
    compute dtype (float32 for half inputs)."""
    check_tensor(name, 'pred', pred)
    if pred.dim() < min_dim:
        raise ValueError(f'{name}: `pred` expected at least {min_dim} dims (N, C, ...), '
                         f'got shape {tuple(pred.shape)}')
    return upcast(pred)[0]


def check_class_labels(name: str, pred: Tensor, labels, high: int, *, arg: str = 'target',
                       ignore_index: Optional[int] = None) -> Tensor:
    """Integer labels shaped like ``pred`` without its class dim 1, values in ``[0, high]``."""
    check_int_tensor(name, arg, labels)
    expected = (pred.shape[0], *pred.shape[2:]) if pred.dim() >= 2 else None
    if expected is None or tuple(labels.shape) != expected:
        raise ValueError(f'{name}: `{arg}` expected integer labels of shape {expected} for `pred` of '
                         f'shape {tuple(pred.shape)} (classes on dim 1), got {tuple(labels.shape)}')
    check_same_device(name, pred, labels, ('pred', arg))
    check_label_values(name, arg, labels, high, ignore_index)
    return labels


def check_label_values(name: str, arg: str, labels: Tensor, high: int, ignore_index: Optional[int] = None) -> None:
    """Integer ``labels`` in ``[0, high]`` (or ``ignore_index``), without a host sync on accelerators."""
    check_int_tensor(name, arg, labels)
    check_label_range(name, arg, labels, 0, high, ignore_index)


def check_target_like(name: str, pred: Tensor, target, arg: str = 'target') -> Tensor:
    """A numeric target of ``pred``'s shape, returned in ``pred``'s (compute) dtype."""
    check_tensor(name, arg, target, floating=False)
    if target.shape != pred.shape:
        raise ValueError(f'{name}: `pred` and `{arg}` expected the same shape, '
                         f'got {tuple(pred.shape)} and {tuple(target.shape)}')
    check_same_device(name, pred, target, ('pred', arg))
    return target.to(pred.dtype)


def check_values(name: str, arg: str, ok: Tensor, expected: str) -> None:
    """Every entry of the bool tensor ``ok`` must be true: exact ``ValueError`` on CPU, an
    asynchronous device assert elsewhere (no host sync)."""
    if ok.numel() == 0:
        return
    if ok.device.type == 'cpu':
        bad = int((~ok).sum())
        if bad:
            raise ValueError(f'{name}: `{arg}` expected {expected}, got {bad} value(s) outside')
    else:
        torch._assert_async(ok.all(), f'{name}: `{arg}` expected {expected}')


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
        raise ValueError(f'{name}: `{arg}` expected {length} values (one per class{" or one" if allow_one else ""}), '
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


def require_sigmoid(name: str, use_sigmoid) -> None:
    """The losses mmdet defines for sigmoid only keep its ``use_sigmoid`` flag, which must be True."""
    if use_sigmoid is not True:
        raise ValueError(f'{name}: `use_sigmoid` expected True (only the sigmoid form exists), got {use_sigmoid!r}')
