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
from typing import Callable, ClassVar, Dict, List, Optional, Tuple, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..core.compat import is_compiling
from ..core.errors import Problem, raise_problems, unexpected
from ..core.hparams import Choice, Range, Spec
from ..core.inputs import check_tensor
from ..core.reduction import REDUCTIONS, AvgFactor, check_reduction

#: the constructor keywords every loss has besides its hyper-parameters, declared as they are
#: (the default reduction is the functional's)
BASE_KEYWORDS = ('reduction', 'loss_weight')
BASE_SPEC = Spec('', {'reduction': 'mean', 'loss_weight': 1.0},
                  {'reduction': Choice(*REDUCTIONS), 'loss_weight': Range()})
#: the order in which most losses take the arguments of a call positionally
CALL_ORDER = ('pred', 'target', 'weight', 'avg_factor', 'reduction_override')


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
        reduction: how a call without ``reduction_override`` reduces the elementwise loss
            (default: the functional's).
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
        given, problems = self._bind(name, args, kwargs)
        base = {key: given.pop(key) for key in BASE_KEYWORDS if key in given}
        # every bad argument at once: unknown names, then the base keywords, then the hyper-parameters
        problems += BASE_SPEC.problems(name, base)
        problems += spec.problems(name, given, types=True)
        raise_problems(name, problems)
        for key, default in spec.defaults.items():
            setattr(self, key, given.get(key, default))
        self.reduction = base.get('reduction', spec.reduction)
        self.loss_weight = float(base.get('loss_weight', 1.0))

    # --- what the class derives from its functional ---------------------------------------------

    @classmethod
    def spec(cls) -> Spec:
        """The functional's declaration: hyper-parameters, defaults, ranges, choices."""
        return cls.loss_fn.spec

    @classmethod
    def _bind(cls, name: str, args: tuple, kwargs: dict) -> Tuple[Dict[str, object], List[Problem]]:
        """The constructor's arguments by name (positional ones in ``positional`` order), and the
        problem of each unknown keyword."""
        if len(args) > len(cls.positional):
            takes = ', '.join(cls.positional) or 'none: every argument is a keyword'
            raise TypeError(f'{name}: expected at most {len(cls.positional)} positional arguments ({takes}), '
                            f'got {len(args)}')
        given = dict(zip(cls.positional, args))
        allowed = (*cls.spec().defaults, *BASE_KEYWORDS)
        problems = []
        for key, value in kwargs.items():
            if key in given:
                raise TypeError(f'{name}: got multiple values for `{key}`')
            if key not in allowed:
                problems.append(unexpected(name, 'hyper-parameter', key, allowed))
            else:
                given[key] = value
        return given, problems

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

    @classmethod
    def call_signature(cls) -> inspect.Signature:
        """The signature of a call of the loss (``forward``'s, without ``self``)."""
        sig = inspect.signature(cls.forward)
        return sig.replace(parameters=list(sig.parameters.values())[1:])

    @classmethod
    def call_order_note(cls) -> str:
        """``''`` when ``forward`` takes ``avg_factor`` and ``reduction_override`` where most losses do
        (:data:`CALL_ORDER`, or by keyword only); else a sentence saying its positional order."""
        params = [p.name for p in cls.call_signature().parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if all(a not in params or params.index(a) == CALL_ORDER.index(a) for a in ('avg_factor', 'reduction_override')):
            return ''
        return (f'{cls.__name__}.forward takes ({", ".join(params)}) positionally, unlike most losses\' '
                f'({", ".join(CALL_ORDER)}): pass avg_factor and reduction_override by keyword')

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
        reduction = self.call_reduction(reduction_override, avg_factor, kwargs)
        check_tensor(name, 'pred', pred)  # floating: every loss takes float predictions
        if reduction != 'none' and (pred.numel() == 0 or _all_zero_on_host(weight)):
            # Nothing to average: a zero that keeps pred's graph (and dtype) alive.
            self.on_shortcut(pred, target, kwargs)
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

    def call_reduction(self, reduction_override: Optional[str], avg_factor: AvgFactor, kwargs: dict) -> str:
        """The reduction of a call, checked with its ``avg_factor``; a bad one is named by the argument
        that carried it, with :meth:`call_order_note` where ``forward``'s order is not the usual."""
        name = type(self).__name__
        if 'reduction' in kwargs:  # it would reach the functional twice
            raise TypeError(f'{name}: `reduction` is set when the loss is built (here {self.reduction!r}); '
                            f'for one call pass `reduction_override={kwargs["reduction"]!r}`')
        reduction = self.reduction if reduction_override is None else reduction_override
        try:
            check_reduction(name, reduction, avg_factor,
                            arg='reduction' if reduction_override is None else 'reduction_override')
        except (TypeError, ValueError) as err:
            note = type(self).call_order_note()
            if not note:
                raise
            raise type(err)(f'{err} ({note})') from None
        return reduction

    def parts(self) -> Tuple[str, ...]:
        """The keys of the dict ``forward`` returns, for a loss of several parts as configured (e.g.
        SeesawLoss's ``loss_cls_objectness`` and ``loss_cls_classes`` with ``return_dict=True``);
        ``()`` for a loss that returns a tensor (every other loss)."""
        return ()

    def on_shortcut(self, pred: Tensor, target, kwargs: dict) -> None:
        """Called with the call's inputs when the empty-input / zero-weight shortcut answers it
        without the functional. Stateless losses do nothing (:class:`StatefulLoss` does)."""

    def extra_repr(self) -> str:
        items = [f'{k}={v!r}' for k, v in self.hparams().items()]
        items += [f'reduction={self.reduction!r}', f'loss_weight={self.loss_weight}']
        return ', '.join(items)


class StatefulLoss(BaseLoss):
    """Base of a loss with running statistics: buffers that every training-mode call updates
    (Wise-IoU's running mean, Seesaw's class counts, EQLv2's gradient statistics, GHM's histogram).

    The protocol, written here once:

    * the buffers are :meth:`initial_state` (name -> initial value), registered by the constructor:
      saved in the ``state_dict``, moved by ``.to()``, restored with a checkpoint;
    * a call passes each buffer to the functional (under its :attr:`state_keywords` name, else its
      own) with ``training=self.training``, unless the call gives them; the functional updates the
      buffers in place in training mode, summing its increments over the ranks with
      :func:`sum_over_ranks` under ``torch.distributed``, and only reads them in eval mode;
    * where BaseLoss's empty-input / zero-weight shortcut answers a training-mode call, the
      functional still runs, on no samples of the same inputs: the update adds nothing, yet joins
      the ranks' all-reduce exactly as a call with samples does (as with ``SyncBatchNorm``, every
      rank must then call the loss in every training step; a rank that skipped it would hang the
      others).
    """

    #: the functional's keyword of a buffer whose name differs from it (buffer -> keyword)
    state_keywords: ClassVar[Dict[str, str]] = {}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        state = self.initial_state()
        self._state_names = tuple(state)
        for key, value in state.items():
            self.register_buffer(key, value)

    def initial_state(self) -> Dict[str, Tensor]:
        """The buffers and their initial values, from the hyper-parameters (e.g. ``num_classes``)."""
        raise NotImplementedError(f'{type(self).__name__}.initial_state')

    def forward(self, pred: Tensor, target=None, weight: Optional[Tensor] = None, avg_factor: AvgFactor = None,
                reduction_override: Optional[str] = None, **kwargs) -> Union[Tensor, Dict[str, Tensor]]:
        for key in self._state_names:
            kwargs.setdefault(self.state_keywords.get(key, key), getattr(self, key))
        kwargs.setdefault('training', self.training)
        return super().forward(pred, target, weight, avg_factor, reduction_override, **kwargs)

    def on_shortcut(self, pred: Tensor, target, kwargs: dict) -> None:
        if not self.training:
            return
        with torch.no_grad():
            self.loss_fn(*_no_samples(pred, target, self.takes_target), reduction='none',
                         **{**self.hparams(), **kwargs})


def _no_samples(pred: Tensor, target, takes_target: bool) -> tuple:
    """``(pred, target)`` cut to no samples (the first dim), for an update that counts nothing."""
    def cut(t):
        return t[:0] if isinstance(t, Tensor) and t.dim() > 0 else t
    return (cut(pred), cut(target)) if takes_target else (cut(pred),)


def distributed() -> bool:
    """Whether ``torch.distributed`` is available and initialised (the losses' state is then shared)."""
    return dist.is_available() and dist.is_initialized()


def sum_over_ranks(t: Tensor) -> Tensor:
    """``t`` summed over the ranks in place under ``torch.distributed`` (every rank must call, with
    the same shape and dtype), else as it is; returns ``t``."""
    if distributed():
        dist.all_reduce(t)
    return t


def _all_zero_on_host(weight: Optional[Tensor]) -> bool:
    """True for a CPU weight with no positive entry (mmdet's zero-weight shortcut).

    Accelerator weights are not inspected (reading them would force a device sync), nor any under
    ``torch.compile`` (a host read breaks the graph): the loss is zero anyway since every loss is
    finite and multiplied by the weight.
    """
    return (isinstance(weight, Tensor) and weight.device.type == 'cpu' and weight.numel() > 0
            and not is_compiling() and not bool((weight > 0).any()))
