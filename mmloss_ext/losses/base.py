"""``BaseLoss``: the one module every registered loss derives from.

It owns, once for all losses: ``loss_weight``, ``reduction``, ``reduction_override``, the
zero-weight and empty-input shortcuts, the constructor, build-time checks of the hyper-parameters
and ``extra_repr``. A loss is a documented functional plus a class of a few lines::

    @declare('CharbonnierLoss', eps=NON_NEGATIVE)
    def charbonnier_loss(pred, target, *, eps: float = 1e-6, weight=None, reduction='mean', avg_factor=None):
        ...

    @register_loss
    class CharbonnierLoss(RegressionLoss):
        loss_fn = staticmethod(charbonnier_loss)

The constructor is derived from the functional: every keyword-only hyper-parameter of
``loss_fn`` (with its default from the functional's signature, its declared range or choices) plus
``reduction`` (default: the functional's) and ``loss_weight``; ``inspect.signature(LossClass)``
shows exactly these. Hyper-parameters are keyword-only, except the names in ``positional``: the
order a drop-in class for an mmdet loss accepts positionally, as mmdet's constructor does.

``BaseLoss.forward(pred, target, weight, avg_factor, reduction_override, **kwargs)`` calls
``loss_weight * loss_fn(pred, target, weight=..., reduction=..., avg_factor=..., **hparams)``.
A loss of several parts (SeesawLoss) returns a dict of them from its functional, names the keys in
:meth:`BaseLoss.parts` and gets each part scaled by ``loss_weight`` (and the shortcut's zeros in
the same dict). A hyper-parameter whose functional default is
:data:`~mmloss_ext.core.hparams.REQUIRED` must be given to the constructor (a ``TypeError``,
also an ``AssertionError`` like mmdet's ``num_classes != -1`` check, otherwise).

Non-finite inputs are not masked. A NaN in ``pred`` or ``target`` gives a NaN loss (no loss
clamps, filters or replaces it away, so a diverging model shows at once instead of training on
silently); the one exception is a float target whose range the loss checks
(``DistributionFocalLoss``), where a NaN is an input error. ``±inf`` gives a non-finite loss
wherever the loss is unbounded in that input (residuals, log-likelihoods, box coordinates, images);
the overlap losses in ``mode='binary'`` (Dice, Jaccard, Tversky, focal Tversky: a sigmoid into
a bounded ratio) and the arg-max of ``ZeroOneLoss`` read an infinite logit as its limit, a
certain prediction, and stay finite. Checking finiteness is left to the caller (e.g. mmengine's
``OptimWrapper`` or ``torch.autograd.detect_anomaly``): a check inside the loss would read the
values on the host, a device sync on every step.
"""
from __future__ import annotations

import inspect
import numbers
from typing import Callable, ClassVar, Dict, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..core.compat import is_compiling
from ..core.hparams import Spec, check_hparam_type
from ..core.inputs import check_tensor
from ..core.reduction import AvgFactor, check_reduction

#: the constructor keywords every loss has besides its hyper-parameters
BASE_KEYWORDS = ('reduction', 'loss_weight')


class _ClassSignature:
    """``inspect.signature(LossClass)``: the derived constructor (instances keep their ``forward``'s)."""

    def __get__(self, obj, cls):
        if obj is not None:
            raise AttributeError('__signature__')
        return cls.constructor_signature()


