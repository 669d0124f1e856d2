"""Hyper-parameters, declared once on the loss functional.

A loss functional takes its hyper-parameters as keyword-only arguments; their defaults in the
signature are the only defaults of the loss. :func:`declare` adds, next to the signature, what the
signature cannot say -- each parameter's range or set of choices, and a check across several
parameters -- and makes the functional enforce them on every call::

    @declare('SmoothL1Loss', beta=NON_NEGATIVE)
    def smooth_l1_loss(pred, target, *, beta: float = 1.0, weight=None, reduction='mean', avg_factor=None):
        ...

The loss class (:class:`~mmloss_ext.losses.base.BaseLoss`) reads the same declaration
(``smooth_l1_loss.spec``) for its constructor, its ``inspect.signature`` and its build-time checks,
so a default, a range or a choice is written exactly once.
"""
from __future__ import annotations

import functools
import inspect
import math
import numbers
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from .compat import HAS_CUSTOM_OP, outside_graph
from .errors import (LossValueError, MissingHyperParameterError, Problem, UnsupportedValueError, raise_problems,
                     unexpected)
from .impl import IMPLS, run_with_fallback

__all__ = ['Range', 'Choice', 'OptionalInt', 'Spec', 'declare', 'check_hparam_type', 'PLUMBING', 'REQUIRED',
           'NON_NEGATIVE', 'POSITIVE', 'UNIT_INTERVAL', 'ODD_POSITIVE_INT', 'POSITIVE_INT', 'OPTIONAL_INT']

#: keyword arguments of every functional that are not hyper-parameters
PLUMBING = ('weight', 'reduction', 'avg_factor')


class _Required:
    """The type of :data:`REQUIRED`."""
    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return 'REQUIRED'

    def __reduce__(self):
        return _Required, ()


#: The default of a hyper-parameter that has none (mmdet's ``num_classes=-1``, asserted away): the
#: functional and the class's constructor refuse to run without it, with a ``TypeError`` naming it.
#: Its type comes from its declaration (e.g. :data:`POSITIVE_INT`), since no default shows it.
REQUIRED = _Required()


@dataclass(frozen=True)
class Range:
    """A finite number in ``[low, high]`` (``(`` / ``)`` with ``low_open`` / ``high_open``); an odd
    int with ``odd``, an int with ``integer``. NaN and infinities are refused (they pass every
    comparison silently)."""
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    odd: bool = False
    integer: bool = False

    def __str__(self) -> str:
        lo = '-inf' if self.low is None else repr(self.low)
        hi = 'inf' if self.high is None else repr(self.high)
        left = '(' if self.low_open or self.low is None else '['
        right = ')' if self.high_open or self.high is None else ']'
        return f'{left}{lo}, {hi}{right}'

    def describe(self) -> str:
        """What the range takes: ``'a value in [0.0, 1.0]'``, ``'an odd int in [1, inf)'``, ``'a finite number'``."""
        kind = 'an odd int' if self.odd else 'an int' if self.integer else 'a value'
        if self.low is None and self.high is None and kind == 'a value':
            return 'a finite number'
        return f'{kind} in {self}'

    def check(self, loss: str, arg: str, value) -> None:
        if value is None:  # an optional hyper-parameter left out (its default is None)
            return
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f'{loss}: `{arg}` expected a number, got {type(value).__name__} {value!r}')
        if self.integer and not isinstance(value, numbers.Integral):
            raise TypeError(f'{loss}: `{arg}` expected an int, got {type(value).__name__} {value!r}')
        low, high = self.low, self.high
        bad_low = low is not None and (value <= low if self.low_open else value < low)
        bad_high = high is not None and (value >= high if self.high_open else value > high)
        bad_odd = self.odd and not (isinstance(value, numbers.Integral) and value % 2 == 1)
        if bad_low or bad_high or bad_odd or not math.isfinite(value):
            raise LossValueError(f'{loss}: `{arg}` expected {self.describe()}, got {value!r}')


@dataclass(frozen=True, init=False)
class Choice:
    """One of a fixed set of values (compared with ``==``; bools only equal bools)."""
    values: Tuple[object, ...]

    def __init__(self, *values) -> None:
        object.__setattr__(self, 'values', tuple(values))

    def describe(self) -> str:
        """What the choice takes: ``"one of 'log', 'linear', 'square'"``."""
        if len(self.values) == 1:
            return f'{self.values[0]!r} (the only mode implemented)'
        return f'one of {", ".join(map(repr, self.values))}'

    def check(self, loss: str, arg: str, value) -> None:
        if any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in self.values):
            return
        # the one mode implemented: another is unsupported, not invalid
        error = UnsupportedValueError if len(self.values) == 1 else LossValueError
        raise error(f'{loss}: `{arg}` expected {self.describe()}, got {value!r}')


