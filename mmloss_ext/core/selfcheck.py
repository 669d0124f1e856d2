"""The self-check of a fused kernel: its result against the eager spec's on a small fixed input.

A loss with a fused path declares how to make that input (``declare(..., probe=...)``): a
function of the call's ``pred``, ``target`` and hyper-parameters returning a small, fixed
``(pred, target)`` of the same kind on ``pred``'s device and dtype, or None where the
configuration has no kernel (:mod:`mmloss_ext.losses.probes`). :func:`compare` runs the
functional on it with ``impl='fused'`` and ``impl='eager'`` for each of :data:`CASES` (every
output mode and weight form of the kernels) and compares the values and the gradients of ``pred``
within :data:`TOLERANCE`, the tolerance the tests hold the kernels to.
:func:`mmloss_ext.core.impl.run_with_fallback` decides when a check runs (the first call of a loss
configuration on a device type and dtype) and what follows a difference.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

__all__ = ['TOLERANCE', 'CASES', 'compare']

#: fused against eager, values and gradients, per dtype (``torch.testing.assert_close``'s ``rtol``
#: and ``atol``)
TOLERANCE: Dict[torch.dtype, Dict[str, float]] = {
    torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.float16: dict(rtol=2e-3, atol=1e-3), torch.bfloat16: dict(rtol=2e-2, atol=1e-2)}

#: ``(reduction, weight)`` of the probe's calls: the kernels' output modes (the elementwise loss,
#: the total) and weight forms (none, one per sample, one per element of the ``'none'`` output)
CASES: Tuple[Tuple[str, Optional[str]], ...] = (('none', None), ('sum', 'sample'), ('mean', 'full'))

Probe = Callable[[Tensor, object, dict], Optional[Tuple[Tensor, object]]]


def _weight(kind: Optional[str], x: Tensor, out_shape: torch.Size) -> Optional[Tensor]:
    """A fixed positive weight: None, one per sample of ``x`` or one per element of the output."""
    if kind is None:
        return None
    shape = x.shape[:1] if kind == 'sample' else out_shape
    n = math.prod(shape)
    return torch.linspace(0.25, 1.5, n, dtype=torch.float64).to(x.device, x.dtype).view(shape)


def _run(call: Callable, x: Tensor, target, hp: dict, impl: str, reduction: str,
         weight: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """The value and the gradient of ``x`` of one call, under a fixed non-uniform upstream gradient."""
    x = x.detach().clone().requires_grad_()
    out = call(x, target, **hp, impl=impl, reduction=reduction, weight=weight)
    upstream = torch.linspace(-1.0, 2.0, out.numel(), dtype=torch.float64).to(out.device, out.dtype)
    (out * upstream.view(out.shape)).sum().backward()
    return out.detach(), (torch.zeros_like(x) if x.grad is None else x.grad)


def _excess(a: Tensor, b: Tensor, tol: Dict[str, float]) -> Optional[float]:
    """The largest ``|a - b|`` where it exceeds ``atol + rtol |b|`` (NaN where only one of them is
    NaN; inf for different shapes), or None when ``a`` is close to ``b`` everywhere."""
    if a.shape != b.shape:
        return math.inf
    a, b = a.double(), b.double()
    far = ~torch.isclose(a, b, rtol=tol['rtol'], atol=tol['atol'], equal_nan=True)
    if not bool(far.any()):  # one host read, on the first call only
        return None
    return float((a - b).abs()[far].max())


def compare(call: Callable, probe: Probe, pred: Tensor, target, hp: dict, given: dict) -> Optional[str]:
    """None when ``call`` (a loss functional) gives the same values and gradients of ``pred`` with
    ``impl='fused'`` as with ``impl='eager'`` on ``probe``'s input for ``pred`` and ``target``
    (within :data:`TOLERANCE`), else what differs and by how much.

    ``hp``: the call's hyper-parameters with the defaults of those it leaves out (what ``probe``
    reads); ``given``: those it passes (what the functional is called with)."""
    made = probe(pred, target, hp)
    if made is None:  # no kernel in this configuration
        return None
    x, t = made
    tol = TOLERANCE[x.dtype]
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
        out_shape = None
        for reduction, kind in CASES:
            w = _weight(kind, x, out_shape)
            (v_f, g_f), (v_e, g_e) = (_run(call, x, t, given, impl, reduction, w) for impl in ('fused', 'eager'))
            out_shape = v_e.shape if out_shape is None else out_shape
            for what, a, b in (('values', v_f, v_e), ('gradients', g_f, g_e)):
                excess = _excess(a, b, tol)
                if excess is not None:
                    return (f'the {what} of reduction={reduction!r}' + (f' with a {kind} weight' if kind else '')
                            + f' differ by up to {excess:.3g} (rtol={tol["rtol"]:g}, atol={tol["atol"]:g})')
    return None
