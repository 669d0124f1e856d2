"""The elementwise kernels in Triton: ``elementwise_forward`` / ``elementwise_backward`` with the
interface of the C++ ones (``elementwise.cpp``), one program per ``BLOCK`` elements of the flat
``(N, K)`` input (row sums: per ``BLOCK_R`` rows). The formulas mirror the eager functionals of
:mod:`mmloss_ext.losses` term by term, with the gradients derived by hand. The kinds, their ids
and hyper-parameters are :class:`~mmloss_ext.core.abi.ElementwiseKind` and
:data:`~mmloss_ext.core.abi.ELEMENTWISE_HP`; the shared helpers and conventions are
:mod:`..triton_common`'s.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import triton
import triton.language as tl
from torch import Tensor

from ...core.abi import ELEMENTWISE_HP, SMOOTH_L1_MIN_BETA, ElementwiseKind, OutMode
from ..triton_common import (check, const, epilogue, floats, log1p_pos, member, needs_int64, opt, out_mode_of, pow_code,
                             pow_slope, program_block, scale_tensor, sign, weigh)

__all__ = ['elementwise_forward', 'elementwise_backward']

_BLOCK = 1024      # elements per program
_ROW_TILE = 2048   # elements per program tile of the row-sum kernel

# the kind ids (core/abi.py) as compile-time constants of the kernels
_FOCAL = tl.constexpr(int(ElementwiseKind.FOCAL))
_QUALITY_FOCAL = tl.constexpr(int(ElementwiseKind.QUALITY_FOCAL))
_VARIFOCAL = tl.constexpr(int(ElementwiseKind.VARIFOCAL))
_SMOOTH_L1 = tl.constexpr(int(ElementwiseKind.SMOOTH_L1))
_BALANCED_L1 = tl.constexpr(int(ElementwiseKind.BALANCED_L1))


# ---------------------------------------------------------------------------------------------
# elementwise losses: value and d/dx of one element (hp in hp_ptr, in x's dtype)


@triton.jit
def _sigmoid_bce(x, t, F64: tl.constexpr):
    """p = sigmoid(x), p (1 - p) and bce(x, t) = max(x, 0) - x t + log1p(exp(-|x|)), one exp."""
    e = tl.exp(-tl.abs(x))
    r = 1.0 / (1.0 + e)
    er = e * r
    p = tl.where(x >= 0, r, er)
    bce = tl.maximum(x, 0.0) - x * t + log1p_pos(e, F64)
    return p, er * r, bce


@triton.jit
def _elem(x, t, hp_ptr, KIND: tl.constexpr, GRAD: tl.constexpr, POW: tl.constexpr, FLAG: tl.constexpr,
          F64: tl.constexpr):
    """The loss of one element (GRAD=False) or its derivative in x (GRAD=True); see elementwise.cpp."""
    if KIND == _FOCAL:  # focal: bce (alpha t + (1 - alpha)(1 - t)) (p (1 - t) + (1 - p) t)^gamma
        alpha = tl.load(hp_ptr)
        gamma = tl.load(hp_ptr + 1)
        p, pq, bce = _sigmoid_bce(x, t, F64)
        af = (1.0 - alpha) + (2.0 * alpha - 1.0) * t
        q = p + t * (1.0 - 2.0 * p)
        qg, slope = pow_slope(q, gamma, POW)
        if GRAD:
            out = af * ((p - t) * qg + bce * slope * (1.0 - 2.0 * t) * pq)
        else:
            out = bce * af * qg
    elif KIND == _QUALITY_FOCAL:  # quality focal: bce |p - t|^beta
        beta = tl.load(hp_ptr)
        p, pq, bce = _sigmoid_bce(x, t, F64)
        d = p - t
        qg, slope = pow_slope(tl.abs(d), beta, POW)
        if GRAD:
            out = d * qg + bce * slope * sign(d) * pq
        else:
            out = bce * qg
    elif KIND == _VARIFOCAL:  # varifocal: bce (t > 0 ? (iou_weighted ? t : 1) : alpha |p - t|^gamma)
        alpha = tl.load(hp_ptr)
        gamma = tl.load(hp_ptr + 1)
        p, pq, bce = _sigmoid_bce(x, t, F64)
        d = p - t
        qg, slope = pow_slope(tl.abs(d), gamma, POW)
        if FLAG:
            positive = t
        else:
            positive = tl.zeros_like(t) + 1.0
        if GRAD:
            out = tl.where(t > 0, d * positive, alpha * (d * qg + bce * slope * sign(d) * pq))
        else:
            out = bce * tl.where(t > 0, positive, alpha * qg)
    elif KIND == _SMOOTH_L1:  # smooth L1 (FLAG: L1)
        d = x - t
        ad = tl.abs(d)
        if FLAG:
            if GRAD:
                out = sign(d)
            else:
                out = ad
        else:
            beta = tl.load(hp_ptr)
            if GRAD:
                out = tl.where(ad < beta, d / beta, sign(d))
            else:
                out = tl.where(ad < beta, 0.5 * ad * ad / beta, ad - 0.5 * beta)
    else:  # KIND == _BALANCED_L1 (Libra R-CNN), hp = [alpha, gamma, beta, b = exp(gamma / alpha) - 1]
        alpha = tl.load(hp_ptr)
        gamma = tl.load(hp_ptr + 1)
        beta = tl.load(hp_ptr + 2)
        b = tl.load(hp_ptr + 3)
        d = x - t
        ad = tl.abs(d)
        lg = log1p_pos(b * ad / beta, F64)
        if GRAD:
            inner = alpha * (lg + (b * ad + 1.0) / (beta + b * ad)) - alpha
            out = sign(d) * tl.where(ad < beta, inner, gamma)
        else:
            inner = alpha / b * (b * ad + 1.0) * lg - alpha * ad
            out = tl.where(ad < beta, inner, gamma * ad + (gamma / b - alpha * beta))
    return out


@triton.jit
def _target(t_ptr, lab_ptr, score_ptr, offs, row, col, mask, x, HAS_T: tl.constexpr, HAS_SCORE: tl.constexpr):
    """The dense target at ``offs``, or the one-hot of the row's label (times its score)."""
    if HAS_T:
        t = tl.load(t_ptr + offs, mask=mask, other=0.0)
    else:
        lab = tl.load(lab_ptr + row, mask=mask, other=-1)
        t = (col == lab).to(x.dtype)
        if HAS_SCORE:
            t = t * tl.load(score_ptr + row, mask=mask, other=0.0)
    return t


