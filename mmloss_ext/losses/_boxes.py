r"""Shared geometry of aligned box pairs for the IoU family.

:class:`BoxPair` computes, once and lazily, every term the box losses reuse: sizes, areas,
intersection, union, IoU, the enclosing box, the centre offset and the CIoU aspect-ratio term.
:func:`iou_penalties` turns a pair into ``(IoU, penalty terms)`` for one of :data:`IOU_MODES`,
so that a loss built on an IoU variant (power, inner, focaler) writes only its own term and
``1 - IoU + sum(penalties)`` is the plain variant.

Numerics (shared by every loss):

* half-precision boxes are computed in float32 (the caller casts the loss back);
* widths and heights are clamped at 0 before they make an area, so an untrained head's
  ``x2 < x1`` prediction has zero area instead of a negative one that could cancel the union;
* every denominator carries ``eps`` (union, enclosing area, enclosing diagonal, aspect ratios);
* no ``sqrt``/``asin``/``atan(w/h)`` is evaluated where its derivative is infinite.
"""
from __future__ import annotations

import math
import warnings
from functools import cached_property
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from ..core.compat import is_compiling
from ..core.inputs import check_boxes, upcast
from ..core.reduction import AvgFactor, per_box_weight, weight_reduce_loss
from ..kernels import CPU_AND_CUDA, use_fused
from ..kernels import functions as fused
from .base import BaseLoss

__all__ = ['BoxLoss', 'BoxPair', 'IOU_MODES', 'iou_penalties', 'variant_loss', 'box_loss', 'shape_cost']

#: the IoU variants a composable loss (Alpha/Inner/Focaler) can be built on
IOU_MODES = ('iou', 'giou', 'diou', 'ciou', 'eiou', 'siou')

_ASPECT = 4.0 / math.pi ** 2
# the cap of SIoU's distance exponent (see siou_penalty), the fused kernels' too: core/abi.py
from ..core.abi import SIOU_EXP_MAX  # noqa: E402


class BoxLoss(BaseLoss):
    """Base of the box family: losses of decoded ``(x1, y1, x2, y2)`` boxes (heads with
    ``reg_decoded_bbox=True``).

    The first call in training mode looks at the targets once: when most of them are inverted
    (``x2 < x1`` or ``y2 < y1``), they are regression deltas rather than boxes, and a warning names
    ``reg_decoded_bbox=True``. That one look reads a value on the host (a device sync, once); later
    calls never look again.
    """
    family = 'bbox'
    inputs = 'pred, target: (N, 4) decoded boxes (x1, y1, x2, y2)'

    def forward(self, pred: Tensor, target=None, weight: Optional[Tensor] = None, avg_factor: AvgFactor = None,
                reduction_override: Optional[str] = None, **kwargs) -> Tensor:
        out = super().forward(pred, target, weight, avg_factor, reduction_override, **kwargs)
        # after the call, so that inputs the loss refuses get its error rather than a hint
        if self.training and not self.__dict__.get('_looked_at_targets', False):
            self._looked_at_targets = True
            if not is_compiling():
                warn_if_deltas(type(self).__name__, target, weight)
        return out


#: the fraction of inverted target boxes from which they are taken for regression deltas: a head
#: that feeds deltas gives x2 < x1 or y2 < y1 for about 3 in 4 positive samples, decoded boxes never
DELTA_LIKE_FRACTION = 0.5


def warn_if_deltas(name: str, target, weight: Optional[Tensor] = None) -> bool:
    """Warn (and return True) when most target boxes of positive weight are inverted: a head is
    feeding regression deltas to a loss of decoded boxes."""
    if not isinstance(target, Tensor) or target.dim() < 1 or target.shape[-1] != 4 or target.numel() == 0:
        return False
    with torch.no_grad():
        t = target.detach().reshape(-1, 4)
        inverted = (t[:, 2] < t[:, 0]) | (t[:, 3] < t[:, 1])
        keep = torch.ones_like(inverted)
        if isinstance(weight, Tensor):
            w = per_box_weight(weight, target)
            if w is not None and w.numel() == keep.numel():
                keep = w.reshape(-1) > 0
        fraction = float((inverted & keep).sum() / keep.sum().clamp(min=1))
    if fraction <= DELTA_LIKE_FRACTION:
        return False
    warnings.warn(f'{name}: {fraction:.0%} of the target boxes have x2 < x1 or y2 < y1: they look like regression '
                  f'deltas, not decoded (x1, y1, x2, y2) boxes. Set reg_decoded_bbox=True in the head that uses '
                  f'{name} (`python -m mmloss_ext check CONFIG` finds such heads before training).', stacklevel=3)
    return True


