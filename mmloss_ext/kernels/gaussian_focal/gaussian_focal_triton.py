"""The Gaussian focal loss kernels in Triton: ``heatmap_forward`` / ``heatmap_backward`` with the
interface of the C++ ones (``gaussian_focal.cpp``, described in :mod:`mmloss_ext.kernels.gaussian_focal`).

Elementwise over ``p = pred`` and ``t = target``, one program per ``BLOCK`` elements of the flat
input; the formula and its hand-derived gradient mirror the eager functional
(:func:`~mmloss_ext.losses.gaussian_focal_loss`) term by term: the positive term is computed for
every element and multiplied by ``[t == 1]`` (a NaN or out-of-range ``p`` propagates as in the
eager path), and switched off by ``pos_weight == 0``. Powers with a whole exponent up to 4 are
multiplications; others are ``exp(g log q)`` (0 at ``q = 0``, with a slope of 0 there).

The shared helpers and conventions (totals, dtypes, the epilogue) are :mod:`..triton_common`'s.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import triton
import triton.language as tl
from torch import Tensor

from ...core.abi import GAUSSIAN_FOCAL_EPS, GAUSSIAN_FOCAL_HP
from ..triton_common import (check, const, epilogue, floats, needs_int64, opt, pow_code, pow_slope, program_block,
                             scale_tensor)

__all__ = ['heatmap_forward', 'heatmap_backward']

_BLOCK = 1024  # elements per program
# where the kernel reads each hyper-parameter (core/abi.py's layout; eps after them)
_ALPHA = tl.constexpr(GAUSSIAN_FOCAL_HP.index('alpha'))
_GAMMA = tl.constexpr(GAUSSIAN_FOCAL_HP.index('gamma'))
_POS_WEIGHT = tl.constexpr(GAUSSIAN_FOCAL_HP.index('pos_weight'))
_NEG_WEIGHT = tl.constexpr(GAUSSIAN_FOCAL_HP.index('neg_weight'))
_EPS = tl.constexpr(len(GAUSSIAN_FOCAL_HP))


@triton.jit
def _heatmap_kernel(x_ptr, t_ptr, wrow_ptr, wfull_ptr, hp_ptr, scale_ptr, gfull_ptr, out_ptr, numel, cols,
                    GRAD: tl.constexpr, POS: tl.constexpr, KA: tl.constexpr, KG: tl.constexpr,
                    HAS_WROW: tl.constexpr, HAS_WFULL: tl.constexpr, HAS_GFULL: tl.constexpr,
                    OUT_ELEM: tl.constexpr, I64: tl.constexpr, BLOCK: tl.constexpr):
    """Forward (GRAD=False): the weighted loss per element (OUT_ELEM) or per-program partial sums
    (float64); backward (GRAD=True): d x = scale * gfull * weight * d loss / d x."""
    pid, offs, mask = program_block(numel, I64, BLOCK)
    p = tl.load(x_ptr + offs, mask=mask, other=0.5)
    t = tl.load(t_ptr + offs, mask=mask, other=0.0)
    alpha = tl.load(hp_ptr + _ALPHA)
    gamma = tl.load(hp_ptr + _GAMMA)
    pos_weight = tl.load(hp_ptr + _POS_WEIGHT)
    neg_weight = tl.load(hp_ptr + _NEG_WEIGHT)
    eps = tl.load(hp_ptr + _EPS)
    q = 1.0 - p
    qe = q + eps
    pa, pa_slope = pow_slope(p, alpha, KA)
    damp, _ = pow_slope(1.0 - t, gamma, KG)
    log_q = tl.log(qe)
    # negatives: -log(1 - p + eps) p^alpha (1 - t)^gamma
    if GRAD:
        v = neg_weight * damp * (pa / qe - log_q * pa_slope)
    else:
        v = neg_weight * (0.0 - log_q) * pa * damp
    if POS:  # positives: -log(p + eps) (1 - p)^alpha [t == 1]
        pe = p + eps
        qa, qa_slope = pow_slope(q, alpha, KA)
        log_p = tl.log(pe)
        hot = (t == 1.0).to(p.dtype)
        if GRAD:
            v += pos_weight * ((log_p * qa_slope - qa / pe) * hot)
        else:
            v += pos_weight * ((0.0 - log_p) * qa * hot)
    epilogue(v, offs, offs // cols, mask, pid, wrow_ptr, wfull_ptr, scale_ptr, x_ptr, gfull_ptr, out_ptr, HAS_WROW,
             HAS_WFULL, GRAD, False, HAS_GFULL, OUT_ELEM)


# ---------------------------------------------------------------------------------------------
# host side: the extension's interface

def _setup(hp: Sequence[float], x: Tensor, *others: Optional[Tensor]):
    check('gaussian_focal', x, *others, min_dim=0)
    hp = floats('the Gaussian focal kernel', GAUSSIAN_FOCAL_HP, hp)
    numel = x.numel()
    rows = x.shape[0] if x.dim() else 1
    cols = max(numel // rows, 1) if rows else 1
    alpha, gamma, pos_weight = (hp[GAUSSIAN_FOCAL_HP.index(n)] for n in ('alpha', 'gamma', 'pos_weight'))
    flags = dict(POS=pos_weight != 0.0, KA=pow_code(alpha), KG=pow_code(gamma), I64=needs_int64(numel, _BLOCK),
                 BLOCK=_BLOCK)
    # the kernel reads eps after the hyper-parameters, in x's dtype
    return const(hp + [GAUSSIAN_FOCAL_EPS], x.dtype, x.device), numel, cols, flags


def heatmap_forward(hp: Sequence[float], x: Tensor, target: Tensor, wrow: Optional[Tensor], wfull: Optional[Tensor],
                    out_mode: int) -> Tensor:
    """out_mode 0: the weighted total (float64, 0-d); 1: the weighted elementwise loss (x's shape)."""
    hpt, numel, cols, flags = _setup(hp, x, target, wrow, wfull)
    grid = (triton.cdiv(numel, _BLOCK),)
    out = torch.empty_like(x) if out_mode == 1 else torch.empty(grid[0], dtype=torch.float64, device=x.device)
    if numel > 0:
        _heatmap_kernel[grid](x, target, opt(wrow, x), opt(wfull, x), hpt, x, x, out,
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
            x, target, opt(wrow, x), opt(wfull, x), hpt, scale_tensor(scale, x.dtype, x.device), opt(gfull, x), dx,
            numel, cols, GRAD=True, HAS_WROW=wrow is not None, HAS_WFULL=wfull is not None,
            HAS_GFULL=gfull is not None, OUT_ELEM=True, **flags)
    return dx