class BaseLoss(nn.Module):
    """Base of every mmloss_ext loss module (see the module docstring).

    Args (derived per class from ``loss_fn``):
        *args: the hyper-parameters named in ``positional``, in that order.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'`` (default: the functional's).
        loss_weight: multiplies the reduced loss.
        **hparams: the loss's hyper-parameters, each a keyword-only parameter of ``loss_fn``:
            type-checked against its default, checked against its declaration and stored as an
            attribute of the same name.
    """

    #: the functional holding the math (a ``staticmethod``), declared with :func:`~mmloss_ext.core.hparams.declare`
    loss_fn: ClassVar[Callable]
    #: the loss's family in the catalogue, set once by each family's base class
    family: ClassVar[str] = ''
    #: what the loss takes, in a few words (the catalogue's "inputs")
    inputs: ClassVar[str] = ''
    #: what the tests hold the loss to (the catalogue's "tested against")
    reference: ClassVar[str] = 'hand formula'
    #: False for losses of ``pred`` alone (total variation): forward takes no target
    takes_target: ClassVar[bool] = True
    #: constructor arguments accepted positionally, in order (an mmdet drop-in's constructor order)
    positional: ClassVar[Tuple[str, ...]] = ()

    __signature__ = _ClassSignature()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()
        name = type(self).__name__
        spec = self.spec()
        given = self._bind(name, args, kwargs)
        reduction = given.pop('reduction', spec.reduction)
        loss_weight = given.pop('loss_weight', 1.0)
        check_reduction(name, reduction)
        if isinstance(loss_weight, bool) or not isinstance(loss_weight, numbers.Real):
            raise TypeError(f'{name}: `loss_weight` expected a number, got {type(loss_weight).__name__} '
                            f'{loss_weight!r}')
        spec.check_required(name, given)
        for key, value in given.items():
            check_hparam_type(name, key, value, spec.defaults[key])
        spec.check(name, given)
        for key, default in spec.defaults.items():
            setattr(self, key, given.get(key, default))
        self.reduction = reduction
        self.loss_weight = float(loss_weight)

    # --- what the class derives from its functional ---------------------------------------------

    @classmethod
    def spec(cls) -> Spec:
        """The functional's declaration: hyper-parameters, defaults, ranges, choices."""
        return cls.loss_fn.spec

    @classmethod
    def _bind(cls, name: str, args: tuple, kwargs: dict) -> Dict[str, object]:
        """The constructor's arguments by name (positional ones in ``positional`` order)."""
        if len(args) > len(cls.positional):
            takes = ', '.join(cls.positional) or 'none: every argument is a keyword'
            raise TypeError(f'{name}: expected at most {len(cls.positional)} positional arguments ({takes}), '
                            f'got {len(args)}')
        given = dict(zip(cls.positional, args))
        allowed = (*cls.spec().defaults, *BASE_KEYWORDS)
        for key, value in kwargs.items():
            if key in given:
                raise TypeError(f'{name}: got multiple values for `{key}`')
            if key not in allowed:
                raise TypeError(f'{name}: unexpected hyper-parameter `{key}` (expected one of {", ".join(allowed)})')
            given[key] = value
        return given

    @classmethod
    def constructor_signature(cls) -> inspect.Signature:
        """The constructor's signature: ``positional`` first, every other argument keyword-only."""
        spec = cls.spec()
        defaults = {**spec.defaults, 'reduction': spec.reduction, 'loss_weight': 1.0}
        fn_params = spec.signature.parameters

        def param(key: str, kind) -> inspect.Parameter:
            annotation = fn_params[key].annotation if key in fn_params else 'float'
            return inspect.Parameter(key, kind, default=defaults[key], annotation=annotation)

        params = [param(k, inspect.Parameter.POSITIONAL_OR_KEYWORD) for k in cls.positional]
        params += [param(k, inspect.Parameter.KEYWORD_ONLY) for k in defaults if k not in cls.positional]
        return inspect.Signature(params, return_annotation=None)

    @classmethod
    def choices(cls) -> Dict[str, tuple]:
        """The allowed values of this loss's hyper-parameters that take one of a set."""
        return cls.spec().choices()

    def hparams(self) -> Dict[str, object]:
        """The hyper-parameters passed to :attr:`loss_fn` (current attribute values)."""
        return {k: getattr(self, k) for k in self.spec().defaults}

    # --- the call -------------------------------------------------------------------------------

    def forward(self, pred: Tensor, target=None, weight: Optional[Tensor] = None,
                avg_factor: AvgFactor = None, reduction_override: Optional[str] = None,
                **kwargs) -> Union[Tensor, Dict[str, Tensor]]:
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
            parts = self.parts()
            return {k: pred.sum() * 0.0 for k in parts} if parts else pred.sum() * 0.0
        if self.takes_target:
            args = (pred, target)
        elif target is not None:
            raise TypeError(f'{name}: takes no `target` (a loss of `pred` alone), '
                            f'got {type(target).__name__}')
        else:
            args = (pred,)
        params = {**self.hparams(), **kwargs}
        loss = self.loss_fn(*args, weight=weight, reduction=reduction, avg_factor=avg_factor, **params)
        if isinstance(loss, dict):
            return {k: v * self.loss_weight for k, v in loss.items()}
        return loss * self.loss_weight

    def parts(self) -> Tuple[str, ...]:
        """The keys of the dict ``forward`` returns, for a loss of several parts as configured (e.g.
        SeesawLoss's ``loss_cls_objectness`` and ``loss_cls_classes`` with ``return_dict=True``);
        ``()`` for a loss that returns a tensor (every other loss)."""
        return ()

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

    Accelerator weights are not inspected (reading them would force a device sync), nor any under
    ``torch.compile`` (a host read breaks the graph): the loss is zero anyway since every loss is
    finite and multiplied by the weight.
    """
    return (isinstance(weight, Tensor) and weight.device.type == 'cpu' and weight.numel() > 0
            and not is_compiling() and not bool((weight > 0).any()))
