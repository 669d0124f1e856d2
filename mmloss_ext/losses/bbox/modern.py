r"""Newer IoU variants: Efficient-, Alpha-, Wise-, MPD-, Inner-, Focaler-, Shape-IoU and NWD.

The composable losses (:func:`alpha_iou_loss`, :func:`inner_iou_loss`, :func:`focaler_iou_loss`)
are built on any of the IoU variants of :data:`~mmloss_ext.losses._boxes.IOU_MODES` through
:func:`~mmloss_ext.losses._boxes.iou_penalties`, so each adds only its own term. Every
denominator here (unions, enclosing areas, squared enclosing diagonals and sides, the larger of
two sizes, Shape-IoU's shape weights) is guarded by ``max(d, eps)``, the rule of
:mod:`~mmloss_ext.losses._boxes`: exact whenever ``d`` exceeds ``eps``, so these losses do not
depend on ``eps`` for boxes of any scale the coordinates resolve. Losses whose contract has no
``eps`` guard with ``1e-7``.
"""
from __future__ import annotations

import numbers
from typing import Dict, Optional, Sequence

import torch
from torch import Tensor

from ...core.errors import LossValueError
from ...core.hparams import NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, Choice, declare
from ...core.inputs import check_tensor
from ...core.reduction import AvgFactor, adapt_weight, per_box_weight
from ...kernels import boxes as fused
from ...registry import register_loss
from ..base import StatefulLoss, sum_over_ranks
from .._boxes import (IOU_MODES, BoxLoss, BoxPair, box_loss, guard, iou_penalties, shape_cost, size_mismatch,
                      variant_loss)
from .. import probes

__all__ = [
    'efficient_iou_loss', 'alpha_iou_loss', 'wiou_loss', 'mpdiou_loss', 'inner_iou_loss',
    'focaler_iou_loss', 'shape_iou_loss', 'nwd_loss',
    'EfficientIoULoss', 'AlphaIoULoss', 'WIoULoss', 'MPDIoULoss', 'InnerIoULoss', 'FocalerIoULoss',
    'ShapeIoULoss', 'NWDLoss',
]

_EPS = 1e-7
WIOU_VERSIONS = ('v1', 'v2', 'v3')


@declare('EfficientIoULoss', probe=probes.boxes, eps=NON_NEGATIVE, focal_gamma=NON_NEGATIVE)
def efficient_iou_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-7, focal_gamma: float = 0.0,
                       impl: str = 'auto', weight: Optional[Tensor] = None, reduction: str = 'mean',
                       avg_factor: AvgFactor = None) -> Tensor:
    r"""Efficient-IoU loss and Focal-EIoU (Zhang et al. 2021, "Focal and Efficient IOU Loss").

    .. math::
        \ell_{EIoU} = 1 - \mathrm{IoU} + \frac{\rho^2(b_p, b_t)}{c^2} + \frac{(w_p - w_t)^2}{C_w^2}
            + \frac{(h_p - h_t)^2}{C_h^2},\qquad \ell = \mathrm{IoU}_*^{\gamma}\, \ell_{EIoU}

    with :math:`C_w, C_h, c` the width, height and diagonal of the enclosing box and
    :math:`\mathrm{IoU}_*` the IoU without gradient (the focal weight only re-weights boxes).
    The union, :math:`c^2`, :math:`C_w^2` and :math:`C_h^2` are guarded by ``max(., eps)``.
    Args and returns as :func:`~mmloss_ext.losses.bbox.classic.iou_loss`, but:

    Args:
        eps: the floor of the union, :math:`c^2`, :math:`C_w^2` and :math:`C_h^2`, ``max(., eps)``.
        focal_gamma: the power :math:`\gamma` of the focal weight (0: the plain Efficient-IoU).

    Example:
        >>> p, t = torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[0., 0., 2., 1.]])
        >>> efficient_iou_loss(p, t)  # 1 - 0.5 + 0.25/8 + 0/4 + 1/4
        tensor(0.7812)
        >>> efficient_iou_loss(p, t, focal_gamma=1.0)  # times IoU = 0.5
        tensor(0.3906)
    """
    name = efficient_iou_loss.spec.loss

    def fn(g: BoxPair) -> Tensor:
        loss = variant_loss(g, 'eiou')
        return loss if focal_gamma == 0 else g.iou.detach() ** focal_gamma * loss

    def focus(box_weight: Optional[Tensor]) -> Tensor:
        # IoU^gamma = exp(-gamma * (-log IoU)) from the 'iou_log' kernel (floor 0: IoU = 0 gives 0);
        # 1 - (1 - IoU) from 'iou_linear' would lose the relative precision of a small IoU
        factor = torch.exp(-focal_gamma * fused.box_values('iou_log', pred, target, eps=eps, hp=(0.0,)))
        return factor if box_weight is None else factor * adapt_weight(name, box_weight, factor)

    return box_loss(name, pred, target, eps, fn, weight, reduction, avg_factor, kernel=('efficient_iou', ()),
                    focus=None if focal_gamma == 0 else focus, impl=impl)


