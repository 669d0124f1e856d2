r"""Gradient harmonizing losses: GHM-C and GHM-R (Li, Liu & Wang, 2019, "Gradient Harmonized
Single-stage Detector"), drop-ins for mmdet's ``GHMC`` and ``GHMR``.

Both losses weight every element by the inverse density of its gradient norm ``g`` (detached):
the range of ``g`` is cut into ``bins`` unit regions by the edges ``i / bins`` (mmdet's, in
float32; GHM-C's last edge is ``1 + 1e-6``, GHM-R's ``1e3``), an element counts when its
``weight`` (mmdet's ``label_weight``) is positive, and an element of a bin holding ``count``
of them is weighted

.. math:: w = \frac{tot}{n \cdot count}

with ``tot`` the number of valid elements (GHM-R: the sum of the weights) and ``n`` the number
of non-empty bins; ``'mean'`` divides the weighted sum by ``tot``. With ``momentum > 0`` the
count is replaced by a running histogram (mmdet's ``acc_sum``),
:math:`acc \leftarrow m \cdot acc + (1 - m)\, count` for the non-empty bins of the call.

Unlike mmdet, which loops over the bins in Python and reads every count on the host, the bin of
each element comes from one ``bucketize`` against the edges and the counts from one
``scatter_add_``: no per-bin loop, no host read (on CUDA, ``tot`` and ``n`` stay on the device).

Conventions shared by both:

* ``weight`` only marks which elements count (``> 0``, and GHM-R's ``tot``): the loss of an
  element is weighted by its bin alone, as in mmdet. Shapes as every loss's ``weight`` (the
  loss's shape, one that broadcasts to it, or one value per sample); ``None``: all count.
* ``avg_factor`` is checked like every loss's (not with ``'sum'``) but not used: GHM normalises by
  its own ``tot``. mmdet's GHMR takes ``avg_factor`` and ignores it too, and a dense head passes its
  number of positives, which GHM must not divide by.
* ``'sum'`` is the sum of ``'none'``, ``'mean'`` that sum over ``tot``. (mmdet raises for
  ``'sum'``: it passes ``avg_factor=tot`` with every reduction.)
* Half precision is computed in float32 and returned in the input dtype; the histogram arithmetic
  follows mmdet's (``tot / count`` in float64, the running histogram in its buffer's dtype), so
  float64 inputs (and a float64 module for ``momentum > 0``) give mmdet's values to rounding.

The classes keep the running histogram in the buffer ``acc_sum`` (see :class:`GHMC`).
"""
from __future__ import annotations

import functools
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from ..core.errors import LossValueError
from ..core.hparams import POSITIVE, POSITIVE_INT, Range, declare
from ..core.inputs import check_same_device, check_same_shape, check_tensor, check_values, upcast
from ..core.reduction import AvgFactor, adapt_weight, check_reduction, count_avg_factor
from ..kernels import ghmc as fused_ghm, use_fused
from ..registry import register_loss
from .base import StatefulLoss, distributed, sum_over_ranks
from .classification._common import (SIGMOID_ONLY, ClassificationLoss, bce, check_class_labels, check_logits,
                                     check_target_like, class_mask, finish)
from .regression import RegressionLoss
from . import probes

__all__ = ['ghmc_loss', 'ghmr_loss', 'ghm_edges', 'GHMC', 'GHMR']


#: momentum 1 would never fill the histogram (acc stays 0: infinite weights)
MOMENTUM = Range(low=0.0, high=1.0, high_open=True)

#: mmdet's last edge: GHM-C adds 1e-6 to 1.0 (in float32), GHM-R replaces it by 1e3
GHMC_LAST_EDGE, GHMR_LAST_EDGE = 'ghmc', 'ghmr'


