"""``BaseLoss``: the one module every registered loss derives from.

It owns, once for all losses: ``loss_weight``, ``reduction``, ``reduction_override``, the
zero-weight and empty-input shortcuts, build-time type checks of the hyper-parameters and
``extra_repr``. A concrete loss is a documented functional plus a thin class::

    @register_loss
    class CharbonnierLoss(BaseLoss):
        loss_fn = staticmethod(charbonnier_loss)

        def __init__(self, eps: float = 1e-6, **base):
            super().__init__(eps=eps, **base)

``BaseLoss.forward(pred, target, weight, avg_factor, reduction_override, **kwargs)`` calls
``loss_weight * loss_fn(pred, target, weight=..., reduction=..., avg_factor=..., **hparams)``.

Non-finite inputs are not masked. A NaN in ``pred`` or ``target`` gives a NaN loss (no loss
clamps, filters or replaces it away, so a diverging model shows at once instead of training on
silently); the one exception is a float target whose range the loss checks
(``DistributionFocalLoss``), where a NaN is an input error. ``±inf`` gives a non-finite loss
wherever the loss is unbounded in that input (residuals, log-likelihoods, box coordinates, images);
the overlap losses in ``mode='binary'`` (Dice, Jaccard, Tversky, focal Tversky: a sigmoid into
a bounded ratio) and the arg-max of ``ZeroOneLoss`` read an infinite logit as its limit, a
certain prediction, and stay finite. Checking finiteness is left to the caller (e.g. mmengine's ``OptimWrapper`` or
``torch.autograd.detect_anomaly``): a check inside the loss would read the values on the host,
a device sync on every step.
"""
from __future__ import annotations

import inspect
import numbers
from typing import Callable, ClassVar, Dict, Optional

import torch
from torch import Tensor, nn

from .inputs import check_choice, check_hparam, check_ranges, check_tensor
from ..kernels.dispatch import IMPLS
from .reduction import AvgFactor, check_reduction

_PLUMBING = ('weight', 'reduction', 'avg_factor')
#: choices shared by every loss that has the hyper-parameter: the hot losses' fused-path switch
_SHARED_CHOICES = {'impl': IMPLS}


def functional_hparams(fn: Callable) -> Dict[str, object]:
    """The keyword-only hyper-parameters of a loss functional and their defaults."""
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name not in _PLUMBING}


class BaseLoss(nn.Module):
    """Base of every mmloss_ext loss module (see the module docstring).

    Args:
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        loss_weight: multiplies the reduced loss.
        **hparams: the loss's hyper-parameters; each must be a keyword-only parameter of
            ``loss_fn``, is type-checked against that parameter's default and stored as an
            attribute of the same name.
    """

    #: the functional holding the math (a ``staticmethod``)
    loss_fn: ClassVar[Callable]
    #: False for losses of ``pred`` alone (total variation): forward takes no target
    takes_target: ClassVar[bool] = True
    #: build-time choices for string hyper-parameters, e.g. ``{'mode': ('log', 'linear')}``
    hparam_choices: ClassVar[Dict[str, tuple]] = {}
    #: build-time numeric ranges, ``{'gamma': dict(low=0.0)}`` (see :func:`inputs.check_ranges`)
    hparam_ranges: ClassVar[Dict[str, dict]] = {}

    def __init__(self, *, reduction: str = 'mean', loss_weight: float = 1.0, **hparams) -> None:
        super().__init__()
        name = type(self).__name__
        check_reduction(name, reduction)
        if isinstance(loss_weight, bool) or not isinstance(loss_weight, numbers.Real):
            raise TypeError(f'{name}: `loss_weight` expected a number, got {type(loss_weight).__name__} '
                            f'{loss_weight!r}')
        spec = functional_hparams(self.loss_fn)
        allowed = self.choices()
        for key, value in hparams.items():
            if key not in spec:
                raise TypeError(f'{name}: unexpected hyper-parameter `{key}` '
                                f'(expected one of {", ".join(spec) or "none"})')
            check_hparam(name, key, value, spec[key])
            if key in allowed:
                check_choice(name, key, value, allowed[key])
            check_ranges(name, self.hparam_ranges, **{key: value})
            setattr(self, key, value)
        self._hparam_names = tuple(hparams)
        self.reduction = reduction
        self.loss_weight = float(loss_weight)

    @classmethod
    def choices(cls) -> Dict[str, tuple]:
        """The allowed values of this loss's string hyper-parameters: its own ``hparam_choices``
        plus the choices every loss shares (``impl``), for the hyper-parameters it has."""
        own = functional_hparams(cls.loss_fn)
        shared = {k: v for k, v in _SHARED_CHOICES.items() if k in own}
        return {**shared, **cls.hparam_choices}

    def hparams(self) -> Dict[str, object]:
        """The hyper-parameters passed to :attr:`loss_fn` (current attribute values)."""
        return {k: getattr(self, k) for k in self._hparam_names}

    def forward(self, pred: Tensor, target=None, weight: Optional[Tensor] = None,
                avg_factor: AvgFactor = None, reduction_override: Optional[str] = None,
                **kwargs) -> Tensor:
        """Compute the loss.

        Args:
            pred: the prediction.
            target: the target (not taken by losses of ``pred`` alone).
            weight: elementwise / per-sample weight.
            avg_factor: divisor of the ``'mean'`` reduction.
            reduction_override: overrides ``self.reduction`` for this call.
            **kwargs: per-call values for the functional's keyword arguments.
        """
        name = type(self).__name__
        reduction = self.reduction if reduction_override is None else reduction_override
        check_reduction(name, reduction, avg_factor)
        check_tensor(name, 'pred', pred)  # floating: every loss takes float predictions
        if reduction != 'none' and (pred.numel() == 0 or _all_zero_on_host(weight)):
            # Nothing to average: a zero that keeps pred's graph (and dtype) alive.
            self.on_shortcut()
            return pred.sum() * 0.0
        if self.takes_target:
            args = (pred, target)
        elif target is not None:
            raise TypeError(f'{name}: takes no `target` (a loss of `pred` alone), '
                            f'got {type(target).__name__}')
        else:
            args = (pred,)
        params = {**self.hparams(), **kwargs}
        loss = self.loss_fn(*args, weight=weight, reduction=reduction, avg_factor=avg_factor, **params)
        return loss * self.loss_weight

    def on_shortcut(self) -> None:
        """Called when the empty-input / zero-weight shortcut answers a call without the functional.

        Stateless losses do nothing; a stateful loss overrides it to do what its functional would
        have done for an empty batch (e.g. join a cross-rank all-reduce of its running statistics).
        """

    def extra_repr(self) -> str:
        items = [f'{k}={v!r}' for k, v in self.hparams().items()]
        items += [f'reduction={self.reduction!r}', f'loss_weight={self.loss_weight}']
        return ', '.join(items)


def _all_zero_on_host(weight: Optional[Tensor]) -> bool:
    """True for a CPU weight with no positive entry (mmdet's zero-weight shortcut).

    Accelerator weights are not inspected: reading them would force a device sync, and the loss
    is zero anyway since every loss is finite and multiplied by the weight.
    """
    return (isinstance(weight, Tensor) and weight.device.type == 'cpu' and weight.numel() > 0
            and not bool((weight > 0).any()))
