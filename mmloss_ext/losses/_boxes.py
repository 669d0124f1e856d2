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
* no ``sqrt``/``asin``/``atan(w/h)`` is evaluated where its derivative is infinite.

Denominators (the rule, :func:`guard`): a denominator ``d`` -- a union, an enclosing area or
squared diagonal, a squared enclosing side, the height under an aspect ratio, the larger of two
sizes -- is guarded as mmdet's ``bbox_overlaps`` guards its union, ``max(d, eps)``: exact
whenever ``d`` exceeds ``eps`` (so the loss does not depend on ``eps`` at any scale the boxes
resolve: pixels, normalised ``[0, 1]`` coordinates, 1e-3-pixel boxes), finite for degenerate
boxes, and without gradient below ``eps``. The drop-ins of mmdet losses whose own code adds
``eps`` instead (DIoU, CIoU, SIoU, Extended-IoU) add it where mmdet adds it, for parity: their
kernel kinds are :data:`~mmloss_ext.core.abi.BOX_EPS_ADDED`, and :class:`BoxPair` takes
``eps_added`` from the kind (:func:`box_loss`). Two ratios bounded by 1 need only to be finite
where their denominator is 0, and are exact wherever mmdet's are finite: CIoU's trade-off
:math:`v / (1 - IoU + v)` is 0 there (:func:`ciou_tradeoff`), and SIoU's angle cost
:math:`2|s_x s_y| / (s_x^2 + s_y^2)` clamps its denominator at float32's smallest normal number
(:func:`siou_penalty`).
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
from ..kernels import boxes as fused, use_fused
from .base import BaseLoss

__all__ = ['BoxLoss', 'BoxPair', 'IOU_MODES', 'guard', 'iou_penalties', 'variant_loss', 'box_loss', 'shape_cost']

#: the IoU variants a composable loss (Alpha/Inner/Focaler) can be built on
IOU_MODES = ('iou', 'giou', 'diou', 'ciou', 'eiou', 'siou')

_ASPECT = 4.0 / math.pi ** 2
# the cap of SIoU's distance exponent and the floor of its squared centre offset (see siou_penalty),
# the fused kernels' too: core/abi.py
from ..core.abi import BOX_EPS_ADDED, SIOU_EXP_MAX, SIOU_OFFSET2_MIN, box_kind  # noqa: E402


def guard(d: Tensor, eps: float, added: bool = False) -> Tensor:
    """The denominator ``d`` guarded by the rule of this module: ``max(d, eps)`` (its gradient 0
    below ``eps``), or ``d + eps`` where ``added`` (the mmdet drop-ins whose mmdet code adds it)."""
    return d + eps if added else d.clamp(min=eps)


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
        eps: the guard of every denominator, ``max(d, eps)`` (see :func:`guard`).
        eps_added: guard by ``d + eps`` instead (the mmdet drop-ins whose mmdet code does).

    Example:
        >>> g = BoxPair(torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[1., 0., 3., 2.]]), eps=0.0)
        >>> g.inter, g.union, g.iou, g.enclose_area, g.centre_dist2
        (tensor([2.]), tensor([6.]), tensor([0.3333]), tensor([6.]), tensor([1.]))
    """

    def __init__(self, pred: Tensor, target: Tensor, eps: float, eps_added: bool = False) -> None:
        self.pred, self.target = upcast(pred, target)
        self.eps = eps
        self.eps_added = eps_added

    def guard(self, d: Tensor) -> Tensor:
        """The denominator ``d`` guarded as this pair's losses guard theirs (:func:`guard`)."""
        return guard(d, self.eps, self.eps_added)

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
        """``area_p + area_t - inter``, guarded (at least ``eps``)."""
        ap, at = self.areas
        return self.guard(ap + at - self.inter)

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
        """``C_w * C_h``, guarded."""
        cw, ch = self.enclose_wh
        return self.guard(cw * ch)

    @cached_property
    def enclose_diag2(self) -> Tensor:
        """``C_w^2 + C_h^2``, guarded: the squared diagonal of the enclosing box."""
        cw, ch = self.enclose_wh
        return self.guard(cw * cw + ch * ch)

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
        r"""CIoU's :math:`v = \frac{4}{\pi^2}(\arctan\frac{w_t}{h_t} - \arctan\frac{w_p}{h_p})^2`.

        On clamped sizes with the heights guarded: ``atan(w/h)`` at ``h = 0`` would be
        ``atan(inf)`` forward and ``nan`` backward.
        """
        pw, ph, tw, th = self.wh
        return _ASPECT * (torch.atan(tw / self.guard(th)) - torch.atan(pw / self.guard(ph))) ** 2


# --- penalty terms of the IoU variants -------------------------------------------------------------

def shape_cost(omega_w: Tensor, omega_h: Tensor, theta: float = 4.0) -> Tensor:
    r"""SIoU / Shape-IoU shape cost :math:`\sum_{t=w,h} (1 - e^{-\omega_t})^\theta`."""
    return (-torch.expm1(-omega_w)) ** theta + (-torch.expm1(-omega_h)) ** theta


def size_mismatch(g: BoxPair) -> Tuple[Tensor, Tensor]:
    r""":math:`\omega_w = |w_p - w_t| / \max(w_p, w_t)` and :math:`\omega_h`, on clamped sizes.

    The larger height is guarded as the pair guards (mmdet's SIoU adds ``eps`` to both heights);
    the larger width always by ``max(., eps)`` (mmdet's SIoU has no ``eps`` there).
    """
    pw, ph, tw, th = g.wh
    return (pw - tw).abs() / guard(torch.maximum(pw, tw), g.eps), (ph - th).abs() / g.guard(torch.maximum(ph, th))


