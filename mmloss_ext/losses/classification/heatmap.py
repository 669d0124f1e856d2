r"""Heatmap losses: GaussianFocalLoss, the penalty-reduced focal loss of CornerNet and CenterNet on
Gaussian target heatmaps, with mmdet's calling conventions.

``pred`` holds probabilities (the head applies the sigmoid; the loss applies none), ``target`` a
heatmap of the same shape in ``[0, 1]`` that is exactly 1 at the object centres (corners) and falls
off as a Gaussian around them. CenterNet-update passes its positives explicitly instead
(``pos_inds``, ``pos_labels``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ...core.abi import GAUSSIAN_FOCAL_EPS
from ...core.errors import LossValueError
from ...core.hparams import NON_NEGATIVE, declare
from ...core.inputs import check_int_tensor, check_label_range, check_same_device, check_tensor
from ...core.reduction import AvgFactor, adapt_weight, reduce_summed
from ...kernels import gaussian_focal as fused, use_fused
from ...registry import register_loss
from ._common import ClassificationLoss, check_target_like
from .. import probes

__all__ = ['gaussian_focal_loss', 'GaussianFocalLoss']


def _pow(q: Tensor, a: float) -> Tensor:
    """``q ** a`` (``0 ** 0 = 1``) whose gradient at ``q = 0`` is 0 for ``0 < a < 1`` too, where
    torch's is infinite (and then NaN once multiplied by the vanishing log next to it)."""
    if a == 0.0 or a >= 1.0:
        return q.pow(a)
    zero = q == 0
    return torch.where(zero, 0.0, torch.where(zero, 1.0, q).pow(a))


class _Upcast(torch.autograd.Function):
    """A float32 copy of a half-precision ``pred`` whose gradient goes back saturated at the half
    type's largest finite value: the float32 gradient at a probability of exactly 0 (a positive) or 1
    (a negative) is about -+1/eps = -+1e12, which float16 would round to an infinity. NaN passes."""

    @staticmethod
    def forward(ctx, x):
        ctx.dtype = x.dtype
        return x.float()

    @staticmethod
    def backward(ctx, grad):
        big = torch.finfo(ctx.dtype).max
        return grad.clamp(-big, big).to(ctx.dtype)


def _compute_input(name: str, pred) -> Tensor:
    """``pred`` checked (a floating-point tensor of at least 1 dim) in the compute dtype."""
    check_tensor(name, 'pred', pred)
    if pred.dim() < 1:
        raise LossValueError(f'{name}: `pred` expected at least 1 dims (N, C, ...), got shape {tuple(pred.shape)}')
    return _Upcast.apply(pred) if pred.dtype in (torch.float16, torch.bfloat16) else pred


def _positive_term(p: Tensor, alpha: float) -> Tensor:
    """``-log(p + eps) (1 - p)^alpha``: the loss of a probability ``p`` at a positive."""
    return -torch.log(p + GAUSSIAN_FOCAL_EPS) * _pow(1.0 - p, alpha)


def _negative_term(p: Tensor, t: Tensor, alpha: float, gamma: float) -> Tensor:
    """``-log(1 - p + eps) p^alpha (1 - t)^gamma``: the penalty-reduced loss of a negative."""
    return -torch.log(1.0 - p + GAUSSIAN_FOCAL_EPS) * _pow(p, alpha) * _pow(1.0 - t, gamma)


def _check_positives(name: str, x: Tensor, pos_inds, pos_labels) -> None:
    """``pos_inds`` and ``pos_labels``: integer tensors ``(M,)`` indexing the rows and classes of a
    2-D ``pred``, both given or neither."""
    if pos_inds is None and pos_labels is None:
        return
    if pos_inds is None or pos_labels is None:
        given, missing = ('pos_inds', 'pos_labels') if pos_labels is None else ('pos_labels', 'pos_inds')
        raise LossValueError(f'{name}: `{missing}` expected along with `{given}`, got None')
    if x.dim() != 2:
        raise LossValueError(f'{name}: `pred` expected shape (N, C) with `pos_inds`, got {tuple(x.shape)}')
    check_int_tensor(name, 'pos_inds', pos_inds)
    check_int_tensor(name, 'pos_labels', pos_labels)
    if pos_inds.dim() != 1 or pos_labels.shape != pos_inds.shape:
        raise LossValueError(f'{name}: `pos_inds` and `pos_labels` expected the same shape (M,), '
                             f'got {tuple(pos_inds.shape)} and {tuple(pos_labels.shape)}')
    check_same_device(name, x, pos_inds, ('pred', 'pos_inds'))
    check_same_device(name, x, pos_labels, ('pred', 'pos_labels'))
    check_label_range(name, 'pos_inds', pos_inds, 0, x.shape[0] - 1)
    check_label_range(name, 'pos_labels', pos_labels, 0, x.shape[1] - 1)


