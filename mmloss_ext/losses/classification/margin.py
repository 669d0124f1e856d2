r"""Margin losses on raw scores: HingeLoss and the ZeroOneLoss monitor.

Both take either binary scores with labels of the same shape, or class scores ``(N, C, ...)``
with integer labels ``(N, ...)``; ``'none'`` gives the labels' shape.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ...core.hparams import NON_NEGATIVE, declare
from ...core.inputs import check_tensor, check_values
from ...core.reduction import AvgFactor
from ...registry import register_loss
from ._common import ClassificationLoss, check_class_labels, check_logits, check_target_like, class_mask, finish, gather_class

__all__ = ['hinge_loss', 'zero_one_loss', 'HingeLoss', 'ZeroOneLoss']


def _binary_labels(name: str, x: Tensor, target: Tensor, allowed: tuple) -> Tensor:
    """Binary labels of ``pred``'s shape with values in ``allowed``; returns ``target > 0``."""
    t = check_target_like(name, x, target)
    ok = torch.zeros_like(t, dtype=torch.bool)
    for value in allowed:
        ok |= t == value
    check_values(name, 'target', ok, f'binary labels in {{{", ".join(map(str, allowed))}}}')
    return t > 0


def _is_binary(name: str, pred, target) -> bool:
    """Binary scores come with labels of their own shape, class scores with one dim fewer."""
    check_tensor(name, 'target', target, floating=False)
    return target.dim() == pred.dim()


@declare('HingeLoss', margin=NON_NEGATIVE)
def hinge_loss(pred: Tensor, target: Tensor, *, margin: float = 1.0, squared: bool = False,
               weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Hinge loss (squared hinge when ``squared``).

    Binary: scores and labels of the same shape, labels in :math:`\{0, 1\}` or :math:`\{-1, 1\}`
    (0 and -1 both mean negative), :math:`\ell = \max(0, m - y f)` with :math:`y = \pm 1`.

    Multi-class (Crammer-Singer style, as torch's ``multi_margin_loss`` with ``p=1``, or ``p=2``
    when ``squared``): scores ``(N, C, ...)``, integer labels ``(N, ...)``, per sample

    .. math:: \ell = \frac{1}{C} \sum_{j \ne y} \max(0, m - f_y + f_j)^{p}

    ``'none'`` gives the labels' shape.

    Example:
        >>> hinge_loss(torch.tensor([2.0, 0.5, -0.5]), torch.tensor([1, 1, 0]), reduction='none')
        tensor([0.0000, 0.5000, 0.5000])
        >>> hinge_loss(torch.tensor([[1.0, 0.5, -1.0]]), torch.tensor([0]), reduction='none')  # (0.5 + 0) / 3
        tensor([0.1667])
    """
    name = hinge_loss.spec.loss
    x = check_logits(name, pred)
    if _is_binary(name, x, target):
        y = _binary_labels(name, x, target, (-1, 0, 1)).to(x.dtype) * 2.0 - 1.0
        loss = (margin - y * x).clamp_min(0.0)
        return finish(name, loss.square() if squared else loss, pred, weight, reduction, avg_factor)
    check_class_labels(name, x, target, x.shape[1] - 1 if x.dim() >= 2 else 0)
    violation = (margin - gather_class(x, target).unsqueeze(1) + x).clamp_min(0.0)
    if squared:
        violation = violation.square()
    loss = violation.masked_fill(class_mask(target, x.shape[1]), 0.0).sum(1) / x.shape[1]
    return finish(name, loss, pred, weight, reduction, avg_factor)


@declare('ZeroOneLoss')
def zero_one_loss(pred: Tensor, target: Tensor, *, weight: Optional[Tensor] = None, reduction: str = 'mean',
                  avg_factor: AvgFactor = None) -> Tensor:
    r"""Zero-one loss: 1 where the prediction is wrong, so ``'mean'`` is the error rate.

    .. math:: \ell = [\hat y \ne y],\quad \hat y = \arg\max_c f_c \ \text{ or }\ \hat y = [f > 0]

    Class scores ``(N, C, ...)`` with integer labels ``(N, ...)`` (wrong when the arg-max, first on
    ties, differs from the label), or binary logits with labels in :math:`\{0, 1\}` of the same
    shape (predicted positive when the logit is > 0).

    For monitoring only: the loss is piecewise constant, so it carries no gradient (the result
    never requires grad) and must not be the only loss being optimised. A sample with a NaN score gets a
    NaN loss (it is neither right nor wrong), so a diverged model shows in the metric.

    Example:
        >>> zero_one_loss(torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]]), torch.tensor([0, 1, 1]))
        tensor(0.3333)
        >>> zero_one_loss(torch.tensor([0.5, -2.0, 0.0]), torch.tensor([1, 1, 0]), reduction='none')
        tensor([0., 1., 0.])
    """
    name = zero_one_loss.spec.loss
    x = check_logits(name, pred).detach()
    if _is_binary(name, x, target):
        wrong, nan = (x > 0) != _binary_labels(name, x, target, (0, 1)), x.isnan()
    else:
        check_class_labels(name, x, target, x.shape[1] - 1 if x.dim() >= 2 else 0)
        wrong, nan = x.argmax(1) != target, x.isnan().any(1)
    # a NaN score is no prediction: propagate it rather than count it as right or wrong
    return finish(name, wrong.to(x.dtype).masked_fill(nan, float('nan')), pred, weight, reduction, avg_factor)


# --- registered modules ---------------------------------------------------------------------------

@register_loss
class HingeLoss(ClassificationLoss):
    """Hinge loss module; see :func:`hinge_loss`."""
    loss_fn = staticmethod(hinge_loss)
    inputs = 'pred: (N,) or (N, C) scores; target: labels'
    reference = 'torch multi_margin_loss'


@register_loss
class ZeroOneLoss(ClassificationLoss):
    """Zero-one (error-rate) module, for monitoring: no gradient; see :func:`zero_one_loss`."""
    loss_fn = staticmethod(zero_one_loss)
    inputs = 'pred: (N, C) scores or (N,) logits; target: labels (no gradient)'
