"""The GHM-C kernels: the gradient harmonizing classification loss.

The eager :func:`mmloss_ext.losses.ghm.ghmc_loss` is the spec; it calls, when
:func:`~mmloss_ext.kernels.dispatch.use_fused` says so, the two entry points here around its own
weighting step:

* :func:`ghmc_histogram` -- one pass over the logits: per bin, the number of valid elements and the
  sum of their binary cross-entropy (operator ``mmloss_ext::ghmc_histogram``, no gradient);
* the loss turns the counts into one weight per bin (a few values, on the device);
* :func:`ghmc_weighted` -- the weighted loss: for ``'mean'``/``'sum'`` the dot product of the bin
  weights and the per-bin sums (no second pass), for ``'none'`` one pass writing the elementwise
  loss; the backward is one pass, recomputing each element's bin from the saved inputs. Nothing of
  the size of ``pred`` is saved or materialised besides the gradient (and the ``'none'`` output)
  (operator ``mmloss_ext::ghmc``).

Kernels: ``ghmc.cpp`` (C++) and :mod:`.ghmc_triton`, both as ``ghmc_histogram``, ``ghmc_forward``
and ``ghmc_backward``.

Both backends are deterministic: the CPU kernel merges fixed chunks' histograms in order, the
Triton one writes per-program partial histograms that ``torch.sum`` adds up.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from ...core.reduction import AvgFactor
from .. import backends
from ..common import ELEMENTS, TOTAL, reduce, split_weight
from ..operators import define, fake_out, upstream

__all__ = ['supported', 'ghmc_histogram', 'ghmc_weighted', 'GHMCHistogram', 'CPU_MAX_BINS', 'TRITON_MAX_BINS']

#: the Triton kernels bin with a one-hot over ``next_power_of_2(bins + 2)`` lanes per element
TRITON_MAX_BINS = 1022
#: the C++ kernels find a bin from ``floor(g * bins)`` and one comparison each way, exact up to here
CPU_MAX_BINS = 2 ** 20


def supported(x: Tensor, bins: int) -> bool:
    """Whether the kernels of ``x``'s device take ``bins`` bins (whether there are kernels is
    :func:`~mmloss_ext.kernels.dispatch.use_fused`'s business)."""
    return bins <= {'cpp': CPU_MAX_BINS, 'triton': TRITON_MAX_BINS}.get(backends.backend_of(x.device), 0)


def _histogram(k, x: Tensor, target: Optional[Tensor], labels: Optional[Tensor], wrow: Optional[Tensor],
               wfull: Optional[Tensor], edges: Tensor) -> Tuple[Tensor, Tensor]:
    return tuple(k.ghmc_histogram(x, target, labels, wrow, wfull, edges))


#: ``(counts, sums)``: valid elements and BCE summed per bin (``bins + 1`` slots each)
_histogram_op = define(
    'ghmc', 'ghmc_histogram', 'Tensor x, Tensor? target, Tensor? labels, Tensor? wrow, Tensor? wfull, Tensor edges',
    _histogram, None,
    lambda x, target, labels, wrow, wfull, edges: (edges.new_empty(edges.shape, dtype=torch.long),
                                                   edges.new_empty(edges.shape, dtype=torch.float64)),
    aux='sums')


def _forward(k, x, target, labels, wrow, wfull, edges, table, sums, out_mode):
    if out_mode == TOTAL:  # 0 * the last slot: a non-finite BCE of an unweighted element propagates
        return (table.to(torch.float64) * sums).sum()
    return k.ghmc_forward(x, target, labels, wrow, wfull, edges, table)


def _backward(k, grad, x, target, labels, wrow, wfull, edges, table, sums, out_mode):
    scale, _, gfull = upstream(out_mode, grad.to(x.dtype))
    return k.ghmc_backward(x, target, labels, wrow, wfull, edges, table, scale, gfull)


#: ``ghmc(x (N, K), target, labels, wrow, wfull, edges, table, sums, out_mode)``: elementwise
_weighted_op = define(
    'ghmc', 'ghmc', 'Tensor x, Tensor? target, Tensor? labels, Tensor? wrow, Tensor? wfull, Tensor edges, '
    'Tensor table, Tensor sums, int out_mode', _forward, _backward,
    lambda x, target, labels, wrow, wfull, edges, table, sums, out_mode: fake_out(x, out_mode, x.shape))


class GHMCHistogram(NamedTuple):
    """:func:`ghmc_histogram`'s result, and the prepared inputs the weighted pass reuses."""
    #: ``(bins + 1,)`` int64: valid elements per bin; the last slot, valid ones outside the bins (NaN)
    counts: Tensor
    #: ``(bins + 1,)`` float64: BCE summed per bin; the last slot, of the invalid and unbinned ones
    sums: Tensor
    x: Tensor
    target: Optional[Tensor]
    labels: Optional[Tensor]
    wrow: Optional[Tensor]
    wfull: Optional[Tensor]
    edges: Tensor
    shape: torch.Size


def _rows(t: Optional[Tensor], shape: torch.Size) -> Optional[Tensor]:
    """``t`` (of ``shape``) as the kernels' ``(N, K)`` rows."""
    return None if t is None else t.reshape(shape[0], shape[1:].numel())


def ghmc_histogram(name: str, x: Tensor, edges: Tensor, *, target: Optional[Tensor] = None,
                   labels: Optional[Tensor] = None, weight: Optional[Tensor] = None) -> GHMCHistogram:
    """Pass 1 over the logits ``x`` (compute dtype, any shape of at least one dim) against a dense
    ``target`` of ``x``'s shape or ``labels`` ``(N,)`` in ``[0, C]`` (``x`` ``(N, C)``); ``weight``
    (any shape :func:`~mmloss_ext.core.reduction.adapt_weight` accepts) marks the valid elements
    (``> 0``); ``edges``: the ``bins + 1`` bin edges in ``x``'s dtype."""
    dtype, shape = x.dtype, x.shape
    wrow, wfull = split_weight(name, weight, shape, dtype)
    xr = _rows(x.contiguous(), shape)  # keeps x's graph: the gradient flows back through the view
    target = None if target is None else _rows(target.detach().to(dtype).contiguous(), shape)
    labels = None if labels is None else labels.long().contiguous()
    wfull = _rows(wfull, shape)
    edges = edges.to(dtype).contiguous()
    counts, sums = _histogram_op(xr.detach(), target, labels, wrow, wfull, edges)
    return GHMCHistogram(counts, sums, xr, target, labels, wrow, wfull, edges, shape)


def ghmc_weighted(name: str, hist: GHMCHistogram, table: Tensor, reduction: str,
                  avg_factor: AvgFactor = None) -> Tensor:
    """The loss from :func:`ghmc_histogram`'s ``hist`` and the weight of each bin ``table``
    (``bins + 1`` values in the compute dtype, the last 0), reduced with mmdet's rules
    (:func:`~mmloss_ext.core.reduction.reduce_summed`); in the compute dtype."""
    h = hist
    table = table.detach().to(h.x.dtype).contiguous()

    def run(out_mode: int = ELEMENTS) -> Tensor:
        out = _weighted_op(h.x, h.target, h.labels, h.wrow, h.wfull, h.edges, table, h.sums, out_mode)
        return out if out_mode == TOTAL else out.reshape(h.shape)

    return reduce(run, h.shape, reduction, avg_factor, name)
