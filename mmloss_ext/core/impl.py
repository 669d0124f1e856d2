"""The ``impl`` switch between a loss's eager path and its fused kernel: its values and the
environment variables that change it (read at each call).

* ``'eager'``: always the readable eager path;
* ``'fused'``: the fused kernel whenever it supports the call;
* ``'auto'`` (default): as ``'fused'`` for inputs of at least :data:`MIN_NUMEL` elements.

``MMLOSS_EXT_IMPL`` (``auto``/``eager``/``fused``) replaces ``'auto'`` for every loss at once;
an explicit ``impl='eager'`` or ``'fused'`` keeps precedence. ``MMLOSS_EXT_FUSED_MIN_NUMEL``
overrides :data:`MIN_NUMEL`. Which kernels exist, and where, is :mod:`mmloss_ext.kernels.dispatch`'s
business.

A kernel that fails on a device (:class:`~mmloss_ext.core.errors.KernelError`: Triton cannot
compile or launch it, an older GPU, an unsupported dtype) costs one warning: the call is answered
eagerly and the loss stays eager on that device for the rest of the process
(:func:`run_with_fallback`, :func:`disabled`).
"""
from __future__ import annotations

import os
import warnings
from typing import Callable, Dict, Tuple

from .errors import KernelError, LossValueError

IMPLS = ('auto', 'eager', 'fused')
ENV_IMPL = 'MMLOSS_EXT_IMPL'
ENV_MIN_NUMEL = 'MMLOSS_EXT_FUSED_MIN_NUMEL'
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


def disabled(loss: str, device_type: str) -> bool:
    """Whether ``loss``'s fused path failed on ``device_type`` earlier in this process."""
    return (loss, device_type) in _DISABLED


def run_with_fallback(loss: str, call: Callable[..., object], args: tuple, kwargs: dict):
    """``call(*args, **kwargs)``; when a fused kernel fails in it (:class:`KernelError`), warn once,
    turn the loss's fused path off on that device, and answer with ``impl='eager'``."""
    try:
        return call(*args, **kwargs)
    except KernelError as err:
        device = next((a.device.type for a in (*args, *kwargs.values()) if hasattr(a, 'device')), 'cuda')
        _DISABLED[(loss, device)] = str(err)
        warnings.warn(f'{loss}: the fused {err} on {device}; {loss} runs eagerly on {device} from now on.',
                      RuntimeWarning, stacklevel=3)
        return call(*args, **{**kwargs, 'impl': 'eager'})