def giou_penalty(g: BoxPair) -> Tensor:
    r"""GIoU: :math:`(|C| - |A \cup B|) / |C|`."""
    return (g.enclose_area - g.union) / g.enclose_area


def diou_penalty(g: BoxPair) -> Tensor:
    r"""DIoU: :math:`\rho^2 / c^2` (centre distance over the enclosing diagonal)."""
    return g.centre_dist2 / g.enclose_diag2


def ciou_tradeoff(g: BoxPair) -> Tensor:
    r"""mmdet's CIoU trade-off :math:`\alpha = [IoU > 0.5]\, v / (1 - IoU + v)`, without gradient.

    As mmdet's (no ``eps``) wherever that is finite; 0 where the denominator is 0 (``1 - IoU``
    and ``v`` both 0: identical boxes at ``eps = 0``), where mmdet's is ``nan``. Since
    :math:`0 \le v \le 1 - IoU + v`, it is at most 1 and needs no other guard. (The cached terms
    are read outside ``no_grad``: a first access inside it would cache them without graph.)
    """
    iou, v = g.iou.detach(), g.aspect_v.detach()
    den = 1.0 - iou + v
    return torch.where((iou > 0.5) & (den > 0), v / den, torch.zeros_like(v))


def efficient_penalties(g: BoxPair) -> Tuple[Tensor, Tensor, Tensor]:
    r"""Efficient-IoU: :math:`\rho^2/c^2,\ (w_p-w_t)^2/C_w^2,\ (h_p-h_t)^2/C_h^2`.

    The width/height terms use the raw sizes: an ``x2 < x1`` prediction is pulled back.
    """
    pw, ph, tw, th = g.raw_wh
    cw, ch = g.enclose_wh
    return (diou_penalty(g), (pw - tw) ** 2 / g.guard(cw * cw), (ph - th) ** 2 / g.guard(ch * ch))


def siou_penalty(g: BoxPair, neg_gamma: bool) -> Tensor:
    r"""SIoU (Gevorgyan 2022): :math:`(\Delta + \Omega) / 2`.

    Angle cost :math:`\Lambda = \cos(2\arcsin s - \pi/2) = \sin(2\arcsin s) = 2 s\sqrt{1-s^2}` with
    :math:`s = \min(|s_x|, |s_y|)/\sigma`, :math:`\sigma^2 = s_x^2 + s_y^2`; since
    :math:`\sqrt{1-s^2}` is the other sine, :math:`\Lambda = 2|s_x s_y| / (s_x^2 + s_y^2)`, which
    avoids ``asin`` (infinite slope at 1) and the ``sqrt`` at 0. Distance cost
    :math:`\Delta = \sum_{t=x,y} (1 - e^{\gamma \rho_t})`, :math:`\rho_t = (s_t / C_t)^2`, with
    :math:`\gamma = \Lambda - 2` (the paper, ``neg_gamma=True``) or :math:`2 - \Lambda` (mmdet's
    default). Shape cost :math:`\Omega` from :func:`shape_cost` of :func:`size_mismatch`. As mmdet,
    the offsets carry ``+ eps`` and the enclosing sides are clamped at ``eps``.
    """
    eps = g.eps
    dx, dy = g.centre_delta
    sx, sy = dx + eps, dy + eps  # mmdet's offsets
    # at most 1 (2|ab| <= a^2 + b^2): the denominator floored at SIOU_OFFSET2_MIN, so the cost is
    # mmdet's for every offset but ~0 (|s| < 1e-19), and 0 with no gradient at 0
    angle = 2.0 * (sx * sy).abs() / (sx * sx + sy * sy).clamp(min=SIOU_OFFSET2_MIN)
    gamma = angle - 2.0 if neg_gamma else 2.0 - angle
    cw, ch = g.enclose_wh
    rho_x = (sx / guard(cw, eps)) ** 2
    rho_y = (sy / guard(ch, eps)) ** 2
    # the exponent capped at SIOU_EXP_MAX: beyond it (gamma > 0, an inverted box far outside a tiny
    # enclosure) the penalty is below -1e21 and the loss's clamp saturates anyway; uncapped, expm1
    # overflows and the clamp's zero gradient times inf is nan
    distance = (-torch.expm1((gamma * rho_x).clamp(max=SIOU_EXP_MAX))
                - torch.expm1((gamma * rho_y).clamp(max=SIOU_EXP_MAX)))
    return 0.5 * (distance + shape_cost(*size_mismatch(g)))


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
    (:func:`mmloss_ext.kernels.boxes.box_family`), taken when ``use_fused`` says so for ``impl``;
    the eager :class:`BoxPair` adds ``eps`` where that kind does
    (:data:`~mmloss_ext.core.abi.BOX_EPS_ADDED`), and clamps at it otherwise (and without a kernel).
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
    if kernel is not None and use_fused(name, impl, pred, op='boxes', others=(target, weight)):
        if focus is not None:
            weight = focus(weight)
        return fused.box_family(name, kernel[0], pred, target, eps=eps, hp=kernel[1], weight=weight,
                                reduction=reduction, avg_factor=avg_factor)
    eps_added = kernel is not None and box_kind(kernel[0]) in BOX_EPS_ADDED
    loss = fn(BoxPair(pred, target, eps, eps_added))
    return weight_reduce_loss(loss, weight, reduction, avg_factor, name=name).to(pred.dtype)
