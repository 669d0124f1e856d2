"""The box kernels: the IoU family, one loss per pair of ``x1y1x2y2`` boxes.

* entry points: :func:`box_family` (the weighted, reduced loss) and :func:`box_values` (the
  unweighted per-box values, no gradient), which the losses call;
* operator ``mmloss_ext::boxes(pred (N, 4), target (N, 4), kind, eps, hp, w, out_mode)``
  (:mod:`..operators`), its kinds and hyper-parameters those of
  :class:`~mmloss_ext.core.abi.BoxKind` and :data:`~mmloss_ext.core.abi.BOX_HP`, per box;
* kernels: ``boxes.cpp`` (C++, ``box_forward`` / ``box_backward``) and :mod:`.boxes_triton`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from ...core.abi import BoxKind, box_kind
from ...core.reduction import AvgFactor
from ..common import ELEMENTS, TOTAL, compute_dtype, prepare, reduce, split_weight
from ..operators import define, fake_out, upstream

__all__ = ['BOX_KINDS', 'boxes', 'box_family', 'box_values']

#: the box kernels by the name :func:`box_family` and :func:`box_values` take (``'giou'``)
BOX_KINDS = {k.name.lower(): k for k in BoxKind}


def _forward(k, pred, target, kind, eps, hp, w, out_mode):
    return k.box_forward(kind, eps, hp, pred, target, w, out_mode)


def _backward(k, grad, pred, target, kind, eps, hp, w, out_mode):
    scale, _, per_box = upstream(out_mode, grad.to(pred.dtype))
    return k.box_backward(kind, eps, hp, pred, target, w, scale, per_box)


#: ``boxes(pred (N, 4), target (N, 4), kind, eps, hp, w, out_mode)``: per box
boxes = define(
    'boxes', 'boxes', 'Tensor pred, Tensor target, int kind, float eps, float[] hp, Tensor? w, int out_mode',
    _forward, _backward,
    lambda pred, target, kind, eps, hp, w, out_mode: fake_out(pred, out_mode, pred.shape[:1]))


def box_values(kind: str, pred: Tensor, target: Tensor, *, eps: float, hp: Sequence[float] = ()) -> Tensor:
    """The unweighted per-box loss ``(...)`` of ``kind``, without gradient, in the compute dtype
    (float32 for half precision): e.g. ``1 - IoU`` from ``'iou_linear'`` with ``hp=(0.0,)``."""
    dtype = compute_dtype(pred)
    with torch.no_grad():
        p = prepare(pred.detach(), dtype).reshape(-1, 4)
        t = prepare(target.detach(), dtype).reshape(-1, 4)
        out = boxes(p, t, int(box_kind(kind)), float(eps), [float(h) for h in hp], None, ELEMENTS)
    return out.view(pred.shape[:-1])


def box_family(name: str, kind: str, pred: Tensor, target: Tensor, *, eps: float, hp: Sequence[float] = (),
               weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    """IoU-family loss of ``(..., 4)`` boxes; ``weight`` already per box (mmdet's (N, 4) rule applied).
    ``kind``: a key of :data:`BOX_KINDS`; ``hp``: its hyper-parameters
    (:data:`~mmloss_ext.core.abi.BOX_HP`)."""
    kind = box_kind(kind)
    dtype = compute_dtype(pred)
    p = prepare(pred, dtype).reshape(-1, 4)
    t = prepare(target.detach(), dtype).reshape(-1, 4)
    shape = tuple(pred.shape[:-1])
    wrow, wfull = split_weight(name, weight, shape, dtype)
    if wrow is not None and len(shape) > 1:  # per sample of (B, N, 4) boxes: the kernel takes one per box
        wfull = wrow.view(-1, *[1] * (len(shape) - 1)).expand(shape)
    w = wrow if wfull is None else wfull.reshape(-1)
    hp = [float(h) for h in hp]

    def run(out_mode: int = ELEMENTS) -> Tensor:
        out = boxes(p, t, int(kind), float(eps), hp, w, out_mode)
        return out if out_mode == TOTAL else out.view(shape)

    return reduce(run, shape, reduction, avg_factor, name).to(pred.dtype)