class BoxPair:
    r"""Geometry of aligned boxes ``pred``, ``target`` of shape ``(..., 4)`` as ``(x1, y1, x2, y2)``.

    Every attribute is computed on first access and cached; all have shape ``(...)``.

    Args:
        pred, target: boxes (float16/bfloat16 are computed in float32).
        eps: added to every denominator.

    Example:
        >>> g = BoxPair(torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[1., 0., 3., 2.]]), eps=0.0)
        >>> g.inter, g.union, g.iou, g.enclose_area, g.centre_dist2
        (tensor([2.]), tensor([6.]), tensor([0.3333]), tensor([6.]), tensor([1.]))
    """

    def __init__(self, pred: Tensor, target: Tensor, eps: float) -> None:
        self.pred, self.target = upcast(pred, target)
        self.eps = eps

    # --- sizes and areas -------------------------------------------------------------------------
    @cached_property
    def raw_wh(self) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(pred_w, pred_h, target_w, target_h)`` unclamped (negative for ``x2 < x1``)."""
        p, t = self.pred, self.target
        return p[..., 2] - p[..., 0], p[..., 3] - p[..., 1], t[..., 2] - t[..., 0], t[..., 3] - t[..., 1]

    @cached_property
    def wh(self) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(pred_w, pred_h, target_w, target_h)`` clamped at 0."""
        return tuple(s.clamp(min=0) for s in self.raw_wh)

    @cached_property
    def areas(self) -> Tuple[Tensor, Tensor]:
        pw, ph, tw, th = self.wh
        return pw * ph, tw * th

    # --- intersection / union --------------------------------------------------------------------
    @cached_property
    def inter_corners(self) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(ix1, iy1, ix2, iy2)`` of the intersection, unclamped (``ix2 < ix1`` when disjoint)."""
        p, t = self.pred, self.target
        lt = torch.maximum(p[..., :2], t[..., :2])
        rb = torch.minimum(p[..., 2:], t[..., 2:])
        return lt[..., 0], lt[..., 1], rb[..., 0], rb[..., 1]

    @cached_property
    def inter(self) -> Tensor:
        ix1, iy1, ix2, iy2 = self.inter_corners
        return (ix2 - ix1).clamp(min=0) * (iy2 - iy1).clamp(min=0)

    @cached_property
    def union(self) -> Tensor:
        """``area_p + area_t - inter + eps`` (at least ``eps``)."""
        ap, at = self.areas
        return ap + at - self.inter + self.eps

    @cached_property
    def iou(self) -> Tensor:
        return self.inter / self.union

    # --- enclosing box ---------------------------------------------------------------------------
    @cached_property
    def enclose_corners(self) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        p, t = self.pred, self.target
        lt = torch.minimum(p[..., :2], t[..., :2])
        rb = torch.maximum(p[..., 2:], t[..., 2:])
        return lt[..., 0], lt[..., 1], rb[..., 0], rb[..., 1]

    @cached_property
    def enclose_wh(self) -> Tuple[Tensor, Tensor]:
        ex1, ey1, ex2, ey2 = self.enclose_corners
        return (ex2 - ex1).clamp(min=0), (ey2 - ey1).clamp(min=0)

    @cached_property
    def enclose_area(self) -> Tensor:
        """``C_w * C_h + eps``."""
        cw, ch = self.enclose_wh
        return cw * ch + self.eps

    @cached_property
    def enclose_diag2(self) -> Tensor:
        """``C_w^2 + C_h^2 + eps``: the squared diagonal of the enclosing box."""
        cw, ch = self.enclose_wh
        return cw * cw + ch * ch + self.eps

    # --- centres and shapes ----------------------------------------------------------------------
    @cached_property
    def centre_delta(self) -> Tuple[Tensor, Tensor]:
        """Target centre minus pred centre, ``(dx, dy)``.

        As a sum of corner differences: exactly 0 for identical boxes, and no cancellation of large
        coordinates for far-apart ones.
        """
        p, t = self.pred, self.target
        d = ((t[..., :2] - p[..., :2]) + (t[..., 2:] - p[..., 2:])) * 0.5
        return d[..., 0], d[..., 1]

    @cached_property
    def centre_dist2(self) -> Tensor:
        """:math:`\\rho^2`: squared distance between the centres."""
        dx, dy = self.centre_delta
        return dx * dx + dy * dy

    @cached_property
    def aspect_v(self) -> Tensor:
        r"""CIoU's :math:`v = \frac{4}{\pi^2}(\arctan\frac{w_t}{h_t+\epsilon} - \arctan\frac{w_p}{h_p+\epsilon})^2`.

        On clamped sizes with ``eps`` in the denominator: ``atan(w/h)`` at ``h = 0`` would be
        ``atan(inf)`` forward and ``nan`` backward.
        """
        pw, ph, tw, th = self.wh
        return _ASPECT * (torch.atan(tw / (th + self.eps)) - torch.atan(pw / (ph + self.eps))) ** 2


# --- penalty terms of the IoU variants -------------------------------------------------------------

def shape_cost(omega_w: Tensor, omega_h: Tensor, theta: float = 4.0) -> Tensor:
    r"""SIoU / Shape-IoU shape cost :math:`\sum_{t=w,h} (1 - e^{-\omega_t})^\theta`."""
    return (-torch.expm1(-omega_w)) ** theta + (-torch.expm1(-omega_h)) ** theta


def size_mismatch(g: BoxPair, eps: float) -> Tuple[Tensor, Tensor]:
    r""":math:`\omega_w = |w_p - w_t| / \max(w_p, w_t)` and :math:`\omega_h`, on clamped sizes."""
    pw, ph, tw, th = g.wh
    return (pw - tw).abs() / (torch.maximum(pw, tw) + eps), (ph - th).abs() / (torch.maximum(ph, th) + eps)


def giou_penalty(g: BoxPair) -> Tensor:
    r"""GIoU: :math:`(|C| - |A \cup B|) / |C|`."""
    return (g.enclose_area - g.union) / g.enclose_area


def diou_penalty(g: BoxPair) -> Tensor:
    r"""DIoU: :math:`\rho^2 / c^2` (centre distance over the enclosing diagonal)."""
    return g.centre_dist2 / g.enclose_diag2


def ciou_tradeoff(g: BoxPair) -> Tensor:
    r"""mmdet's CIoU trade-off :math:`\alpha = [IoU > 0.5]\, v / (1 - IoU + v)`, without gradient.

    ``eps`` in the denominator: for identical boxes ``1 - IoU`` and ``v`` are both 0. (The cached
    terms are read outside ``no_grad``: a first access inside it would cache them without graph.)
    """
    iou, v = g.iou.detach(), g.aspect_v.detach()
    return (iou > 0.5).to(v.dtype) * v / (1.0 - iou + v + g.eps)


def efficient_penalties(g: BoxPair) -> Tuple[Tensor, Tensor, Tensor]:
    r"""Efficient-IoU: :math:`\rho^2/c^2,\ (w_p-w_t)^2/C_w^2,\ (h_p-h_t)^2/C_h^2`.

    The width/height terms use the raw sizes: an ``x2 < x1`` prediction is pulled back.
    """
    pw, ph, tw, th = g.raw_wh
    cw, ch = g.enclose_wh
    return (diou_penalty(g), (pw - tw) ** 2 / (cw * cw + g.eps), (ph - th) ** 2 / (ch * ch + g.eps))


def siou_penalty(g: BoxPair, neg_gamma: bool) -> Tensor:
    r"""SIoU (Gevorgyan 2022): :math:`(\Delta + \Omega) / 2`.

    Angle cost :math:`\Lambda = \cos(2\arcsin s - \pi/2) = \sin(2\arcsin s) = 2 s\sqrt{1-s^2}` with
    :math:`s = \min(|s_x|, |s_y|)/\sigma`, :math:`\sigma^2 = s_x^2 + s_y^2`; since
    :math:`\sqrt{1-s^2}` is the other sine, :math:`\Lambda = 2|s_x s_y| / (s_x^2 + s_y^2)`, which
    avoids ``asin`` (infinite slope at 1) and the ``sqrt`` at 0. Distance cost
    :math:`\Delta = \sum_{t=x,y} (1 - e^{\gamma \rho_t})`, :math:`\rho_t = (s_t / C_t)^2`, with
    :math:`\gamma = \Lambda - 2` (the paper, ``neg_gamma=True``) or :math:`2 - \Lambda` (mmdet's
    default). Shape cost :math:`\Omega` from :func:`shape_cost`.
    """
    eps = g.eps
    dx, dy = g.centre_delta
    sx, sy = dx + eps, dy + eps  # mmdet's offsets
    angle = 2.0 * (sx * sy).abs() / (sx * sx + sy * sy).clamp(min=eps * eps)
    gamma = angle - 2.0 if neg_gamma else 2.0 - angle
    cw, ch = g.enclose_wh
    rho_x = (sx / cw.clamp(min=eps)) ** 2
    rho_y = (sy / ch.clamp(min=eps)) ** 2
    # the exponent capped at SIOU_EXP_MAX: beyond it (gamma > 0, an inverted box far outside a tiny
    # enclosure) the penalty is below -1e21 and the loss's clamp saturates anyway; uncapped, expm1
    # overflows and the clamp's zero gradient times inf is nan
    distance = (-torch.expm1((gamma * rho_x).clamp(max=SIOU_EXP_MAX))
                - torch.expm1((gamma * rho_y).clamp(max=SIOU_EXP_MAX)))
    return 0.5 * (distance + shape_cost(*size_mismatch(g, eps)))


def iou_penalties(g: BoxPair, mode: str) -> Tuple[Tensor, Tuple[Tensor, ...]]:
    r"""``(IoU, penalty terms)`` of an IoU variant; the variant's loss is ``1 - IoU + sum(terms)``.

    ============  ==========================================================================
    ``'iou'``     no penalty
    ``'giou'``    :func:`giou_penalty`
    ``'diou'``    :func:`diou_penalty`
    ``'ciou'``    :func:`diou_penalty`, :math:`\alpha v` (:func:`ciou_tradeoff`, mmdet's form)
    ``'eiou'``    Efficient-IoU, :func:`efficient_penalties`
    ``'siou'``    :func:`siou_penalty` as in the paper (``neg_gamma=True``: every term >= 0)
    ============  ==========================================================================
    """
    if mode == 'iou':
        terms = ()
    elif mode == 'giou':
        terms = (giou_penalty(g),)
    elif mode == 'diou':
        terms = (diou_penalty(g),)
    elif mode == 'ciou':
        terms = (diou_penalty(g), ciou_tradeoff(g) * g.aspect_v)
    elif mode == 'eiou':
        terms = efficient_penalties(g)
    else:
        terms = (siou_penalty(g, neg_gamma=True),)
    return g.iou, terms


def variant_loss(g: BoxPair, mode: str, clamp: bool = False) -> Tensor:
    """``1 - IoU + sum(penalties)`` of an IoU variant; ``clamp`` clamps ``IoU - sum`` to [-1, 1] (mmdet)."""
    iou, terms = iou_penalties(g, mode)
    score = iou - sum(terms)
    return 1.0 - (score.clamp(min=-1.0, max=1.0) if clamp else score)


def box_loss(name: str, pred: Tensor, target: Tensor, eps: float, fn: Callable[[BoxPair], Tensor],
             weight: Optional[Tensor], reduction: str, avg_factor: AvgFactor, *,
             per_box: bool = True, kernel: Optional[tuple] = None,
             focus: Optional[Callable[[Optional[Tensor]], Optional[Tensor]]] = None, impl: str = 'eager',
             detach_target: bool = False) -> Tensor:
    """The shared body of a box loss: validate, ``fn(BoxPair)``, weight, reduce, cast back.

    ``per_box``: an ``(..., 4)`` weight is averaged over the coordinates (mmdet's rule) for a
    per-box loss of shape ``(...)``. ``kernel``: ``(kind, hp)`` of the fused kernel of ``fn``
    (:func:`mmloss_ext.kernels.functions.box_family`), taken when ``use_fused`` says so for ``impl``.
    ``focus`` (fused path only): ``focus(per-box weight or None)`` returns the per-box weight with
    the loss's gradient-free factor folded in (Focal-EIoU's ``IoU^gamma``, Wise-IoU v2/v3's
    focusing coefficient), so that the kernel computes ``factor * kernel loss``, as ``fn`` does.
    ``detach_target``: no gradient flows to ``target`` (a loss that treats it as fixed).
    """
    check_boxes(name, pred, target)
    if detach_target:
        target = target.detach()
    if per_box:
        weight = per_box_weight(weight, pred)
    if kernel is not None and use_fused(name, impl, pred, others=(target, weight), devices=CPU_AND_CUDA):
        if focus is not None:
            weight = focus(weight)
        return fused.box_family(name, kernel[0], pred, target, eps=eps, hp=kernel[1], weight=weight,
                                reduction=reduction, avg_factor=avg_factor)
    loss = fn(BoxPair(pred, target, eps))
    return weight_reduce_loss(loss, weight, reduction, avg_factor, name=name).to(pred.dtype)
