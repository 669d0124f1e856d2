"""The per-family entry points of the fused paths, which the losses call.

Each family runs one custom operator of :mod:`.ops` (the kernels of its tensors' device: the C++
extension of ``csrc/`` on the CPU, the Triton kernels of :mod:`.gpu` on CUDA), whose autograd
formula saves only its inputs (cross-entropy and Dice also keep their (N,) row statistics). Its
forward returns the
weighted total (``'mean'``/``'sum'``: no elementwise loss is materialised), the elementwise loss
(``'none'``) or the per-row sums (``'none'`` of QFL); its backward is one pass writing the
gradient of ``pred``. Losses call the family entry points (:func:`sigmoid_family`,
:func:`residual_family`, :func:`box_family`, :func:`cross_entropy_family`, :func:`dice_family`)
after their own validation, and only when :func:`~.dispatch.use_fused` said so; these take care
of weights (mmdet's shapes), ``avg_factor`` and reductions (through
:func:`~mmloss_ext.core.reduction.reduce_summed`) and the half-precision policy (computed in
float32, returned in ``pred``'s dtype).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..core.abi import BoxKind, ElementwiseKind, OutMode, box_kind
from ..core.reduction import AvgFactor, adapt_weight, reduce_summed
from . import ops

# the elementwise kernels (ids and hyper-parameters: mmloss_ext/core/abi.py)
FOCAL = ElementwiseKind.FOCAL
QUALITY_FOCAL = ElementwiseKind.QUALITY_FOCAL
VARIFOCAL = ElementwiseKind.VARIFOCAL
SMOOTH_L1 = ElementwiseKind.SMOOTH_L1
BALANCED_L1 = ElementwiseKind.BALANCED_L1
#: the box kernels by the name :func:`box_family` and :func:`box_values` take (``'giou'``); ids and
#: hyper-parameters: :class:`~mmloss_ext.core.abi.BoxKind`, :data:`~mmloss_ext.core.abi.BOX_HP`
BOX_KINDS = {k.name.lower(): k for k in BoxKind}

_TOTAL, _ELEMENTS, _ROWS = OutMode.TOTAL, OutMode.ELEMENTS, OutMode.ROWS



def ran_fused(out: Tensor) -> bool:
    """Whether a fused kernel (one of the custom operators of :mod:`.ops`, either backend) produced
    ``out``: its autograd graph is searched through the casts and reductions after the kernel.

    Example:
        >>> from mmloss_ext import smooth_l1_loss
        >>> x = torch.zeros(3, 4, requires_grad=True)
        >>> ran_fused(smooth_l1_loss(x, torch.ones(3, 4), impl='eager'))
        False
    """
    todo, seen = [out.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if ops.is_fused_node(node):
            return True
        todo.extend(n for n, _ in node.next_functions)
    return False


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _prepare(x: Tensor, dtype: torch.dtype) -> Tensor:
    return x.to(dtype).contiguous()


def split_weight(name: str, weight: Optional[Tensor], shape: Sequence[int],
                 dtype: torch.dtype) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """``weight`` (any shape :func:`~mmloss_ext.core.reduction.adapt_weight` accepts for a loss
    of ``shape``) as ``(per_row (N,), full)``, at most one of them set."""
    if weight is None:
        return None, None
    w = adapt_weight(name, weight, weight.new_empty(()).expand(shape))  # shape only, no memory
    shape = torch.Size(shape)
    if w.dim() == len(shape) >= 1 and w.shape[0] == shape[0] > 0 and w[0].numel() == 1:
        return _prepare(w.reshape(-1), dtype), None
    return None, _prepare(w.expand(shape), dtype)


def _reduce(run, shape: Sequence[int], reduction: str, avg_factor: AvgFactor, name: str) -> Tensor:
    """``run(out_mode)`` gives the unreduced loss or its total: mmdet's reduction rules, once."""
    return reduce_summed(run, lambda: run(_TOTAL), torch.Size(shape).numel(), reduction, avg_factor, name=name)


