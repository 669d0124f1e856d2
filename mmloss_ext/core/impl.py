"""The ``impl`` switch between a loss's eager path and its fused kernel: its values and the
environment variables that change it (read at each call).

* ``'eager'``: always the readable eager path;
* ``'fused'``: the fused kernel whenever it supports the call;
* ``'auto'`` (default): as ``'fused'`` for inputs of at least :data:`MIN_NUMEL` elements.

``MMLOSS_EXT_IMPL`` (``auto``/``eager``/``fused``) replaces ``'auto'`` for every loss at once;
an explicit ``impl='eager'`` or ``'fused'`` keeps precedence. ``MMLOSS_EXT_FUSED_MIN_NUMEL``
overrides :data:`MIN_NUMEL`. Which kernels exist, and where, is :mod:`mmloss_ext.kernels.backends`'s
business.

A kernel that fails on a device (:class:`~mmloss_ext.core.errors.KernelError`: Triton cannot
compile or launch it, an older GPU, an unsupported dtype) costs one warning: the call is answered
eagerly and the loss stays eager on that device for the rest of the process
(:func:`run_with_fallback`, :func:`disabled`).

So does a kernel whose result disagrees with the eager spec. The first call of a loss
configuration (its hyper-parameters and the kind of its target) on a device type and dtype first
runs both paths on a small fixed input and compares their values and gradients
(:mod:`.selfcheck`); later calls of that configuration cost a set lookup. The device types in
:data:`TRUSTED_DEVICES` are not checked: the CPU's kernels are the C++ extension, which the test
suite holds to the eager spec on every supported torch; the check is for the Triton kernels, which
a GPU compiles for itself. Inside a graph that ``torch.compile`` traces the check does not run: an
unchecked configuration takes the eager formula there (which the compiler compiles like the rest),
a checked one the path its check chose; where the compiler runs the loss outside its graph (a graph
break), the check runs there as in an eager call. ``MMLOSS_EXT_SELF_CHECK=0`` turns it off.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable, Dict, FrozenSet, Optional, Set, Tuple

from . import selfcheck
from .compat import is_compiling
from .errors import KernelError, LossValueError

IMPLS = ('auto', 'eager', 'fused')
ENV_IMPL = 'MMLOSS_EXT_IMPL'
ENV_MIN_NUMEL = 'MMLOSS_EXT_FUSED_MIN_NUMEL'
ENV_SELF_CHECK = 'MMLOSS_EXT_SELF_CHECK'
#: 'auto' takes the fused path from this many elements of ``pred`` on
MIN_NUMEL = 4096


def resolve_impl(loss: str, impl: str) -> str:
    """``impl`` with ``MMLOSS_EXT_IMPL`` applied to ``'auto'`` (``impl`` itself was checked by the
    loss's declaration; the environment variable is checked here)."""
    if impl != 'auto':
        return impl
    value = os.environ.get(ENV_IMPL, 'auto') or 'auto'
    if value not in IMPLS:
        raise LossValueError(f'{loss}: `${ENV_IMPL}` expected one of {", ".join(map(repr, IMPLS))}, got {value!r}')
    return value


def min_numel() -> int:
    """:data:`MIN_NUMEL`, or ``MMLOSS_EXT_FUSED_MIN_NUMEL`` when set."""
    value = os.environ.get(ENV_MIN_NUMEL)
    return MIN_NUMEL if value is None else int(value)


#: ``(loss, device type)`` -> why its fused path is off for the rest of the process
_DISABLED: Dict[Tuple[str, str], str] = {}
#: the device types whose fused kernels are not self-checked (see the module docstring)
TRUSTED_DEVICES: FrozenSet[str] = frozenset({'cpu'})
#: the self-checked configurations: ``(loss, device type, dtype, target kind, hyper-parameters)``
_CHECKED: Set[tuple] = set()


def disabled(loss: str, device_type: str) -> bool:
    """Whether ``loss``'s fused path failed on ``device_type`` earlier in this process."""
    return (loss, device_type) in _DISABLED


def self_check_enabled() -> bool:
    """Whether the self-check runs (``MMLOSS_EXT_SELF_CHECK`` is not ``0``)."""
    return os.environ.get(ENV_SELF_CHECK, '1').strip().lower() not in ('0', 'false', 'no', 'off')


def _hashable(value):
    if isinstance(value, (bool, int, float, str, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return type(value).__name__  # a tensor hyper-parameter (class weights): its kind only


def _unchecked(loss: str, hparams, pred, target, kwargs: dict) -> Optional[tuple]:
    """The self-check key of a call whose configuration is not checked yet on its device, else None."""
    device = getattr(pred, 'device', None)
    if (device is None or device.type in TRUSTED_DEVICES or (loss, device.type) in _DISABLED
            or pred.dtype not in selfcheck.TOLERANCE):  # no kernel takes other dtypes
        return None
    kind = target.dtype if hasattr(target, 'dtype') else type(target).__name__  # labels, dense, a pair
    hp = tuple((k, _hashable(kwargs[k])) for k in sorted(kwargs) if k in hparams)
    key = (loss, device.type, pred.dtype, kind, hp)
    return None if key in _CHECKED else key


def may_fuse(loss: str, impl: str, pred) -> bool:
    """Whether ``impl`` lets a call on ``pred`` take a kernel: ``'fused'``, or ``'auto'`` from
    :func:`min_numel` elements on (the rule :func:`~mmloss_ext.kernels.dispatch.use_fused` starts from)."""
    return admits(resolve_impl(loss, impl), pred)


def admits(impl: str, pred) -> bool:
    """:func:`may_fuse` of an ``impl`` already resolved (:func:`resolve_impl`)."""
    return impl == 'fused' or (impl == 'auto' and pred.numel() >= min_numel())


def _fall_back(loss: str, device: str, why: str, call: Callable[..., object], args: tuple, kwargs: dict):
    """Turn ``loss``'s fused path off on ``device``, warn, and answer the call eagerly."""
    _DISABLED[(loss, device)] = why
    warnings.warn(f'{loss}: the fused {why} on {device}; {loss} runs eagerly on {device} from now on.',
                  RuntimeWarning, stacklevel=4)
    return call(*args, **{**kwargs, 'impl': 'eager'})


def run_with_fallback(loss: str, call: Callable[..., object], args: tuple, kwargs: dict, *,
                      probe: Optional[selfcheck.Probe] = None, defaults: Optional[dict] = None):
    """``call(*args, **kwargs)`` (a loss functional with a fused path), unless its fused path is
    wrong or broken on the device: when a fused kernel fails in it (:class:`KernelError`), or
    when the self-check of the call's configuration (with ``probe``; ``defaults``, the functional's
    hyper-parameters but ``impl`` and their defaults) finds a difference, warn once, turn the loss's fused path
    off on that device, and answer with ``impl='eager'``."""
    try:
        if probe is not None:
            pred = args[0] if args else kwargs.get('pred')
            target = args[1] if len(args) > 1 else kwargs.get('target')
            key = _unchecked(loss, defaults.keys(), pred, target, kwargs)
            if key is not None and self_check_enabled() and may_fuse(loss, kwargs.get('impl', 'auto'), pred):
                if is_compiling():  # not inside a traced graph: its eager formula there
                    return call(*args, **{**kwargs, 'impl': 'eager'})
                given = {k: v for k, v in kwargs.items() if k in defaults}
                try:
                    why = selfcheck.compare(call, probe, pred, target, {**defaults, **given}, given)
                except KernelError:
                    raise
                except Exception as err:  # noqa: BLE001 - unchecked is not trusted: slower, never wrong
                    why = f'self-check failed ({type(err).__name__}: {err})'
                else:
                    why = None if why is None else (f'kernel disagrees with the eager formula in {pred.dtype} '
                                                    f'({why})')
                _CHECKED.add(key)
                if why is not None:
                    return _fall_back(loss, key[1], why, call, args, kwargs)
        return call(*args, **kwargs)
    except KernelError as err:
        device = next((a.device.type for a in (*args, *kwargs.values()) if hasattr(a, 'device')), 'cuda')
        return _fall_back(loss, device, str(err), call, args, kwargs)
