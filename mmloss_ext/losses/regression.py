r"""Regression losses: elementwise functions of the residual ``d = pred - target``.

Every functional takes ``pred`` and ``target`` of the same shape (any shape, floating point),
computes in float32 for half-precision inputs and returns the input dtype. ``'none'`` returns the
elementwise loss in ``pred``'s shape (RMSE: see :func:`rmse_loss`).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from ..core.abi import SMOOTH_L1_MIN_BETA
from ..core.hparams import NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, declare
from ..core.inputs import check_same_device, check_same_shape, check_tensor, upcast
from ..core.reduction import AvgFactor, weight_reduce_loss
from ..kernels import elementwise as fused, use_fused
from ..registry import register_loss
from .base import BaseLoss
from . import probes

__all__ = [
    'l1_loss', 'mse_loss', 'sse_loss', 'rmse_loss', 'smooth_l1_loss', 'huber_loss', 'log_cosh_loss',
    'quantile_loss', 'charbonnier_loss', 'balanced_l1_loss',
    'L1Loss', 'MSELoss', 'SSELoss', 'RMSELoss', 'SmoothL1Loss', 'HuberLoss', 'LogCoshLoss',
    'QuantileLoss', 'CharbonnierLoss', 'BalancedL1Loss',
]


def _check_pair(name: str, pred: Tensor, target: Tensor) -> None:
    check_tensor(name, 'pred', pred)
    check_tensor(name, 'target', target)
    check_same_shape(name, pred, target)
    check_same_device(name, pred, target)


def _residual(name: str, pred: Tensor, target: Tensor) -> Tensor:
    """Validate a (pred, target) pair and return ``pred - target`` (float32 for half inputs)."""
    _check_pair(name, pred, target)
    pred32, target32 = upcast(pred, target)
    return pred32 - target32


def _elementwise(name: str, pred: Tensor, target: Tensor, fn: Callable[[Tensor], Tensor],
                 weight: Optional[Tensor], reduction: str, avg_factor: AvgFactor, *,
                 kernel: Optional[tuple] = None, impl: str = 'eager') -> Tensor:
    """The shared body of a residual loss: validate, ``fn(d)``, weight, reduce, cast back.

    ``kernel``: ``(kind, hparams)`` of the fused kernel of ``fn`` (see :mod:`mmloss_ext.kernels`),
    taken when :func:`~mmloss_ext.kernels.use_fused` says so for ``impl``."""
    if kernel is not None and use_fused(name, impl, pred, op='elementwise', supported=pred.dim() >= 1,
                                           others=(target, weight)):
        _check_pair(name, pred, target)
        return fused.residual_family(name, *kernel, pred, target, weight=weight, reduction=reduction,
                                     avg_factor=avg_factor)
    loss = fn(_residual(name, pred, target))
    return weight_reduce_loss(loss, weight, reduction, avg_factor, name=name).to(pred.dtype)


@declare('L1Loss', probe=probes.residuals)
def l1_loss(pred: Tensor, target: Tensor, *, impl: str = 'auto', weight: Optional[Tensor] = None,
            reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""L1 loss.

    .. math:: \ell(d) = |d|

    Args:
        pred, target: tensors of the same shape.
        weight: elementwise (or per-sample ``(N,)``) weight.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        avg_factor: divisor of the ``'mean'`` reduction.

    Returns:
        The loss; ``pred``'s shape for ``'none'``, a scalar otherwise.

    Example:
        >>> l1_loss(torch.tensor([1.0, -2.0]), torch.tensor([0.0, 0.0]))
        tensor(1.5000)
    """
    return _elementwise(l1_loss.spec.loss, pred, target, torch.abs, weight, reduction, avg_factor,
                        kernel=(fused.SMOOTH_L1, (0.0,)), impl=impl)


