r"""The box losses mmdet ships, with mmdet's parameter names, defaults and values.

IoU, Bounded-IoU, GIoU, DIoU, CIoU, Extended-IoU and SIoU. Each functional takes boxes
``(..., 4)`` as ``(x1, y1, x2, y2)``; see :mod:`mmloss_ext.losses._boxes` for the shared geometry
and its numerics. ``eps`` sits where mmdet's code puts it: IoU and GIoU guard the union and the
enclosing area as mmdet's ``bbox_overlaps`` does, ``max(d, eps)``; DIoU, CIoU, SIoU and
Extended-IoU add ``eps`` where mmdet's functions add it. Differences from mmdet are confined to
degenerate boxes: sizes are clamped at 0 (an ``x2 < x1`` box has no area, rather than a negative
one), and a guard stands where mmdet divides by a possible zero (SIoU's larger width, CIoU's
trade-off), so the loss and its gradient stay finite where mmdet's are ``nan`` or ``inf``.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import Tensor

from ...core.hparams import NON_NEGATIVE, POSITIVE, Choice, declare
from ...core.reduction import AvgFactor
from ...registry import register_loss
from .._boxes import BoxLoss, BoxPair, box_loss, siou_penalty, variant_loss
from .. import probes

__all__ = [
    'iou_loss', 'bounded_iou_loss', 'giou_loss', 'diou_loss', 'ciou_loss', 'eiou_loss', 'siou_loss',
    'IoULoss', 'BoundedIoULoss', 'GIoULoss', 'DIoULoss', 'CIoULoss', 'EIoULoss', 'SIoULoss',
]

IOU_LOSS_MODES = ('log', 'linear', 'square')
_OVERLAPS_EPS = 1e-6  # the union's eps in mmdet's bbox_overlaps, whatever IoULoss's eps


def _smooth(x: Tensor, beta: float) -> Tensor:
    """Smooth-L1 of a non-negative ``x``: quadratic below ``beta``, linear above."""
    return torch.where(x < beta, 0.5 * x * x / beta, x - 0.5 * beta)


@declare('IoULoss', probe=probes.boxes, mode=Choice(*IOU_LOSS_MODES), eps=NON_NEGATIVE)
def iou_loss(pred: Tensor, target: Tensor, *, mode: str = 'log', linear: bool = False, eps: float = 1e-6,
             impl: str = 'auto', weight: Optional[Tensor] = None, reduction: str = 'mean',
             avg_factor: AvgFactor = None) -> Tensor:
    r"""IoU loss (Yu et al., UnitBox 2016), as mmdet's ``iou_loss``.

    .. math::
        \ell = -\log \mathrm{IoU} \;(\texttt{'log'}),\quad 1 - \mathrm{IoU} \;(\texttt{'linear'}),
        \quad 1 - \mathrm{IoU}^2 \;(\texttt{'square'}),\qquad \mathrm{IoU} \leftarrow \max(\mathrm{IoU}, \epsilon)

    Args:
        pred, target: boxes ``(..., 4)`` as ``(x1, y1, x2, y2)``.
        mode: ``'log'`` | ``'linear'`` | ``'square'``.
        linear: mmdet's deprecated alias of ``mode='linear'``.
        eps: lower bound of the IoU (the union is guarded by mmdet's fixed ``1e-6``, as
            ``bbox_overlaps``: ``max(union, 1e-6)``).
        impl: ``'auto'`` | ``'eager'`` | ``'fused'`` (see :mod:`mmloss_ext.kernels.dispatch`).
        weight: ``(...)`` or ``(..., 4)`` (averaged over the coordinates).
        reduction, avg_factor: see :func:`~mmloss_ext.core.reduction.weight_reduce_loss`.

    Returns:
        ``(...)`` for ``'none'``, a scalar otherwise.

    Example:
        >>> p, t = torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[1., 0., 3., 2.]])  # IoU = 2/6
        >>> iou_loss(p, t, mode='linear'), iou_loss(p, t)
        (tensor(0.6667), tensor(1.0986))
    """
    name = iou_loss.spec.loss
    mode = 'linear' if linear else mode

    def fn(g: BoxPair) -> Tensor:
        iou = g.iou.clamp(min=eps)
        if mode == 'linear':
            return 1.0 - iou
        if mode == 'square':
            return 1.0 - iou * iou
        return -iou.log()

    return box_loss(name, pred, target, _OVERLAPS_EPS, fn, weight, reduction, avg_factor,
                    kernel=(f'iou_{mode}', (eps,)), impl=impl)


@declare('BoundedIoULoss', beta=POSITIVE, eps=NON_NEGATIVE)
def bounded_iou_loss(pred: Tensor, target: Tensor, *, beta: float = 0.2, eps: float = 1e-3,
                     weight: Optional[Tensor] = None, reduction: str = 'mean',
                     avg_factor: AvgFactor = None) -> Tensor:
    r"""Bounded IoU loss (Tychsen-Smith & Petersson 2018), as mmdet's ``bounded_iou_loss``.

    Per coordinate, with the target fixed (no gradient) and :math:`\Delta` the centre offsets,

    .. math::
        \ell_x = 1 - \max\Big(0, \frac{w_t - 2|\Delta x|}{w_t + 2|\Delta x| + \epsilon}\Big),\quad
        \ell_w = 1 - \min\Big(\frac{w_t}{w_p + \epsilon}, \frac{w_p}{w_t + \epsilon}\Big)

    (likewise :math:`y, h`), each passed through a smooth-L1 with ``beta``. ``w_p`` is clamped at
    0 (mmdet's ``w_t / (w_p + eps)`` is ``inf``/``nan`` at ``w_p = -eps``).

    Returns:
        ``(..., 4)`` for ``'none'`` (``dx, dy, dw, dh``); an ``(...)`` weight broadcasts over them.

    Example:
        >>> p, t = torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[1., 0., 3., 2.]])
        >>> bounded_iou_loss(p, t, eps=0.0, reduction='none')  # dx: 1 - (2 - 2) / (2 + 2), then 1 - beta / 2
        tensor([[0.9000, 0.0000, 0.0000, 0.0000]])
    """
    name = bounded_iou_loss.spec.loss

    def fn(g: BoxPair) -> Tensor:
        pw, ph, tw, th = g.wh
        dx, dy = (2.0 * d.abs() for d in g.centre_delta)
        zero = torch.zeros_like(dx)  # torch.maximum, as mmdet: a tie at 0 splits the subgradient
        loss_dx = 1.0 - torch.maximum((tw - dx) / (tw + dx + eps), zero)
        loss_dy = 1.0 - torch.maximum((th - dy) / (th + dy + eps), zero)
        loss_dw = 1.0 - torch.minimum(tw / (pw + eps), pw / (tw + eps))
        loss_dh = 1.0 - torch.minimum(th / (ph + eps), ph / (th + eps))
        return _smooth(torch.stack([loss_dx, loss_dy, loss_dw, loss_dh], dim=-1), beta)

    return box_loss(name, pred, target, eps, fn, weight, reduction, avg_factor, per_box=False, detach_target=True)


def _variant_box_loss(name: str, mode: str, pred: Tensor, target: Tensor, eps: float,
                      weight: Optional[Tensor], reduction: str, avg_factor: AvgFactor, clamp: bool = False,
                      impl: str = 'eager') -> Tensor:
    return box_loss(name, pred, target, eps, lambda g: variant_loss(g, mode, clamp=clamp), weight, reduction,
                    avg_factor, kernel=(mode, ()), impl=impl)


@declare('GIoULoss', probe=probes.boxes, eps=NON_NEGATIVE)
def giou_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-6, impl: str = 'auto', weight: Optional[Tensor] = None,
              reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Generalized IoU loss (Rezatofighi et al. 2019).

    .. math:: \ell = 1 - \mathrm{IoU} + \frac{|C| - |A \cup B|}{|C|}

    with :math:`C` the smallest box enclosing both; the union and :math:`|C|` are guarded by
    ``max(., eps)``, as mmdet's ``bbox_overlaps``. Args and returns as :func:`iou_loss`, but:

    Args:
        eps: the floor of the union and of :math:`|C|`, ``max(., eps)``.

    Example:
        >>> p, t = torch.tensor([[0., 0., 1., 1.]]), torch.tensor([[2., 0., 3., 1.]])  # IoU 0, |C| = 3
        >>> giou_loss(p, t, eps=0.0)
        tensor(1.3333)
    """
    return _variant_box_loss(giou_loss.spec.loss, 'giou', pred, target, eps, weight, reduction, avg_factor, impl=impl)