@dataclass(frozen=True)
class OptionalInt:
    """An int (not a bool) or None, e.g. an ``ignore_index``."""

    def describe(self) -> str:
        return 'an int or None'

    def check(self, loss: str, arg: str, value) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            raise TypeError(f'{loss}: `{arg}` expected {self.describe()}, got {type(value).__name__} {value!r}')


NON_NEGATIVE = Range(low=0.0)
POSITIVE = Range(low=0.0, low_open=True)
UNIT_INTERVAL = Range(low=0.0, high=1.0)
ODD_POSITIVE_INT = Range(low=1, odd=True)
POSITIVE_INT = Range(low=1, integer=True)
OPTIONAL_INT = OptionalInt()


def _type_rule(default) -> Optional[Tuple[Callable[[object], bool], str]]:
    """``(test, what it takes)`` for a hyper-parameter of this default; None where the default
    says nothing (``None``, :data:`REQUIRED`, another type)."""
    if default is None or default is REQUIRED:
        return None
    if isinstance(default, bool):
        return (lambda v: isinstance(v, bool)), 'a bool'
    if isinstance(default, int):
        return (lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)), 'an int'
    if isinstance(default, float):
        return (lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)), 'a number'
    if isinstance(default, str):
        return (lambda v: isinstance(v, str)), 'a str'
    if isinstance(default, (tuple, list)):
        return (lambda v: isinstance(v, (tuple, list))), 'a list or tuple'
    return None


def check_hparam_type(loss: str, arg: str, value, default) -> None:
    """Type-check a constructor hyper-parameter against its default (config typos such as
    ``gamma='2'``): a float default takes any real number (not a bool), an int default an int, a
    bool default a bool, a str default a str, a tuple/list default a tuple or list. ``None``
    defaults accept anything (their declaration or the functional checks them), and so do
    :data:`REQUIRED` ones (their declaration types them)."""
    rule = _type_rule(default)
    if rule is not None and not rule[0](value):
        raise TypeError(f'{loss}: `{arg}` expected {rule[1]}, got {type(value).__name__} {value!r}')


@dataclass(frozen=True)
class Spec:
    """What :func:`declare` records on a functional (its ``spec`` attribute)."""
    #: the loss's name, for error messages
    loss: str
    #: the keyword-only hyper-parameters and their defaults, in signature order
    defaults: Dict[str, object]
    #: per-parameter declarations (:class:`Range`, :class:`Choice`, :class:`OptionalInt`)
    params: Dict[str, object] = field(default_factory=dict)
    #: ``relation(loss, **hparams)``: a check across several hyper-parameters, or None
    relation: Optional[Callable[..., None]] = None
    #: the functional's default reduction
    reduction: str = 'mean'
    #: the functional's signature (annotations for the classes' signatures)
    signature: Optional[inspect.Signature] = None
    #: the fixed input of the fused path's self-check (:mod:`mmloss_ext.core.selfcheck`), or None
    probe: Optional[Callable] = None

    def required(self) -> Tuple[str, ...]:
        """The hyper-parameters without a default (:data:`REQUIRED`)."""
        return tuple(k for k, v in self.defaults.items() if v is REQUIRED)

    def allowed(self, key: str) -> str:
        """What hyper-parameter ``key`` takes, in a few words: its declaration's range or choices,
        else the type of its default (``'a value in [0.0, 1.0]'``, ``'a bool'``)."""
        declared = self.params.get(key)
        if declared is not None:
            return declared.describe()
        rule = _type_rule(self.defaults.get(key))
        return rule[1] if rule is not None else 'any value'

    def ranges(self) -> Dict[str, Range]:
        return {k: v for k, v in self.params.items() if isinstance(v, Range)}

    def choices(self) -> Dict[str, Tuple[object, ...]]:
        return {k: v.values for k, v in self.params.items() if isinstance(v, Choice)}

    def problems(self, loss: str, values: Dict[str, object], *, types: bool = False) -> List[Problem]:
        """Every problem of ``values`` (some or all hyper-parameters; other keys are skipped): a
        :meth:`required` one left out, a value its declaration refuses, with ``types`` a value of
        another type than its default's (:func:`check_hparam_type`). The relation is checked once
        every value passes, and sees every hyper-parameter (defaults for the ones not in
        ``values``). Raise them with :func:`~mmloss_ext.core.errors.raise_problems`."""
        found = [Problem(key, MissingHyperParameterError(f'{loss}: `{key}` is required (it has no default), got none'),
                         f'`{key}` takes {self.allowed(key)}') for key in self.required() if key not in values]
        for key, value in values.items():
            if key not in self.defaults:
                continue
            try:
                if types:
                    check_hparam_type(loss, key, value, self.defaults[key])
                declared = self.params.get(key)
                if declared is not None:
                    declared.check(loss, key, value)
            except (TypeError, ValueError) as err:
                found.append(Problem(key, err, f'`{key}` takes {self.allowed(key)}'))
        if not found and self.relation is not None:
            try:
                self.relation(loss, **{k: values.get(k, d) for k, d in self.defaults.items()})
            except (TypeError, ValueError) as err:
                found.append(Problem(None, err))  # its message says what the parameters take together
        return found