@declare('MSELoss')
def mse_loss(pred: Tensor, target: Tensor, *, weight: Optional[Tensor] = None, reduction: str = 'mean',
             avg_factor: AvgFactor = None) -> Tensor:
    r"""Mean squared error.

    .. math:: \ell(d) = d^2

    Args and returns as :func:`l1_loss`.

    Example:
        >>> mse_loss(torch.tensor([1.0, -2.0]), torch.tensor([0.0, 0.0]))
        tensor(2.5000)
    """
    return _elementwise(mse_loss.spec.loss, pred, target, torch.square, weight, reduction, avg_factor)


@declare('SSELoss')
def sse_loss(pred: Tensor, target: Tensor, *, weight: Optional[Tensor] = None, reduction: str = 'sum',
             avg_factor: AvgFactor = None) -> Tensor:
    r"""Sum of squared errors: :func:`mse_loss` with ``reduction='sum'`` by default.

    .. math:: L = \sum_i d_i^2

    Example:
        >>> sse_loss(torch.tensor([1.0, -2.0]), torch.tensor([0.0, 0.0]))
        tensor(5.)
    """
    return _elementwise(sse_loss.spec.loss, pred, target, torch.square, weight, reduction, avg_factor)


@declare('RMSELoss', eps=NON_NEGATIVE)
def rmse_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-8, weight: Optional[Tensor] = None,
              reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Root mean squared error; the root is taken after the reduction.

    .. math:: L = \sqrt{\operatorname{reduce}(w\, d^2) + \epsilon}

    ``'none'`` gives the elementwise :math:`\sqrt{w\, d^2 + \epsilon}`. ``eps`` keeps the gradient
    finite at a zero error (it is :math:`1/(2\sqrt{\epsilon})`-bounded there).

    Example:
        >>> rmse_loss(torch.tensor([3.0, 5.0]), torch.tensor([0.0, 0.0]), eps=0.0)  # sqrt((9+25)/2)
        tensor(4.1231)
    """
    name = rmse_loss.spec.loss
    squared = torch.square(_residual(name, pred, target))
    return torch.sqrt(weight_reduce_loss(squared, weight, reduction, avg_factor, name=name) + eps).to(pred.dtype)


@declare('SmoothL1Loss', probe=probes.residuals, beta=NON_NEGATIVE)  # mmdet asserts beta > 0; 0 is the L1 limit here
def smooth_l1_loss(pred: Tensor, target: Tensor, *, beta: float = 1.0, impl: str = 'auto',
                   weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Smooth L1 loss (Fast R-CNN, Girshick 2015).

    .. math::
        \ell(d) = \begin{cases} 0.5\, d^2 / \beta & |d| < \beta \\ |d| - 0.5\,\beta & \text{otherwise}\end{cases}

    As ``beta -> 0`` the loss tends to L1. For ``beta < 1e-5`` the L1 form is used directly: the
    quadratic branch would divide by ~0, and although ``torch.where`` does not select it, its
    ``inf`` still reaches the gradient as ``0 * inf = nan``.

    Example:
        >>> smooth_l1_loss(torch.tensor([0.5, 3.0]), torch.zeros(2), reduction='none')
        tensor([0.1250, 2.5000])
    """
    name = smooth_l1_loss.spec.loss

    def fn(d: Tensor) -> Tensor:
        ad = d.abs()
        if beta < SMOOTH_L1_MIN_BETA:
            return ad
        return torch.where(ad < beta, 0.5 * ad * ad / beta, ad - 0.5 * beta)

    return _elementwise(name, pred, target, fn, weight, reduction, avg_factor, kernel=(fused.SMOOTH_L1, (beta,)),
                        impl=impl)