@functools.lru_cache(maxsize=64)
def _edges(bins: int, last: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    edges = torch.arange(bins + 1, device=device).float() / bins
    if last == GHMC_LAST_EDGE:
        edges[-1] += 1e-6
    else:
        edges[-1] = 1e3
    return edges.to(dtype)


def ghm_edges(bins: int, last: str, dtype: torch.dtype, device) -> Tensor:
    """mmdet's ``bins + 1`` edges, computed in float32 as mmdet does (``arange(bins + 1).float() /
    bins``, last edge :data:`GHMC_LAST_EDGE` ``1 + 1e-6`` or :data:`GHMR_LAST_EDGE` ``1e3``), in
    ``dtype`` on ``device`` (cached: built on the device once, read-only).

    Example:
        >>> ghm_edges(4, 'ghmr', torch.float32, 'cpu')
        tensor([0.0000e+00, 2.5000e-01, 5.0000e-01, 7.5000e-01, 1.0000e+03])
    """
    return _edges(int(bins), last, dtype, torch.device(device))


def bin_index(g: Tensor, edges: Tensor, valid: Optional[Tensor] = None) -> Tensor:
    """The bin of every element, ``i`` with ``edges[i] <= g < edges[i + 1]``; ``bins`` (one past the
    last bin) where ``g`` lies outside ``[edges[0], edges[-1])`` (NaN included) or ``valid`` is false.

    Example:
        >>> bin_index(torch.tensor([0.0, 0.3, 0.5, 1.0, float('nan')]), ghm_edges(2, 'ghmc', torch.float32, 'cpu'))
        tensor([0, 0, 1, 1, 2])
    """
    bins = edges.numel() - 1
    outside = ~((g >= edges[0]) & (g < edges[-1]))
    if valid is not None:
        outside |= ~valid
    # edges[idx] <= g < edges[idx + 1] (in place: one int64 tensor of g's size)
    return torch.bucketize(g, edges, right=True).sub_(1).masked_fill_(outside, bins)


def bin_counts(idx: Tensor, bins: int) -> Tensor:
    """``(bins + 1,)`` int64 counts of :func:`bin_index`'s output (the last: unbinned or invalid);
    a ``scatter_add_``, which never reads the device (``bincount`` sizes its output on the host)."""
    flat = idx.reshape(-1)
    return torch.zeros(bins + 1, dtype=torch.long, device=idx.device).scatter_add_(0, flat, flat.new_ones(()).expand_as(flat))


def harmonize(counts: Tensor, tot: Tensor, dtype: torch.dtype, acc_sum: Optional[Tensor] = None,
              training: bool = False, momentum: float = 0.0) -> Tensor:
    r"""The weight of an element of each bin, :math:`tot / (n \cdot count)` (0 for empty bins), in
    ``dtype``.

    Args:
        counts: ``(bins,)`` int64 valid elements per bin.
        tot: 0-d, the number of valid elements (GHM-R: the sum of the weights) before mmdet's
            ``max(tot, 1)``.
        dtype: the compute dtype of the weights.
        acc_sum: ``(bins,)`` running histogram, used when ``momentum > 0`` (``None``: a zero one, what
            a fresh module holds). The blend :math:`m \cdot acc + (1 - m)\, count` of the non-empty
            bins replaces ``count``; written back in place when ``training``.
        training: update ``acc_sum``. Under ``torch.distributed`` the counts and ``tot`` are first
            summed over the ranks (every rank must call, as with ``SyncBatchNorm``), so that every
            rank updates and weights exactly as one process would on the concatenated batch.
        momentum: in ``[0, 1)``.

    The arithmetic is mmdet's (float64 ``tot / count``; the running histogram in ``acc_sum``'s
    dtype, ``tot / acc`` as ``acc.reciprocal() * tot``), so values match mmdet's to the last bit.
    """
    counts = counts.to(torch.float64)
    tot = tot.to(torch.float64).reshape(())
    stateful = momentum > 0 and acc_sum is not None and training
    if stateful and distributed():
        stats = sum_over_ranks(torch.cat([counts, tot.reshape(1)]))
        counts, tot = stats[:-1], stats[-1]
    tot = tot.clamp(min=1.0)
    filled = counts > 0
    n = filled.sum().clamp(min=1)
    if momentum > 0:
        acc = torch.zeros_like(counts, dtype=torch.float32) if acc_sum is None else acc_sum.detach()
        blended = torch.where(filled, acc * momentum + ((1.0 - momentum) * counts).to(acc.dtype), acc)
        if stateful:
            acc_sum.copy_(blended)
        per_bin = (blended.reciprocal() * tot.to(acc.dtype)).to(dtype)
    else:
        per_bin = (tot / counts).to(dtype)
    return torch.where(filled, per_bin, 0.0) / n.to(dtype)


def _check_state(name: str, acc_sum: Optional[Tensor], bins: int) -> None:
    if acc_sum is None:
        return
    check_tensor(name, 'acc_sum', acc_sum)
    if tuple(acc_sum.shape) != (bins,):
        raise LossValueError(f'{name}: `acc_sum` expected shape ({bins},) (one value per bin), '
                             f'got {tuple(acc_sum.shape)}')


def _valid(name: str, weight: Optional[Tensor], x: Tensor) -> Optional[Tensor]:
    """Which elements count: ``weight > 0`` broadcast to ``x``'s shape (``None``: all)."""
    if weight is None:
        return None
    return (adapt_weight(name, weight, x) > 0).expand(x.shape)


def _table(per_bin: Tensor) -> Tensor:
    """The weight of each bin index of :func:`bin_index`: the bins' weights, then 0."""
    return torch.cat([per_bin, per_bin.new_zeros(1)])


def _element_weights(g: Tensor, edges: Tensor, valid: Optional[Tensor], tot: Tensor, acc_sum: Optional[Tensor],
                     training: bool, momentum: float) -> Tensor:
    """The weight of every element of ``g``: its bin's (:func:`harmonize`), 0 where not valid or outside
    the bins. (The bin indices live only here: the caller keeps nothing of ``g``'s size but the result.)"""
    bins = edges.numel() - 1
    idx = bin_index(g, edges, valid)
    return _table(harmonize(bin_counts(idx, bins)[:bins], tot, g.dtype, acc_sum, training, momentum))[idx]


def _ghmc_target(name: str, x: Tensor, target) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """``(labels, None)`` for integer labels (N, ...) in ``[0, C]`` (``C`` = background), or
    ``(None, target)`` for a target of ``pred``'s shape with values in ``[0, 1]``."""
    check_tensor(name, 'target', target, floating=False)
    if target.dim() != x.dim():
        return check_class_labels(name, x, target, x.shape[1] if x.dim() >= 2 else 0), None
    t = check_target_like(name, x, target)
    # NaN passes (and propagates to the loss); a value outside [0, 1] would make g leave the bins
    check_values(name, 'target', ~((t < 0) | (t > 1)), 'values in [0, 1] (binary or soft targets)')
    return None, t


@declare('GHMC', probe=probes.logits, bins=POSITIVE_INT, momentum=MOMENTUM, use_sigmoid=SIGMOID_ONLY)
def ghmc_loss(pred: Tensor, target: Tensor, acc_sum: Optional[Tensor] = None, training: bool = False, *,
              bins: int = 10, momentum: float = 0.0, use_sigmoid: bool = True, impl: str = 'auto',
              weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Gradient harmonizing classification loss, GHM-C (Li et al., 2019, "Gradient Harmonized
    Single-stage Detector").

    The binary cross-entropy of logits weighted by the inverse density of its gradient norm
    :math:`g = |\sigma(x) - t|` over ``bins`` equal bins of ``[0, 1]``:

    .. math:: \ell = \frac{tot}{n \cdot count(g)}\, \mathrm{BCE}(x, t),\qquad
              L_{mean} = \frac{1}{tot} \sum \ell

    with ``tot`` the number of valid elements (``weight > 0``), :math:`count(g)` the number of
    them in :math:`g`'s bin (or the running histogram, see below) and ``n`` the number of
    non-empty bins. See the module docstring for ``weight``, ``avg_factor`` and the reductions.

    Args:
        pred: logits ``(N, C)`` (or any shape with a target of the same shape).
        target: integer labels ``(N,)`` in ``[0, C]`` (one-hot as mmdet's ``_expand_onehot_labels``;
            ``C`` is the background, an all-zero row), or binary/soft targets of ``pred``'s shape.
        acc_sum: ``(bins,)`` running histogram for ``momentum > 0`` (see :func:`harmonize`);
            :class:`GHMC` passes its buffer. ``None``: a zero histogram (a fresh module's first call).
        training: update ``acc_sum`` in place (and all-reduce under ``torch.distributed``).
        bins: number of bins.
        momentum: the running histogram's momentum, 0 for none.
        use_sigmoid: must be True (mmdet's GHMC is sigmoid-only).
        impl: ``'auto'`` | ``'eager'`` | ``'fused'`` (:mod:`mmloss_ext.kernels.dispatch`): the fused
            kernel (C++ on the CPU, Triton on CUDA) bins and sums in one pass forward and one backward.
        weight: mmdet's ``label_weight``: which elements count (``> 0``).

    Returns:
        ``'none'``: the weighted loss, ``pred``'s shape; else a scalar.

    Example:
        >>> logits, labels = torch.tensor([[2.0, -1.0], [0.0, 3.0]]), torch.tensor([0, 2])
        >>> ghmc_loss(logits, labels, bins=2, reduction='none')  # bins [0, .5): 2 elements, [.5, 1]: 2
        tensor([[0.1269, 0.3133],
                [0.6931, 3.0486]])
    """
    name = ghmc_loss.spec.loss
    check_reduction(name, reduction, avg_factor)
    x = check_logits(name, pred)
    labels, dense = _ghmc_target(name, x, target)
    _check_state(name, acc_sum, bins)
    edges = ghm_edges(bins, GHMC_LAST_EDGE, x.dtype, x.device)

    if use_fused(name, impl, x, supported=(labels is None or x.dim() == 2) and fused_ghm.supported(x, bins),
                 op='ghmc', others=(dense, weight)):
        # the same steps, fused: one pass bins the elements and sums their BCE per bin, the
        # weights follow from the counts as below, and the weighted total is a dot product
        hist = fused_ghm.ghmc_histogram(name, x, edges, target=dense, labels=labels, weight=weight)
        tot = hist.counts.sum()  # the last slot counts the valid elements outside the bins (NaN)
        table = _table(harmonize(hist.counts[:bins], tot, x.dtype, acc_sum, training, momentum))
        return fused_ghm.ghmc_weighted(name, hist, table, reduction,
                                       count_avg_factor(reduction, tot.to(x.dtype), min_count=1.0)).to(pred.dtype)
    t = dense if labels is None else class_mask(labels, x.shape[1]).to(x.dtype)
    valid = _valid(name, weight, x)
    tot = x.new_full((), x.numel(), dtype=torch.long) if valid is None else valid.sum()
    g = torch.sigmoid(x.detach()).sub_(t).abs_()  # |sigmoid(x) - t|
    w = _element_weights(g, edges, valid, tot, acc_sum, training, momentum)
    del g  # nothing of pred's size outlives the weighting but w
    return finish(name, bce(x, t), pred, w, reduction, count_avg_factor(reduction, tot.to(x.dtype), min_count=1.0))


@declare('GHMR', mu=POSITIVE, bins=POSITIVE_INT, momentum=MOMENTUM)
def ghmr_loss(pred: Tensor, target: Tensor, acc_sum: Optional[Tensor] = None, training: bool = False, *,
              mu: float = 0.02, bins: int = 10, momentum: float = 0.0, weight: Optional[Tensor] = None,
              reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Gradient harmonizing regression loss, GHM-R (Li et al., 2019, "Gradient Harmonized
    Single-stage Detector").

    The authentic smooth L1 of the residual :math:`d` = ``pred - target`` weighted by the inverse
    density of its gradient norm :math:`g = |d| / \sqrt{d^2 + \mu^2}` over ``bins`` equal bins
    of ``[0, 1]``:

    .. math:: \ell = \frac{tot}{n \cdot count(g)} \Big(\sqrt{d^2 + \mu^2} - \mu\Big),\qquad
              L_{mean} = \frac{1}{tot} \sum \ell

    with ``tot`` the sum of ``weight`` (mmdet's: the weights' sum, not their count), the counts
    over the elements of positive weight. Args as :func:`ghmc_loss`; ``pred`` and ``target`` are
    box deltas (any shape, the same), e.g. ``(N, 4)`` of a head with ``reg_decoded_bbox=False``.

    Example:
        >>> ghmr_loss(torch.tensor([[0.0, 0.01, 0.5, -1.0]]), torch.zeros(1, 4), mu=0.02, bins=2,
        ...           reduction='none')  # g = 0, 0.447 | 0.999, 0.9998: two elements per bin
        tensor([[0.0000, 0.0024, 0.4804, 0.9802]])
    """
    name = ghmr_loss.spec.loss
    check_reduction(name, reduction, avg_factor)
    check_tensor(name, 'pred', pred)
    check_tensor(name, 'target', target)
    check_same_shape(name, pred, target)
    check_same_device(name, pred, target)
    _check_state(name, acc_sum, bins)
    x, t = upcast(pred, target.to(pred.dtype))
    d = x - t
    root = torch.sqrt(mu * mu + d * d)
    loss = root - mu
    valid = _valid(name, weight, x)
    tot = x.new_full((), float(x.numel())) if valid is None else adapt_weight(name, weight, x).to(x.dtype).expand(x.shape).sum()
    g = (d / root).detach().abs()  # |d| / sqrt(d^2 + mu^2)
    w = _element_weights(g, ghm_edges(bins, GHMR_LAST_EDGE, x.dtype, x.device), valid, tot, acc_sum, training, momentum)
    del g  # nothing of pred's size outlives the weighting but w
    return finish(name, loss, pred, w, reduction, count_avg_factor(reduction, tot.to(x.dtype), min_count=1.0))


# --- registered modules ---------------------------------------------------------------------------

class _Harmonized(StatefulLoss):
    """What GHMC and GHMR share: mmdet's ``label_weight`` argument, the running histogram
    ``acc_sum`` and loading mmdet's checkpoints."""

    def initial_state(self) -> Dict[str, Tensor]:
        # always registered (also for momentum=0, when it stays zero): one checkpoint layout per loss
        return {'acc_sum': torch.zeros(self.bins)}

    @staticmethod
    def _one_weight(name: str, label_weight: Optional[Tensor], weight: Optional[Tensor]) -> Optional[Tensor]:
        if label_weight is not None and weight is not None:
            raise TypeError(f'{name}: got both `label_weight` and `weight` (the same argument, mmdet\'s name '
                            'and mmloss_ext\'s): pass one')
        return weight if label_weight is None else label_weight

    def _apply(self, fn, *args, **kwargs):
        # the histogram counts up to N * C elements: `.half()` must not round it to float16 (max 65504)
        out = super()._apply(fn, *args, **kwargs)
        if self.acc_sum.dtype in (torch.float16, torch.bfloat16):
            self.acc_sum = self.acc_sum.float()
        return out

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # mmdet's GHMC/GHMR keep their edges in a buffer `edges` (a function of `bins`, recomputed
        # here), and have no `acc_sum` when momentum = 0: their checkpoints load strictly
        edges = state_dict.pop(prefix + 'edges', None)
        if edges is not None and tuple(edges.shape) != (self.bins + 1,):
            error_msgs.append(f'{type(self).__name__}: `edges` of shape {tuple(edges.shape)} in the checkpoint, '
                              f'expected ({self.bins + 1},) for bins={self.bins}')
        missing = len(missing_keys)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if edges is not None and self.momentum == 0:
            missing_keys[missing:] = [k for k in missing_keys[missing:] if k != prefix + 'acc_sum']


@register_loss
class GHMC(_Harmonized, ClassificationLoss):
    """GHM-C module, a drop-in for mmdet's ``GHMC``; see :func:`ghmc_loss`.

    ``forward(pred, target, label_weight=None, reduction_override=None, *, weight=None,
    avg_factor=None)``: mmdet's signature (``label_weight`` third, ``reduction_override`` fourth);
    ``weight`` is the same argument by mmloss_ext's name (one of the two).

    The running histogram (``momentum > 0``) is the buffer ``acc_sum`` (mmdet's name, float32,
    saved in the ``state_dict`` and so in mmengine checkpoints and restored by ``--resume``;
    registered for ``momentum = 0`` too, when it stays zero, so that the checkpoint layout does
    not depend on it; kept in float32 by ``.half()``). It is updated in training mode only, on every
    call, giving mmdet's values. In eval mode a call weights with the histogram it would update to,
    mmdet's value for that call, without writing it back: evaluating (e.g. a validation loss) never
    moves the training state, as a ``BatchNorm``'s running statistics. Under ``torch.distributed``
    the update sums the counts and the valid total over the ranks first, so every rank keeps the
    same histogram, that of one process on the concatenated batch; every rank must then call the
    loss in every training step, and a rank whose batch is empty or all ignored (BaseLoss's
    shortcut) still joins, counting nothing. Without momentum nothing is shared: each rank weights
    by its own batch, as mmdet.
    """
    loss_fn = staticmethod(ghmc_loss)
    positional = ('bins', 'momentum', 'use_sigmoid', 'loss_weight', 'reduction')
    inputs = 'pred: (N, C) logits; target: (N,) labels in [0, C] or (N, C) binary targets; label_weight: (N,) or (N, C)'
    reference = 'mmdet GHMC'

    def forward(self, pred: Tensor, target=None, label_weight: Optional[Tensor] = None,
                reduction_override: Optional[str] = None, *, weight: Optional[Tensor] = None,
                avg_factor: AvgFactor = None, **kwargs) -> Tensor:
        weight = self._one_weight(type(self).__name__, label_weight, weight)
        return super().forward(pred, target, weight, avg_factor, reduction_override, **kwargs)


@register_loss
class GHMR(_Harmonized, RegressionLoss):
    """GHM-R module, a drop-in for mmdet's ``GHMR``; see :func:`ghmr_loss`.

    ``forward(pred, target, label_weight=None, avg_factor=None, reduction_override=None, *,
    weight=None)``: mmdet's signature (``avg_factor`` accepted and not used, as mmdet's);
    ``weight`` is ``label_weight`` by mmloss_ext's name. The running histogram: as :class:`GHMC`.
    """
    loss_fn = staticmethod(ghmr_loss)
    positional = ('mu', 'bins', 'momentum', 'loss_weight', 'reduction')
    inputs = 'pred, target: same shape (box deltas, e.g. (N, 4)); label_weight: same shape'
    reference = 'mmdet GHMR'

    def forward(self, pred: Tensor, target=None, label_weight: Optional[Tensor] = None, avg_factor: AvgFactor = None,
                reduction_override: Optional[str] = None, *, weight: Optional[Tensor] = None, **kwargs) -> Tensor:
        weight = self._one_weight(type(self).__name__, label_weight, weight)
        return super().forward(pred, target, weight, avg_factor, reduction_override, **kwargs)
