"""Input validation and the float32 compute policy, shared by every loss.

Every check raises ``TypeError`` (wrong kind or dtype) or ``ValueError`` (wrong shape, range or
choice) with a message that names the loss, the argument, what was expected and what was given.
No check reads a CUDA tensor's values on the host (that would force a device sync in the hot path):
value checks run on CPU tensors and are enqueued as asynchronous device asserts elsewhere.
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable, Optional, Sequence

import torch
from torch import Tensor

_HALF = (torch.float16, torch.bfloat16)


def _shape(x: Tensor) -> tuple:
    return tuple(x.shape)


def check_tensor(loss: str, arg: str, x, *, floating: bool = True) -> Tensor:
    """``x`` must be a tensor, and a floating-point one when ``floating``."""
    if not isinstance(x, Tensor):
        raise TypeError(f'{loss}: `{arg}` expected a torch.Tensor, got {type(x).__name__}')
    if x.is_complex():  # no loss takes complex input; casting would silently drop the imaginary part
        raise TypeError(f'{loss}: `{arg}` expected a real tensor, got dtype {x.dtype}')
    if floating and not x.is_floating_point():
        raise TypeError(f'{loss}: `{arg}` expected a floating-point tensor, got dtype {x.dtype}')
    return x


def check_int_tensor(loss: str, arg: str, x) -> Tensor:
    """``x`` must be an integer (not bool, not float) tensor, e.g. class labels."""
    check_tensor(loss, arg, x, floating=False)
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f'{loss}: `{arg}` expected an integer tensor (class indices), got dtype {x.dtype}')
    return x


def check_same_shape(loss: str, a: Tensor, b: Tensor, names: Sequence[str] = ('pred', 'target')) -> None:
    if a.shape != b.shape:
        raise ValueError(f'{loss}: `{names[0]}` and `{names[1]}` expected the same shape, '
                         f'got {_shape(a)} and {_shape(b)}')


def check_ndim(loss: str, arg: str, x: Tensor, ndim: int | Iterable[int]) -> None:
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if x.dim() not in allowed:
        want = ' or '.join(str(d) for d in allowed)
        raise ValueError(f'{loss}: `{arg}` expected a {want}-D tensor, got shape {_shape(x)}')


def check_boxes(loss: str, pred: Tensor, target: Tensor) -> None:
    """Decoded boxes: float tensors of the same shape ``(..., 4)`` in ``(x1, y1, x2, y2)`` order."""
    check_tensor(loss, 'pred', pred)
    check_tensor(loss, 'target', target)
    if pred.dim() < 1 or pred.shape[-1] != 4:
        raise ValueError(f'{loss}: `pred` expected boxes of shape (N, 4) as (x1, y1, x2, y2), '
                         f'got shape {_shape(pred)}')
    check_same_shape(loss, pred, target)
    check_same_device(loss, pred, target)


def check_same_device(loss: str, a: Tensor, b: Tensor, names: Sequence[str] = ('pred', 'target')) -> None:
    if a.device != b.device:
        raise ValueError(f'{loss}: `{names[0]}` and `{names[1]}` expected to be on the same device, '
                         f'got {a.device} and {b.device}')


def check_choice(loss: str, arg: str, value, choices: Iterable) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f'{loss}: `{arg}` expected one of {", ".join(map(repr, choices))}, got {value!r}')


def check_ignore_index(loss: str, ignore_index) -> None:
    """``ignore_index`` must be an int (not a bool) or None."""
    if ignore_index is not None and (isinstance(ignore_index, bool)
                                     or not isinstance(ignore_index, numbers.Integral)):
        raise TypeError(f'{loss}: `ignore_index` expected an int or None, '
                        f'got {type(ignore_index).__name__} {ignore_index!r}')


#: ``check_range`` keyword sets shared by the losses' range tables
NON_NEGATIVE = dict(low=0.0)
POSITIVE = dict(low=0.0, low_open=True)
UNIT_INTERVAL = dict(low=0.0, high=1.0)
ODD_POSITIVE_INT = dict(low=1, odd=True)


def check_range(loss: str, arg: str, value, low: Optional[float] = None, high: Optional[float] = None,
                *, low_open: bool = False, high_open: bool = False, odd: bool = False) -> None:
    """A finite number in ``[low, high]`` (``(`` / ``)`` with ``low_open`` / ``high_open``); an odd
    int with ``odd``. NaN and infinities are refused (they pass every comparison test silently)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f'{loss}: `{arg}` expected a number, got {type(value).__name__} {value!r}')
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    bad_odd = odd and not (isinstance(value, numbers.Integral) and value % 2 == 1)
    if bad_low or bad_high or bad_odd or not math.isfinite(value):
        lo = '-inf' if low is None else repr(low)
        hi = 'inf' if high is None else repr(high)
        interval = f'{"(" if low_open or low is None else "["}{lo}, {hi}{")" if high_open or high is None else "]"}'
        kind = 'an odd int' if odd else 'a value'
        raise ValueError(f'{loss}: `{arg}` expected {kind} in {interval}, got {value!r}')