def _positives_part(name: str, x: Tensor, pos_inds: Tensor, pos_labels: Tensor, alpha: float, pos_weight: float,
                    weight: Optional[Tensor], reduction: str, avg_factor: AvgFactor) -> Tensor:
    """The loss of the listed positives, reduced on its own: the mean is over the ``M`` positives.
    ``'none'`` scatters it (added, for repeated indices) into a zero map of ``pred``'s shape."""
    index = (pos_inds.long(), pos_labels.long())
    loss = pos_weight * _positive_term(x[index], alpha)
    if weight is not None:
        loss = loss * adapt_weight(name, weight, x).expand(x.shape)[index]

    def scattered() -> Tensor:
        return torch.zeros_like(x).index_put(index, loss, accumulate=True)

    return reduce_summed(scattered, loss.sum, loss.numel(), reduction, avg_factor, name=name)


@declare('GaussianFocalLoss', probe=probes.heatmap, alpha=NON_NEGATIVE, gamma=NON_NEGATIVE, pos_weight=NON_NEGATIVE,
         neg_weight=NON_NEGATIVE)
def gaussian_focal_loss(pred: Tensor, target: Tensor, pos_inds: Optional[Tensor] = None,
                        pos_labels: Optional[Tensor] = None, *, alpha: float = 2.0, gamma: float = 4.0,
                        pos_weight: float = 1.0, neg_weight: float = 1.0, impl: str = 'auto',
                        weight: Optional[Tensor] = None, reduction: str = 'mean',
                        avg_factor: AvgFactor = None) -> Tensor:
    r"""Gaussian focal loss (Law and Deng, 2018, "CornerNet: Detecting Objects as Paired Keypoints").

    The focal loss for probabilities against a Gaussian heatmap (CornerNet, CenterNet): an element
    whose target is exactly 1 is a positive; every other element is a negative whose penalty is
    reduced near the centres by :math:`(1 - t)^\gamma`. Elementwise, with
    :math:`\epsilon = 10^{-12}` as mmdet:

    .. math::

        \ell = -w_+ [t = 1] (1 - p)^\alpha \log(p + \epsilon)
              - w_- (1 - t)^\gamma p^\alpha \log(1 - p + \epsilon)

    Args:
        pred: probabilities ``(N, C, ...)`` (the head's sigmoid output; no sigmoid is applied).
        target: the Gaussian heatmap, ``pred``'s shape, values in ``[0, 1]``.
        pos_inds: CenterNet-update's form (mmdet's ``gaussian_focal_loss_with_pos_inds``), with
            ``pred`` and ``target`` ``(N, C)``: the rows ``(M,)`` of the positives, which are then
            ``pred[pos_inds, pos_labels]`` (the target's 1s are not looked at); every element is
            a negative. The two parts are reduced separately and added: ``'mean'`` averages the
            positives over ``M`` and the negatives over ``N * C``, ``avg_factor`` divides both
            sums. ``'none'`` gives ``pred``'s shape, the positives' losses added at their elements
            (mmdet would add an ``(M, 1)`` tensor to an ``(N, C)`` one). mmdet ignores ``weight``
            in this form; here it weights both parts elementwise. With no positive listed (``M = 0``)
            their mean is 0 (mmdet's is NaN).
        pos_labels: the classes ``(M,)`` of the positives (with ``pos_inds``).
        alpha: the focusing power of the prediction, :math:`\alpha \ge 0`.
        gamma: the power of the penalty reduction of the negatives, :math:`\gamma \ge 0`.
        pos_weight: :math:`w_+`, the weight of the positives' loss.
        neg_weight: :math:`w_-`, the weight of the negatives' loss.
        impl: ``'auto'`` | ``'eager'`` | ``'fused'`` (:mod:`mmloss_ext.kernels.dispatch`): the
            fused kernel (C++ on the CPU, Triton on CUDA) computes the dense part in one pass
            forward and one backward.
        weight: elementwise weight of ``pred``'s shape (or one that broadcasts to it, or ``(N,)``).
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        avg_factor: divisor of ``'mean'`` (mmdet's heads pass the number of positives).

    Returns:
        ``pred``'s shape for ``'none'``, else a scalar; in ``pred``'s dtype. Values and gradients are
        finite for probabilities of exactly 0 and 1 (mmdet's gradient is not for
        :math:`0 < \alpha < 1`). Half precision is computed in float32 (mmdet's eps underflows in
        float16); the gradient at such a probability, about :math:`\pm 1/\epsilon`, comes back to
        float16 saturated at its largest finite value.

    Example:
        >>> pred = torch.tensor([[0.5, 0.1], [0.9, 0.0]])
        >>> target = torch.tensor([[1.0, 0.5], [0.0, 1.0]])
        >>> gaussian_focal_loss(pred, target, reduction='none')
        tensor([[1.7329e-01, 6.5850e-05],
                [1.8651e+00, 2.7631e+01]])
        >>> # only (0, 0) listed as a positive: the target's 1 at (1, 1) is then no positive
        >>> gaussian_focal_loss(pred, target, torch.tensor([0]), torch.tensor([0]), reduction='sum')
        tensor(2.0384)
    """
    name = gaussian_focal_loss.spec.loss
    x = _compute_input(name, pred)
    check_tensor(name, 'target', target, floating=False)
    t = check_target_like(name, x, target)
    _check_positives(name, x, pos_inds, pos_labels)
    listed = pos_inds is not None
    if use_fused(name, impl, x, op='gaussian_focal', others=(t, weight)):
        # with listed positives the kernel gives the dense negatives part (no positives by value)
        dense = fused.gaussian_focal_family(name, x, t, alpha=alpha, gamma=gamma,
                                            pos_weight=0.0 if listed else pos_weight, neg_weight=neg_weight,
                                            weight=weight, reduction=reduction, avg_factor=avg_factor)
    else:
        loss = neg_weight * _negative_term(x, t, alpha, gamma)
        if not listed and pos_weight:  # pos_weight=0 drops the term (and the NaN of its log below p = 0)
            loss = loss + pos_weight * _positive_term(x, alpha) * (t == 1)
        if weight is not None:
            loss = loss * adapt_weight(name, weight, loss)
        dense = reduce_summed(lambda: loss, loss.sum, loss.numel(), reduction, avg_factor, name=name)
    if listed:
        dense = dense + _positives_part(name, x, pos_inds, pos_labels, alpha, pos_weight, weight, reduction,
                                        avg_factor)
    return dense.to(pred.dtype)