@declare('HuberLoss', delta=POSITIVE)
def huber_loss(pred: Tensor, target: Tensor, *, delta: float = 1.0, weight: Optional[Tensor] = None,
               reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Huber loss (Huber 1964); equals ``delta * smooth_l1_loss(beta=delta)``.

    .. math::
        \ell(d) = \begin{cases} 0.5\, d^2 & |d| \le \delta \\ \delta\,(|d| - 0.5\,\delta) & \text{otherwise}\end{cases}

    Example:
        >>> huber_loss(torch.tensor([0.5, 3.0]), torch.zeros(2), reduction='none')
        tensor([0.1250, 2.5000])
    """
    name = huber_loss.spec.loss

    def fn(d: Tensor) -> Tensor:
        ad = d.abs()
        return torch.where(ad <= delta, 0.5 * d * d, delta * (ad - 0.5 * delta))

    return _elementwise(name, pred, target, fn, weight, reduction, avg_factor)


@declare('LogCoshLoss')
def log_cosh_loss(pred: Tensor, target: Tensor, *, weight: Optional[Tensor] = None, reduction: str = 'mean',
                  avg_factor: AvgFactor = None) -> Tensor:
    r"""Log-cosh loss: quadratic near zero, linear far away, smooth everywhere.

    .. math:: \ell(d) = \log\cosh d = |d| + \operatorname{log1p}(e^{-2|d|}) - \log 2

    The right-hand form never evaluates ``cosh`` (which overflows float32 past
    :math:`|d| \approx 89`), so the loss and its gradient :math:`\tanh d` stay finite for any
    finite residual.

    Example:
        >>> log_cosh_loss(torch.tensor([1e4]), torch.zeros(1))  # 1e4 - log 2, where cosh overflows
        tensor(9999.3066)
    """
    def fn(d: Tensor) -> Tensor:
        ad = d.abs()
        return ad + torch.log1p(torch.exp(-2.0 * ad)) - math.log(2.0)

    return _elementwise(log_cosh_loss.spec.loss, pred, target, fn, weight, reduction, avg_factor)


@declare('QuantileLoss', quantile=UNIT_INTERVAL)
def quantile_loss(pred: Tensor, target: Tensor, *, quantile: float = 0.5, weight: Optional[Tensor] = None,
                  reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Quantile (pinball) loss (Koenker & Bassett 1978); its minimiser is the ``quantile``-th quantile of the target.

    .. math:: \ell = \max(q\,e,\ (q - 1)\,e), \quad e = \text{target} - \text{pred}

    ``quantile=0.5`` is half the L1 loss.

    Example:
        >>> quantile_loss(torch.tensor([0.0, 0.0]), torch.tensor([1.0, -1.0]), quantile=0.9,
        ...               reduction='none')
        tensor([0.9000, 0.1000])
    """
    name = quantile_loss.spec.loss

    def fn(d: Tensor) -> Tensor:
        e = -d
        return torch.maximum(quantile * e, (quantile - 1.0) * e)

    return _elementwise(name, pred, target, fn, weight, reduction, avg_factor)


@declare('CharbonnierLoss', eps=NON_NEGATIVE)
def charbonnier_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-6, weight: Optional[Tensor] = None,
                     reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Charbonnier loss, a differentiable L1 (Charbonnier et al., 1994).

    .. math:: \ell(d) = \sqrt{d^2 + \epsilon}

    Example:
        >>> charbonnier_loss(torch.tensor([3.0]), torch.tensor([0.0]), eps=16.0)
        tensor(5.)
    """
    name = charbonnier_loss.spec.loss
    return _elementwise(name, pred, target, lambda d: torch.sqrt(d * d + eps), weight, reduction, avg_factor)


@declare('BalancedL1Loss', probe=probes.residuals, alpha=POSITIVE, gamma=POSITIVE, beta=POSITIVE)
def balanced_l1_loss(pred: Tensor, target: Tensor, *, alpha: float = 0.5, gamma: float = 1.5,
                     beta: float = 1.0, impl: str = 'auto', weight: Optional[Tensor] = None,
                     reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Balanced L1 loss (Libra R-CNN, Pang et al. 2019).

    With :math:`b = e^{\gamma/\alpha} - 1` (so that :math:`\alpha \ln(b + 1) = \gamma` and the
    gradient is continuous at :math:`|d| = \beta`):

    .. math::
        \ell(d) = \begin{cases}
            \frac{\alpha}{b}(b|d| + 1)\ln\!\left(\frac{b|d|}{\beta} + 1\right) - \alpha|d| & |d| < \beta \\
            \gamma|d| + \frac{\gamma}{b} - \alpha\beta & \text{otherwise}
        \end{cases}

    Example:
        >>> balanced_l1_loss(torch.tensor([0.0, 2.0]), torch.zeros(2), reduction='none')
        tensor([0.0000, 2.5786])
    """
    name = balanced_l1_loss.spec.loss
    b = math.exp(gamma / alpha) - 1.0

    def fn(d: Tensor) -> Tensor:
        ad = d.abs()
        inner = alpha / b * (b * ad + 1.0) * torch.log1p(b * ad / beta) - alpha * ad
        outer = gamma * ad + gamma / b - alpha * beta
        return torch.where(ad < beta, inner, outer)

    return _elementwise(name, pred, target, fn, weight, reduction, avg_factor,
                        kernel=(fused.BALANCED_L1, (alpha, gamma, beta)), impl=impl)


# --- registered modules ---------------------------------------------------------------------------

class RegressionLoss(BaseLoss):
    """Base of the regression family: elementwise losses of ``pred - target``."""
    family = 'regression'
    inputs = 'pred, target: same shape, float'


@register_loss
class L1Loss(RegressionLoss):
    """L1 loss module, a drop-in for mmdet's ``L1Loss``; see :func:`l1_loss`."""
    loss_fn = staticmethod(l1_loss)
    positional = ('reduction', 'loss_weight')
    reference = 'mmdet L1Loss'


@register_loss
class MSELoss(RegressionLoss):
    """Mean squared error module, a drop-in for mmdet's ``MSELoss``; see :func:`mse_loss`."""
    loss_fn = staticmethod(mse_loss)
    positional = ('reduction', 'loss_weight')
    reference = 'mmdet MSELoss'


@register_loss
class SSELoss(RegressionLoss):
    """Sum of squared errors module (``reduction='sum'`` by default); see :func:`sse_loss`."""
    loss_fn = staticmethod(sse_loss)
    reference = 'torch mse_loss(reduction="sum")'


@register_loss
class RMSELoss(RegressionLoss):
    """Root mean squared error module; see :func:`rmse_loss`."""
    loss_fn = staticmethod(rmse_loss)


@register_loss
class SmoothL1Loss(RegressionLoss):
    """Smooth L1 module, a drop-in for mmdet's ``SmoothL1Loss``; see :func:`smooth_l1_loss`."""
    loss_fn = staticmethod(smooth_l1_loss)
    positional = ('beta', 'reduction', 'loss_weight')
    reference = 'mmdet SmoothL1Loss, torch smooth_l1_loss'


@register_loss
class HuberLoss(RegressionLoss):
    """Huber module; see :func:`huber_loss`."""
    loss_fn = staticmethod(huber_loss)
    reference = 'torch huber_loss'


@register_loss
class LogCoshLoss(RegressionLoss):
    """Log-cosh module; see :func:`log_cosh_loss`."""
    loss_fn = staticmethod(log_cosh_loss)


@register_loss
class QuantileLoss(RegressionLoss):
    """Quantile (pinball) module; see :func:`quantile_loss`."""
    loss_fn = staticmethod(quantile_loss)


@register_loss
class CharbonnierLoss(RegressionLoss):
    """Charbonnier module; see :func:`charbonnier_loss`."""
    loss_fn = staticmethod(charbonnier_loss)


@register_loss
class BalancedL1Loss(RegressionLoss):
    """Balanced L1 module (Libra R-CNN), a drop-in for mmdet's ``BalancedL1Loss``; see :func:`balanced_l1_loss`."""
    loss_fn = staticmethod(balanced_l1_loss)
    positional = ('alpha', 'gamma', 'beta', 'reduction', 'loss_weight')
    reference = 'mmdet BalancedL1Loss'