def check_ranges(loss: str, ranges: dict, **values) -> None:
    """:func:`check_range` for several hyper-parameters: ``ranges`` maps a name to the keyword
    arguments of :func:`check_range` (e.g. ``{'gamma': dict(low=0.0)}``); ``None`` values pass.

    A loss keeps its ranges in one module-level dict, used both by its functional (at call time)
    and by its class (``BaseLoss.hparam_ranges``, at build time).
    """
    for arg, value in values.items():
        if value is not None and arg in ranges:
            check_range(loss, arg, value, **ranges[arg])


def check_label_range(loss: str, arg: str, labels: Tensor, low: int, high: int,
                      ignore_index: Optional[int] = None) -> None:
    """Labels (other than ``ignore_index``) must lie in ``[low, high]``.

    On CPU the check is exact and raises ``ValueError``. On an accelerator it is enqueued as an
    asynchronous device assert (no boolean indexing, no host read), so it never forces a sync.
    """
    if labels.numel() == 0:
        return
    ok = (labels >= low) & (labels <= high)
    if ignore_index is not None:
        ok |= labels == ignore_index
    if labels.device.type != 'cpu':
        torch._assert_async(ok.all(), f'{loss}: `{arg}` has values outside [{low}, {high}]')
    elif not bool(ok.all()):
        bad = labels[~ok]
        extra = '' if ignore_index is None else f' (or ignore_index={ignore_index})'
        raise ValueError(f'{loss}: `{arg}` expected values in [{low}, {high}]{extra}, '
                         f'got values in [{int(bad.min())}, {int(bad.max())}] outside it')


def check_hparam(loss: str, arg: str, value, default) -> None:
    """Type-check a constructor hyper-parameter against its documented default.

    Catches config typos such as ``gamma='2'`` at build time: a float default takes any real
    number (not a bool), an int default an int, a bool default a bool, a str default a str.
    ``None`` defaults accept anything (the loss checks those itself).
    """
    if default is None:
        return
    if isinstance(default, bool):
        ok, want = isinstance(value, bool), 'a bool'
    elif isinstance(default, int):
        ok, want = isinstance(value, numbers.Integral) and not isinstance(value, bool), 'an int'
    elif isinstance(default, float):
        ok, want = isinstance(value, numbers.Real) and not isinstance(value, bool), 'a number'
    elif isinstance(default, str):
        ok, want = isinstance(value, str), 'a str'
    elif isinstance(default, (tuple, list)):
        ok, want = isinstance(value, (tuple, list)), 'a list or tuple'
    else:
        return
    if not ok:
        raise TypeError(f'{loss}: `{arg}` expected {want}, got {type(value).__name__} {value!r}')


def compute_dtype(x: Tensor) -> torch.dtype:
    """float16/bfloat16 are computed in float32; other float dtypes as they are."""
    return torch.float32 if x.dtype in _HALF else x.dtype


def upcast(*xs: Optional[Tensor]) -> tuple:
    """Cast half-precision tensors to float32 (``None`` passes through)."""
    return tuple(x.float() if x is not None and x.dtype in _HALF else x for x in xs)