@declare('DIoULoss', probe=probes.boxes, eps=NON_NEGATIVE)
def diou_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-6, impl: str = 'auto', weight: Optional[Tensor] = None,
              reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Distance-IoU loss (Zheng et al. 2020).

    .. math:: \ell = 1 - \mathrm{IoU} + \frac{\rho^2(b_p, b_t)}{c^2}

    with :math:`\rho` the distance between the centres and :math:`c` the diagonal of the
    enclosing box; as mmdet's ``diou_loss``, the union and :math:`c^2` carry ``+ eps``. Args and
    returns as :func:`iou_loss`, but:

    Args:
        eps: added to the union and to :math:`c^2`, as mmdet's ``diou_loss``.

    Example:
        >>> p, t = torch.tensor([[0., 0., 1., 1.]]), torch.tensor([[2., 0., 3., 1.]])  # rho^2 4, c^2 10
        >>> diou_loss(p, t, eps=0.0)
        tensor(1.4000)
    """
    return _variant_box_loss(diou_loss.spec.loss, 'diou', pred, target, eps, weight, reduction, avg_factor, impl=impl)


@declare('CIoULoss', probe=probes.boxes, eps=NON_NEGATIVE)
def ciou_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-6, impl: str = 'auto', weight: Optional[Tensor] = None,
              reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Complete-IoU loss (Zheng et al. 2021), mmdet's form.

    .. math::
        \ell = 1 - \operatorname{clamp}\Big(\mathrm{IoU} - \frac{\rho^2}{c^2} - \alpha v, -1, 1\Big),\quad
        v = \frac{4}{\pi^2}\Big(\arctan\frac{w_t}{h_t} - \arctan\frac{w_p}{h_p}\Big)^2,\quad
        \alpha = [\mathrm{IoU} > 0.5]\,\frac{v}{1 - \mathrm{IoU} + v}

    The trade-off :math:`\alpha` carries no gradient (as in the paper and mmdet). As mmdet's
    ``ciou_loss``, the union, :math:`c^2` and the heights :math:`h_t, h_p` carry ``+ eps``; the
    trade-off has none (0 where its denominator is 0). Args and returns as :func:`iou_loss`, but:

    Args:
        eps: added to the union, to :math:`c^2` and to the heights, as mmdet's ``ciou_loss``.

    Example:
        >>> p, t = torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[0., 0., 2., 1.]])  # IoU 0.5: alpha 0
        >>> ciou_loss(p, t, eps=0.0)  # 1 - 0.5 + rho^2 / c^2 = 0.25 / 8
        tensor(0.5312)
    """
    return _variant_box_loss(ciou_loss.spec.loss, 'ciou', pred, target, eps, weight, reduction, avg_factor, clamp=True,
                             impl=impl)