@declare('AlphaIoULoss', alpha=POSITIVE, mode=Choice(*IOU_MODES), eps=NON_NEGATIVE)
def alpha_iou_loss(pred: Tensor, target: Tensor, *, alpha: float = 3.0, mode: str = 'iou', eps: float = 1e-9,
                   weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Alpha-IoU, a power IoU loss (He et al. 2021).

    .. math:: \ell = 1 - \mathrm{IoU}^\alpha + \sum_k \mathcal{R}_k^\alpha

    with :math:`\mathcal{R}_k` the penalty terms of the ``mode`` variant (e.g. for ``'ciou'``,
    :math:`\rho^{2\alpha}/c^{2\alpha} + (\beta v)^\alpha` as in the paper). IoU and penalties
    are clamped at ``eps`` before the power, so :math:`\alpha < 1` keeps a finite gradient at 0;
    the variant's denominators are guarded by ``max(., eps)`` (so ``mode='ciou'`` differs from
    :func:`~mmloss_ext.losses.bbox.classic.ciou_loss`, which adds mmdet's ``eps``, only where a
    denominator is below ``eps``). ``mode`` is any of ``'iou', 'giou', 'diou', 'ciou', 'eiou', 'siou'``.

    Args:
        alpha: the power :math:`\alpha` of the IoU and of the penalty terms.
        mode: the IoU variant whose penalty terms are raised to :math:`\alpha`.
        eps: the floor of the IoU and of the penalty terms before the power, and of the variant's
            denominators, ``max(., eps)``.

    Example:
        >>> p, t = torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[0., 0., 2., 1.]])
        >>> alpha_iou_loss(p, t)  # 1 - 0.5 ** 3
        tensor(0.8750)
    """
    name = alpha_iou_loss.spec.loss

    def fn(g: BoxPair) -> Tensor:
        iou, terms = iou_penalties(g, mode)
        return 1.0 - iou.clamp(min=eps) ** alpha + sum(t.clamp(min=eps) ** alpha for t in terms)

    return box_loss(name, pred, target, eps, fn, weight, reduction, avg_factor)


def _wiou_mean(loss_iou: Tensor, running_mean: Optional[Tensor], training: bool, momentum: float,
               weight: Optional[Tensor] = None) -> Tensor:
    """The normaliser of Wise-IoU v2/v3 (no gradient); updates ``running_mean`` in place when training.

    The statistic is the ``weight``-weighted mean of the IoU loss, so boxes of zero weight (the
    negatives a dense head passes with ``reg_decoded_bbox=True``) do not count. It is all-reduced
    across ranks (as the weighted sum and the weight total, so that ranks with no boxes count for
    nothing) when ``torch.distributed`` is initialised.
    """
    with torch.no_grad():
        w = torch.ones_like(loss_iou) if weight is None else weight.to(loss_iou.dtype).clamp(min=0).expand_as(loss_iou)
        stats = torch.stack([(w * loss_iou).sum(), w.sum()])
        tiny = torch.finfo(stats.dtype).tiny
        if running_mean is None:
            return stats[0] / stats[1].clamp(min=tiny)
        if training:
            sum_over_ranks(stats)
            blended = (1.0 - momentum) * running_mean + momentum * stats[0] / stats[1].clamp(min=tiny)
            running_mean.copy_(torch.where(stats[1] > 0, blended, running_mean))
        return running_mean.clone()


@declare('WIoULoss', probe=probes.boxes, version=Choice(*WIOU_VERSIONS), alpha=POSITIVE, delta=POSITIVE, momentum=UNIT_INTERVAL)
def wiou_loss(pred: Tensor, target: Tensor, running_mean: Optional[Tensor] = None, training: bool = False, *,
              version: str = 'v3', alpha: float = 1.9, delta: float = 3.0, momentum: float = 1e-2,
              impl: str = 'auto', weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Wise-IoU v1/v2/v3 (Tong et al. 2023, "Wise-IoU: Bounding Box Regression Loss with Dynamic
    Focusing Mechanism").

    .. math::
        \ell_{v1} = \exp\Big(\frac{\rho^2(b_p, b_t)}{(C_w^2 + C_h^2)_*}\Big)\, \mathcal{L}_{IoU},\quad
        \ell_{v2} = \Big(\frac{\mathcal{L}_{IoU}^*}{\overline{\mathcal{L}}_{IoU}}\Big)^{1/2} \ell_{v1},\quad
        \ell_{v3} = \frac{\beta}{\delta\,\alpha^{\beta - \delta}}\, \ell_{v1},\ \
        \beta = \frac{\mathcal{L}_{IoU}^*}{\overline{\mathcal{L}}_{IoU}}

    with :math:`\mathcal{L}_{IoU} = 1 - \mathrm{IoU}`; starred quantities carry no gradient (the
    enclosing-box normaliser and the focusing coefficients). :math:`\overline{\mathcal{L}}_{IoU}`
    is, like ``F.batch_norm``'s statistics:

    * ``running_mean=None``: the mean of :math:`\mathcal{L}_{IoU}` over this batch, weighted by
      ``weight`` (boxes of zero weight, e.g. a dense head's negatives, do not count);
    * a 0-d tensor and ``training=False``: that value;
    * a 0-d tensor and ``training=True``: first updated in place,
      :math:`m \leftarrow (1 - \text{momentum})\, m + \text{momentum} \cdot \text{batch mean}` (the
      batch mean averaged over ranks under ``torch.distributed``), then used, as the authors' code.

    :class:`WIoULoss` keeps that running mean in a buffer. The union and
    :math:`C_w^2 + C_h^2` are guarded by ``max(., 1e-7)``. Args and returns otherwise as
    :func:`~mmloss_ext.losses.bbox.classic.iou_loss`.

    Example:
        >>> p, t = torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[0., 0., 2., 1.]])
        >>> wiou_loss(p, t, version='v1')  # exp(rho^2 / c^2 = 0.25 / 8) * (1 - 0.5)
        tensor(0.5159)
        >>> wiou_loss(p, t, torch.tensor(0.25), version='v2')  # sqrt(0.5 / 0.25) * v1
        tensor(0.7296)
    """
    name = wiou_loss.spec.loss
    if running_mean is not None:
        check_tensor(name, 'running_mean', running_mean)
        if running_mean.numel() != 1:
            raise LossValueError(f'{name}: `running_mean` expected a tensor of one element, '
                             f'got shape {tuple(running_mean.shape)}')

    def focusing(loss_iou: Tensor, box_weight: Optional[Tensor]) -> Tensor:
        """v2/v3's factor from the detached ``1 - IoU``; updates the running mean once per call."""
        box_weight = None if box_weight is None else adapt_weight(name, box_weight, loss_iou)
        mean = _wiou_mean(loss_iou, running_mean, training, momentum, box_weight)
        beta = loss_iou / mean.clamp(min=_EPS)
        return beta.sqrt() if version == 'v2' else beta / (delta * alpha ** (beta - delta))

    def fn(g: BoxPair) -> Tensor:
        loss_iou = 1.0 - g.iou
        loss = torch.exp(g.centre_dist2 / g.enclose_diag2.detach()) * loss_iou
        if version == 'v1':
            return loss
        return loss * focusing(loss_iou.detach(), per_box_weight(weight, pred))

    def focus(box_weight: Optional[Tensor]) -> Tensor:
        # the fused v1 kernel times the factor folded into the weight; 1 - IoU from 'iou_linear'
        # (floor 0: exactly the eager 1 - IoU)
        factor = focusing(fused.box_values('iou_linear', pred, target, eps=_EPS, hp=(0.0,)), box_weight)
        return factor if box_weight is None else factor * adapt_weight(name, box_weight, factor)

    return box_loss(name, pred, target, _EPS, fn, weight, reduction, avg_factor, kernel=('wiou', ()),
                    focus=None if version == 'v1' else focus, impl=impl)


