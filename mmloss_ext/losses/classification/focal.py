r"""Focal family: FocalLoss (sigmoid, YOLOv5 soft-target and softmax forms), QualityFocalLoss,
VarifocalLoss and DistributionFocalLoss, with mmdet's calling conventions.

Sigmoid losses take logits ``(N, C)`` and give ``pred``'s shape for ``'none'`` (QFL and DFL sum
over their classes/bins and give ``(N,)``). Integer labels use mmdet's convention: label ``C`` is
the background, an all-zero target row.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.errors import LossValueError
from ...core.hparams import NON_NEGATIVE, UNIT_INTERVAL, declare
from ...core.inputs import check_same_device, check_tensor, check_values
from ...core.reduction import AvgFactor
from ...kernels import elementwise as fused, use_fused
from ...registry import register_loss
from ._common import (SIGMOID_ONLY, ClassificationLoss, bce, check_class_labels, check_logits, check_target_like,
                      clamped_log, class_mask, finish, gather_class, per_class)
from .. import probes

__all__ = [
    'focal_loss', 'quality_focal_loss', 'varifocal_loss', 'distribution_focal_loss',
    'FocalLoss', 'QualityFocalLoss', 'VarifocalLoss', 'DistributionFocalLoss',
]

PosWeight = Optional[Union[Sequence[float], Tensor]]


def _checked_target(name: str, x: Tensor, target) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """``(labels, None)`` for integer labels (N, ...) in ``[0, C]`` (``C`` = background), or
    ``(None, target)`` for a target of ``pred``'s shape (one-hot, soft), validated."""
    check_tensor(name, 'target', target, floating=False)
    labels_shape = x.shape[:1] + x.shape[2:]  # a float target of another shape is dense (shape error)
    if target.dim() == x.dim() or (target.is_floating_point() and target.shape != labels_shape):
        return None, check_target_like(name, x, target)
    return check_class_labels(name, x, target, x.shape[1] if x.dim() >= 2 else 0), None


def _sigmoid_targets(name: str, x: Tensor, target) -> Tensor:
    """Targets of ``pred``'s shape, from integer labels (one-hot on dim 1) or given as such."""
    labels, dense = _checked_target(name, x, target)
    return dense if labels is None else class_mask(labels, x.shape[1]).to(x.dtype)


def _flattened_weight(weight: Optional[Tensor], loss: Tensor) -> Optional[Tensor]:
    """mmdet's focal-loss weight rule: an (N * C,) weight (FSAF) is viewed as the (N, C) loss."""
    if (weight is not None and weight.dim() == 1 and loss.dim() == 2 and weight.shape[0] != loss.shape[0]
            and weight.numel() == loss.numel()):
        return weight.view(loss.shape)
    return weight


