"""The GHM-C kernels in Triton: :func:`ghmc_histogram`, :func:`ghmc_forward` and
:func:`ghmc_backward` take and return what the C++ ones of the same names do (``ghmc.cpp``, see
:mod:`mmloss_ext.kernels.ghmc`), one program per ``BLOCK`` elements of the flat ``(N, K)`` logits:

* the histogram: each program bins its elements (``floor(g * bins)`` corrected against the edges
  tensor, so the bins are exactly the eager ``bucketize``'s) and reduces a one-hot of them over
  ``next_power_of_2(bins + 1)`` lanes into its row of a ``(programs, lanes)`` partial histogram;
  ``torch.sum`` adds the rows up (deterministic, no atomics), the counts in int64, the BCE sums in
  float64;
* forward (``'none'``) and backward: the bin's weight from the table times the BCE, or times
  ``p - t`` and the upstream gradient.

``log1p`` is ``log(u) * e / (u - 1)`` with ``u = 1 + e`` (exact to rounding). The shared helpers
and conventions are :mod:`..triton_common`'s.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..triton_common import check, epilogue, needs_int64, opt, program_block, scale_tensor

__all__ = ['ghmc_histogram', 'ghmc_forward', 'ghmc_backward']

_BLOCK = 1024


@triton.jit
def _ghmc_elem(x_ptr, t_ptr, lab_ptr, wrow_ptr, wfull_ptr, edges_ptr, offs, mask, cols, bins,
               HAS_T: tl.constexpr, HAS_WROW: tl.constexpr, HAS_WFULL: tl.constexpr):
    """``(p - t, bce, bin)`` of the elements at ``offs``; the bin is ``bins`` for an invalid element
    (weight <= 0) or one outside the edges (NaN), and past the lanes (``bins + 1``) where ``mask`` is
    false; ``valid`` says whether the element counts."""
    row = offs // cols
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    if HAS_T:
        t = tl.load(t_ptr + offs, mask=mask, other=0.0)
    else:
        lab = tl.load(lab_ptr + row, mask=mask, other=-1)
        t = ((offs - row * cols) == lab).to(x.dtype)
    e = tl.exp(-tl.abs(x))
    r = 1.0 / (1.0 + e)
    p = tl.where(x >= 0, r, e * r)
    u = 1.0 + e
    exact = u == 1.0  # e below the rounding of 1 + e: log1p(e) = e
    log1p = tl.where(exact, e, tl.log(u) * (e / tl.where(exact, 1.0, u - 1.0)))
    bce = tl.maximum(x, 0.0) - x * t + log1p
    g = tl.abs(p - t)
    valid = mask
    if HAS_WROW:
        valid = valid & (tl.load(wrow_ptr + row, mask=mask, other=0.0) > 0)
    if HAS_WFULL:
        valid = valid & (tl.load(wfull_ptr + offs, mask=mask, other=0.0) > 0)
    inside = (g >= tl.load(edges_ptr)) & (g < tl.load(edges_ptr + bins))
    gs = tl.where(inside, g, 0.0)
    i = tl.minimum((gs * bins).to(tl.int32), bins - 1)  # within one of the bin: one step each way
    i = tl.where(gs < tl.load(edges_ptr + i), i - 1, i)
    i = tl.where(gs >= tl.load(edges_ptr + i + 1), i + 1, i)
    b = tl.where(inside & valid, i, bins)
    b = tl.where(mask, b, bins + 1)
    return p - t, bce, b, valid


@triton.jit
def _histogram_kernel(x_ptr, t_ptr, lab_ptr, wrow_ptr, wfull_ptr, edges_ptr, cnt_ptr, sum_ptr, numel, cols, bins,
                      HAS_T: tl.constexpr, HAS_WROW: tl.constexpr, HAS_WFULL: tl.constexpr, LANES: tl.constexpr,
                      I64: tl.constexpr, BLOCK: tl.constexpr):
    """Row ``pid`` of the partial histograms: per bin, the valid elements and the sum of the BCE
    (the last bin: outside the edges or invalid; elements past ``numel`` in none)."""
    pid, offs, mask = program_block(numel, I64, BLOCK)
    _, bce, b, valid = _ghmc_elem(x_ptr, t_ptr, lab_ptr, wrow_ptr, wfull_ptr, edges_ptr, offs, mask, cols, bins,
                                  HAS_T, HAS_WROW, HAS_WFULL)
    hot = b[:, None] == tl.arange(0, LANES)[None, :]
    counts = tl.sum((hot & valid[:, None]).to(tl.int32), axis=0)
    sums = tl.sum(tl.where(hot, bce[:, None], 0.0), axis=0)
    lanes = tl.arange(0, LANES)
    tl.store(cnt_ptr + pid * LANES + lanes, counts)
    tl.store(sum_ptr + pid * LANES + lanes, sums)


@triton.jit
def _apply_kernel(x_ptr, t_ptr, lab_ptr, wrow_ptr, wfull_ptr, edges_ptr, table_ptr, scale_ptr, gfull_ptr, out_ptr,
                  numel, cols, bins, HAS_T: tl.constexpr, HAS_WROW: tl.constexpr, HAS_WFULL: tl.constexpr,
                  GRAD: tl.constexpr, HAS_GFULL: tl.constexpr, I64: tl.constexpr, BLOCK: tl.constexpr):
    """Forward: ``table[bin] * bce``; backward: ``scale * gfull * table[bin] * (p - t)``."""
    pid, offs, mask = program_block(numel, I64, BLOCK)
    diff, bce, b, _ = _ghmc_elem(x_ptr, t_ptr, lab_ptr, wrow_ptr, wfull_ptr, edges_ptr, offs, mask, cols, bins,
                                 HAS_T, HAS_WROW, HAS_WFULL)
    w = tl.load(table_ptr + b, mask=mask, other=0.0)
    if GRAD:
        v = w * diff
    else:
        v = w * bce
    epilogue(v, offs, offs, mask, pid, x_ptr, x_ptr, scale_ptr, x_ptr, gfull_ptr, out_ptr, False, False, GRAD, False,
             HAS_GFULL, True)


def _check(x: Tensor, edges: Tensor, *others: Optional[Tensor]) -> None:
    if x.dim() != 2 or not edges.is_contiguous() or edges.dtype != x.dtype:
        raise ValueError('mmloss_ext fused ghmc (triton): pred must be (N, K), the edges of its dtype')
    check('ghmc', x, *others)


def _flags(x: Tensor, target, wrow, wfull) -> dict:
    return dict(HAS_T=target is not None, HAS_WROW=wrow is not None, HAS_WFULL=wfull is not None,
                I64=needs_int64(x.numel(), _BLOCK))


def _args(x, target, labels, wrow, wfull, edges):
    return x, opt(target, x), opt(labels, x), opt(wrow, x), opt(wfull, x), edges


def ghmc_histogram(x: Tensor, target: Optional[Tensor], labels: Optional[Tensor], wrow: Optional[Tensor],
                   wfull: Optional[Tensor], edges: Tensor) -> Tuple[Tensor, Tensor]:
    """``(counts (bins + 1,) int64, sums (bins + 1,) float64)``, as the C++ ``ghmc_histogram``."""
    _check(x, edges, target, labels, wrow, wfull)
    bins = edges.numel() - 1
    lanes = triton.next_power_of_2(bins + 2)  # the bins, the unbinned slot, and a lane past them
    numel = x.numel()
    programs = triton.cdiv(numel, _BLOCK)
    counts = torch.zeros(max(programs, 1), lanes, dtype=torch.int32, device=x.device)
    sums = torch.zeros(max(programs, 1), lanes, dtype=x.dtype, device=x.device)
    if numel > 0:
        _histogram_kernel[(programs,)](*_args(x, target, labels, wrow, wfull, edges), counts, sums, numel,
                                       max(x.shape[1], 1), bins, LANES=lanes, BLOCK=_BLOCK,
                                       **_flags(x, target, wrow, wfull))
    return (counts.sum(0, dtype=torch.int64)[:bins + 1].contiguous(),
            sums.sum(0, dtype=torch.float64)[:bins + 1].contiguous())


def _apply(x, target, labels, wrow, wfull, edges, table, scale, gfull, grad: bool) -> Tensor:
    _check(x, edges, target, labels, wrow, wfull, table, gfull)
    out = torch.empty_like(x)
    numel = x.numel()
    if numel > 0:
        _apply_kernel[(triton.cdiv(numel, _BLOCK),)](
            *_args(x, target, labels, wrow, wfull, edges), table, scale_tensor(scale, x.dtype, x.device), opt(gfull, x),
            out, numel, x.shape[1], edges.numel() - 1, GRAD=grad, HAS_GFULL=gfull is not None, BLOCK=_BLOCK,
            **_flags(x, target, wrow, wfull))
    return out


def ghmc_forward(x: Tensor, target: Optional[Tensor], labels: Optional[Tensor], wrow: Optional[Tensor],
                 wfull: Optional[Tensor], edges: Tensor, table: Tensor) -> Tensor:
    """``table[bin] * bce`` per element, as the C++ ``ghmc_forward``."""
    return _apply(x, target, labels, wrow, wfull, edges, table, 1.0, None, False)


def ghmc_backward(x: Tensor, target: Optional[Tensor], labels: Optional[Tensor], wrow: Optional[Tensor],
                  wfull: Optional[Tensor], edges: Tensor, table: Tensor, scale: Union[float, Tensor],
                  gfull: Optional[Tensor]) -> Tensor:
    """``scale * gfull * table[bin] * (p - t)``, as the C++ ``ghmc_backward``."""
    return _apply(x, target, labels, wrow, wfull, edges, table, scale, gfull, True)