def _check_img_shape(name: str, *, img_shape, **_) -> None:
    if img_shape is not None and (
            not isinstance(img_shape, (tuple, list)) or len(img_shape) != 2
            or not all(isinstance(s, numbers.Real) and not isinstance(s, bool) and s > 0 for s in img_shape)):
        raise LossValueError(f'{name}: `img_shape` expected None or (height, width) of two positive numbers, '
                         f'got {img_shape!r}')


@declare('MPDIoULoss', eps=NON_NEGATIVE, relation=_check_img_shape)
def mpdiou_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-7, img_shape: Optional[Sequence[float]] = None,
                weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Minimum-point-distance IoU loss (Ma & Xu 2023).

    .. math:: \ell = 1 - \mathrm{IoU} + \frac{d_1^2 + d_2^2}{D^2}

    with :math:`d_1, d_2` the distances between the top-left and between the bottom-right
    corners, and :math:`D^2 = h^2 + w^2` for ``img_shape=(h, w)`` (the paper), else the squared
    diagonal of the enclosing box (scale-free, usable without the image size). The union and the
    enclosing diagonal are guarded by ``max(., eps)``.

    Example:
        >>> p, t = torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[0., 0., 2., 1.]])
        >>> mpdiou_loss(p, t), mpdiou_loss(p, t, img_shape=(10, 10))  # 1 - 0.5 + 1/8, + 1/200
        (tensor(0.6250), tensor(0.5050))
    """
    name = mpdiou_loss.spec.loss
    if img_shape is not None:
        img_diag2 = float(img_shape[0]) ** 2 + float(img_shape[1]) ** 2

    def fn(g: BoxPair) -> Tensor:
        corner2 = ((g.pred - g.target) ** 2).sum(-1)  # d1^2 + d2^2
        return 1.0 - g.iou + corner2 / (g.enclose_diag2 if img_shape is None else img_diag2)

    return box_loss(name, pred, target, eps, fn, weight, reduction, avg_factor)


def _scale_boxes(boxes: Tensor, ratio: float) -> Tensor:
    """Boxes scaled by ``ratio`` about their centres."""
    centre = (boxes[..., :2] + boxes[..., 2:]) * 0.5
    half = (boxes[..., 2:] - boxes[..., :2]) * (0.5 * ratio)
    return torch.cat([centre - half, centre + half], dim=-1)


@declare('InnerIoULoss', ratio=POSITIVE, iou_mode=Choice(*IOU_MODES))
def inner_iou_loss(pred: Tensor, target: Tensor, *, ratio: float = 0.75, iou_mode: str = 'iou',
                   weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Inner-IoU loss (Zhang et al. 2023): an IoU variant corrected by the IoU of auxiliary boxes.

    .. math:: \ell = \ell_{mode} + \mathrm{IoU} - \mathrm{IoU}^{inner}

    with :math:`\mathrm{IoU}^{inner}` the IoU of both boxes scaled by ``ratio`` about their
    centres (``ratio < 1`` speeds up high-IoU samples, ``> 1`` low-IoU ones) and
    :math:`\ell_{mode} = 1 - \mathrm{IoU} + \sum \mathcal{R}` the ``iou_mode`` variant. Both
    unions (and the variant's denominators) are guarded by ``max(., 1e-7)``.

    Example:
        >>> p, t = torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[0., 0., 2., 1.]])
        >>> inner_iou_loss(p, t, ratio=0.5)  # inner boxes (.5,.5,1.5,1.5), (.5,.25,1.5,.75): IoU 1/5
        tensor(0.8000)
    """
    name = inner_iou_loss.spec.loss

    def fn(g: BoxPair) -> Tensor:
        inner = BoxPair(_scale_boxes(g.pred, ratio), _scale_boxes(g.target, ratio), g.eps).iou
        return variant_loss(g, iou_mode) + g.iou - inner

    return box_loss(name, pred, target, _EPS, fn, weight, reduction, avg_factor)