@declare('FocalLoss', probe=probes.logits, gamma=NON_NEGATIVE, alpha=UNIT_INTERVAL)
def focal_loss(pred: Tensor, target: Tensor, *, use_sigmoid: bool = True, gamma: float = 2.0,
               alpha: float = 0.25, activated: bool = False, pos_weight: PosWeight = None, impl: str = 'auto',
               weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Focal loss (Lin et al., 2017, "Focal Loss for Dense Object Detection").

    Sigmoid (default), elementwise over logits ``(N, C)``, with :math:`p = \sigma(x)`:

    .. math:: \ell = \mathrm{BCE}_{w_+}(x, t)\, \big(\alpha t + (1-\alpha)(1-t)\big)\,
              \big(p(1-t) + (1-p)t\big)^\gamma

    ``target`` is integer labels ``(N,)`` in ``[0, C]`` (one-hot; ``C`` is the background, an
    all-zero row: mmdet's ``FocalLoss`` CPU path) or one-hot/soft targets ``(N, C)`` (the YOLOv5
    form). ``pos_weight`` :math:`w_+` scales the positive log-term of the BCE (per class, or one
    number); without it this is exactly mmdet's ``py_sigmoid_focal_loss``. ``activated=True``
    takes probabilities instead of logits. An ``(N,)`` weight broadcasts over the classes, and an
    ``(N * C,)`` one is viewed as ``(N, C)`` (as mmdet). ``'none'`` gives ``pred``'s shape.
    ``gamma=0`` is the alpha-weighted BCE.

    Softmax (``use_sigmoid=False``): logits (or probabilities when ``activated``) ``(N, C, ...)``
    with integer labels ``(N, ...)`` in ``[0, C - 1]``; per sample
    :math:`\ell = -\alpha (1 - p_y)^\gamma \log p_y`, ``'none'`` giving ``(N, ...)``; ``gamma=0``
    is :math:`\alpha` times the cross-entropy.

    Everything is computed in logit space (``binary_cross_entropy_with_logits``,
    ``log_softmax``): logits of :math:`\pm 10^4` give finite values and gradients.

    ``impl``: ``'auto'`` | ``'eager'`` | ``'fused'`` (:mod:`mmloss_ext.kernels.dispatch`); the
    sigmoid form on logits without ``pos_weight`` has a fused kernel (labels with 2-D logits, or
    dense targets).

    Example:
        >>> logits = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
        >>> focal_loss(logits, torch.tensor([0, 2]), reduction='none')  # label 2 = background
        tensor([[4.5089e-04, 1.6994e-02],
                [1.2997e-01, 2.0747e+00]])
        >>> focal_loss(logits, torch.tensor([0, 1]), use_sigmoid=False, gamma=0.0, alpha=1.0, reduction='none')
        tensor([0.0486, 0.0486])
    """
    name = focal_loss.spec.loss
    x = check_logits(name, pred, min_dim=1 if use_sigmoid else 2)
    if use_sigmoid and use_fused(name, impl, x, op='elementwise', supported=pos_weight is None and not activated,
                                 others=(target, weight)):
        labels, dense = _checked_target(name, x, target)
        if labels is None or x.dim() == 2:
            return fused.sigmoid_family(name, fused.FOCAL, (alpha, gamma), x, pred.dtype, target=dense, labels=labels,
                                        weight=_flattened_weight(weight, x), reduction=reduction,
                                        avg_factor=avg_factor)
    if use_sigmoid:
        t = _sigmoid_targets(name, x, target)
        pw = per_class(name, 'pos_weight', pos_weight, x, x.shape[-1] if x.dim() else 1, allow_one=True)
        loss = bce(x, t, pw, activated=activated) * ((1.0 - alpha) + (2.0 * alpha - 1.0) * t)
        if gamma:
            p = x if activated else torch.sigmoid(x)
            loss = loss * (p + t * (1.0 - 2.0 * p)).pow(gamma)  # p(1-t) + (1-p)t: 1 - p_t
        weight = _flattened_weight(weight, loss)
    else:
        if pos_weight is not None:
            raise LossValueError(f'{name}: `pos_weight` expected None with use_sigmoid=False, got {pos_weight!r}')
        check_class_labels(name, x, target, x.shape[1] - 1)
        if activated:
            p_y = gather_class(x, target)
            log_p, one_minus_p = clamped_log(p_y), 1.0 - p_y
        else:
            log_p = gather_class(F.log_softmax(x, dim=1), target)
            one_minus_p = -torch.expm1(log_p)
        loss = -alpha * log_p
        if gamma:
            loss = loss * one_minus_p.pow(gamma)
    return finish(name, loss, pred, weight, reduction, avg_factor)


@declare('QualityFocalLoss', probe=probes.logits, use_sigmoid=SIGMOID_ONLY, beta=NON_NEGATIVE)
def quality_focal_loss(pred: Tensor, target, *, use_sigmoid: bool = True, beta: float = 2.0, activated: bool = False,
                       impl: str = 'auto', weight: Optional[Tensor] = None, reduction: str = 'mean',
                       avg_factor: AvgFactor = None) -> Tensor:
    r"""Quality focal loss (Li et al., 2020, "Generalized Focal Loss").

    .. math:: \ell_n = \sum_c \mathrm{BCE}(x_{nc}, t_{nc})\, |t_{nc} - \sigma(x_{nc})|^\beta

    ``target`` is mmdet's ``(labels, scores)`` pair, labels ``(N,)`` in ``[0, C]`` (``C`` =
    background) and quality scores ``(N,)`` (the target is ``score`` at the label's class and 0
    elsewhere), or a soft one-hot tensor of ``pred``'s shape, or labels ``(N,)`` alone (scores of 1:
    hard one-hot targets, e.g. from a RetinaNet head, which has no quality scores; mmdet refuses them). ``activated=True`` takes
    probabilities. ``'none'`` gives ``(N,)``. ``impl``: see :func:`focal_loss` (fused for 2-D logits).

    Example:
        >>> quality_focal_loss(torch.zeros(2, 2), (torch.tensor([0, 2]), torch.tensor([0.5, 0.0])),
        ...                    reduction='none')
        tensor([0.1733, 0.3466])
    """
    name = quality_focal_loss.spec.loss
    x = check_logits(name, pred, min_dim=2)
    labels = scores = t = None
    if isinstance(target, (tuple, list)):
        if len(target) != 2:
            raise LossValueError(f'{name}: `target` expected a (labels, scores) pair, got {len(target)} items')
        labels, scores = target
        check_class_labels(name, x, labels, x.shape[1], arg='labels')
        check_tensor(name, 'scores', scores, floating=False)
        if scores.shape != labels.shape:
            raise LossValueError(f'{name}: `labels` and `scores` expected the same shape, '
                             f'got {tuple(labels.shape)} and {tuple(scores.shape)}')
        check_same_device(name, labels, scores, ('labels', 'scores'))
    else:
        labels, t = _checked_target(name, x, target)
    if use_fused(name, impl, x, op='elementwise', supported=not activated and x.dim() == 2,
                 others=(scores, t, weight)):
        return fused.sigmoid_family(name, fused.QUALITY_FOCAL, (beta,), x, pred.dtype, target=t, labels=labels,
                                    score=scores, weight=weight, reduction=reduction, avg_factor=avg_factor,
                                    row_sums=True)
    if t is None:
        t = class_mask(labels, x.shape[1]).to(x.dtype)
        if scores is not None:
            t = t * scores.to(x.dtype).unsqueeze(1)
    p = x if activated else torch.sigmoid(x)
    loss = (bce(x, t, activated=activated) * (t - p).abs().pow(beta)).sum(1)
    return finish(name, loss, pred, weight, reduction, avg_factor)


@declare('VarifocalLoss', probe=probes.logits, use_sigmoid=SIGMOID_ONLY, alpha=NON_NEGATIVE, gamma=NON_NEGATIVE)  # mmdet: alpha >= 0
def varifocal_loss(pred: Tensor, target: Tensor, *, use_sigmoid: bool = True, alpha: float = 0.75,
                   gamma: float = 2.0, iou_weighted: bool = True, impl: str = 'auto', weight: Optional[Tensor] = None,
                   reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Varifocal loss (Zhang et al., 2021, "VarifocalNet").

    .. math:: \ell = \mathrm{BCE}(x, t) \cdot \begin{cases} t\ (\text{or } 1) & t > 0 \\
              \alpha |\sigma(x) - t|^\gamma & t \le 0 \end{cases}

    Logits and IoU-aware soft targets ``(N, C)``; positives are weighted by their target when
    ``iou_weighted``. Integer labels ``(N,)`` in ``[0, C]`` (``C`` = background) are hard one-hot
    targets (targets of 1, as from a RetinaNet head; mmdet refuses them). ``'none'`` gives ``pred``'s shape. ``impl``: see :func:`focal_loss`.

    Example:
        >>> varifocal_loss(torch.zeros(1, 2), torch.tensor([[0.5, 0.0]]), reduction='none')
        tensor([[0.3466, 0.1300]])
    """
    name = varifocal_loss.spec.loss
    x = check_logits(name, pred)
    t = _sigmoid_targets(name, x, target)
    if use_fused(name, impl, x, op='elementwise', others=(t, weight)):
        return fused.sigmoid_family(name, fused.VARIFOCAL, (alpha, gamma, float(iou_weighted)), x, pred.dtype,
                                    target=t, weight=weight, reduction=reduction, avg_factor=avg_factor)
    negative = alpha * (torch.sigmoid(x) - t).abs().pow(gamma)
    focal = torch.where(t > 0, t if iou_weighted else torch.ones_like(t), negative)
    return finish(name, bce(x, t) * focal, pred, weight, reduction, avg_factor)


