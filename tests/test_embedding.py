"""Embedding losses: parity with mmdet 3.3 (values and gradients in float64, every reduction,
weight and avg_factor mmdet supports, the tuple return), the sampling made deterministic, the
caller's tensors left unchanged, CornerNet's inputs built by its own head, and numerics.

Sampling and parity: ``MarginL2Loss``/``L2Loss`` keep a subset of the negatives. With
``hard_mining`` the subset is a function of the inputs (the negatives of largest loss), so ours and
mmdet's are compared directly. For the random subset, mmdet shuffles with NumPy's global RNG and
ours ranks ``torch.rand`` draws: the two cannot draw the same numbers, so mmdet's
``random_choice`` is replaced by the same rule (the negatives with the smallest draws of an
identically seeded ``torch.Generator``). That checks everything around the draw against mmdet;
the draw itself is checked for exact count, reproducibility and uniformity on its own.
"""
import copy

import mmdet.models.losses as mm
import pytest
import torch
from mmdet.registry import MODELS as MMDET_MODELS

from helpers import build, value_and_grad, value_and_pred_grad
from mmloss_ext.losses.embedding import (AssociativeEmbeddingLoss, L2Loss, MarginL2Loss, MultiPosCrossEntropyLoss,
                                         TripletLoss, margin_l2_loss)

F64 = torch.float64
TIGHT = dict(rtol=1e-10, atol=1e-12)


def _mixed_dtype_mse_backward() -> bool:
    p = torch.zeros(2, dtype=F64, requires_grad=True)
    try:
        torch.nn.functional.mse_loss(p, torch.zeros(2)).backward()
    except RuntimeError:  # "Found dtype Float but expected Double"
        return False
    return True


#: mmdet's MarginL2Loss casts the target to float32 next to the prediction: torch 2.1's mse_loss
#: cannot backpropagate float64 against float32, so there its parity runs in float32
MARGIN_L2 = (F64, TIGHT) if _mixed_dtype_mse_backward() else (torch.float32, dict(rtol=1e-5, atol=1e-6))


def parity_dtype(name):
    """The dtype and tolerance of the parity with mmdet's ``name``."""
    return MARGIN_L2 if name == 'MarginL2Loss' else (F64, TIGHT)
QDTRACK_AUX = dict(neg_pos_ub=3, pos_margin=0.0, neg_margin=0.1, hard_mining=True, loss_weight=1.0)


@pytest.fixture
def g():
    return torch.Generator().manual_seed(0)


def track_targets(g, n, m, p=0.15):
    """QDTrack's ``get_targets``: int {0, 1} (n, m), most rows with one positive, some with none."""
    target = torch.zeros(n, m, dtype=torch.int)
    rows = torch.rand(n, generator=g) < 0.8
    cols = torch.randint(0, m, (n,), generator=g)
    target[rows, cols[rows]] = 1
    target |= (torch.rand(n, m, generator=g) < p / 3).int()
    return target


def cosine(g, n, m):
    return torch.rand(n, m, generator=g, dtype=F64) * 2.0 - 1.0


def clones(fn):
    """mmdet's L2 losses write into pred, target and weight: give them copies (pred a non-leaf, as
    QDTrack's cosine similarities are)."""
    def call(pred, target, weight=None, **kw):
        return fn(pred * 1.0, target.clone(), None if weight is None else weight.clone(), **kw)
    return call


# --- L2Loss / MarginL2Loss -------------------------------------------------------------------------

L2_CONFIGS = [
    QDTRACK_AUX,
    dict(neg_pos_ub=2, pos_margin=0.2, neg_margin=0.3, hard_mining=True, loss_weight=0.5),
    dict(neg_pos_ub=-1, pos_margin=0.1, neg_margin=-1, hard_mining=False),  # margins only: no sampling
    dict(),  # mmdet's defaults: the clamped squared error
]


@pytest.mark.parametrize('cfg', L2_CONFIGS, ids=['qdtrack', 'ub2-margins', 'no-sampling', 'defaults'])
@pytest.mark.parametrize('name', ['MarginL2Loss', 'L2Loss'])
@pytest.mark.parametrize('weighted', [False, True])
def test_l2_parity_with_mmdet(name, cfg, weighted, g):
    """Values and gradients for 'none' and 'mean' (mmdet's 'sum' always raises: it sets avg_factor
    itself), with weights that zero some entries (mmdet's ignored entries)."""
    dtype, tol = parity_dtype(name)
    pred, target = cosine(g, 10, 12).to(dtype), track_targets(g, 10, 12)
    weight = None
    if weighted:  # mmdet's MarginL2Loss casts the weight to float32: weights it represents exactly
        weight = ((torch.rand(10, 12, generator=g, dtype=F64) * 64).round() / 64 + 0.5).to(dtype)
        weight[torch.rand(10, 12, generator=g) < 0.2] = 0.0
    ours, ref = build(name, **cfg), clones(MMDET_MODELS.build(dict(type=name, **cfg)))
    for reduction in ('none', 'mean'):
        value, grad = value_and_pred_grad(ours, pred, target, weight, reduction_override=reduction)
        ref_value, ref_grad = value_and_pred_grad(ref, pred, target, weight, reduction_override=reduction)
        torch.testing.assert_close(value, ref_value.to(dtype), **tol)
        torch.testing.assert_close(grad, ref_grad, **tol)
    assert float(value) > 0


