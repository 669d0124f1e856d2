"""Contract cases for the embedding losses: QDTrack's similarities with {0, 1} targets, ReID
embeddings with identity labels, CornerNet's corner embedding maps with their matched corners."""
import torch

from . import case, randn

M = 8  # reference objects per key object


def similarities(n, dtype, gen):
    """(n, M) cosine similarities in [-1, 1]; targets with one positive per row (QDTrack's rows of
    positive key objects), sometimes two: negatives outnumber them, so sampling takes place."""
    sim = torch.rand(n, M, generator=gen, dtype=dtype) * 2.0 - 1.0
    target = (torch.rand(n, M, generator=gen) < 0.1).long()
    target[torch.arange(n), torch.randint(0, M, (n,), generator=gen)] = 1
    return sim, target


def scores(n, dtype, gen):
    sim, target = similarities(n, dtype, gen)
    return randn(gen, n, M, dtype=dtype, scale=2.0), target


def identities(n, dtype, gen):
    """(n, 4) embeddings and identity labels: pairs, some singletons (their own farthest positive)."""
    return randn(gen, n, 4, dtype=dtype), torch.randperm(n, generator=gen) % 3


def corner_maps(n, dtype, gen, dim=2, size=6):
    """CornerHead's inputs: top-left and bottom-right embedding maps (n, dim, size, size) and per
    image a list of [[tl_y, tl_x], [br_y, br_x]] (image 0 has two objects, the others 0 to 3)."""
    tl, br = randn(gen, n, dim, size, size, dtype=dtype), randn(gen, n, dim, size, size, dtype=dtype)
    match = []
    for i in range(n):
        k = 2 if i == 0 else int(torch.randint(0, 4, (), generator=gen))
        yx = torch.randint(0, size, (k, 2, 2), generator=gen)
        match.append(yx.tolist())
    return tl, br, match


def per_sample(args):
    return (args[0].shape[0],)


# QDTrack's configuration of its auxiliary loss. 'mean' divides by the kept entries, not by the
# element count: not additive. Similarities are clamped to [0, 1]: an infinite one is its limit.
# Targets other than 0 and 1 regress without margin (as mmdet's): no range to check.
QDTRACK = {'neg_pos_ub': 3, 'pos_margin': 0.0, 'neg_margin': 0.1, 'hard_mining': True}
SAMPLING = {'neg_pos_ub': 'any int: a value <= 0 switches negative sampling off (mmdet: -1)'}
case('L2Loss', similarities, cfg=QDTRACK, additive=False, saturates=True, label_range=False, unbounded=SAMPLING)
case('MarginL2Loss', similarities, cfg={**QDTRACK, 'neg_pos_ub': 2, 'pos_margin': 0.05},
     additive=False, saturates=True, label_range=False, unbounded=SAMPLING)
case('MultiPosCrossEntropyLoss', scores, none_shape=per_sample, mmdet_dtypes=True)
# identity labels are any ints: no range to check
case('TripletLoss', identities, none_shape=per_sample, cfg={'margin': 0.5}, label_range=False)
# (pull, push): the generic checks read their sum. The pull loss (a squared distance) of corner
# embeddings of 1e4 is 1e8: past float16's range as a value
case('AssociativeEmbeddingLoss', corner_maps, none_shape=per_sample, cfg={'pull_weight': 0.5, 'push_weight': 0.2},
     combine=sum, float16_at_1e4=False)