def declare(loss: str, *, relation: Optional[Callable[..., None]] = None, probe: Optional[Callable] = None,
            **params) -> Callable:
    """Declare a loss functional's hyper-parameters: ranges, choices and a cross-parameter check.

    Args:
        loss: the loss's name, written only here: every error message of the functional uses it
            (``fn.spec.loss``), and :func:`~mmloss_ext.registry.register_loss` checks that the
            loss's class bears it.
        relation: ``relation(loss, **hparams)`` raising ``ValueError`` for a combination of
            hyper-parameters that is invalid although each value is in range (e.g. ``d < u``).
        probe: for a functional with a fused path (an ``impl`` keyword; required there),
            ``probe(pred, target, hparams)``: the small fixed ``(pred, target)`` on which the first
            fused call of a configuration on a device is checked against the eager path
            (:mod:`~mmloss_ext.core.selfcheck`, :mod:`mmloss_ext.losses.probes`).
        **params: per hyper-parameter, a :class:`Range`, :class:`Choice` or :class:`OptionalInt`.
            ``impl`` (the fused-path switch) is declared for every functional that takes it.

    The wrapped functional checks the hyper-parameters it is given on every call (the defaults are
    valid by construction: a test checks each against its declaration), refuses a call that leaves
    out one whose default is :data:`REQUIRED` or passes an unknown keyword (naming the closest
    ones), reporting every problem of the call in one error, and exposes the declaration as
    ``fn.spec`` (:class:`Spec`).
    """
    def wrap(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        kw_only = {p.name: p.default for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}
        defaults = {k: v for k, v in kw_only.items() if k not in PLUMBING}
        unknown = set(params) - set(defaults)
        if unknown:
            raise TypeError(f'declare({loss!r}): {fn.__name__} has no keyword-only hyper-parameter '
                            f'{", ".join(sorted(unknown))}')
        declared = dict(params)
        if 'impl' in defaults:
            declared.setdefault('impl', Choice(*IMPLS))
        fallback = 'impl' in defaults  # a loss with a fused path: a failing kernel falls back to eager
        if fallback != (probe is not None):
            raise TypeError(f'declare({loss!r}): a probe is for a functional with an impl keyword, and every such '
                            f'functional needs one')
        hparams = {k: v for k, v in defaults.items() if k != 'impl'}
        spec = Spec(loss, defaults, declared, relation, kw_only.get('reduction', 'mean'), sig, probe)
        args = sig.parameters.values()
        known = frozenset(p.name for p in args if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if any(p.kind is p.VAR_KEYWORD for p in args):
            known = None  # takes any keyword
        # the names a caller passes by keyword (not pred, target, ...)
        keywords = [p.name for p in args if p.kind is p.KEYWORD_ONLY or
                    (p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty)]
        where = f' to {fn.__name__}()'

        @functools.wraps(fn)
        def checked(*args, **kwargs):
            found = spec.problems(loss, kwargs)
            if known is not None and not kwargs.keys() <= known:
                found += [unexpected(loss, 'keyword argument', k, keywords, where) for k in kwargs if k not in known]
            raise_problems(loss, found)
            if fallback:
                return run_with_fallback(loss, fn, args, kwargs, probe=probe, defaults=hparams)
            return fn(*args, **kwargs)

        if not HAS_CUSTOM_OP:  # a compiled model runs the loss eagerly, outside its graph
            checked = outside_graph(checked)
        checked.spec = spec
        return checked

    return wrap