def test_l2_sampling_really_drops_negatives_and_mean_divides_by_the_kept(g):
    pred, target = cosine(g, 6, 10), track_targets(g, 6, 10)
    num_pos = int(target.sum())
    none = MarginL2Loss(**QDTRACK_AUX, reduction='none')(pred, target)
    kept = (none > 0) | (target == 1)
    # every positive, and 3 negatives per positive (the hardest; some of them may have loss 0)
    assert int(((none > 0) & (target == 0)).sum()) <= 3 * num_pos < int((target == 0).sum())
    hardest = margin_l2_loss(pred, target, neg_margin=0.1, pos_margin=0.0, reduction='none')[target == 0]
    torch.testing.assert_close(none[target == 0].sum(), hardest.topk(3 * num_pos).values.sum())
    mean = MarginL2Loss(**QDTRACK_AUX)(pred, target)
    torch.testing.assert_close(mean, none.sum() / (4 * num_pos + torch.finfo(torch.float32).eps))
    assert int(kept.sum()) <= 4 * num_pos


def test_l2_sum_and_explicit_avg_factor(g):
    """Where mmdet raises ('sum') or ignores (an explicit avg_factor), ours reduces the same
    elementwise loss: the sum, and the sum over avg_factor."""
    pred, target = cosine(g, 6, 10), track_targets(g, 6, 10)
    loss = MarginL2Loss(**QDTRACK_AUX)
    none = loss(pred, target, reduction_override='none')
    torch.testing.assert_close(loss(pred, target, reduction_override='sum'), none.sum())
    torch.testing.assert_close(loss(pred, target, avg_factor=7.0), none.sum() / (7.0 + torch.finfo(torch.float32).eps))
    with pytest.raises(ValueError, match='sum'):
        mm.MarginL2Loss(**QDTRACK_AUX)(pred * 1.0, target.clone(), reduction_override='sum')


def test_l2_leaves_the_callers_tensors_unchanged_where_mmdet_writes_into_them(g):
    pred, target = cosine(g, 6, 10), track_targets(g, 6, 10)
    weight = torch.rand(6, 10, generator=g, dtype=F64)
    weight[0] = 0.0
    originals = (pred.clone(), target.clone(), weight.clone())
    for name in ('MarginL2Loss', 'L2Loss'):
        for cfg in (dict(QDTRACK_AUX, pos_margin=0.1), dict(QDTRACK_AUX, hard_mining=False)):
            build(name, **cfg)(pred, target, weight)
            for before, after in zip(originals, (pred, target, weight)):
                assert torch.equal(before, after), name
    # mmdet's version: the margins go into pred, -1 into the ignored targets, 0 into the weights
    p, t, w = (x.clone() for x in originals)
    mm.MarginL2Loss(**dict(QDTRACK_AUX, pos_margin=0.1))(p, t, w)
    assert not torch.equal(p, originals[0]) and not torch.equal(t, originals[1]) and not torch.equal(w, originals[2])
    assert int((t == -1).sum()) == 10  # row 0, whose weight is 0


def _seeded_choice(seed, shape):
    """mmdet's ``random_choice`` made to follow our rule: from the negatives (row-major, as mmdet's
    ``nonzero``), those with the smallest draws of ``torch.rand(numel)`` from a generator seeded
    with ``seed``."""
    def choice(gallery, num):
        draws = torch.rand(shape[0] * shape[1], generator=torch.Generator().manual_seed(seed))
        flat = gallery[:, 0] * shape[1] + gallery[:, 1]
        return gallery[torch.argsort(draws[flat], stable=True)[:num]]
    return staticmethod(choice)


@pytest.mark.parametrize('seed', [0, 1, 7])
@pytest.mark.parametrize('name', ['MarginL2Loss', 'L2Loss'])
def test_l2_random_sampling_parity_with_mmdet_given_the_same_draws(name, seed, g, monkeypatch):
    dtype, tol = parity_dtype(name)
    pred, target = cosine(g, 8, 12).to(dtype), track_targets(g, 8, 12)
    cfg = dict(QDTRACK_AUX, hard_mining=False)
    monkeypatch.setattr(getattr(mm, name), 'random_choice', _seeded_choice(seed, pred.shape))
    ref = clones(MMDET_MODELS.build(dict(type=name, **cfg)))
    ours = build(name, **cfg)
    for reduction in ('none', 'mean'):
        value, grad = value_and_pred_grad(ours, pred, target, reduction_override=reduction,
                                          generator=torch.Generator().manual_seed(seed))
        ref_value, ref_grad = value_and_pred_grad(ref, pred, target, reduction_override=reduction)
        torch.testing.assert_close(value, ref_value.to(dtype), **tol)
        torch.testing.assert_close(grad, ref_grad, **tol)


