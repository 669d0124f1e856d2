"""The elementwise kernels: one loss per element of ``x`` (N, K) -- sigmoid focal, quality focal,
varifocal (logits against a dense target or labels) and smooth L1 / L1 / balanced L1 (of
``pred - target``).

* entry points: :func:`sigmoid_family` and :func:`residual_family`, which the losses call;
* operator ``mmloss_ext::elementwise(x, kind, hp, target, labels, score, wrow, wfull, out_mode)``
  (:mod:`..operators`), its kinds and hyper-parameters those of
  :class:`~mmloss_ext.core.abi.ElementwiseKind` and :data:`~mmloss_ext.core.abi.ELEMENTWISE_HP`;
* kernels: ``elementwise.cpp`` (C++, ``elementwise_forward`` / ``elementwise_backward``) and
  :mod:`.elementwise_triton` (the same functions in Triton).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from ...core.abi import ElementwiseKind
from ...core.reduction import AvgFactor
from ..common import ELEMENTS, ROWS, TOTAL, compute_dtype, prepare, reduce, split_weight
from ..operators import define, fake_out, upstream

__all__ = ['FOCAL', 'QUALITY_FOCAL', 'VARIFOCAL', 'SMOOTH_L1', 'BALANCED_L1', 'elementwise', 'sigmoid_family',
           'residual_family']

FOCAL = ElementwiseKind.FOCAL
QUALITY_FOCAL = ElementwiseKind.QUALITY_FOCAL
VARIFOCAL = ElementwiseKind.VARIFOCAL
SMOOTH_L1 = ElementwiseKind.SMOOTH_L1
BALANCED_L1 = ElementwiseKind.BALANCED_L1


def _forward(k, x, kind, hp, target, labels, score, wrow, wfull, out_mode):
    return k.elementwise_forward(kind, hp, x, target, labels, score, wrow, wfull, out_mode)


def _backward(k, grad, x, kind, hp, target, labels, score, wrow, wfull, out_mode):
    scale, grow, gfull = upstream(out_mode, grad.to(x.dtype))
    return k.elementwise_backward(kind, hp, x, target, labels, score, wrow, wfull, scale, grow, gfull)


#: ``elementwise(x, kind, hp, target, labels, score, wrow, wfull, out_mode)``
elementwise = define(
    'elementwise', 'elementwise', 'Tensor x, int kind, float[] hp, Tensor? target, Tensor? labels, Tensor? score, '
    'Tensor? wrow, Tensor? wfull, int out_mode', _forward, _backward,
    lambda x, kind, hp, target, labels, score, wrow, wfull, out_mode: fake_out(x, out_mode, x.shape))


def sigmoid_family(name: str, kind: int, hp: Sequence[float], x: Tensor, pred_dtype: torch.dtype, *,
                   target: Optional[Tensor] = None, labels: Optional[Tensor] = None,
                   score: Optional[Tensor] = None, weight: Optional[Tensor] = None, reduction: str = 'mean',
                   avg_factor: AvgFactor = None, row_sums: bool = False) -> Tensor:
    """Focal / quality focal / varifocal on logits ``x``: dense ``target`` of ``x``'s shape, or
    ``labels`` (N,) in ``[0, K]`` (one-hot, ``K`` = background) times an optional ``score`` (N,).
    ``row_sums``: the loss of a sample is the sum over its classes (QFL)."""
    dtype = compute_dtype(x)
    x = prepare(x, dtype)
    shape = (x.shape[0],) if row_sums else tuple(x.shape)
    wrow, wfull = split_weight(name, weight, shape, dtype)
    args = (None if target is None else prepare(target, dtype), None if labels is None else labels.long().contiguous(),
            None if score is None else prepare(score, dtype), wrow, wfull)
    hp = [float(h) for h in hp]

    def run(out_mode: int = ROWS if row_sums else ELEMENTS) -> Tensor:
        return elementwise(x, int(kind), hp, *args, out_mode)

    return reduce(run, shape, reduction, avg_factor, name).to(pred_dtype)


#: rows narrower than this are regrouped into rows of this width (when the size allows)
_WIDE = 64


def _wide(a: Optional[Tensor]) -> Optional[Tensor]:
    """A contiguous tensor viewed as ``(numel / _WIDE, _WIDE)`` (one flat row if it does not divide)."""
    if a is None:
        return None
    flat = a.reshape(-1)
    return flat.view(-1, _WIDE) if flat.numel() % _WIDE == 0 else flat.view(1, -1)


def residual_family(name: str, kind: int, hp: Sequence[float], pred: Tensor, target: Tensor, *,
                    weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    """Smooth L1 / L1 / balanced L1 of ``pred - target`` (same shape, at least 1-D)."""
    dtype = compute_dtype(pred)
    shape = tuple(pred.shape)
    x = prepare(pred, dtype)
    wrow, wfull = split_weight(name, weight, shape, dtype)
    t = prepare(target, dtype)
    hp = [float(h) for h in hp]
    if x.numel() // max(x.shape[0], 1) < _WIDE:
        # narrow rows (boxes: N x 4) waste the vector lanes: run on a flat (R, _WIDE) view
        wfull = None if wrow is None and wfull is None else prepare(
            (wrow.view(-1, *[1] * (x.dim() - 1)) if wfull is None else wfull).expand(shape), dtype)
        x, t, wfull, wrow = (_wide(a) for a in (x, t, wfull, None))

    def run(out_mode: int = ELEMENTS) -> Tensor:
        out = elementwise(x, int(kind), hp, t, None, None, wrow, wfull, out_mode)
        return out if out_mode == TOTAL else out.reshape(shape)

    return reduce(run, shape, reduction, avg_factor, name).to(pred.dtype)
