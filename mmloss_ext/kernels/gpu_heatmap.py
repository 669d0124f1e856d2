"""Fused CUDA path of the Gaussian focal loss: Triton kernels with the interface of the C++
extension's ``heatmap_forward`` / ``heatmap_backward`` (``csrc/heatmap.cpp``, described in
:mod:`.heatmap`), so that the autograd Function of :mod:`.heatmap` runs either backend.

Elementwise over ``p = pred`` and ``t = target``, one program per ``BLOCK`` elements of the flat
input; the formula and its hand-derived gradient mirror the eager functional
(:func:`~mmloss_ext.losses.gaussian_focal_loss`) term by term: the positive term is computed for
every element and multiplied by ``[t == 1]`` (a NaN or out-of-range ``p`` propagates as in the
eager path), and switched off by ``pos_weight == 0``. Powers with a whole exponent up to 4 are
multiplications; others are ``exp(g log q)`` (0 at ``q = 0``, with a slope of 0 there).

Totals (``out_mode`` 0) are per-program partial sums in float64, added up by ``torch.sum``
(deterministic, no atomics). float32 inputs compute in float32, float64 in float64 (the
hyper-parameters travel in a small tensor of that dtype: Triton passes Python floats as float32).

Import this module lazily (``TRITON_INTERPRET`` is read when the kernels are decorated).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..core.abi import GAUSSIAN_FOCAL_EPS

__all__ = ['heatmap_forward', 'heatmap_backward']

_BLOCK = 1024  # elements per program


@triton.jit
def _pow_slope(q, g, K: tl.constexpr):
    """``(q^g, g q^(g - 1))``; K: the whole exponent 0..4 (multiplications, ``0^0 = 1``), or -1 for
    any other g: ``exp(g log q)`` for q > 0, 0 at q = 0 (slope 0), NaN below."""
    if K == 0:
        value = tl.zeros_like(q) + 1.0
        slope = tl.zeros_like(q)
    elif K == 1:
        value = q
        slope = tl.zeros_like(q) + 1.0
    elif K == 2:
        value = q * q
        slope = 2.0 * q
    elif K == 3:
        q2 = q * q
        value = q2 * q
        slope = 3.0 * q2
    elif K == 4:
        q2 = q * q
        value = q2 * q2
        slope = 4.0 * q2 * q
    else:
        pos = q > 0
        lq = tl.log(tl.where(pos, q, 1.0))
        below = tl.log(tl.where(q < 0, q, 1.0))  # NaN where q < 0 (0 elsewhere, unused)
        value = tl.where(pos, tl.exp(g * lq), tl.where(q < 0, below, 0.0))
        slope = tl.where(pos, g * tl.exp((g - 1.0) * lq), tl.where(q < 0, below, 0.0))
    return value, slope


@triton.jit
def _heatmap_kernel(x_ptr, t_ptr, wrow_ptr, wfull_ptr, hp_ptr, scale_ptr, gfull_ptr, out_ptr, numel, cols,
                    GRAD: tl.constexpr, POS: tl.constexpr, KA: tl.constexpr, KG: tl.constexpr,
                    HAS_WROW: tl.constexpr, HAS_WFULL: tl.constexpr, HAS_GFULL: tl.constexpr,
                    OUT_ELEM: tl.constexpr, I64: tl.constexpr, BLOCK: tl.constexpr):
    """Forward (GRAD=False): the weighted loss per element (OUT_ELEM) or per-program partial sums
    (float64); backward (GRAD=True): d x = scale * gfull * weight * d loss / d x."""
    pid = tl.program_id(0)
    if I64:
        pid = pid.to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    p = tl.load(x_ptr + offs, mask=mask, other=0.5)
    t = tl.load(t_ptr + offs, mask=mask, other=0.0)
    alpha = tl.load(hp_ptr)
    gamma = tl.load(hp_ptr + 1)
    pos_weight = tl.load(hp_ptr + 2)
    neg_weight = tl.load(hp_ptr + 3)
    eps = tl.load(hp_ptr + 4)
    q = 1.0 - p
    qe = q + eps
    pa, pa_slope = _pow_slope(p, alpha, KA)
    damp, _ = _pow_slope(1.0 - t, gamma, KG)
    log_q = tl.log(qe)
    # negatives: -log(1 - p + eps) p^alpha (1 - t)^gamma
    if GRAD:
        v = neg_weight * damp * (pa / qe - log_q * pa_slope)
    else:
        v = neg_weight * (0.0 - log_q) * pa * damp
    if POS:  # positives: -log(p + eps) (1 - p)^alpha [t == 1]
        pe = p + eps
        qa, qa_slope = _pow_slope(q, alpha, KA)
        log_p = tl.log(pe)
        hot = (t == 1.0).to(p.dtype)
        if GRAD:
            v += pos_weight * ((log_p * qa_slope - qa / pe) * hot)
        else:
            v += pos_weight * ((0.0 - log_p) * qa * hot)
    if HAS_WFULL:
        v = v * tl.load(wfull_ptr + offs, mask=mask, other=0.0)
    if HAS_WROW:
        v = v * tl.load(wrow_ptr + offs // cols, mask=mask, other=0.0)
    if GRAD:
        v = v * tl.load(scale_ptr)
        if HAS_GFULL:
            v = v * tl.load(gfull_ptr + offs, mask=mask, other=0.0)
        tl.store(out_ptr + offs, v, mask=mask)
    elif OUT_ELEM:
        tl.store(out_ptr + offs, v, mask=mask)
    else:
        tl.store(out_ptr + pid, tl.sum(tl.where(mask, v, 0.0).to(tl.float64), axis=0))


# ---------------------------------------------------------------------------------------------
# host side: the extension's interface

# the small-constant cache and the upstream scale are the elementwise and box kernels' own
from .gpu import _const as _hp, _scale  # noqa: E402


def _whole(g: float) -> int:
    """The exponent code of :func:`_pow_slope`: g itself when whole in [0, 4], else -1."""
    return int(g) if g in (0.0, 1.0, 2.0, 3.0, 4.0) else -1


def _setup(hp: Sequence[float], x: Tensor, *others: Optional[Tensor]):
    if len(hp) != 4:
        raise ValueError(f'mmloss_ext fused heatmap (triton): expects [alpha, gamma, pos_weight, neg_weight], '
                         f'got {len(hp)} values')
    if not x.is_contiguous():
        raise ValueError('mmloss_ext fused heatmap (triton): bad pred')
    for t in others:
        if t is not None and (t.device != x.device or not t.is_contiguous() or t.dtype != x.dtype):
            raise ValueError("mmloss_ext fused heatmap (triton): inputs must be contiguous, on pred's device, "
                             'of its dtype')
    hp = [float(h) for h in hp] + [GAUSSIAN_FOCAL_EPS]  # the kernel reads eps as the fifth, in x's dtype
    numel = x.numel()
    rows = x.shape[0] if x.dim() else 1
    cols = max(numel // rows, 1) if rows else 1
    flags = dict(POS=hp[2] != 0.0, KA=_whole(hp[0]), KG=_whole(hp[1]), I64=numel + _BLOCK >= 2 ** 31,
                 BLOCK=_BLOCK)
    return _hp(hp, x.dtype, x.device), numel, cols, flags


def heatmap_forward(hp: Sequence[float], x: Tensor, target: Tensor, wrow: Optional[Tensor], wfull: Optional[Tensor],
                    out_mode: int) -> Tensor:
    """out_mode 0: the weighted total (float64, 0-d); 1: the weighted elementwise loss (x's shape)."""
    hpt, numel, cols, flags = _setup(hp, x, target, wrow, wfull)
    grid = (triton.cdiv(numel, _BLOCK),)
    out = torch.empty_like(x) if out_mode == 1 else torch.empty(grid[0], dtype=torch.float64, device=x.device)
    if numel > 0:
        _heatmap_kernel[grid](x, target, x if wrow is None else wrow, x if wfull is None else wfull, hpt, x, x, out,
                              numel, cols, GRAD=False, HAS_WROW=wrow is not None, HAS_WFULL=wfull is not None,
                              HAS_GFULL=False, OUT_ELEM=out_mode == 1, **flags)
    return out if out_mode == 1 else out.sum()


def heatmap_backward(hp: Sequence[float], x: Tensor, target: Tensor, wrow: Optional[Tensor], wfull: Optional[Tensor],
                     scale: Union[float, Tensor], gfull: Optional[Tensor]) -> Tensor:
    """d x = scale * gfull * weight * d loss / d x."""
    hpt, numel, cols, flags = _setup(hp, x, target, wrow, wfull, gfull)
    dx = torch.empty_like(x)
    if numel > 0:
        _heatmap_kernel[(triton.cdiv(numel, _BLOCK),)](
            x, target, x if wrow is None else wrow, x if wfull is None else wfull, hpt,
            _scale(scale, x.dtype, x.device), x if gfull is None else gfull, dx, numel, cols, GRAD=True,
            HAS_WROW=wrow is not None, HAS_WFULL=wfull is not None, HAS_GFULL=gfull is not None, OUT_ELEM=True,
            **flags)
    return dx