def _kept_negatives(loss, pred, target, generator=None):
    none = loss(pred, target, reduction_override='none', generator=generator)
    # every similarity is in (0, 1) below: a kept negative has loss > 0, a dropped one exactly 0
    return (none > 0) & (target == 0)


def test_l2_random_sampling_is_exact_reproducible_and_uniform():
    gen = torch.Generator().manual_seed(3)
    pred = torch.rand(4, 10, generator=gen, dtype=F64) * 0.8 + 0.1
    target = torch.zeros(4, 10, dtype=torch.long)
    target[0, 0] = target[2, 5] = 1  # 2 positives, 38 negatives: 2 * 3 = 6 kept
    loss = MarginL2Loss(neg_pos_ub=3)
    counts = torch.zeros(4, 10)
    for seed in range(400):
        kept = _kept_negatives(loss, pred, target, torch.Generator().manual_seed(seed))
        assert int(kept.sum()) == 6
        counts += kept
    # the same seed, the same subset; a seeded global RNG too; another seed, another subset
    first = _kept_negatives(loss, pred, target, torch.Generator().manual_seed(0))
    assert torch.equal(first, _kept_negatives(loss, pred, target, torch.Generator().manual_seed(0)))
    assert not torch.equal(first, _kept_negatives(loss, pred, target, torch.Generator().manual_seed(1)))
    torch.manual_seed(5)
    a = _kept_negatives(loss, pred, target)
    torch.manual_seed(5)
    assert torch.equal(a, _kept_negatives(loss, pred, target))
    # uniform: each negative kept with probability 6/38 (400 draws: mean 63, sd 7.3)
    freq = counts[target == 0]
    assert float(counts[target == 1].sum()) == 0.0
    assert abs(float(freq.mean()) - 400 * 6 / 38) < 1e-6
    assert 35 < float(freq.min()) and float(freq.max()) < 95, freq
    # the draws: pred.numel() numbers from the generator, on every call with neg_pos_ub > 0
    gen = torch.Generator().manual_seed(9)
    loss(pred, target, generator=gen)
    expected = torch.Generator().manual_seed(9)
    torch.rand(pred.numel(), generator=expected)
    assert torch.equal(gen.get_state(), expected.get_state())
    few = torch.ones_like(target)
    few[:, :2] = 0  # 8 negatives for 32 positives: no sampling, but the draws are made all the same
    gen = torch.Generator().manual_seed(9)
    loss(pred, few, generator=gen)
    assert torch.equal(gen.get_state(), expected.get_state())


def test_l2_ignored_entries_and_no_positive(g):
    pred, target = cosine(g, 5, 6), track_targets(g, 5, 6)
    weight = torch.ones(5, 6, dtype=F64)
    weight[1] = 0.0
    none = MarginL2Loss(**QDTRACK_AUX, reduction='none')(pred, target, weight)
    assert float(none[1].abs().sum()) == 0.0
    row, col = (target[2:] == 1).nonzero()[0]
    weight[2 + row, col] = float('nan')  # a NaN weight is not "<= 0": a positive keeps it (as mmdet)
    assert torch.isnan(MarginL2Loss(**QDTRACK_AUX, reduction='sum')(pred, target, weight))
    # no positive at all: every negative is dropped (mmdet keeps num_pos * ub = 0), a zero loss
    out = MarginL2Loss(**QDTRACK_AUX)(pred.requires_grad_(), torch.zeros(5, 6, dtype=torch.long))
    out.backward()
    assert float(out) == 0.0 and torch.isfinite(pred.grad).all()


def test_l2_targets_of_other_values_regress_without_margin_or_sampling(g):
    """As mmdet: 1 marks a positive and 0 a negative; an entry of another value (float targets, as
    mmdet's tests pass) takes part as a plain L2 of the clamped similarity, never sampled away."""
    pred = cosine(g, 3, 4)
    target = torch.tensor([[1.0, 0.0, 0.5, 0.0], [0.0, 0.25, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]])
    out = MarginL2Loss(neg_pos_ub=1, pos_margin=0.1, neg_margin=0.2, hard_mining=True)(pred, target,
                                                                                      reduction_override='none')
    other = (target != 0) & (target != 1)
    torch.testing.assert_close(out[other], (pred[other].clamp(0, 1) - target[other]) ** 2)
    # one positive allows one negative: the hardest of the 8 (its cost, clamp(s - 0.2, 0, 1)^2)
    neg = target == 0
    costs = (pred[neg] - 0.2).clamp(0, 1) ** 2
    assert int((out[neg] > 0).sum()) == 1 and float(out[neg].max()) == pytest.approx(float(costs.max()))
    torch.testing.assert_close(out[0, 0], ((pred[0, 0] - 0.1).clamp(0, 1) - 1) ** 2)
    with pytest.raises(TypeError, match='L2Loss: `target` expected an integer or floating-point tensor'):
        L2Loss()(pred, torch.zeros(3, 4, dtype=torch.bool))


