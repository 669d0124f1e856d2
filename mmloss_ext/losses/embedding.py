r"""Embedding losses: similarity learning for tracking and re-identification, and associative embedding.

* :class:`L2Loss` and :class:`MarginL2Loss` -- QDTrack's auxiliary loss on the cosine similarities
  of key and reference objects, with negatives sampled against the positives;
* :class:`MultiPosCrossEntropyLoss` -- QDTrack's contrastive loss with several positives per row;
* :class:`TripletLoss` -- the batch-hard triplet loss of the ReID heads;
* :class:`AssociativeEmbeddingLoss` -- CornerNet's pull/push loss on corner embeddings, returning
  the pair ``(pull, push)`` as mmdet's does.

Each class is a drop-in for mmdet 3.3's class of the same name (constructor keywords, defaults and
positional order, ``forward`` arguments and return structure). None of them writes into its inputs
(mmdet's ``L2Loss``/``MarginL2Loss`` modify the caller's ``pred``, ``target`` and ``weight`` in
place), and none reads a CUDA tensor on the host: sampling, hardest-example mining and the
per-image loops of mmdet are done with masks and sorts on the device.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..core.errors import LossValueError
from ..core.hparams import NON_NEGATIVE, Choice, Range, declare
from ..core.inputs import (check_int_tensor, check_label_range, check_ndim, check_same_device, check_same_shape,
                           check_tensor, check_values, upcast)
from ..core.reduction import AvgFactor, adapt_weight, count_avg_factor, weight_reduce_loss
from ..registry import register_loss
from .base import BaseLoss

__all__ = [
    'l2_loss', 'margin_l2_loss', 'multi_pos_cross_entropy_loss', 'triplet_loss', 'associative_embedding_loss',
    'L2Loss', 'MarginL2Loss', 'MultiPosCrossEntropyLoss', 'TripletLoss', 'AssociativeEmbeddingLoss',
]

#: a margin that mmdet switches off with its default -1 (a value in [-1, 0] is "off"); ``neg_pos_ub``
#: takes any int (<= 0: no sampling)
OFF_OR_NON_NEGATIVE = Range(low=-1.0)


class EmbeddingLoss(BaseLoss):
    """Base of the embedding family: losses of embeddings, similarities or their associations."""
    family = 'embedding'


def _check_match_targets(name: str, x: Tensor, target, binary: bool = True) -> Tensor:
    """Targets of ``pred``'s shape: integers (as mmdet's heads make them) or floats (as mmdet's own
    tests pass them), with values in {0, 1} when ``binary``."""
    check_tensor(name, 'target', target, floating=False)
    if target.dtype == torch.bool:
        raise TypeError(f'{name}: `target` expected an integer or floating-point tensor, got dtype torch.bool')
    check_same_shape(name, x, target)
    check_same_device(name, x, target)
    if binary and target.is_floating_point():
        check_values(name, 'target', (target == 0) | (target == 1), 'values in {0, 1}')
    elif binary:
        check_label_range(name, 'target', target, 0, 1)
    return target


# --- QDTrack: L2 on similarities with sampled negatives ----------------------------------------------

def _keep_negatives(neg: Tensor, num_pos: Tensor, cost: Tensor, neg_pos_ub: int, hard_mining: bool,
                    generator: Optional[torch.Generator]) -> Tensor:
    """The negatives that take part: all of them, unless they outnumber ``neg_pos_ub`` per positive
    (mmdet's test ``num_neg / (num_pos + 1e-6) > neg_pos_ub``); then ``neg_pos_ub * num_pos`` of
    them, the ones of highest ``cost`` (hard mining) or a uniformly random subset.

    The subset is taken by ranking every entry on a key (non-negatives last) and keeping the
    negatives whose rank is below the count, a device tensor: no host sync.
    """
    flat = neg.reshape(-1)
    count = flat.numel()
    num_neg = flat.sum()
    too_many = num_neg.double() / (num_pos.double() + 1e-6) > neg_pos_ub
    keep_count = torch.where(too_many, num_pos * neg_pos_ub, num_neg)
    if hard_mining:  # hardest first; a NaN cost is kept first, so that it propagates
        key = -cost.detach().reshape(-1)
        key = torch.where(key.isnan(), float('-inf'), key)
    else:  # one uniform draw per entry: the kept negatives are those with the smallest draws
        device = generator.device if generator is not None else flat.device
        key = torch.rand(count, generator=generator, device=device, dtype=torch.float32).to(flat.device)
    key = torch.where(flat, key, float('inf'))
    order = torch.argsort(key, stable=True)
    rank = torch.empty_like(order).scatter_(0, order, torch.arange(count, device=order.device))
    return (flat & (rank < keep_count)).view_as(neg)


def _sampled_l2(name: str, pred: Tensor, target: Tensor, generator: Optional[torch.Generator], neg_pos_ub: int,
                pos_margin: float, neg_margin: float, hard_mining: bool, weight: Optional[Tensor], reduction: str,
                avg_factor: AvgFactor) -> Tensor:
    """The math shared by :func:`l2_loss` and :func:`margin_l2_loss`."""
    check_tensor(name, 'pred', pred)
    x = upcast(pred)[0]
    _check_match_targets(name, x, target, binary=False)
    t = target.to(x.dtype)
    valid = torch.ones_like(x, dtype=torch.bool)
    if weight is not None:  # entries of weight <= 0 take no part (mmdet marks them target=-1)
        weight = adapt_weight(name, weight, x)
        valid = ~(weight <= 0).expand_as(x)  # mmdet's test: a NaN weight stays in, and propagates
    pos = valid & (target == 1)
    neg = valid & (target == 0)
    shift = pos.to(x.dtype) * max(pos_margin, 0.0) + neg.to(x.dtype) * max(neg_margin, 0.0)
    loss = ((x - shift).clamp(0.0, 1.0) - t).square()
    kept = valid  # every valid entry, less the negatives the sampling leaves out
    if neg_pos_ub > 0:
        kept = kept & ~(neg & ~_keep_negatives(neg, pos.sum(), loss, neg_pos_ub, hard_mining, generator))
    w = kept.to(x.dtype) if weight is None else torch.where(kept, weight, 0.0).to(x.dtype)
    avg_factor = count_avg_factor(reduction, kept.sum(), avg_factor)  # mmdet's: the entries that take part
    return weight_reduce_loss(loss, w, reduction, avg_factor, name=name).to(pred.dtype)


@declare('MarginL2Loss', pos_margin=OFF_OR_NON_NEGATIVE, neg_margin=OFF_OR_NON_NEGATIVE)
def margin_l2_loss(pred: Tensor, target: Tensor, generator: Optional[torch.Generator] = None, *,
                   neg_pos_ub: int = -1, pos_margin: float = -1.0, neg_margin: float = -1.0,
                   hard_mining: bool = False, weight: Optional[Tensor] = None, reduction: str = 'mean',
                   avg_factor: AvgFactor = None) -> Tensor:
    r"""L2 loss with margins on the cosine similarities of tracked objects, QDTrack's auxiliary
    loss (Pang et al., 2021, "Quasi-Dense Similarity Learning for Multiple Object Tracking").

    With :math:`m_t` the positive part of the margin of the entry's class (``pos_margin`` for
    :math:`t = 1`, ``neg_margin`` for :math:`t = 0`) and :math:`S` the kept entries (all but the
    negatives the sampling leaves out):

    .. math:: \ell_{ij} = [ij \in S]\, \big(\operatorname{clamp}(s_{ij} - m_{t_{ij}}, 0, 1) - t_{ij}\big)^2,
              \quad \text{mean} = \frac{1}{|S|} \sum_{ij} w_{ij} \ell_{ij}

    ``pred`` holds similarities (QDTrack: cosine similarities ``(N, M)`` of key objects against
    reference objects; any shape works), ``target`` labels of the same shape (integers or floats), 1 for the same
    identity and 0 otherwise; as in mmdet, an entry of another value regresses to it without
    margin or sampling. Entries whose ``weight`` is <= 0 take no part.

    * Margins: a positive ``pos_margin`` is subtracted from the positives' similarities and a
      positive ``neg_margin`` from the negatives' before clamping to ``[0, 1]`` (values <= 0, such
      as the default -1, switch them off).
    * Sampling: when ``neg_pos_ub > 0`` and there are more than ``neg_pos_ub`` negatives per
      positive (over the whole tensor, mmdet's test ``num_neg / (num_pos + 1e-6) > neg_pos_ub``),
      only ``neg_pos_ub`` times the number of positives are kept: those of largest loss when
      ``hard_mining``, else a uniformly random subset.
    * Random draws: the random subset draws ``pred.numel()`` numbers with ``torch.rand`` from
      ``generator`` (or, if None, torch's default generator of ``pred``'s device) on every call with
      ``neg_pos_ub > 0`` (sampling needed or not, so the stream does not depend on the data), and
      keeps the negatives with the smallest draws. A seeded generator, or ``torch.manual_seed``,
      reproduces the choice exactly. Hard mining draws nothing and breaks ties by position.

    ``'mean'`` divides by :math:`|S|`, the number of entries kept (mmdet's divisor; an explicit
    ``avg_factor`` replaces it, where mmdet ignores it). ``'none'`` gives ``pred``'s shape, 0 where
    dropped. Unlike mmdet's, the loss leaves ``pred``, ``target`` and ``weight`` unchanged (mmdet
    writes the margins, the ignored targets and the sampled weights into them).

    Example (QDTrack's configuration: one positive, so 3 negatives are kept, the hardest):
        >>> sim = torch.tensor([[0.9, 0.6, 0.5, 0.05, 0.4]])
        >>> target = torch.tensor([[1, 0, 0, 0, 0]])
        >>> margin_l2_loss(sim, target, neg_pos_ub=3, pos_margin=0.0, neg_margin=0.1, hard_mining=True,
        ...                reduction='none')
        tensor([[0.0100, 0.2500, 0.1600, 0.0000, 0.0900]])
        >>> gen = torch.Generator().manual_seed(0)
        >>> random = margin_l2_loss(sim, target, gen, neg_pos_ub=1, reduction='none')
        >>> int((random > 0).sum())   # the positive and one negative drawn at random
        2
    """
    return _sampled_l2(margin_l2_loss.spec.loss, pred, target, generator, neg_pos_ub, pos_margin, neg_margin,
                       hard_mining, weight, reduction, avg_factor)


@declare('L2Loss', pos_margin=OFF_OR_NON_NEGATIVE, neg_margin=OFF_OR_NON_NEGATIVE)
def l2_loss(pred: Tensor, target: Tensor, generator: Optional[torch.Generator] = None, *, neg_pos_ub: int = -1,
            pos_margin: float = -1.0, neg_margin: float = -1.0, hard_mining: bool = False,
            weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""L2 loss on similarities with margins and negative sampling, mmdet's ``L2Loss`` from mmtrack's
    QDTrack (Pang et al., 2021, "Quasi-Dense Similarity Learning for Multiple Object Tracking").

    .. math:: \ell_{ij} = [ij \in S]\, \big(\operatorname{clamp}(s_{ij} - m_{t_{ij}}, 0, 1) - t_{ij}\big)^2,
              \quad \text{mean} = \frac{1}{|S|} \sum_{ij} w_{ij} \ell_{ij}

    mmdet keeps two copies of this loss, ``L2Loss`` (:math:`|d|^2`) and ``MarginL2Loss``
    (:math:`d^2`); they compute the same. Everything -- shapes, margins, sampling and its random
    draws, the ``'mean'`` divisor -- is as in :func:`margin_l2_loss`; the defaults switch margins
    and sampling off, leaving the squared error of the similarities clamped to ``[0, 1]``.

    Example:
        >>> sim = torch.tensor([[0.9, 0.3, 0.2], [0.1, 0.8, 0.7]])
        >>> l2_loss(sim, torch.tensor([[1, 0, 0], [0, 1, 0]]), reduction='none')
        tensor([[0.0100, 0.0900, 0.0400],
                [0.0100, 0.0400, 0.4900]])
    """
    return _sampled_l2(l2_loss.spec.loss, pred, target, generator, neg_pos_ub, pos_margin, neg_margin, hard_mining,
                       weight, reduction, avg_factor)


# --- QDTrack: multi-positive cross-entropy ------------------------------------------------------------

def _masked_logsumexp(x: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
    """``log sum_{mask} exp(x)`` over dim 1 and whether the row has any entry; rows without one give
    a finite placeholder (0) with no gradient, so nothing turns into NaN in the backward pass."""
    shift = torch.where(mask, x, float('-inf')).amax(1, keepdim=True).detach()
    shift = torch.where(shift.isinf() & (shift < 0), 0.0, shift)  # an empty row
    total = torch.exp(torch.where(mask, x - shift, float('-inf'))).sum(1)
    present = mask.any(1)
    return torch.log(torch.where(present, total, 1.0)) + shift.squeeze(1), present


def _float_scores(pred):
    """Integer scores (mmdet's tests pass integer costs) in the default float dtype; else ``pred``."""
    if isinstance(pred, Tensor) and not (pred.is_floating_point() or pred.is_complex() or pred.dtype == torch.bool):
        return pred.to(torch.get_default_dtype())
    return pred


@declare('MultiPosCrossEntropyLoss')
def multi_pos_cross_entropy_loss(pred: Tensor, target: Tensor, *, weight: Optional[Tensor] = None,
                                 reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Cross-entropy with several positives per row, QDTrack's contrastive tracking loss (Pang et
    al., 2021, "Quasi-Dense Similarity Learning for Multiple Object Tracking").

    For a row of scores :math:`s` with positives :math:`P` and negatives :math:`N`:

    .. math:: \ell = \log\Big(1 + \sum_{p \in P} \sum_{n \in N} e^{s_n - s_p}\Big)
              = \operatorname{softplus}\Big(\log\sum_{n \in N} e^{s_n} + \log\sum_{p \in P} e^{-s_p}\Big)

    ``pred`` is ``(N, M)`` scores (QDTrack: scaled dot products of key against reference
    embeddings), ``target`` labels of the same shape (integers, or floats), 1 for a positive and 0
    for a negative; integer scores compute in the default float dtype. A row without a positive or without a negative has loss 0. The factorised form costs
    :math:`O(NM)` where mmdet's pairwise one builds ``(N, M^2 + 1)``. ``'none'`` gives ``(N,)``;
    ``weight`` is per row.

    Example:
        >>> scores = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
        >>> multi_pos_cross_entropy_loss(scores, torch.tensor([[1, 1, 0], [1, 0, 0]]), reduction='none')
        tensor([0.4076, 1.0986])
    """
    name = multi_pos_cross_entropy_loss.spec.loss
    check_tensor(name, 'pred', pred, floating=False)
    x = upcast(_float_scores(pred))[0]
    check_ndim(name, 'pred', x, 2)
    _check_match_targets(name, x, target)
    pos, neg = target == 1, target == 0
    lse_neg, has_neg = _masked_logsumexp(x, neg)
    lse_pos, has_pos = _masked_logsumexp(-x, pos)
    both = has_neg & has_pos
    loss = torch.where(both, torch.nn.functional.softplus(torch.where(both, lse_neg + lse_pos, 0.0)), 0.0)
    return weight_reduce_loss(loss, weight, reduction, avg_factor, name=name).to(
        pred.dtype if pred.is_floating_point() else x.dtype)


# --- ReID: batch-hard triplet loss --------------------------------------------------------------------

@declare('TripletLoss', margin=NON_NEGATIVE, hard_mining=Choice(True))
def triplet_loss(pred: Tensor, target: Tensor, *, margin: float = 0.3, hard_mining: bool = True,
                 weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Batch-hard triplet loss (Hermans et al., 2017, "In Defense of the Triplet Loss for Person
    Re-Identification").

    For each anchor :math:`a`, the farthest sample of its identity and the nearest of another, in
    Euclidean distance :math:`d`:

    .. math:: \ell_a = \max\big(0,\ \max_{p: y_p = y_a} d(a, p) - \min_{n: y_n \ne y_a} d(a, n) + m\big)

    ``pred`` is ``(N, D)`` embeddings, ``target`` ``(N,)`` identity labels (any values, integers or floats).
    ``'none'`` gives ``(N,)``; ``weight`` is per anchor. Distances are mmdet's,
    :math:`\sqrt{\max(\|a\|^2 + \|b\|^2 - 2 a \cdot b,\ 10^{-12})}`, so an anchor alone with its
    identity is its own farthest positive at distance :math:`10^{-6}`; an anchor with no other
    identity in the batch has loss 0 (mmdet raises). Only hard mining exists (``hard_mining=False``
    raises ``NotImplementedError`` in mmdet; here the build refuses it).

    Example:
        >>> emb = torch.tensor([[0.0, 0.0], [0.1, 0.0], [1.0, 0.0], [1.0, 0.2]])
        >>> triplet_loss(emb, torch.tensor([0, 0, 1, 1]), margin=1.0, reduction='none')
        tensor([0.1000, 0.2000, 0.3000, 0.2780])
    """
    name = triplet_loss.spec.loss
    check_tensor(name, 'pred', pred)
    x = upcast(pred)[0]
    check_ndim(name, 'pred', x, 2)
    check_tensor(name, 'target', target, floating=False)  # identities compare by ==: ints or floats
    if tuple(target.shape) != (x.shape[0],):
        raise LossValueError(f'{name}: `target` expected identity labels of shape ({x.shape[0]},) for `pred` of '
                             f'shape {tuple(x.shape)}, got {tuple(target.shape)}')
    check_same_device(name, x, target)
    if x.shape[0] == 0:  # no anchor: an empty loss that keeps pred's graph
        loss = x.sum(1)
    else:
        sq = x.square().sum(1)
        square = sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * (x @ x.t())
        # a sample's distance to itself is 0 exactly (not rounding noise under a steep sqrt)
        square = square.masked_fill(torch.eye(x.shape[0], dtype=torch.bool, device=x.device), 0.0)
        dist = square.clamp_min(1e-12).sqrt()
        same = target.unsqueeze(1) == target.unsqueeze(0)
        hardest_pos = torch.where(same, dist, float('-inf')).amax(1)
        hardest_neg = torch.where(same, float('inf'), dist).amin(1)  # +inf: no negative, no loss
        loss = (hardest_pos - hardest_neg + margin).clamp_min(0.0)
    return weight_reduce_loss(loss, weight, reduction, avg_factor, name=name).to(pred.dtype)


# --- CornerNet: associative embedding -----------------------------------------------------------------

CornerMatch = Sequence[Union[Sequence, Tensor]]


def _corner_indices(name: str, match, batch: int, height: int, width: int, device: torch.device):
    """CornerHead's per-image lists of ``[[tl_y, tl_x], [br_y, br_x]]`` (or ``(K_i, 2, 2)`` integer
    tensors) padded into flat top-left and bottom-right indices ``(B, K)`` and a mask ``(B, K)``.

    Lists are converted and checked on the host, then copied asynchronously; tensors already on
    the device are checked with an asynchronous device assert (no host sync either way).
    """
    if not isinstance(match, (list, tuple)) or len(match) != batch:
        got = f'{len(match)} items' if isinstance(match, (list, tuple)) else type(match).__name__
        raise LossValueError(f'{name}: `match` expected one list of corner pairs per image ({batch}), got {got}')
    pairs = []
    for i, m in enumerate(match):
        if isinstance(m, Tensor):
            check_int_tensor(name, f'match[{i}]', m)
            t = m
        else:
            try:
                t = torch.as_tensor(m, dtype=torch.long) if len(m) else torch.zeros(0, 2, 2, dtype=torch.long)
            except (TypeError, ValueError, RuntimeError) as err:
                raise TypeError(f'{name}: `match[{i}]` expected a list of [[tl_y, tl_x], [br_y, br_x]] int pairs, '
                                f'got {m!r}') from err
        if t.dim() != 3 or t.shape[1:] != (2, 2):
            raise LossValueError(f'{name}: `match[{i}]` expected corner pairs of shape (K, 2, 2) as '
                                 f'[[tl_y, tl_x], [br_y, br_x]], got shape {tuple(t.shape)}')
        pairs.append(t)
    # lists (and CPU tensors) are padded and checked on the host, then copied once, asynchronously
    home = torch.device('cpu') if all(p.device.type == 'cpu' for p in pairs) else device
    sizes = [p.shape[0] for p in pairs]
    index = torch.zeros(batch, max(sizes, default=0), 2, 2, dtype=torch.long, device=home)
    for i, p in enumerate(pairs):
        index[i, :p.shape[0]] = p.to(home, non_blocking=True)
    mask = (torch.arange(index.shape[1]).unsqueeze(0) < torch.tensor(sizes, dtype=torch.long).view(-1, 1))
    mask = mask.to(home, non_blocking=True)
    y, x = index[..., 0], index[..., 1]  # (B, K, 2): top-left, bottom-right
    inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
    check_values(name, 'match', inside | ~mask.unsqueeze(-1),
                 f'corner coordinates (y, x) inside the {height} x {width} embedding map')
    flat = (y * width + x).masked_fill(~mask.unsqueeze(-1), 0).to(device, non_blocking=True)
    return flat[..., 0], flat[..., 1], mask.to(device, non_blocking=True)


def _gather_corners(emb: Tensor, index: Tensor) -> Tensor:
    """``emb[b, :, y, x]`` at flat indices ``(B, K)``: ``(B, D, H, W)`` -> ``(B, K, D)``."""
    b, d, h, w = emb.shape
    flat = emb.reshape(b, d, h * w)
    return flat.gather(2, index.unsqueeze(1).expand(b, d, index.shape[1])).transpose(1, 2)


@declare('AssociativeEmbeddingLoss', pull_weight=NON_NEGATIVE, push_weight=NON_NEGATIVE)
def associative_embedding_loss(pred: Tensor, target: Tensor, match: CornerMatch, *, pull_weight: float = 0.25,
                               push_weight: float = 0.25, weight: Optional[Tensor] = None, reduction: str = 'sum',
                               avg_factor: AvgFactor = None) -> Tuple[Tensor, Tensor]:
    r"""Associative embedding pull/push loss of corner pairs (Newell et al., 2017, "Associative
    Embedding"; Law and Deng, 2018, "CornerNet").

    In an image with :math:`K` objects, with top-left and bottom-right corner tags
    :math:`t_k, b_k` and their mean :math:`e_k = (t_k + b_k) / 2`:

    .. math:: \ell_{pull} = \frac{1}{K} \sum_k (t_k - e_k)^2 + (b_k - e_k)^2,\quad
              \ell_{push} = \frac{1}{K(K-1)} \sum_{j \ne k} \max(0,\ 1 - |e_j - e_k|)

    ``pred`` and ``target`` are the top-left and bottom-right embedding maps ``(B, D, H, W)``
    (mmdet's argument order; CornerNet has ``D = 1``), ``match`` CornerHead's
    ``corner_embedding``: per image a list of ``[[tl_y, tl_x], [br_y, br_x]]`` (or a ``(K, 2, 2)``
    integer tensor). With ``D > 1`` each channel's tag counts as an object of its own, as in
    mmdet (it flattens the ``(K, D)`` tags to ``K D`` scalars), so :math:`K` above is ``K * D``.
    An image without objects has both losses 0, one with a single object (and ``D = 1``) a push
    loss of 0.

    Returns ``(pull, push)``, each scaled by its weight (``pull_weight``, ``push_weight``); the
    default ``'sum'`` adds the images as mmdet does, ``'mean'`` averages them, ``'none'`` gives
    ``(B,)`` each; ``weight`` is per image. All images and objects are computed at once (padded to
    the largest count and masked), where mmdet loops over both in Python.

    Example:
        >>> tl, br = torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
        >>> tl[0, 0, 0, 0] = 1.0   # object 0: tags 1 and 0; object 1: tags 0 and 0
        >>> match = [[[[0, 0], [1, 1]], [[0, 1], [1, 0]]]]   # two objects in one image
        >>> pull, push = associative_embedding_loss(tl, br, match, pull_weight=1.0, push_weight=1.0)
        >>> pull, push
        (tensor(0.2500), tensor(0.5000))
    """
    name = associative_embedding_loss.spec.loss
    check_tensor(name, 'pred', pred)
    check_tensor(name, 'target', target)
    check_ndim(name, 'pred', pred, 4)
    check_same_shape(name, pred, target)
    check_same_device(name, pred, target)
    tl_map = upcast(pred)[0]
    br_map = target.to(tl_map.dtype)
    batch, dim, height, width = tl_map.shape
    tl_index, br_index, objects = _corner_indices(name, match, batch, height, width, tl_map.device)
    # (B, K D) scalar tags, mmdet's flattening; padding slots are zeroed before any arithmetic, so
    # they pass no gradient (nor a NaN read at their placeholder position)
    tags = objects.shape[1] * dim
    mask = objects.unsqueeze(2).expand(-1, -1, dim).reshape(batch, tags)
    tl = torch.where(mask, _gather_corners(tl_map, tl_index).reshape(batch, tags), 0.0)
    br = torch.where(mask, _gather_corners(br_map, br_index).reshape(batch, tags), 0.0)
    mean = (tl + br) / 2.0
    count = mask.sum(1).to(tl_map.dtype)
    pull = torch.where(mask, (tl - mean).square() + (br - mean).square(), 0.0).sum(1) / count.clamp_min(1.0)
    pairs = mask.unsqueeze(2) & mask.unsqueeze(1) & ~torch.eye(mask.shape[1], dtype=torch.bool, device=mask.device)
    gap = (1.0 - (mean.unsqueeze(2) - mean.unsqueeze(1)).abs()).clamp_min(0.0)
    push = torch.where(pairs, gap, 0.0).sum((1, 2)) / (count * (count - 1.0)).clamp_min(1.0)
    return (weight_reduce_loss(pull_weight * pull, weight, reduction, avg_factor, name=name).to(pred.dtype),
            weight_reduce_loss(push_weight * push, weight, reduction, avg_factor, name=name).to(pred.dtype))


# --- registered modules -------------------------------------------------------------------------------

@register_loss
class L2Loss(EmbeddingLoss):
    """L2 loss module with margins and negative sampling, a drop-in for mmdet's; see :func:`l2_loss`.

    ``forward(pred, target, weight=None, avg_factor=None, reduction_override=None, generator=None)``.
    """
    loss_fn = staticmethod(l2_loss)
    positional = ('neg_pos_ub', 'pos_margin', 'neg_margin', 'hard_mining', 'reduction', 'loss_weight')
    inputs = 'pred: (N, M) similarities; target: (N, M) labels, 1 / 0 for positives / negatives'
    reference = 'mmdet L2Loss (sampling made deterministic)'


@register_loss
class MarginL2Loss(EmbeddingLoss):
    """QDTrack's auxiliary loss module, a drop-in for mmdet's; see :func:`margin_l2_loss`.

    ``forward(pred, target, weight=None, avg_factor=None, reduction_override=None, generator=None)``.
    """
    loss_fn = staticmethod(margin_l2_loss)
    positional = ('neg_pos_ub', 'pos_margin', 'neg_margin', 'hard_mining', 'reduction', 'loss_weight')
    inputs = 'pred: (N, M) cosine similarities; target: (N, M) labels, 1 / 0 for positives / negatives'
    reference = 'mmdet MarginL2Loss (sampling made deterministic)'


@register_loss
class MultiPosCrossEntropyLoss(EmbeddingLoss):
    """Multi-positive cross-entropy module, a drop-in for mmdet's; see :func:`multi_pos_cross_entropy_loss`."""
    loss_fn = staticmethod(multi_pos_cross_entropy_loss)
    positional = ('reduction', 'loss_weight')
    inputs = 'pred: (N, M) scores; target: (N, M) labels in {0, 1}'
    reference = 'mmdet MultiPosCrossEntropyLoss'

    def forward(self, cls_score: Tensor, label=None, weight: Optional[Tensor] = None, avg_factor: AvgFactor = None,
                reduction_override: Optional[str] = None, **kwargs) -> Tensor:
        return super().forward(_float_scores(cls_score), label, weight, avg_factor, reduction_override, **kwargs)


@register_loss
class TripletLoss(EmbeddingLoss):
    """Batch-hard triplet loss module, a drop-in for mmdet's; see :func:`triplet_loss`.

    ``forward(inputs, targets, weight=None, avg_factor=None, reduction_override=None)``: mmdet's two
    arguments, then the family's.
    """
    loss_fn = staticmethod(triplet_loss)
    positional = ('margin', 'loss_weight', 'hard_mining')
    inputs = 'pred: (N, D) embeddings; target: (N,) identity labels'
    reference = 'mmdet TripletLoss'

    def forward(self, inputs: Tensor, targets=None, *, weight: Optional[Tensor] = None, avg_factor: AvgFactor = None,
                reduction_override: Optional[str] = None, **kwargs) -> Tensor:
        return super().forward(inputs, targets, weight, avg_factor, reduction_override, **kwargs)


@register_loss
class AssociativeEmbeddingLoss(EmbeddingLoss):
    """CornerNet's associative embedding module, a drop-in for mmdet's; see
    :func:`associative_embedding_loss`.

    ``forward(pred, target, match, weight=None, avg_factor=None, reduction_override=None)`` returns
    ``(pull, push)``, each multiplied by ``loss_weight`` (1 by default; mmdet has none).
    """
    loss_fn = staticmethod(associative_embedding_loss)
    positional = ('pull_weight', 'push_weight')
    inputs = 'pred, target: (B, D, H, W) top-left/bottom-right embeddings; match: per-image corner pairs'
    reference = 'mmdet AssociativeEmbeddingLoss'

    def forward(self, pred: Tensor, target: Tensor, match: CornerMatch, *, weight: Optional[Tensor] = None,
                avg_factor: AvgFactor = None, reduction_override: Optional[str] = None,
                **kwargs) -> Tuple[Tensor, Tensor]:
        reduction = self.call_reduction(reduction_override, avg_factor, kwargs)
        pull, push = self.loss_fn(pred, target, match, weight=weight, reduction=reduction, avg_factor=avg_factor,
                                  **{**self.hparams(), **kwargs})
        return pull * self.loss_weight, push * self.loss_weight