def _check_band(name: str, *, d: float, u: float, **_) -> None:
    if not d < u:
        raise LossValueError(f'{name}: `d` and `u` expected d < u, got d={d!r}, u={u!r}')


@declare('FocalerIoULoss', d=UNIT_INTERVAL, u=UNIT_INTERVAL, iou_mode=Choice(*IOU_MODES),
         relation=_check_band)
def focaler_iou_loss(pred: Tensor, target: Tensor, *, d: float = 0.0, u: float = 0.95, iou_mode: str = 'iou',
                     weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Focaler-IoU loss (Zhang & Zhang 2024): an IoU variant with a linearly re-mapped IoU.

    .. math::
        \ell = \ell_{mode} + \mathrm{IoU} - \mathrm{IoU}^{focaler},\quad
        \mathrm{IoU}^{focaler} = \operatorname{clamp}\Big(\frac{\mathrm{IoU} - d}{u - d}, 0, 1\Big)

    ``0 <= d < u <= 1`` select the IoU range the loss focuses on; :math:`\ell_{mode}` as in
    :func:`inner_iou_loss` (its denominators guarded by ``max(., 1e-7)``).

    Example:
        >>> p, t = torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[0., 0., 2., 1.]])
        >>> focaler_iou_loss(p, t, d=0.25, u=0.75)  # 1 - (0.5 - 0.25) / 0.5
        tensor(0.5000)
    """
    name = focaler_iou_loss.spec.loss

    def fn(g: BoxPair) -> Tensor:
        focaler = ((g.iou - d) / (u - d)).clamp(min=0.0, max=1.0)
        return variant_loss(g, iou_mode) + g.iou - focaler

    return box_loss(name, pred, target, _EPS, fn, weight, reduction, avg_factor)


@declare('ShapeIoULoss', scale=NON_NEGATIVE)
def shape_iou_loss(pred: Tensor, target: Tensor, *, scale: float = 0.0, weight: Optional[Tensor] = None,
                   reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Shape-IoU loss (Zhang & Zhang 2023): distance and shape costs weighted by the target's shape.

    .. math::
        ww = \frac{2 w_t^s}{w_t^s + h_t^s},\ hh = \frac{2 h_t^s}{w_t^s + h_t^s},\quad
        \ell = 1 - \mathrm{IoU} + \frac{hh\,\Delta x^2 + ww\,\Delta y^2}{c^2}
            + \tfrac12 \sum_{t=w,h} (1 - e^{-\omega_t})^4

    with :math:`s` = ``scale`` (the dataset's object scale factor), :math:`\Delta` the centre
    offsets, :math:`c` the enclosing diagonal, :math:`\omega_w = hh\,|w_p - w_t| / \max(w_p, w_t)`
    and :math:`\omega_h = ww\,|h_p - h_t| / \max(h_p, h_t)`. The union, :math:`c^2`,
    :math:`w_t^s + h_t^s` and the larger sizes are guarded by ``max(., 1e-7)`` (at ``scale=0``,
    :math:`ww = hh = 1` exactly).

    Example:
        >>> p, t = torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[0., 0., 2., 1.]])
        >>> shape_iou_loss(p, t)  # 1 - 0.5 + 0.25 / 8 + 0.5 * (1 - exp(-0.5)) ** 4
        tensor(0.5432)
    """
    name = shape_iou_loss.spec.loss

    def fn(g: BoxPair) -> Tensor:
        tw, th = g.wh[2:]
        ws, hs = tw ** scale, th ** scale
        wh_sum = guard(ws + hs, _EPS)
        ww, hh = 2.0 * ws / wh_sum, 2.0 * hs / wh_sum
        dx, dy = g.centre_delta
        omega_w, omega_h = size_mismatch(g)
        distance = (hh * dx * dx + ww * dy * dy) / g.enclose_diag2
        return 1.0 - g.iou + distance + 0.5 * shape_cost(hh * omega_w, ww * omega_h)

    return box_loss(name, pred, target, _EPS, fn, weight, reduction, avg_factor)