def test_l2_hparams_and_positional_order():
    loss = MarginL2Loss(3, 0.0, 0.1, True, 'sum', 2.0)  # mmdet's constructor order
    assert (loss.neg_pos_ub, loss.pos_margin, loss.neg_margin, loss.hard_mining, loss.reduction,
            loss.loss_weight) == (3, 0.0, 0.1, True, 'sum', 2.0)
    assert (L2Loss().neg_pos_ub, L2Loss().pos_margin, L2Loss().neg_margin) == (-1, -1, -1)
    assert MarginL2Loss(neg_pos_ub=-5).neg_pos_ub == -5  # any int: <= 0 switches sampling off
    with pytest.raises(TypeError, match='MarginL2Loss: `neg_pos_ub` expected an int, got float 3.0'):
        MarginL2Loss(neg_pos_ub=3.0)
    with pytest.raises(ValueError, match=r'MarginL2Loss: `neg_margin` expected a value in \[-1.0, inf\), got -2'):
        MarginL2Loss(neg_margin=-2)


# --- MultiPosCrossEntropyLoss ---------------------------------------------------------------------

@pytest.mark.parametrize('scale', [1.0, 5.0])
def test_multi_pos_parity_with_mmdet(scale, g):
    """QDTrack's call (per-row weights: rows with a positive, avg_factor their count) and every
    other reduction; rows without a positive or without a negative included."""
    pred = torch.randn(9, 7, generator=g, dtype=F64) * scale
    target = track_targets(g, 9, 7, p=0.4)
    target[0] = 1  # no negative
    target[1] = 0  # no positive
    row_weight = (target.sum(1) > 0).to(F64)
    ours, ref = MultiPosCrossEntropyLoss(loss_weight=0.25), mm.MultiPosCrossEntropyLoss(loss_weight=0.25)
    # mmdet casts the weight to float32: weights it represents exactly
    for weight in (None, row_weight, (torch.rand(9, generator=g, dtype=F64) * 64).round() / 64):
        for reduction, avg in (('none', None), ('mean', None), ('mean', 3.0), ('sum', None)):
            kw = dict(weight=weight, avg_factor=avg, reduction_override=reduction)
            value, grad = value_and_pred_grad(ours, pred, target, **kw)
            ref_value, ref_grad = value_and_pred_grad(ref, pred, target, **kw)
            torch.testing.assert_close(value, ref_value.to(F64), **TIGHT)
            torch.testing.assert_close(grad, ref_grad, **TIGHT)
    none = ours(pred, target, reduction_override='none')
    assert float(none[0]) == 0.0 and float(none[1]) == 0.0 and float(none[2:].min()) > 0


def test_multi_pos_qdtrack_call_and_keywords(g):
    pred, target = torch.randn(6, 10, generator=g, dtype=F64), track_targets(g, 6, 10)
    weight = (target.sum(1) > 0).to(F64)
    ours = build('MultiPosCrossEntropyLoss', loss_weight=0.25)
    ref = MMDET_MODELS.build(dict(type='MultiPosCrossEntropyLoss', loss_weight=0.25))
    torch.testing.assert_close(ours(pred, target, weight, avg_factor=weight.sum()),
                               ref(pred, target, weight, avg_factor=weight.sum()), **TIGHT)
    torch.testing.assert_close(ours(cls_score=pred, label=target), ref(cls_score=pred, label=target), **TIGHT)


def test_multi_pos_extreme_scores_stay_finite(g):
    """The factorised form never exponentiates a raw score: scores of +-1e4 (where mmdet's pairwise
    form is also finite) agree, and a float16 batch is finite."""
    pred = torch.where(torch.rand(5, 8, generator=g) < 0.5, -1e4, 1e4).to(F64)
    target = track_targets(g, 5, 8, p=0.4)
    value, grad = value_and_pred_grad(MultiPosCrossEntropyLoss(reduction='none'), pred, target)
    ref_value, ref_grad = value_and_pred_grad(mm.MultiPosCrossEntropyLoss(reduction='none'), pred, target)
    torch.testing.assert_close(value, ref_value, **TIGHT)
    torch.testing.assert_close(grad, ref_grad, **TIGHT)
    half = pred.half().requires_grad_()
    out = MultiPosCrossEntropyLoss()(half, target)
    out.backward()
    assert out.dtype == torch.float16 and torch.isfinite(out) and torch.isfinite(half.grad).all()