@triton.jit
def _elementwise_kernel(x_ptr, t_ptr, lab_ptr, score_ptr, wrow_ptr, wfull_ptr, hp_ptr, scale_ptr, grow_ptr,
                        gfull_ptr, out_ptr, numel, cols,
                        KIND: tl.constexpr, GRAD: tl.constexpr, POW: tl.constexpr, FLAG: tl.constexpr,
                        HAS_T: tl.constexpr, HAS_SCORE: tl.constexpr, HAS_WROW: tl.constexpr,
                        HAS_WFULL: tl.constexpr, HAS_GROW: tl.constexpr, HAS_GFULL: tl.constexpr,
                        OUT_ELEM: tl.constexpr, F64: tl.constexpr, I64: tl.constexpr, BLOCK: tl.constexpr):
    """Forward (GRAD=False): the weighted loss per element (OUT_ELEM) or per-program partial sums;
    backward (GRAD=True): d x = scale * grow[row] * gfull * weight * d loss / d x."""
    pid, offs, mask = program_block(numel, I64, BLOCK)
    row = offs // cols
    col = offs - row * cols
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    t = _target(t_ptr, lab_ptr, score_ptr, offs, row, col, mask, x, HAS_T, HAS_SCORE)
    v = _elem(x, t, hp_ptr, KIND, GRAD, POW, FLAG, F64)
    epilogue(v, offs, row, mask, pid, wrow_ptr, wfull_ptr, scale_ptr, grow_ptr, gfull_ptr, out_ptr, HAS_WROW,
             HAS_WFULL, GRAD, HAS_GROW, HAS_GFULL, OUT_ELEM)