def sigmoid_family(name: str, kind: int, hp: Sequence[float], x: Tensor, pred_dtype: torch.dtype, *,
                   target: Optional[Tensor] = None, labels: Optional[Tensor] = None,
                   score: Optional[Tensor] = None, weight: Optional[Tensor] = None, reduction: str = 'mean',
                   avg_factor: AvgFactor = None, row_sums: bool = False) -> Tensor:
    """Focal / quality focal / varifocal on logits ``x``: dense ``target`` of ``x``'s shape, or
    ``labels`` (N,) in ``[0, K]`` (one-hot, ``K`` = background) times an optional ``score`` (N,).
    ``row_sums``: the loss of a sample is the sum over its classes (QFL)."""
    dtype = _compute_dtype(x)
    x = _prepare(x, dtype)
    shape = (x.shape[0],) if row_sums else tuple(x.shape)
    wrow, wfull = split_weight(name, weight, shape, dtype)
    args = (None if target is None else _prepare(target, dtype), None if labels is None else labels.long().contiguous(),
            None if score is None else _prepare(score, dtype), wrow, wfull)
    hp = [float(h) for h in hp]

    def run(out_mode: int = _ROWS if row_sums else _ELEMENTS) -> Tensor:
        return ops.elementwise(x, int(kind), hp, *args, out_mode)

    return _reduce(run, shape, reduction, avg_factor, name).to(pred_dtype)