def test_multi_pos_bad_inputs(g):
    pred = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r'MultiPosCrossEntropyLoss: `pred` expected a 2-D tensor, got shape \(12,\)'):
        MultiPosCrossEntropyLoss()(pred.reshape(-1), torch.zeros(12, dtype=torch.long))
    with pytest.raises(ValueError, match='MultiPosCrossEntropyLoss: `target` expected values in'):
        MultiPosCrossEntropyLoss()(pred, -torch.ones(3, 4, dtype=torch.long))


# --- TripletLoss ----------------------------------------------------------------------------------

def reid_batch(g, ids=4, per_id=4, dim=16, singletons=0):
    """A ReID batch as its sampler draws it: ``per_id`` images of each of ``ids`` identities, and
    optionally some identities seen once."""
    labels = torch.cat([torch.arange(ids).repeat_interleave(per_id), torch.arange(ids, ids + singletons)])
    labels = labels[torch.randperm(labels.numel(), generator=g)] * 7 + 100  # any int values
    return torch.randn(labels.numel(), dim, generator=g, dtype=F64), labels


@pytest.mark.parametrize('singletons', [0, 3])
@pytest.mark.parametrize('margin, loss_weight', [(0.3, 1.0), (1.5, 0.5)])
def test_triplet_parity_with_mmdet(margin, loss_weight, singletons, g):
    feats, labels = reid_batch(g, singletons=singletons)
    ours, ref = TripletLoss(margin, loss_weight), mm.TripletLoss(margin=margin, loss_weight=loss_weight)
    value, grad = value_and_pred_grad(ours, feats, labels)
    ref_value, ref_grad = value_and_pred_grad(ref, feats, labels)
    torch.testing.assert_close(value, ref_value, **TIGHT)
    torch.testing.assert_close(grad, ref_grad, **TIGHT)
    assert float(value) > 0