@declare('EIoULoss', probe=probes.boxes, eps=NON_NEGATIVE, smooth_point=POSITIVE)
def eiou_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-6, smooth_point: float = 0.1, impl: str = 'auto',
              weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Extended-IoU loss (Peng & Yu 2021), as mmdet's ``eiou_loss``.

    The intersection is extended to a signed area that keeps decreasing (below 0) as the boxes
    move apart, so the IoU keeps a gradient for disjoint boxes; with
    :math:`\ell_0 = 1 - \mathrm{EIoU}` the loss is a smooth-L1 of :math:`\ell_0` with knee
    ``smooth_point``. Args and returns as :func:`iou_loss`, but:

    Args:
        eps: added to the union of the extended intersection, as mmdet's ``eiou_loss``.
        smooth_point: the knee :math:`s` of the smooth-L1 of :math:`\ell_0`.

    .. math::
        \ell_0 = 1 - \frac{I_e}{|A| + |B| - I_e + \epsilon},\qquad
        \ell = \begin{cases} 0.5\,\ell_0^2 / s & \ell_0 < s \\ \ell_0 - 0.5\,s & \text{otherwise}\end{cases}

    Example:
        >>> p, t = torch.tensor([[0., 0., 1., 1.]]), torch.tensor([[2., 0., 3., 1.]])  # extended inter -1
        >>> eiou_loss(p, t, eps=0.0)  # 1 - (-1) / (1 + 1 + 1) - 0.05
        tensor(1.2833)
    """
    name = eiou_loss.spec.loss

    def fn(g: BoxPair) -> Tensor:
        ex1, ey1 = g.enclose_corners[:2]
        ix1, iy1, ix2, iy2 = g.inter_corners
        xmin, xmax = torch.minimum(ix1, ix2), torch.maximum(ix1, ix2)
        ymin, ymax = torch.minimum(iy1, iy2), torch.maximum(iy1, iy2)
        inter = ((ix2 - ex1) * (iy2 - ey1) + (xmin - ex1) * (ymin - ey1)
                 - (ix1 - ex1) * (ymax - ey1) - (xmax - ex1) * (iy1 - ey1))
        ap, at = g.areas
        # inter <= 0 whenever either box is inverted, so the union (+ eps, as mmdet) stays >= eps
        return _smooth(1.0 - inter / g.guard(ap + at - inter), smooth_point)

    return box_loss(name, pred, target, eps, fn, weight, reduction, avg_factor,
                    kernel=('extended_iou', (smooth_point,)), impl=impl)


@declare('SIoULoss', probe=probes.boxes, eps=NON_NEGATIVE)
def siou_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-6, neg_gamma: bool = False, impl: str = 'auto',
              weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""SCYLLA-IoU loss (Gevorgyan 2022), as mmdet's ``siou_loss``.

    .. math:: \ell = 1 - \operatorname{clamp}\big(\mathrm{IoU} - (\Delta + \Omega)/2, -1, 1\big)

    with the angle-aware distance cost :math:`\Delta` and the shape cost :math:`\Omega` of
    :func:`~mmloss_ext.losses._boxes.siou_penalty`. ``neg_gamma=True`` is the paper's
    :math:`\gamma = \Lambda - 2`; mmdet's default ``False`` uses :math:`2 - \Lambda`. The angle
    cost is evaluated in closed form (no ``asin``), so it is finite for coincident centres, and the
    distance exponent is capped where the clamp saturates (mmdet's ``exp`` overflows there into a
    ``nan`` gradient). ``eps`` sits where mmdet's ``siou_loss`` puts it: added to the union, the
    centre offsets and the heights; the enclosing sides clamped at it; the larger width, where
    mmdet has none, guarded by ``max(., eps)``. Args and returns as :func:`iou_loss`, but:

    Args:
        eps: added to the union, the centre offsets and the heights; the floor of the enclosing
            sides and of the larger width.
        neg_gamma: the paper's :math:`\gamma = \Lambda - 2` (``True``) or mmdet's :math:`2 - \Lambda`.

    Example:
        >>> p, t = torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[0., 0., 2., 1.]])
        >>> siou_loss(p, t, neg_gamma=True)  # angle ~0, Delta = 1 - exp(-2 (0.5/2)^2), Omega = (1 - exp(-0.5))^4
        tensor(0.5707)
    """
    name = siou_loss.spec.loss

    def fn(g: BoxPair) -> Tensor:
        return 1.0 - (g.iou - siou_penalty(g, neg_gamma)).clamp(min=-1.0, max=1.0)

    return box_loss(name, pred, target, eps, fn, weight, reduction, avg_factor,
                    kernel=('siou', (1.0 if neg_gamma else 0.0,)), impl=impl)


