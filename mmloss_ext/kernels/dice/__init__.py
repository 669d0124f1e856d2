"""The binary Dice kernel (C++ only): one loss per sample of ``pred`` (N, ...).

* entry point: :func:`dice_family`, which the losses call;
* operator ``mmloss_ext::dice(x (N, P), target (N, P), hp, w, out_mode)`` (:mod:`..operators`):
  per row, and the (N, 3) row sums kept for the backward; ``hp`` in the layout of
  :data:`~mmloss_ext.core.abi.DICE_HP`;
* kernel: ``dice.cpp`` (``dice_forward`` / ``dice_backward``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ...core import abi
from ...core.reduction import AvgFactor
from ..common import ELEMENTS, compute_dtype, prepare, reduce, split_weight
from ..operators import define, fake_out, upstream

__all__ = ['dice', 'dice_family']


def _forward(k, x, target, hp, w, out_mode):
    return k.dice_forward(hp, x, target, w, out_mode)


def _backward(k, grad, x, target, hp, w, out_mode, sums):
    scale, _, grow = upstream(out_mode, grad.to(x.dtype))  # a loss per row: its elements are its rows
    return k.dice_backward(hp, x, target, sums, w, scale, grow)


dice = define(
    'dice', 'dice', 'Tensor x, Tensor target, float[] hp, Tensor? w, int out_mode', _forward, _backward,
    lambda x, target, hp, w, out_mode: (fake_out(x, out_mode, x.shape[:1]),
                                        x.new_empty((x.shape[0], 3), dtype=torch.float64)),
    aux='sums', kernels_in=('cpp',))


def dice_family(name: str, pred: Tensor, target: Tensor, *, sigmoid: bool, naive: bool, eps: float,
                ignore_index: Optional[int] = None, weight: Optional[Tensor] = None, reduction: str = 'mean',
                avg_factor: AvgFactor = None) -> Tensor:
    """Binary Dice loss per sample of ``pred`` (N, ...) (logits with ``sigmoid``, else
    probabilities) against a ``target`` of the same number of elements; elements whose target
    equals ``ignore_index`` take no part in the sums."""
    dtype = compute_dtype(pred)
    n = pred.shape[0]
    x = prepare(pred, dtype).flatten(1)
    t = prepare(target.detach(), dtype).flatten(1)
    shape = (n,)
    wrow, wfull = split_weight(name, weight, shape, dtype)
    w = wrow if wfull is None else wfull
    hp = abi.pack(abi.DICE_HP, sigmoid=sigmoid, naive=naive, eps=eps, has_ignore=ignore_index is not None,
                  ignore_index=0 if ignore_index is None else ignore_index)

    def run(out_mode: int = ELEMENTS) -> Tensor:
        return dice(x, t, hp, w, out_mode)[0]

    return reduce(run, shape, reduction, avg_factor, name).to(pred.dtype)