# --- registered module ----------------------------------------------------------------------------

@register_loss
class GaussianFocalLoss(ClassificationLoss):
    """Gaussian focal loss module, a drop-in for mmdet's ``GaussianFocalLoss`` (CornerNet, CenterNet,
    CenterNet-update); see :func:`gaussian_focal_loss`.

    ``forward(pred, target, pos_inds=None, pos_labels=None, weight=None, avg_factor=None,
    reduction_override=None)``: mmdet's order, ``pos_inds``/``pos_labels`` before ``weight``.
    """
    loss_fn = staticmethod(gaussian_focal_loss)
    positional = ('alpha', 'gamma', 'reduction', 'loss_weight', 'pos_weight', 'neg_weight')
    inputs = ('pred: (N, C, ...) probabilities; target: Gaussian heatmap of the same shape (1 at the '
              'centres); or pred, target (N, C) with pos_inds, pos_labels (M,)')
    reference = 'mmdet GaussianFocalLoss'

    def forward(self, pred: Tensor, target=None, pos_inds: Optional[Tensor] = None,
                pos_labels: Optional[Tensor] = None, weight: Optional[Tensor] = None,
                avg_factor: AvgFactor = None, reduction_override: Optional[str] = None, **kwargs) -> Tensor:
        return super().forward(pred, target, weight, avg_factor, reduction_override, pos_inds=pos_inds,
                               pos_labels=pos_labels, **kwargs)