# --- registered modules ---------------------------------------------------------------------------

@register_loss
class IoULoss(BoxLoss):
    """IoU loss module, a drop-in for mmdet's ``IoULoss``; see :func:`iou_loss`. ``linear=True`` is deprecated."""
    loss_fn = staticmethod(iou_loss)
    positional = ('linear', 'eps', 'reduction', 'loss_weight', 'mode')
    reference = 'mmdet IoULoss'

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.linear:
            warnings.warn(f'{type(self).__name__}: `linear=True` is deprecated, use mode="linear"', DeprecationWarning)


@register_loss
class BoundedIoULoss(BoxLoss):
    """Bounded IoU module, a drop-in for mmdet's ``BoundedIoULoss``; see :func:`bounded_iou_loss`."""
    loss_fn = staticmethod(bounded_iou_loss)
    positional = ('beta', 'eps', 'reduction', 'loss_weight')
    reference = 'mmdet BoundedIoULoss'


@register_loss
class GIoULoss(BoxLoss):
    """Generalized IoU module, a drop-in for mmdet's ``GIoULoss``; see :func:`giou_loss`."""
    loss_fn = staticmethod(giou_loss)
    positional = ('eps', 'reduction', 'loss_weight')
    reference = 'mmdet GIoULoss'


@register_loss
class DIoULoss(BoxLoss):
    """Distance-IoU module, a drop-in for mmdet's ``DIoULoss``; see :func:`diou_loss`."""
    loss_fn = staticmethod(diou_loss)
    positional = ('eps', 'reduction', 'loss_weight')
    reference = 'mmdet DIoULoss'


@register_loss
class CIoULoss(BoxLoss):
    """Complete-IoU module, a drop-in for mmdet's ``CIoULoss``; see :func:`ciou_loss`."""
    loss_fn = staticmethod(ciou_loss)
    positional = ('eps', 'reduction', 'loss_weight')
    reference = 'mmdet CIoULoss'


@register_loss
class EIoULoss(BoxLoss):
    """Extended-IoU module, a drop-in for mmdet's ``EIoULoss``; see :func:`eiou_loss`."""
    loss_fn = staticmethod(eiou_loss)
    positional = ('eps', 'reduction', 'loss_weight', 'smooth_point')
    reference = 'mmdet EIoULoss (Extended-IoU)'


@register_loss
class SIoULoss(BoxLoss):
    """SIoU module, a drop-in for mmdet's ``SIoULoss``; see :func:`siou_loss`."""
    loss_fn = staticmethod(siou_loss)
    positional = ('eps', 'reduction', 'loss_weight', 'neg_gamma')
    reference = 'mmdet SIoULoss'
