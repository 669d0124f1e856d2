"""The fused path of the gradient harmonizing classification loss, GHM-C.

The eager :func:`mmloss_ext.losses.ghm.ghmc_loss` is the spec; it calls, when
:func:`~.dispatch.use_fused` says so, the two entry points here around its own weighting step:

* :func:`ghmc_histogram` -- one pass over the logits: per bin, the number of valid elements and the
  sum of their binary cross-entropy (``csrc/ghm.cpp`` on the CPU, :mod:`.gpu_ghm` on CUDA);
* the loss turns the counts into one weight per bin (a few values, on the device);
* :func:`ghmc_weighted` -- the weighted loss: for ``'mean'``/``'sum'`` the dot product of the bin
  weights and the per-bin sums (no second pass), for ``'none'`` one pass writing the elementwise
  loss; the backward is one pass, recomputing each element's bin from the saved inputs. Nothing of
  the size of ``pred`` is saved or materialised besides the gradient (and the ``'none'`` output).

Both backends are deterministic: the CPU kernel merges fixed chunks' histograms in order, the
Triton one writes per-program partial histograms that ``torch.sum`` adds up.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ..core.reduction import AvgFactor
from .dispatch import cpu_kernels, triton_available
from . import ops
from .functions import _ELEMENTS, _TOTAL, _reduce, split_weight

__all__ = ['supported', 'backend', 'ghmc_histogram', 'ghmc_weighted', 'GHMCHistogram', 'CPU_MAX_BINS', 'TRITON_MAX_BINS']

#: the Triton kernels bin with a one-hot over ``next_power_of_2(bins + 2)`` lanes per element
TRITON_MAX_BINS = 1022
#: the C++ kernels find a bin from ``floor(g * bins)`` and one comparison each way, exact up to here
CPU_MAX_BINS = 2 ** 20


def _cpu_kernels_built() -> bool:
    """Whether the C++ extension was built with ``csrc/ghm.cpp`` (an older build lacks it)."""
    return hasattr(cpu_kernels(), 'ghmc_histogram')


def supported(x: Tensor, bins: int) -> bool:
    """Whether a GHM-C kernel exists for ``x``'s device and ``bins`` (the rest is
    :func:`~.dispatch.use_fused`'s business)."""
    if x.device.type == 'cuda':
        return triton_available() and bins <= TRITON_MAX_BINS
    return x.device.type == 'cpu' and _cpu_kernels_built() and bins <= CPU_MAX_BINS


def backend(device):
    """The GHM-C kernels of ``device``: the C++ extension on the CPU, :mod:`.gpu_ghm` on CUDA."""
    if torch.device(device).type == 'cuda':
        from . import gpu_ghm
        return gpu_ghm
    return cpu_kernels()


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
    counts, sums = ops.ghmc_histogram(xr.detach(), target, labels, wrow, wfull, edges)
    return GHMCHistogram(counts, sums, xr, target, labels, wrow, wfull, edges, shape)


def ghmc_weighted(name: str, hist: GHMCHistogram, table: Tensor, reduction: str,
                  avg_factor: AvgFactor = None) -> Tensor:
    """The loss from :func:`ghmc_histogram`'s ``hist`` and the weight of each bin ``table``
    (``bins + 1`` values in the compute dtype, the last 0), reduced with mmdet's rules
    (:func:`~mmloss_ext.core.reduction.reduce_summed`); in the compute dtype."""
    h = hist
    table = table.detach().to(h.x.dtype).contiguous()

    def run(out_mode: int = _ELEMENTS) -> Tensor:
        out = ops.ghmc(h.x, h.target, h.labels, h.wrow, h.wfull, h.edges, table, h.sums, out_mode)
        return out if out_mode == _TOTAL else out.reshape(h.shape)

    return _reduce(run, h.shape, reduction, avg_factor, name)