@triton.jit
def _row_sum_kernel(x_ptr, t_ptr, lab_ptr, score_ptr, wrow_ptr, wfull_ptr, hp_ptr, out_ptr, rows, cols,
                    KIND: tl.constexpr, POW: tl.constexpr, FLAG: tl.constexpr, HAS_T: tl.constexpr,
                    HAS_SCORE: tl.constexpr, HAS_WROW: tl.constexpr, HAS_WFULL: tl.constexpr,
                    F64: tl.constexpr, I64: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """The weighted loss summed over each row (out_mode 2), BLOCK_R rows per program."""
    pid = tl.program_id(0)
    if I64:
        pid = pid.to(tl.int64)
    r = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = r < rows
    acc = tl.zeros((BLOCK_R, BLOCK_C), x_ptr.dtype.element_ty)
    for c0 in range(0, cols, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        mask = rmask[:, None] & (c < cols)[None, :]
        row = r[:, None] + c[None, :] * 0
        col = c[None, :] + r[:, None] * 0
        offs = row * cols + col
        x = tl.load(x_ptr + offs, mask=mask, other=0.0)
        t = _target(t_ptr, lab_ptr, score_ptr, offs, row, col, mask, x, HAS_T, HAS_SCORE)
        v = _elem(x, t, hp_ptr, KIND, False, POW, FLAG, F64)
        acc += tl.where(mask, weigh(v, offs, row, mask, wrow_ptr, wfull_ptr, False, HAS_WFULL), 0.0)
    s = tl.sum(acc, axis=1)
    if HAS_WROW:
        s = s * tl.load(wrow_ptr + r, mask=rmask, other=0.0)
    tl.store(out_ptr + r, s, mask=rmask)



# ---------------------------------------------------------------------------------------------
# host side


def _elementwise_config(kind: int, hp: Sequence[float]):
    """``(KIND, hp values for the kernel, POW, FLAG)`` of an elementwise kind."""
    kind = member(ElementwiseKind, kind)
    hp = floats(f'ElementwiseKind.{kind.name}', ELEMENTWISE_HP[kind], hp)
    if kind == ElementwiseKind.FOCAL:  # [alpha, gamma]
        return int(kind), hp, pow_code(hp[1]), False
    if kind == ElementwiseKind.QUALITY_FOCAL:  # [beta]
        return int(kind), hp, pow_code(hp[0]), False
    if kind == ElementwiseKind.VARIFOCAL:  # [alpha, gamma], FLAG: iou_weighted
        return int(kind), hp[:2], pow_code(hp[1]), hp[2] != 0.0
    if kind == ElementwiseKind.SMOOTH_L1:  # [beta], FLAG: plain L1
        return int(kind), hp, 0, hp[0] < SMOOTH_L1_MIN_BETA
    alpha, gamma, beta = hp  # BALANCED_L1, and its b
    return int(kind), [alpha, gamma, beta, math.exp(gamma / alpha) - 1.0], 0, False


def _common(x: Tensor, target, labels, score, wrow, wfull):
    rows = x.shape[0]
    numel = x.numel()
    cols = numel // rows if rows else 0
    return dict(HAS_T=target is not None, HAS_SCORE=score is not None, HAS_WROW=wrow is not None,
                HAS_WFULL=wfull is not None, F64=x.dtype == torch.float64, I64=needs_int64(numel, _BLOCK)), rows, cols


def elementwise_forward(kind: int, hp: Sequence[float], x: Tensor, target: Optional[Tensor], labels: Optional[Tensor],
                        score: Optional[Tensor], wrow: Optional[Tensor], wfull: Optional[Tensor],
                        out_mode: int) -> Tensor:
    """out_mode (:class:`OutMode`) TOTAL: the weighted total (float64, 0-d); ELEMENTS: the weighted
    loss (x's shape); ROWS: its row sums (N,)."""
    check('elementwise', x, target, labels, score, wrow, wfull)
    out_mode = out_mode_of(out_mode, rows=True)
    kind, vals, pow_code, flag = _elementwise_config(kind, hp)
    flags, rows, cols = _common(x, target, labels, score, wrow, wfull)
    hpt = const(vals, x.dtype, x.device)
    numel = x.numel()
    args = (x, opt(target, x), opt(labels, x), opt(score, x), opt(wrow, x), opt(wfull, x), hpt)
    if out_mode == OutMode.ROWS:
        out = torch.zeros(rows, dtype=x.dtype, device=x.device)
        if numel == 0:
            return out
        block_c = min(triton.next_power_of_2(cols), 256)
        block_r = max(1, _ROW_TILE // block_c)
        _row_sum_kernel[(triton.cdiv(rows, block_r),)](
            *args, out, rows, cols, KIND=kind, POW=pow_code, FLAG=flag, BLOCK_R=block_r, BLOCK_C=block_c, **flags)
        return out
    if out_mode == OutMode.ELEMENTS:
        out = torch.empty_like(x)
    else:
        out = torch.empty(triton.cdiv(numel, _BLOCK), dtype=torch.float64, device=x.device)
    if numel > 0:
        _elementwise_kernel[(triton.cdiv(numel, _BLOCK),)](
            *args, x, x, x, out, numel, cols, KIND=kind, GRAD=False, POW=pow_code, FLAG=flag, HAS_GROW=False,
            HAS_GFULL=False, OUT_ELEM=out_mode == OutMode.ELEMENTS, BLOCK=_BLOCK, **flags)
    return out if out_mode == OutMode.ELEMENTS else out.sum(dtype=torch.float64)


def elementwise_backward(kind: int, hp: Sequence[float], x: Tensor, target: Optional[Tensor],
                         labels: Optional[Tensor], score: Optional[Tensor], wrow: Optional[Tensor],
                         wfull: Optional[Tensor], scale: Union[float, Tensor], grow: Optional[Tensor],
                         gfull: Optional[Tensor]) -> Tensor:
    """d x = scale * grow[n] * gfull[n, k] * weight * d loss / d x."""
    check('elementwise', x, target, labels, score, wrow, wfull, grow, gfull)
    kind, vals, pow_code, flag = _elementwise_config(kind, hp)
    flags, rows, cols = _common(x, target, labels, score, wrow, wfull)
    dx = torch.empty_like(x)
    numel = x.numel()
    if numel > 0:
        _elementwise_kernel[(triton.cdiv(numel, _BLOCK),)](
            x, opt(target, x), opt(labels, x), opt(score, x), opt(wrow, x), opt(wfull, x),
            const(vals, x.dtype, x.device), scale_tensor(scale, x.dtype, x.device), opt(grow, x), opt(gfull, x), dx,
            numel, cols, KIND=kind, GRAD=True, POW=pow_code, FLAG=flag, HAS_GROW=grow is not None,
            HAS_GFULL=gfull is not None, OUT_ELEM=True, BLOCK=_BLOCK, **flags)
    return dx