@declare('NWDLoss', constant=POSITIVE, eps=NON_NEGATIVE)
def nwd_loss(pred: Tensor, target: Tensor, *, constant: float = 12.8, eps: float = 1e-7,
             weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Normalized Gaussian Wasserstein distance loss (Wang et al. 2021), for tiny objects.

    A box is the Gaussian :math:`\mathcal{N}((c_x, c_y), \operatorname{diag}(w^2, h^2)/4)`; the
    2-Wasserstein distance of two such Gaussians is
    :math:`W_2^2 = \|(c_x, c_y, w/2, h/2)_p - (c_x, c_y, w/2, h/2)_t\|^2`, and

    .. math:: \ell = 1 - \exp(-W_2 / C),\quad W_2 = \sqrt{W_2^2 + \epsilon} - \sqrt{\epsilon}

    The ``eps`` shift keeps the gradient of the root finite at :math:`W_2 = 0` while identical
    boxes still give exactly 0 (a shift, not a denominator's guard: NWD divides only by ``C``).
    ``C`` = ``constant`` is a dataset-dependent scale (pixels).

    Example:
        >>> p, t = torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[0., 0., 2., 1.]])
        >>> nwd_loss(p, t, constant=1.0, eps=0.0)  # W2^2 = 0.5^2 + 1^2 / 4 = 0.5, 1 - exp(-sqrt(0.5))
        tensor(0.5069)
    """
    name = nwd_loss.spec.loss

    def fn(g: BoxPair) -> Tensor:
        pw, ph, tw, th = g.raw_wh
        dx, dy = g.centre_delta
        w2 = dx * dx + dy * dy + ((pw - tw) ** 2 + (ph - th) ** 2) * 0.25
        return -torch.expm1(-(torch.sqrt(w2 + eps) - eps ** 0.5) / constant)

    return box_loss(name, pred, target, eps, fn, weight, reduction, avg_factor)


# --- registered modules ---------------------------------------------------------------------------

@register_loss
class EfficientIoULoss(BoxLoss):
    """Efficient-IoU / Focal-EIoU module; see :func:`efficient_iou_loss`."""
    loss_fn = staticmethod(efficient_iou_loss)


@register_loss
class AlphaIoULoss(BoxLoss):
    """Alpha-IoU module; see :func:`alpha_iou_loss`."""
    loss_fn = staticmethod(alpha_iou_loss)


@register_loss
class WIoULoss(StatefulLoss, BoxLoss):
    """Wise-IoU module; see :func:`wiou_loss`.

    The running mean of the IoU loss is the buffer ``iou_mean`` (initialised to 1 as the authors'
    code, saved in the ``state_dict``), updated in training mode only. Under ``torch.distributed``
    the update all-reduces the batch statistics, so, as with ``SyncBatchNorm``, every rank must call
    the loss in every training step (v2/v3); a rank whose call takes the empty-input or zero-weight
    shortcut still joins the all-reduce, counting no boxes.
    """
    loss_fn = staticmethod(wiou_loss)
    reference = 'hand formula (v1)'
    state_keywords = {'iou_mean': 'running_mean'}

    def initial_state(self) -> Dict[str, Tensor]:
        return {'iou_mean': torch.tensor(1.0)}


@register_loss
class MPDIoULoss(BoxLoss):
    """MPDIoU module; see :func:`mpdiou_loss`."""
    loss_fn = staticmethod(mpdiou_loss)


@register_loss
class InnerIoULoss(BoxLoss):
    """Inner-IoU module; see :func:`inner_iou_loss`."""
    loss_fn = staticmethod(inner_iou_loss)


@register_loss
class FocalerIoULoss(BoxLoss):
    """Focaler-IoU module; see :func:`focaler_iou_loss`."""
    loss_fn = staticmethod(focaler_iou_loss)


@register_loss
class ShapeIoULoss(BoxLoss):
    """Shape-IoU module; see :func:`shape_iou_loss`."""
    loss_fn = staticmethod(shape_iou_loss)


@register_loss
class NWDLoss(BoxLoss):
    """Normalized Wasserstein distance module; see :func:`nwd_loss`."""
    loss_fn = staticmethod(nwd_loss)