def residual_family(name: str, kind: int, hp: Sequence[float], pred: Tensor, target: Tensor, *,
                    weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    """Smooth L1 / L1 / balanced L1 of ``pred - target`` (same shape, at least 1-D)."""
    dtype = _compute_dtype(pred)
    shape = tuple(pred.shape)
    x = _prepare(pred, dtype)
    wrow, wfull = split_weight(name, weight, shape, dtype)
    t = _prepare(target, dtype)
    hp = [float(h) for h in hp]
    if x.numel() // max(x.shape[0], 1) < _WIDE:
        # narrow rows (boxes: N x 4) waste the vector lanes: run on a flat (R, _WIDE) view
        wfull = None if wrow is None and wfull is None else _prepare(
            (wrow.view(-1, *[1] * (x.dim() - 1)) if wfull is None else wfull).expand(shape), dtype)
        x, t, wfull, wrow = (_wide(a) for a in (x, t, wfull, None))

    def run(out_mode: int = _ELEMENTS) -> Tensor:
        out = ops.elementwise(x, int(kind), hp, t, None, None, wrow, wfull, out_mode)
        return out if out_mode == _TOTAL else out.reshape(shape)

    return _reduce(run, shape, reduction, avg_factor, name).to(pred.dtype)


#: rows narrower than this are regrouped into rows of this width (when the size allows)
_WIDE = 64


def _wide(a: Optional[Tensor]) -> Optional[Tensor]:
    """A contiguous tensor viewed as ``(numel / _WIDE, _WIDE)`` (one flat row if it does not divide)."""
    if a is None:
        return None
    flat = a.reshape(-1)
    return flat.view(-1, _WIDE) if flat.numel() % _WIDE == 0 else flat.view(1, -1)


def box_values(kind: str, pred: Tensor, target: Tensor, *, eps: float, hp: Sequence[float] = ()) -> Tensor:
    """The unweighted per-box loss ``(...)`` of ``kind``, without gradient, in the compute dtype
    (float32 for half precision): e.g. ``1 - IoU`` from ``'iou_linear'`` with ``hp=(0.0,)``."""
    dtype = _compute_dtype(pred)
    with torch.no_grad():
        p = _prepare(pred.detach(), dtype).reshape(-1, 4)
        t = _prepare(target.detach(), dtype).reshape(-1, 4)
        out = ops.boxes(p, t, int(box_kind(kind)), float(eps), [float(h) for h in hp], None, _ELEMENTS)
    return out.view(pred.shape[:-1])


def box_family(name: str, kind: str, pred: Tensor, target: Tensor, *, eps: float, hp: Sequence[float] = (),
               weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    """IoU-family loss of ``(..., 4)`` boxes; ``weight`` already per box (mmdet's (N, 4) rule applied).
    ``kind``: a key of :data:`BOX_KINDS`; ``hp``: its hyper-parameters
    (:data:`~mmloss_ext.core.abi.BOX_HP`)."""
    kind = box_kind(kind)
    dtype = _compute_dtype(pred)
    p = _prepare(pred, dtype).reshape(-1, 4)
    t = _prepare(target.detach(), dtype).reshape(-1, 4)
    shape = tuple(pred.shape[:-1])
    wrow, wfull = split_weight(name, weight, shape, dtype)
    if wrow is not None and len(shape) > 1:  # per sample of (B, N, 4) boxes: the kernel takes one per box
        wfull = wrow.view(-1, *[1] * (len(shape) - 1)).expand(shape)
    w = wrow if wfull is None else wfull.reshape(-1)
    hp = [float(h) for h in hp]

    def run(out_mode: int = _ELEMENTS) -> Tensor:
        out = ops.boxes(p, t, int(kind), float(eps), hp, w, out_mode)
        return out if out_mode == _TOTAL else out.view(shape)

    return _reduce(run, shape, reduction, avg_factor, name).to(pred.dtype)


# --- dense losses: softmax cross-entropy and binary Dice (csrc/dense.cpp) -------------------------

def cross_entropy_family(name: str, x: Tensor, labels: Tensor, pred_dtype: torch.dtype, *,
                         class_weight: Optional[Tensor] = None, ignore_index: int = -100,
                         weight: Optional[Tensor] = None, reduction: str = 'mean',
                         avg_factor: AvgFactor = None) -> Tensor:
    """Softmax cross-entropy of logits ``x`` (N, C) at integer ``labels`` (N,) in ``[0, C)`` or
    ``ignore_index`` (loss 0); ``class_weight`` (C,); per-sample ``weight``. The kernel checks the
    label values (``ValueError`` as :func:`~mmloss_ext.core.inputs.check_label_range`)."""
    dtype = _compute_dtype(x)
    x = _prepare(x, dtype)
    shape = (x.shape[0],)
    wrow, wfull = split_weight(name, weight, shape, dtype)
    w = wrow if wfull is None else wfull
    cw = None if class_weight is None else _prepare(class_weight.detach(), dtype)
    labels = labels.long().contiguous()

    def run(out_mode: int = _ELEMENTS) -> Tensor:
        return ops.cross_entropy(x, labels, cw, w, int(ignore_index), out_mode, x.requires_grad, name)[0]

    return _reduce(run, shape, reduction, avg_factor, name).to(pred_dtype)


def dice_family(name: str, pred: Tensor, target: Tensor, *, sigmoid: bool, naive: bool, eps: float,
                ignore_index: Optional[int] = None, weight: Optional[Tensor] = None, reduction: str = 'mean',
                avg_factor: AvgFactor = None) -> Tensor:
    """Binary Dice loss per sample of ``pred`` (N, ...) (logits with ``sigmoid``, else
    probabilities) against a ``target`` of the same number of elements; elements whose target
    equals ``ignore_index`` take no part in the sums."""
    dtype = _compute_dtype(pred)
    n = pred.shape[0]
    x = _prepare(pred, dtype).flatten(1)
    t = _prepare(target.detach(), dtype).flatten(1)
    shape = (n,)
    wrow, wfull = split_weight(name, weight, shape, dtype)
    w = wrow if wfull is None else wfull
    hp = [float(sigmoid), float(naive), float(eps), float(ignore_index is not None),
          float(0 if ignore_index is None else ignore_index)]

    def run(out_mode: int = _ELEMENTS) -> Tensor:
        return ops.dice(x, t, hp, w, out_mode)[0]

    return _reduce(run, shape, reduction, avg_factor, name).to(pred.dtype)