@declare('DistributionFocalLoss')
def distribution_focal_loss(pred: Tensor, target: Tensor, *, weight: Optional[Tensor] = None,
                            reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Distribution focal loss (Li et al., 2020, "Generalized Focal Loss").

    With :math:`y_l = \lfloor y \rfloor` and :math:`y_r = y_l + 1`, the cross-entropy at the two
    bins around the continuous target, weighted by proximity:

    .. math:: \ell = -(y_r - y) \log p_{y_l} - (y - y_l) \log p_{y_r},\quad p = \operatorname{softmax}(x)

    ``pred`` is ``(N, n + 1)`` logits over the bins ``0..n``, ``target`` ``(N,)`` floats in
    ``[0, n)`` (checked exactly on CPU, by an asynchronous device assert elsewhere). ``'none'``
    gives ``(N,)``.

    Example:
        >>> distribution_focal_loss(torch.zeros(1, 3), torch.tensor([0.25]), reduction='none')
        tensor([1.0986])
    """
    name = distribution_focal_loss.spec.loss
    x = check_logits(name, pred, min_dim=2)
    check_tensor(name, 'target', target, floating=False)
    if x.dim() != 2 or tuple(target.shape) != (x.shape[0],):
        raise LossValueError(f'{name}: `pred` (N, n+1) and `target` (N,) expected, '
                         f'got {tuple(x.shape)} and {tuple(target.shape)}')
    check_same_device(name, x, target)
    t = target.to(x.dtype)
    bins = x.shape[1] - 1
    check_values(name, 'target', (t >= 0) & (t < bins), f'values in [0, {bins})')
    left = t.long()
    index = torch.stack((left, left + 1), dim=1)
    proximity = torch.stack((left + 1 - t, t - left), dim=1)
    loss = -(F.log_softmax(x, dim=1).gather(1, index) * proximity).sum(1)
    return finish(name, loss, pred, weight, reduction, avg_factor)


# --- registered modules ---------------------------------------------------------------------------

@register_loss
class FocalLoss(ClassificationLoss):
    """Focal loss module, a drop-in for mmdet's ``FocalLoss``; see :func:`focal_loss`."""
    loss_fn = staticmethod(focal_loss)
    positional = ('use_sigmoid', 'gamma', 'alpha', 'reduction', 'loss_weight', 'activated')
    inputs = 'pred: (N, C) logits; target: (N,) labels in [0, C] or (N, C) soft targets'
    reference = 'mmdet FocalLoss'


@register_loss
class QualityFocalLoss(ClassificationLoss):
    """Quality focal loss module, a drop-in for mmdet's; see :func:`quality_focal_loss`."""
    loss_fn = staticmethod(quality_focal_loss)
    positional = ('use_sigmoid', 'beta', 'reduction', 'loss_weight', 'activated')
    inputs = 'pred: (N, C) logits; target: (labels (N,), scores (N,))'
    reference = 'mmdet QualityFocalLoss'


@register_loss
class VarifocalLoss(ClassificationLoss):
    """Varifocal loss module, a drop-in for mmdet's; see :func:`varifocal_loss`."""
    loss_fn = staticmethod(varifocal_loss)
    positional = ('use_sigmoid', 'alpha', 'gamma', 'iou_weighted', 'reduction', 'loss_weight')
    inputs = 'pred: (N, C) logits; target: (N, C) IoU-aware soft targets'
    reference = 'mmdet VarifocalLoss'


@register_loss
class DistributionFocalLoss(ClassificationLoss):
    """Distribution focal loss module, a drop-in for mmdet's; see :func:`distribution_focal_loss`."""
    loss_fn = staticmethod(distribution_focal_loss)
    positional = ('reduction', 'loss_weight')
    inputs = 'pred: (N, n+1) logits over bins; target: (N,) floats in [0, n)'
    reference = 'mmdet DistributionFocalLoss'
