"""The errors of the input and hyper-parameter checks: each also derives from the error class
mmdet raises for the same mistake, so code written against mmdet's losses keeps catching it.

A check that looks at every argument before raising (a loss's constructor, a functional's
hyper-parameters) reports all the bad ones in one error (:func:`raise_problems`), and an unknown
keyword with the closest known names (:func:`unexpected`)."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence


class LossValueError(ValueError, AssertionError):
    """A bad value given to a loss: a ``ValueError`` whose message names the loss, the argument, what
    was expected and what was given.

    It is also an ``AssertionError``, because mmdet's losses ``assert`` many of the same conditions
    (a ``reduction_override`` outside ``(None, 'none', 'mean', 'sum')``, a weight of the wrong
    shape): code written against mmdet that catches ``AssertionError`` keeps working, and gets
    the message too.

    Example:
        >>> from mmloss_ext.core.reduction import check_reduction
        >>> try:
        ...     check_reduction('GIoULoss', 'avg')
        ... except AssertionError as err:
        ...     print(err)
        GIoULoss: `reduction` expected one of 'none', 'mean', 'sum', got 'avg'
    """


class UnsupportedValueError(LossValueError, NotImplementedError):
    """A hyper-parameter value that names a mode the loss does not implement (e.g. GHMC with
    ``use_sigmoid=False``): mmdet raises ``NotImplementedError`` or asserts for these."""


class MissingHyperParameterError(TypeError, AssertionError):
    """A hyper-parameter without a default left out (``num_classes`` of the V3Det losses): a
    ``TypeError`` like a missing argument, and an ``AssertionError`` like mmdet's
    ``assert num_classes != -1``."""


class KernelError(RuntimeError):
    """A fused kernel of a device other than the CPU (Triton) failed to compile or launch. The
    loss that called it catches it once (:func:`mmloss_ext.core.impl.run_with_fallback`), warns,
    and runs eagerly on that device from then on."""

    def __init__(self, kernel: str, error: BaseException) -> None:
        super().__init__(f'kernel {kernel!r}: {type(error).__name__}: {error}'.splitlines()[0])
        self.kernel, self.error = kernel, error


class HyperParameterError(TypeError, LossValueError):
    """Several bad hyper-parameters found at once, some of a wrong type and some of a wrong value
    (``FocalLoss(gamma='2', alpha=-1)``): both a ``TypeError`` and a ``ValueError`` (and, as every
    :class:`LossValueError`, an ``AssertionError``), so that code catching either kind catches it.
    Its message lists every one; ``problems`` holds them one by one (:class:`Problem`)."""


@dataclass(frozen=True)
class Problem:
    """One bad argument found by a check that looks at all of them before raising."""
    #: the argument's name (``None`` for a check across several)
    arg: Optional[str]
    #: the error its own check raised
    error: BaseException
    #: what would be right, in a few words (``'`alpha` takes a value in [0.0, 1.0]'``); ``''`` where
    #: the error's message says it already
    fix: str = ''


#: a set of errors of one kind is raised as that kind (the first class every error is an instance
#: of, and the class raised); a mix of kinds is a :class:`HyperParameterError`
_KINDS = ((UnsupportedValueError, UnsupportedValueError), (MissingHyperParameterError, MissingHyperParameterError),
          (ValueError, LossValueError), (TypeError, TypeError))


def raise_problems(loss: str, problems: Sequence[Problem]) -> None:
    """Raise the error of every problem at once (nothing when there is none).

    One problem raises its own error; several raise one error whose message lists them all, of the
    one kind they share (``TypeError`` for wrong types and unknown names, :class:`LossValueError`
    for wrong values, ...) or, for a mix, a :class:`HyperParameterError`. The error raised carries
    the problems as its ``problems`` attribute (the config checker reports them one by one).
    """
    if not problems:
        return
    if len(problems) == 1:
        error = problems[0].error
    else:
        errors = [p.error for p in problems]
        cls = next((raised for kind, raised in _KINDS if all(isinstance(e, kind) for e in errors)),
                   HyperParameterError)
        prefix = f'{loss}: '
        parts = [str(e)[len(prefix):] if str(e).startswith(prefix) else str(e) for e in errors]
        error = cls(f'{loss}: {len(errors)} bad arguments: ' + '; '.join(parts))
    error.problems = tuple(problems)
    raise error


def closest(name: str, candidates: Iterable[str], n: int = 3) -> List[str]:
    """Up to ``n`` of ``candidates`` closest to ``name`` (case ignored), best first."""
    by_lower: Dict[str, str] = {}
    for c in candidates:
        by_lower.setdefault(c.lower(), c)
    return [by_lower[m] for m in difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.6)]


def unexpected(loss: str, what: str, key: str, allowed: Sequence[str], where: str = '') -> Problem:
    """The problem of an unknown keyword ``key`` (a ``TypeError``, as Python's own), its message
    naming the closest of the ``allowed`` names: ``FocalLoss: unexpected hyper-parameter `gama`;
    did you mean `gamma`? (expected one of ...)``. The constructor of every loss and every loss
    functional (``where=' to focal_loss()'``) say it alike."""
    hint = closest(key, allowed)
    mean = ' or '.join(f'`{h}`' for h in hint)
    message = (f'{loss}: unexpected {what} `{key}`{where}' + (f'; did you mean {mean}?' if hint else '')
               + f' (expected one of {", ".join(allowed)})')
    return Problem(key, TypeError(message), f'rename `{key}` to `{hint[0]}`' if hint else f'remove `{key}`')