def test_triplet_reductions_weights_against_a_loop(g):
    feats, labels = reid_batch(g, ids=3, per_id=3, dim=5, singletons=1)
    dist = torch.cdist(feats, feats)
    expected = []
    for i in range(len(labels)):
        same = labels == labels[i]
        pos = dist[i][same & (torch.arange(len(labels)) != i)]
        hardest_pos = pos.max() if pos.numel() else torch.tensor(1e-6, dtype=F64)
        expected.append((hardest_pos - dist[i][~same].min() + 0.3).clamp_min(0))
    expected = torch.stack(expected)
    weight = torch.rand(len(labels), generator=g, dtype=F64)
    loss = TripletLoss()
    torch.testing.assert_close(loss(feats, labels, reduction_override='none'), expected, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(loss(feats, labels, weight=weight, reduction_override='sum'), (expected * weight).sum(),
                               rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(loss(feats, labels, weight=weight, avg_factor=4.0), (expected * weight).sum() / (4.0 + 1.1920929e-07),
                               rtol=1e-7, atol=1e-9)


def test_triplet_mmdet_signature_and_config(g):
    feats, labels = reid_batch(g)
    cfg = dict(margin=0.3, loss_weight=1.0)  # configs/reid, deepsort, strongsort
    ours = build('TripletLoss', **cfg)
    ref = MMDET_MODELS.build(dict(type='TripletLoss', **cfg))
    torch.testing.assert_close(ours(inputs=feats, targets=labels), ref(inputs=feats, targets=labels), **TIGHT)
    with pytest.raises(ValueError, match='TripletLoss: `hard_mining` expected True \\(the only mode implemented\\), got False'):
        TripletLoss(hard_mining=False)  # mmdet: NotImplementedError at the first forward
    with pytest.raises(NotImplementedError):
        mm.TripletLoss(hard_mining=False)(feats, labels)


def test_triplet_without_negatives_is_zero_where_mmdet_fails(g):
    feats = torch.randn(4, 3, generator=g, dtype=F64, requires_grad=True)
    same = torch.full((4,), 5)
    out = TripletLoss()(feats, same)
    out.backward()
    assert float(out) == 0.0 and torch.isfinite(feats.grad).all()
    with pytest.raises(RuntimeError):
        mm.TripletLoss()(feats, same)


def test_triplet_half_precision_and_bad_labels(g):
    feats, labels = reid_batch(g, dim=32)
    ref = TripletLoss()(feats.float(), labels)
    for dtype in (torch.float16, torch.bfloat16):
        half = (feats * 3).to(dtype).requires_grad_()
        out = TripletLoss()(half, labels)
        out.backward()
        assert out.dtype == dtype and torch.isfinite(out) and torch.isfinite(half.grad).all()
    torch.testing.assert_close(TripletLoss()(feats.half(), labels).float(), ref, rtol=2e-2, atol=2e-2)
    # float identities (as mmdet's tests pass them) compare like integer ones
    torch.testing.assert_close(TripletLoss()(feats, labels.float()), TripletLoss()(feats, labels))
    with pytest.raises(ValueError, match=r'TripletLoss: `target` expected identity labels of shape \(16,\)'):
        TripletLoss()(feats, labels[:-1])


# --- AssociativeEmbeddingLoss ---------------------------------------------------------------------

def corner_head(loss_embedding, emb_channels=1):
    torch.manual_seed(0)
    return MMDET_MODELS.build(dict(type='CornerHead', num_classes=3, in_channels=8, num_feat_levels=1,
                                   corner_emb_channels=emb_channels, loss_embedding=loss_embedding))


#: several images with different numbers of objects: none, one, several (two sharing a corner)
BOXES = [
    [[4.0, 4.0, 30.0, 40.0], [20.0, 8.0, 60.0, 50.0], [4.0, 4.0, 12.0, 20.0]],
    [],
    [[10.0, 10.0, 50.0, 30.0]],
    [[0.0, 0.0, 63.0, 63.0], [8.0, 30.0, 24.0, 62.0], [30.0, 2.0, 40.0, 12.0], [40.0, 40.0, 56.0, 60.0],
     [5.0, 50.0, 20.0, 60.0]],
]


def corner_match(head, boxes=BOXES, feat=16, img=64):
    """``corner_embedding`` exactly as CornerHead's ``get_targets`` builds it."""
    bboxes = [torch.tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes]
    labels = [torch.zeros(len(b), dtype=torch.long) for b in boxes]
    targets = head.get_targets(bboxes, labels, (len(boxes), 3, feat, feat), (img, img), with_corner_emb=True)
    return targets['corner_embedding']


@pytest.mark.parametrize('dim', [1, 3])
@pytest.mark.parametrize('weights', [(0.25, 0.25), (1.0, 0.1)])
def test_ae_parity_with_mmdets_loop_on_cornerhead_targets(dim, weights, g):
    head = corner_head(dict(type='AssociativeEmbeddingLoss'))
    match = corner_match(head)
    assert [len(m) for m in match] == [3, 0, 1, 5]
    tl = torch.randn(4, dim, 16, 16, generator=g, dtype=F64)
    br = torch.randn(4, dim, 16, 16, generator=g, dtype=F64) * 0.5
    ours, ref = AssociativeEmbeddingLoss(*weights), mm.AssociativeEmbeddingLoss(*weights)
    out = ours(tl, br, match)
    assert isinstance(out, tuple) and len(out) == 2
    for part in (0, 1):  # pull, push: values and gradients w.r.t. both maps
        value, grads = value_and_grad(lambda a, b: ours(a, b, match)[part], tl, br)
        ref_value, ref_grads = value_and_grad(lambda a, b: ref(a, b, match)[part], tl, br)
        torch.testing.assert_close(value, ref_value, **TIGHT)
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b, **TIGHT)
        assert float(value) > 0
    # per image: the image without objects is 0 in both parts; the one with a single object has no
    # push with 1-D tags (with D > 1, mmdet counts each channel's tag as an object: it pushes them)
    pull, push = ours(tl, br, match, reduction_override='none')
    assert float(pull[1]) == 0.0 and float(push[1]) == 0.0 and float(pull[2]) > 0
    assert (float(push[2]) == 0.0) == (dim == 1)
    for part, per_image in zip(ref(tl, br, match), (pull, push)):
        torch.testing.assert_close(per_image.sum(), part, **TIGHT)


def test_ae_matches_mmdet_per_image_for_single_images(g):
    head = corner_head(dict(type='AssociativeEmbeddingLoss'))
    match = corner_match(head)
    tl, br = torch.randn(4, 1, 16, 16, generator=g, dtype=F64), torch.randn(4, 1, 16, 16, generator=g, dtype=F64)
    pull, push = AssociativeEmbeddingLoss(reduction='none')(tl, br, match)
    for i in range(4):
        ref_pull, ref_push = mm.AssociativeEmbeddingLoss()(tl[i:i + 1], br[i:i + 1], match[i:i + 1])
        torch.testing.assert_close(pull[i], torch.as_tensor(ref_pull, dtype=F64), **TIGHT)
        torch.testing.assert_close(push[i], torch.as_tensor(ref_push, dtype=F64), **TIGHT)


def test_ae_reductions_weight_and_avg_factor(g):
    head = corner_head(dict(type='AssociativeEmbeddingLoss'))
    match = corner_match(head)
    tl, br = torch.randn(4, 1, 16, 16, generator=g, dtype=F64), torch.randn(4, 1, 16, 16, generator=g, dtype=F64)
    loss = AssociativeEmbeddingLoss(loss_weight=2.0)
    none = loss(tl, br, match, reduction_override='none')
    weight = torch.tensor([1.0, 0.0, 0.5, 2.0], dtype=F64)
    for reduced, expected in ((loss(tl, br, match), [p.sum() for p in none]),  # mmdet's sum over images
                              (loss(tl, br, match, reduction_override='mean'), [p.mean() for p in none]),
                              (loss(tl, br, match, weight=weight, reduction_override='sum'), [(p * weight).sum() for p in none]),
                              (loss(tl, br, match, weight=weight, avg_factor=3.0, reduction_override='mean'),
                               [(p * weight).sum() / (3.0 + 1.1920929e-07) for p in none])):
        for a, b in zip(reduced, expected):
            torch.testing.assert_close(a, b, **TIGHT)
    torch.testing.assert_close(none[0], 2.0 * AssociativeEmbeddingLoss(reduction='none')(tl, br, match)[0])


def test_ae_in_cornerhead_loss_exactly_like_mmdets():
    """CornerHead.loss_by_feat with ``loss_embedding`` swapped for ours: the same pull and push."""
    from mmengine.structures import InstanceData
    gen = torch.Generator().manual_seed(2)
    gts = [InstanceData(bboxes=torch.tensor(b, dtype=torch.float32).reshape(-1, 4),
                        labels=torch.randint(0, 3, (len(b),), generator=gen)) for b in BOXES]
    metas = [dict(batch_input_shape=(64, 64), img_shape=(64, 64))] * len(BOXES)
    maps = [torch.randn(len(BOXES), c, 16, 16, generator=gen) for c in (3, 3, 1, 1, 2, 2)]
    results = {}
    for loss_type in ('AssociativeEmbeddingLoss', 'mmloss_ext.AssociativeEmbeddingLoss'):
        head = corner_head(dict(type=loss_type, pull_weight=0.25, push_weight=0.25))
        leaves = [m.clone().requires_grad_() for m in maps]
        losses = head.loss_by_feat(*[[m] for m in leaves], gts, metas)
        pull, push = losses['pull_loss'][0], losses['push_loss'][0]
        grads = torch.autograd.grad(pull + push, leaves[2:4])
        results[loss_type] = (pull.detach(), push.detach(), grads)
    (ref_pull, ref_push, ref_grads), (pull, push, grads) = results.values()
    assert float(ref_pull) > 0 and float(ref_push) > 0
    torch.testing.assert_close(pull, ref_pull)
    torch.testing.assert_close(push, ref_push)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_ae_match_as_tensors_and_empty_batch(g):
    head = corner_head(dict(type='AssociativeEmbeddingLoss'))
    match = corner_match(head)
    tl, br = torch.randn(4, 2, 16, 16, generator=g), torch.randn(4, 2, 16, 16, generator=g)
    as_tensors = [torch.tensor(m, dtype=torch.long).reshape(-1, 2, 2) for m in match]
    for a, b in zip(AssociativeEmbeddingLoss()(tl, br, match), AssociativeEmbeddingLoss()(tl, br, as_tensors)):
        torch.testing.assert_close(a, b)
    empty = torch.zeros(0, 1, 16, 16, requires_grad=True)
    pull, push = AssociativeEmbeddingLoss()(empty, torch.zeros(0, 1, 16, 16), [])
    (pull + push).backward()
    assert float(pull) == 0.0 and float(push) == 0.0 and empty.grad.shape == empty.shape
    none = AssociativeEmbeddingLoss()(tl, br, [[], [], [], []])  # no object anywhere
    assert all(float(p) == 0.0 for p in none)


def test_ae_padding_never_leaks_into_the_gradient(g):
    """Images are padded to the largest object count; the padding reads position (0, 0), which a
    NaN there must not turn into a NaN gradient for the images whose objects are elsewhere."""
    tl = torch.randn(2, 1, 8, 8, generator=g, requires_grad=True)
    br = torch.randn(2, 1, 8, 8, generator=g)
    with torch.no_grad():
        tl[1, 0, 0, 0] = float('nan')
    match = [[[[1, 1], [5, 5]], [[2, 3], [6, 7]]], [[[3, 3], [7, 7]]]]
    pull, push = AssociativeEmbeddingLoss()(tl, br, match)
    (pull + push).backward()
    assert torch.isfinite(pull) and torch.isfinite(push) and torch.isfinite(tl.grad).all()


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_ae_half_precision(dtype, g):
    head = corner_head(dict(type='AssociativeEmbeddingLoss'))
    match = corner_match(head)
    tl, br = torch.randn(4, 1, 16, 16, generator=g), torch.randn(4, 1, 16, 16, generator=g)
    ref = AssociativeEmbeddingLoss()(tl, br, match)
    half = tl.to(dtype).requires_grad_()
    out = AssociativeEmbeddingLoss()(half, br.to(dtype), match)
    sum(out).backward()
    for a, b in zip(out, ref):
        assert a.dtype == dtype and torch.isfinite(a)
        torch.testing.assert_close(a.float(), b, rtol=2e-2, atol=2e-2)
    assert torch.isfinite(half.grad).all()


def test_ae_bad_match_names_the_loss():
    tl = torch.randn(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r'AssociativeEmbeddingLoss: `match` expected one list of corner pairs per '
                                         r'image \(2\), got 1 items'):
        AssociativeEmbeddingLoss()(tl, tl, [[]])
    with pytest.raises(ValueError, match=r'AssociativeEmbeddingLoss: `match` expected corner coordinates \(y, x\) '
                                         r'inside the 4 x 4 embedding map'):
        AssociativeEmbeddingLoss()(tl, tl, [[[[0, 0], [4, 1]]], []])
    with pytest.raises(ValueError, match=r'AssociativeEmbeddingLoss: `match\[1\]` expected corner pairs of shape '
                                         r'\(K, 2, 2\)'):
        AssociativeEmbeddingLoss()(tl, tl, [[], [[0, 0, 1, 1]]])
    with pytest.raises(TypeError, match=r'AssociativeEmbeddingLoss: `match\[0\]` expected an integer tensor'):
        AssociativeEmbeddingLoss()(tl, tl, [torch.zeros(1, 2, 2), []])
    with pytest.raises(ValueError, match='AssociativeEmbeddingLoss: `pred` expected a 4-D tensor'):
        AssociativeEmbeddingLoss()(tl[0], tl[0], [[]])


def test_ae_constructor_like_mmdet():
    loss = AssociativeEmbeddingLoss(0.5, 0.1)  # mmdet's (pull_weight, push_weight)
    assert (loss.pull_weight, loss.push_weight, loss.reduction, loss.loss_weight) == (0.5, 0.1, 'sum', 1.0)
    ref = MMDET_MODELS.build(dict(type='AssociativeEmbeddingLoss'))
    assert (AssociativeEmbeddingLoss().pull_weight, AssociativeEmbeddingLoss().push_weight) == \
        (ref.pull_weight, ref.push_weight)
    with pytest.raises(ValueError, match=r'AssociativeEmbeddingLoss: `push_weight` expected a value in \[0.0, inf\)'):
        AssociativeEmbeddingLoss(push_weight=-1.0)


# --- the family as a whole ------------------------------------------------------------------------

def _meta_inputs():
    m = 'meta'
    return {
        'L2Loss': (torch.randn(4, 8, device=m), torch.zeros(4, 8, dtype=torch.long, device=m)),
        'MarginL2Loss': (torch.randn(4, 8, device=m), torch.zeros(4, 8, dtype=torch.long, device=m)),
        'MultiPosCrossEntropyLoss': (torch.randn(4, 8, device=m), torch.zeros(4, 8, dtype=torch.long, device=m)),
        'TripletLoss': (torch.randn(4, 8, device=m), torch.zeros(4, dtype=torch.long, device=m)),
        'AssociativeEmbeddingLoss': (torch.randn(2, 1, 5, 5, device=m), torch.randn(2, 1, 5, 5, device=m),
                                     [[[[0, 0], [4, 4]]], []]),
        'KnowledgeDistillationKLDivLoss': (torch.randn(4, 8, device=m), torch.randn(4, 8, device=m)),
    }


META_CASES = [(name, {}) for name in sorted(_meta_inputs()) if 'L2' not in name] + [
    (name, {'neg_pos_ub': 3, 'hard_mining': hard}) for name in ('L2Loss', 'MarginL2Loss') for hard in (True, False)]


@pytest.mark.parametrize('name, cfg', META_CASES, ids=[f'{n}-{c}' for n, c in META_CASES])
def test_no_value_is_read_on_the_host(name, cfg):
    """On the 'meta' device tensors have no values: any host read (``.item()``, ``bool()``,
    ``int()``, a data-dependent shape) raises there. The sampling, the mining and the per-image
    reductions run through, so on CUDA they never wait for the device."""
    args = _meta_inputs()[name]
    pred = args[0].requires_grad_()
    per_row = 'L2' not in name  # the L2 losses weigh each entry, the others each row (image)
    weight = torch.ones(args[0].shape[:1] if per_row else args[0].shape, device='meta')
    out = build(name, **cfg)(pred, *args[1:], weight=weight, reduction_override='mean')
    total = sum(out) if isinstance(out, tuple) else out
    total.backward()
    assert total.device.type == 'meta' and pred.grad.shape == pred.shape


def test_copies_and_repr(g):
    loss = MarginL2Loss(**QDTRACK_AUX)
    assert repr(loss) == ('MarginL2Loss(neg_pos_ub=3, pos_margin=0.0, neg_margin=0.1, hard_mining=True, '
                          "reduction='mean', loss_weight=1.0)")
    pred, target = cosine(g, 4, 6), track_targets(g, 4, 6)
    torch.testing.assert_close(copy.deepcopy(loss)(pred, target), loss(pred, target))
