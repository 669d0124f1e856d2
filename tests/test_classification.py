"""Classification losses: parity with mmdet / torch (values and gradients, float64, every
reduction, with weights and avg_factor), hand-derived values, identities and numerics."""
import copy
import pickle

import mmdet.models.losses as mm
import pytest
import torch
import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss as mmdet_reduce
from mmdet.registry import MODELS as MMDET_MODELS

from helpers import build, build_case, family_names, value_and_pred_grad as value_and_grad
from loss_cases import CASES
from mmloss_ext.losses.classification import (CrossEntropyLoss, FocalLoss, balanced_cross_entropy_loss,
                                              cross_entropy_loss, focal_loss, hinge_loss, zero_one_loss)

#: (reduction_override, avg_factor) combinations every parity test runs through
REDUCTIONS = [('none', None), ('mean', None), ('mean', 7.5), ('sum', None)]
F64 = torch.float64
NAMES = family_names('classification')


def assert_parity(ours, ref, pred, *args, rtol=1e-5, atol=1e-8, **kw):
    """``ours`` and ``ref`` agree in value and in gradient w.r.t. ``pred``."""
    value, grad = value_and_grad(ours, pred, *args, **kw)
    ref_value, ref_grad = value_and_grad(ref, pred, *args, **kw)
    torch.testing.assert_close(value, ref_value, rtol=rtol, atol=atol)
    torch.testing.assert_close(grad, ref_grad, rtol=rtol, atol=atol)
    return value


def assert_module_parity(ours, ref, pred, target, weights, **tol):
    """Module-level parity for every reduction and each weight (``None`` included)."""
    for weight in weights:
        for reduction, avg in REDUCTIONS:
            assert_parity(ours, ref, pred, target, weight=weight, avg_factor=avg, reduction_override=reduction, **tol)


def in_float64(module):
    """mmdet's sigmoid cross-entropy casts its targets with ``.float()``, so it computes in float32
    even for float64 logits: compare in float64 at float32 tolerance."""
    return lambda *args, **kw: module(*args, **kw).double()


F32_TOL = dict(rtol=1e-5, atol=1e-6)


def functional_ref(elementwise):
    """A reference module from an elementwise reference: mmdet's weight_reduce_loss on top."""
    def ref(pred, target, weight=None, avg_factor=None, reduction_override='mean'):
        loss = elementwise(pred, target)
        if weight is not None and weight.dim() == 1 and loss.dim() > 1:  # the documented per-sample rule
            weight = weight.view(-1, *[1] * (loss.dim() - 1))
        return mmdet_reduce(loss, weight, reduction_override, avg_factor)
    return ref


@pytest.fixture
def g():
    return torch.Generator().manual_seed(0)


def randn(g, *shape, scale=2.0):
    return torch.randn(*shape, generator=g, dtype=F64) * scale


def rand(g, *shape):
    return torch.rand(*shape, generator=g, dtype=F64) + 0.25


def randint(g, high, *shape):
    return torch.randint(0, high, shape, generator=g)


# --- CrossEntropyLoss ------------------------------------------------------------------------------

@pytest.mark.parametrize('class_weight', [None, [1.0, 0.5, 2.0, 1.5, 0.8]])
@pytest.mark.parametrize('ignore_index', [None, 2])
@pytest.mark.parametrize('avg_non_ignore', [False, True])
def test_ce_softmax_matches_mmdet(g, class_weight, ignore_index, avg_non_ignore):
    cfg = dict(class_weight=class_weight, ignore_index=ignore_index, avg_non_ignore=avg_non_ignore)
    pred, labels = randn(g, 12, 5), randint(g, 5, 12)
    labels[[1, 4, 7]] = -100 if ignore_index is None else ignore_index
    assert_module_parity(build('CrossEntropyLoss', **cfg), mm.CrossEntropyLoss(**cfg), pred, labels,
                         [None, rand(g, 12)])


def test_ce_softmax_spatial_and_per_call_ignore_index_match_mmdet(g):
    # a semantic-segmentation head: (N, C, H, W) logits, (N, H, W) labels, ignore 255
    pred, labels = randn(g, 2, 5, 3, 3), randint(g, 5, 2, 3, 3)
    labels[0, 0] = 255
    cfg = dict(ignore_index=255, avg_non_ignore=True)
    assert_module_parity(build('CrossEntropyLoss', **cfg), mm.CrossEntropyLoss(**cfg), pred, labels,
                         [None, rand(g, 2, 3, 3)])
    # forward(ignore_index=...) overrides the configured one, as in mmdet
    labels[0, 0], labels[1, 1] = 1, 3
    ours, ref = build('CrossEntropyLoss', **cfg), mm.CrossEntropyLoss(**cfg)
    value = assert_parity(ours, ref, pred, labels, ignore_index=3)
    assert not torch.isclose(value, ours(pred, labels))


@pytest.mark.parametrize('class_weight', [None, [1.0, 0.5, 2.0]])
@pytest.mark.parametrize('ignore_index', [None, 1])
@pytest.mark.parametrize('avg_non_ignore', [False, True])
def test_ce_sigmoid_onehot_labels_match_mmdet(g, class_weight, ignore_index, avg_non_ignore):
    # labels in [0, C] with C = 3 the background (an all-zero row), some ignored
    cfg = dict(use_sigmoid=True, class_weight=class_weight, ignore_index=ignore_index,
               avg_non_ignore=avg_non_ignore)
    pred, labels = randn(g, 10, 3), randint(g, 4, 10)
    labels[[2, 5]] = -100 if ignore_index is None else ignore_index
    assert_module_parity(build('CrossEntropyLoss', **cfg), in_float64(mm.CrossEntropyLoss(**cfg)), pred, labels,
                         [None, rand(g, 10)], **F32_TOL)


def test_ce_sigmoid_rpn_and_same_shape_targets_match_mmdet(g):
    cfg = dict(use_sigmoid=True)
    ours, ref = build('CrossEntropyLoss', **cfg), in_float64(mm.CrossEntropyLoss(**cfg))
    # RPN: (N, 1) logits, (N,) labels with 1 = background (num_classes = 1)
    pred, labels = randn(g, 16, 1), randint(g, 2, 16)
    assert_module_parity(ours, ref, pred, labels, [None, rand(g, 16)], **F32_TOL)
    # (N,) logits with (N,) binary labels: no expansion
    assert_module_parity(ours, ref, pred[:, 0], labels, [None, rand(g, 16)], **F32_TOL)
    # soft float targets of pred's shape, an elementwise weight, and ignore on negative targets
    target = torch.rand(8, 3, generator=g, dtype=F64)
    target[0, 1] = -100.0
    assert_module_parity(ours, ref, randn(g, 8, 3), target, [None, rand(g, 8, 3)], **F32_TOL)


@pytest.mark.parametrize('classes', [3, 1])
def test_ce_mask_matches_mmdet_with_labels_as_third_argument(g, classes):
    # mmdet's mask head: loss(mask_pred, mask_target, labels); class-agnostic heads pass zeros,
    # which must not be mistaken for an all-zero weight
    pred, target = randn(g, 6, classes, 4, 4), torch.rand(6, 4, 4, generator=g, dtype=F64)
    labels = randint(g, classes, 6)
    value = assert_parity(build('CrossEntropyLoss', use_mask=True),
                          lambda *a: mm.CrossEntropyLoss(use_mask=True)(*a).reshape(()), pred, target, labels)
    assert float(value) > 0.1
    # the other reductions follow from the elementwise mask BCE
    expected = F.binary_cross_entropy_with_logits(pred[torch.arange(6), labels], target, reduction='none')
    ours = build('CrossEntropyLoss', use_mask=True)
    torch.testing.assert_close(ours(pred, target, labels, reduction_override='none'), expected)
    torch.testing.assert_close(ours(pred, target, labels, reduction_override='sum'), expected.sum())


@pytest.mark.parametrize('label_smoothing', [0.1, 0.35])
@pytest.mark.parametrize('class_weight', [None, [1.0, 0.5, 2.0, 1.5]])
def test_ce_label_smoothing_and_soft_targets_match_torch(g, label_smoothing, class_weight):
    cw = None if class_weight is None else torch.tensor(class_weight, dtype=F64)
    ours = build('CrossEntropyLoss', class_weight=class_weight, label_smoothing=label_smoothing, ignore_index=1)
    pred, labels = randn(g, 9, 4), randint(g, 4, 9)

    def torch_ce(p, t):
        ignore = {} if t.is_floating_point() else {'ignore_index': 1}  # torch refuses it for probabilities
        return F.cross_entropy(p, t, weight=cw, label_smoothing=label_smoothing, reduction='none', **ignore)

    assert_module_parity(ours, functional_ref(torch_ce), pred, labels, [None, rand(g, 9)])
    # probability targets, flat and spatial (ignore_index does not apply to them)
    for shape in ((9, 4), (2, 4, 3, 2)):
        soft = torch.softmax(randn(g, *shape), 1)
        weight = rand(g, shape[0], *shape[2:])
        assert_module_parity(ours, functional_ref(torch_ce), randn(g, *shape), soft, [None, weight])


def test_ce_sigmoid_label_smoothing_is_binary_smoothing(g):
    # hand formula: one-hot targets (label 3 = background) smoothed to t(1 - eps) + eps / 2
    pred, labels = randn(g, 7, 3), torch.tensor([0, 1, 2, 3, 3, 0, 1])
    onehot = F.one_hot(labels, 4)[:, :3].to(F64)
    ours = build('CrossEntropyLoss', use_sigmoid=True, label_smoothing=0.2)

    def smoothed_bce(p, _):
        return F.binary_cross_entropy_with_logits(p, onehot * 0.8 + 0.1, reduction='none')

    assert_module_parity(ours, functional_ref(smoothed_bce), pred, labels, [None, rand(g, 7)])


def test_ce_class_weight_from_config_list_stays_a_list(g):
    cfg = dict(type='mmloss_ext.CrossEntropyLoss', class_weight=[1.0, 2.0, 0.5], loss_weight=2.0)
    loss = MMDET_MODELS.build(copy.deepcopy(cfg))
    assert type(loss) is CrossEntropyLoss and loss.class_weight == [1.0, 2.0, 0.5] and loss.use_sigmoid is False
    pred, labels = randn(g, 5, 3), randint(g, 3, 5)
    expected = 2.0 * cross_entropy_loss(pred, labels, class_weight=torch.tensor([1.0, 2.0, 0.5], dtype=F64))
    torch.testing.assert_close(loss(pred, labels), expected)
    torch.testing.assert_close(pickle.loads(pickle.dumps(loss))(pred, labels), expected)
    assert 'class_weight=[1.0, 2.0, 0.5]' in repr(loss)


def test_ce_bad_input_errors(g):
    pred = randn(g, 4, 3)
    with pytest.raises(ValueError, match=r'CrossEntropyLoss.*target.*\[0, 2\]'):
        build('CrossEntropyLoss')(pred, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match=r'CrossEntropyLoss.*target.*\[0, 3\]'):  # C = background is fine
        build('CrossEntropyLoss', use_sigmoid=True)(pred, torch.tensor([0, 3, 4, 0]))
    with pytest.raises(ValueError, match='CrossEntropyLoss.*class_weight.*3 values'):
        build('CrossEntropyLoss', class_weight=[1.0, 2.0])(pred, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match='CrossEntropyLoss.*use_mask'):
        build('CrossEntropyLoss', use_sigmoid=True, use_mask=True)
    with pytest.raises(TypeError, match='CrossEntropyLoss.*integer'):
        build('CrossEntropyLoss')(pred, torch.tensor([0.0, 1.0, 2.0, 0.0]))


# --- BCELoss, NLLLoss, KLDivLoss ------------------------------------------------------------------

@pytest.mark.parametrize('pos_weight', [None, [1.0, 2.0, 0.5], 'tensor'])
def test_bce_matches_torch(g, pos_weight):
    if pos_weight == 'tensor':
        pos_weight = torch.tensor([0.5, 3.0, 1.0], dtype=F64)
    pw = None if pos_weight is None else torch.as_tensor(pos_weight, dtype=F64)
    pred, target = randn(g, 6, 3), torch.rand(6, 3, generator=g, dtype=F64)
    assert_module_parity(
        build('BCELoss', pos_weight=pos_weight),
        functional_ref(lambda p, t: F.binary_cross_entropy_with_logits(p, t, pos_weight=pw, reduction='none')),
        pred, target, [None, rand(g, 6, 3), rand(g, 6)])
    # probabilities: torch's binary_cross_entropy, which has no pos_weight: the hand formula then
    probs = torch.sigmoid(pred)
    if pw is None:
        ref = functional_ref(lambda p, t: F.binary_cross_entropy(p, t, reduction='none'))
    else:
        ref = functional_ref(lambda p, t: -(pw * t * torch.log(p) + (1 - t) * torch.log1p(-p)))
    assert_module_parity(build('BCELoss', use_logits=False, pos_weight=pos_weight), ref, probs, target,
                         [None, rand(g, 6, 3)])


def test_bce_probabilities_at_zero_and_one_are_clamped_like_torch():
    probs = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5])
    target = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0])
    value, grad = value_and_grad(build('BCELoss', use_logits=False, reduction='none'), probs, target)
    torch.testing.assert_close(value, F.binary_cross_entropy(probs, target, reduction='none'))
    assert value[0] == 100.0 and value[1] == 100.0  # log clamped at -100
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize('shape', [(8, 4), (2, 4, 3, 3)])
@pytest.mark.parametrize('class_weight', [None, [1.0, 0.5, 2.0, 1.5]])
def test_nll_matches_torch(g, shape, class_weight):
    cw = None if class_weight is None else torch.tensor(class_weight, dtype=F64)
    logp = torch.log_softmax(randn(g, *shape), 1)
    labels = randint(g, 4, shape[0], *shape[2:])
    labels.view(-1)[:2] = 7  # ignored
    ours = build('NLLLoss', class_weight=class_weight, ignore_index=7)
    ref = functional_ref(lambda p, t: F.nll_loss(p, t, weight=cw, ignore_index=7, reduction='none'))
    assert_module_parity(ours, ref, logp, labels, [None, rand(g, shape[0], *shape[2:])])
    assert ours(logp, labels, reduction_override='none').shape == labels.shape


@pytest.mark.parametrize('temperature', [1.0, 3.0])
def test_kl_div_matches_torch(g, temperature):
    t2 = temperature ** 2
    pred, teacher = randn(g, 6, 5), randn(g, 6, 5)

    def kl_logits(p, t):
        return F.kl_div(F.log_softmax(p / temperature, 1), F.log_softmax(t / temperature, 1),
                        reduction='none', log_target=True).sum(1) * t2

    assert_module_parity(build('KLDivLoss', temperature=temperature), functional_ref(kl_logits), pred, teacher,
                         [None, rand(g, 6)])
    probs = torch.softmax(teacher, 1)
    probs[0] = torch.tensor([0.0, 0.5, 0.5, 0.0, 0.0])  # zero-probability classes contribute 0

    def kl_probs(p, q):
        return F.kl_div(F.log_softmax(p / temperature, 1), q, reduction='none').sum(1) * t2

    assert_module_parity(build('KLDivLoss', temperature=temperature, target_logits=False), functional_ref(kl_probs),
                         pred, probs, [None, rand(g, 6)])


def test_kl_div_is_mmdet_knowledge_distillation_times_classes(g):
    # mmdet averages the KL over the C classes where we sum: mmdet = ours / C
    pred, teacher, weight = randn(g, 6, 5), randn(g, 6, 5), rand(g, 6)
    ours, ref = build('KLDivLoss', temperature=2.0), mm.KnowledgeDistillationKLDivLoss(T=2)
    for reduction, avg in REDUCTIONS:
        kw = dict(weight=weight, avg_factor=avg, reduction_override=reduction)
        assert_parity(lambda p, t, **k: ours(p, t, **k) / 5, ref, pred, teacher, **kw)


# --- BalancedCrossEntropyLoss ---------------------------------------------------------------------

def test_balanced_bce_on_a_50_50_batch_is_half_bce(g):
    pred = randn(g, 6, 4)
    target = torch.tensor([1.0, 0.0] * 12, dtype=F64)[torch.randperm(24, generator=g)].view(6, 4)
    half_bce = functional_ref(lambda p, t: 0.5 * F.binary_cross_entropy_with_logits(p, t, reduction='none'))
    assert_module_parity(build('BalancedCrossEntropyLoss'), half_bce, pred, target, [None, rand(g, 6, 4)])


def test_balanced_bce_weights_by_the_other_class_fraction(g):
    # 1 positive in 4: positives weighted 3/4, negatives 1/4
    pred, target = randn(g, 4), torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=F64)
    bce = F.binary_cross_entropy_with_logits(pred, target, reduction='none')
    expected = bce * torch.tensor([0.25, 0.75, 0.25, 0.25], dtype=F64)
    torch.testing.assert_close(balanced_cross_entropy_loss(pred, target, reduction='none'), expected)


def test_balanced_ce_on_a_uniform_batch_is_ce(g):
    pred, labels = randn(g, 12, 4), torch.arange(12)[torch.randperm(12, generator=g)] % 4
    ce = functional_ref(lambda p, t: F.cross_entropy(p, t, reduction='none'))
    assert_module_parity(build('BalancedCrossEntropyLoss', use_sigmoid=False), ce, pred, labels,
                         [None, rand(g, 12)])


@pytest.mark.parametrize('class_counts, beta, class_w', [
    (None, None, [2 / 3, 2.0]),         # batch: N / (C n_c) with n = (3, 1), N = 4, C = 2
    ([1, 3], 0.5, [14 / 11, 8 / 11]),   # E = (1 - b^n) / (1 - b) = (1, 1.75); 1/E normalised to sum 2
    ([1, 3], None, [1.5, 0.5]),         # beta -> 1: 1/n = (1, 1/3) normalised to sum 2
    ([5, 9], 0.0, [1.0, 1.0]),          # beta = 0: every effective number is 1
])
def test_balanced_ce_class_weights_hand_derived(g, class_counts, beta, class_w):
    pred, labels = randn(g, 4, 2), torch.tensor([0, 1, 0, 0])
    ce = F.cross_entropy(pred, labels, reduction='none')
    got = balanced_cross_entropy_loss(pred, labels, use_sigmoid=False, class_counts=class_counts, beta=beta,
                                      reduction='none')
    torch.testing.assert_close(got, ce * torch.tensor(class_w, dtype=F64)[labels])


def test_balanced_ce_option_errors(g):
    pred, labels = randn(g, 4, 2), torch.tensor([0, 1, 0, 0])
    with pytest.raises(ValueError, match='BalancedCrossEntropyLoss.*beta'):
        balanced_cross_entropy_loss(pred, labels, use_sigmoid=False, beta=0.9)
    with pytest.raises(ValueError, match='BalancedCrossEntropyLoss.*class_counts'):
        balanced_cross_entropy_loss(pred, labels.to(F64).expand(2, 4).T, class_counts=[1, 2])
    with pytest.raises(ValueError, match='BalancedCrossEntropyLoss.*class_counts.*positive'):
        balanced_cross_entropy_loss(pred, labels, use_sigmoid=False, class_counts=[0, 2], beta=0.5)


# --- FocalLoss ------------------------------------------------------------------------------------

@pytest.mark.parametrize('gamma, alpha', [(2.0, 0.25), (1.5, 0.6), (0.0, 0.25)])
def test_focal_sigmoid_labels_match_mmdet(g, gamma, alpha):
    cfg = dict(gamma=gamma, alpha=alpha)
    pred, labels = randn(g, 10, 4), randint(g, 5, 10)  # label 4 = background
    weights = [None, rand(g, 10), rand(g, 10, 4), rand(g, 40)]  # (N,), (N, C), flattened (N * C,) as FSAF
    assert_module_parity(build('FocalLoss', **cfg), mm.FocalLoss(**cfg), pred, labels, weights)


def test_focal_sigmoid_soft_targets_and_activated_match_mmdet(g):
    pred, labels = randn(g, 10, 4), randint(g, 5, 10)
    soft = torch.rand(10, 4, generator=g, dtype=F64) * (torch.rand(10, 4, generator=g) < 0.4)
    onehot = F.one_hot(labels, 5)[:, :4]
    for target in (soft, onehot):
        assert_module_parity(build('FocalLoss'), mm.FocalLoss(), pred, target, [None, rand(g, 10)])
    probs = torch.sigmoid(pred)
    for target in (labels, onehot):
        assert_module_parity(build('FocalLoss', activated=True), mm.FocalLoss(activated=True), probs, target,
                             [None, rand(g, 10)])


@pytest.mark.parametrize('pos_weight', [None, [2.0, 0.5, 1.0]])
def test_focal_soft_targets_are_the_yolov5_form(g, pos_weight):
    # YOLOv5 FocalLoss (utils/loss.py), written out: BCEWithLogits(pos_weight) * alpha_factor * (1 - p_t)^gamma
    gamma, alpha = 1.5, 0.25
    pw = None if pos_weight is None else torch.tensor(pos_weight, dtype=F64)

    def yolov5(p, t):
        loss = F.binary_cross_entropy_with_logits(p, t, pos_weight=pw, reduction='none')
        prob = torch.sigmoid(p)
        p_t = t * prob + (1 - t) * (1 - prob)
        return loss * (t * alpha + (1 - t) * (1 - alpha)) * (1.0 - p_t) ** gamma

    pred, target = randn(g, 8, 3), torch.rand(8, 3, generator=g, dtype=F64)
    assert_module_parity(build('FocalLoss', gamma=gamma, alpha=alpha, pos_weight=pos_weight), functional_ref(yolov5),
                         pred, target, [None, rand(g, 8)])


def test_focal_gamma_zero_is_alpha_weighted_bce(g):
    pred, labels = randn(g, 8, 3), randint(g, 4, 8)
    onehot = F.one_hot(labels, 4)[:, :3].to(F64)
    expected = F.binary_cross_entropy_with_logits(pred, onehot, reduction='none') * (0.3 * onehot + 0.7 * (1 - onehot))
    torch.testing.assert_close(focal_loss(pred, labels, gamma=0.0, alpha=0.3, reduction='none'), expected)


def test_focal_softmax_form_and_gamma_zero_is_alpha_ce(g):
    pred, labels = randn(g, 8, 5), randint(g, 5, 8)
    p_y = torch.softmax(pred, 1)[torch.arange(8), labels]
    hand = functional_ref(lambda p, t: -0.4 * (1 - p_y) ** 2.0 * torch.log(p_y))  # -a (1 - p_y)^g log p_y
    value = focal_loss(pred, labels, use_sigmoid=False, gamma=2.0, alpha=0.4, reduction='none')
    torch.testing.assert_close(value, hand(pred, labels, reduction_override='none'))
    alpha_ce = functional_ref(lambda p, t: 0.4 * F.cross_entropy(p, t, reduction='none'))
    assert_module_parity(build('FocalLoss', use_sigmoid=False, gamma=0.0, alpha=0.4), alpha_ce, pred, labels,
                         [None, rand(g, 8)])
    # activated softmax: probabilities in, the same loss out
    torch.testing.assert_close(
        focal_loss(torch.softmax(pred, 1), labels, use_sigmoid=False, alpha=0.4, activated=True, reduction='none'),
        value)


def test_focal_errors(g):
    pred = randn(g, 4, 3)
    with pytest.raises(ValueError, match=r'FocalLoss.*target.*\[0, 3\]'):
        FocalLoss()(pred, torch.tensor([0, 4, 1, 2]))
    with pytest.raises(ValueError, match=r'FocalLoss.*target.*\[0, 2\]'):
        FocalLoss(use_sigmoid=False)(pred, torch.tensor([0, 3, 1, 2]))
    with pytest.raises(ValueError, match='FocalLoss.*pos_weight'):
        FocalLoss(use_sigmoid=False, pos_weight=[1.0, 2.0, 1.0])(pred, torch.tensor([0, 1, 1, 2]))
    with pytest.raises(ValueError, match='FocalLoss.*alpha'):
        FocalLoss(alpha=1.5)(pred, torch.tensor([0, 1, 1, 2]))


# --- QualityFocalLoss, VarifocalLoss, DistributionFocalLoss ---------------------------------------

@pytest.mark.parametrize('beta', [2.0, 1.0])
@pytest.mark.parametrize('activated', [False, True])
def test_qfl_matches_mmdet(g, beta, activated):
    cfg = dict(beta=beta, activated=activated)
    pred, labels, scores = randn(g, 10, 4), randint(g, 5, 10), torch.rand(10, generator=g, dtype=F64)
    if activated:
        pred = torch.sigmoid(pred)
    ours, ref = build('QualityFocalLoss', **cfg), mm.QualityFocalLoss(**cfg)
    assert_module_parity(ours, ref, pred, (labels, scores), [None, rand(g, 10)])
    soft = torch.rand(10, 4, generator=g, dtype=F64) * (torch.rand(10, 4, generator=g) < 0.3)
    assert_module_parity(ours, ref, pred, soft, [None, rand(g, 10)])


@pytest.mark.parametrize('alpha, gamma, iou_weighted', [(0.75, 2.0, True), (0.5, 1.5, False)])
def test_varifocal_matches_mmdet(g, alpha, gamma, iou_weighted):
    cfg = dict(alpha=alpha, gamma=gamma, iou_weighted=iou_weighted)
    pred = randn(g, 10, 4)
    target = torch.rand(10, 4, generator=g, dtype=F64) * (torch.rand(10, 4, generator=g) < 0.3)
    assert_module_parity(build('VarifocalLoss', **cfg), mm.VarifocalLoss(**cfg), pred, target,
                         [None, rand(g, 10, 4)])


def test_dfl_matches_mmdet_and_checks_the_target_range(g):
    pred, target = randn(g, 12, 8), torch.rand(12, generator=g, dtype=F64) * 6.999
    target[0], target[1] = 0.0, 3.0  # integer targets: all the mass on one bin
    assert_module_parity(build('DistributionFocalLoss'), mm.DistributionFocalLoss(), pred, target,
                         [None, rand(g, 12)])
    for bad in (7.0, -0.5):
        target[2] = bad
        with pytest.raises(ValueError, match=r'DistributionFocalLoss.*target.*\[0, 7\)'):
            build('DistributionFocalLoss')(pred, target)


# --- HingeLoss, ZeroOneLoss -----------------------------------------------------------------------

@pytest.mark.parametrize('margin, squared', [(1.0, False), (0.5, True), (2.0, False)])
def test_hinge_multiclass_matches_torch_multi_margin(g, margin, squared):
    pred, labels = randn(g, 9, 4), randint(g, 4, 9)
    ref = functional_ref(lambda p, t: F.multi_margin_loss(p, t, p=2 if squared else 1, margin=margin,
                                                          reduction='none'))
    assert_module_parity(build('HingeLoss', margin=margin, squared=squared), ref, pred, labels, [None, rand(g, 9)])


def test_hinge_binary_hand_values():
    # max(0, 1 - y f) with y = +-1: f = 2 (y=1) -> 0; 0.5 (y=1) -> 0.5; -0.5 (y=-1) -> 0.5; -2 (y=1) -> 3
    scores = torch.tensor([2.0, 0.5, -0.5, -2.0])
    expected = torch.tensor([0.0, 0.5, 0.5, 3.0])
    for labels in (torch.tensor([1, 1, 0, 1]), torch.tensor([1, 1, -1, 1]), torch.tensor([1.0, 1.0, 0.0, 1.0])):
        torch.testing.assert_close(hinge_loss(scores, labels, reduction='none'), expected)
    torch.testing.assert_close(hinge_loss(scores, torch.tensor([1, 1, 0, 1]), squared=True, reduction='none'),
                               expected ** 2)
    torch.testing.assert_close(hinge_loss(scores, torch.tensor([0, 0, 1, 0]), margin=0.0, reduction='sum'),
                               torch.tensor(3.0))  # max(0, -y f): 2 + 0.5 + 0.5 + 0
    with pytest.raises(ValueError, match='HingeLoss.*binary labels'):
        hinge_loss(scores, torch.tensor([1, 2, 0, 1]))


def test_zero_one_hand_values_and_no_gradient():
    scores = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 5.0]], requires_grad=True)
    labels = torch.tensor([0, 2, 1, 2])  # argmax (first on ties): 0, 1, 0, 2 -> wrong: 0, 1, 1, 0
    out = build('ZeroOneLoss')(scores, labels)
    torch.testing.assert_close(out, torch.tensor(0.5))
    assert not out.requires_grad
    weighted = zero_one_loss(scores, labels, weight=torch.tensor([1.0, 3.0, 0.5, 1.0]), reduction='sum')
    torch.testing.assert_close(weighted, torch.tensor(3.5))
    binary = zero_one_loss(torch.tensor([0.5, -2.0, 0.0, 3.0]), torch.tensor([1, 1, 0, 0]), reduction='none')
    torch.testing.assert_close(binary, torch.tensor([0.0, 1.0, 0.0, 1.0]))  # logit 0 predicts 0
    with pytest.raises(ValueError, match='ZeroOneLoss.*binary labels'):
        zero_one_loss(torch.tensor([0.5, 1.0]), torch.tensor([1, -1]))


# --- every classification loss --------------------------------------------------------------------

@pytest.mark.parametrize('name', [n for n in NAMES if not CASES[n].probabilities])
def test_extreme_logits_give_finite_values_and_gradients(name, g):
    c = CASES[name]
    args = c.make(8, torch.float32, g)
    pred = (torch.where(args[0] >= args[0].median(), 1e4, -1e4)).requires_grad_()
    out = build_case(name)(pred, *args[1:])
    assert torch.isfinite(out).all()
    if c.differentiable:
        out.backward()
        assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('name', NAMES)
def test_half_precision_returns_input_dtype(name, dtype, g):
    c = CASES[name]
    args = c.make(8, dtype, g)
    pred = args[0].detach().requires_grad_(c.differentiable)
    loss = build_case(name)
    out = loss(pred, *args[1:])
    assert out.dtype == dtype and torch.isfinite(out)
    # computed in float32: matches the float32 loss to half precision
    ref = loss(pred.detach().float(), *[a.float() if torch.is_tensor(a) and a.is_floating_point() else a
                                        for a in args[1:]])
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    if c.differentiable:
        out.backward()
        assert pred.grad.dtype == dtype and torch.isfinite(pred.grad).all()


@pytest.mark.parametrize('name', NAMES)
def test_integer_or_bool_logits_are_a_type_error(name, g):
    c = CASES[name]
    args = c.make(6, torch.float32, g)
    for bad in (args[0].round().long(), args[0] > 0):
        with pytest.raises(TypeError, match=f'{name}.*floating-point'):
            build_case(name)(bad, *args[1:])


@pytest.mark.parametrize('name, high', [('CrossEntropyLoss', 4), ('NLLLoss', 4), ('FocalLoss', 5),
                                        ('QualityFocalLoss', 5), ('HingeLoss', 4), ('ZeroOneLoss', 4)])
def test_labels_out_of_range_name_the_loss(name, high, g):
    c = CASES[name]
    pred, target = c.make(6, torch.float32, g)
    for bad in (high, -3):
        if isinstance(target, tuple):
            labels = target[0].clone()
            labels[1] = bad
            bad_target = (labels, target[1])
        else:
            bad_target = target.clone()
            bad_target[1] = bad
        with pytest.raises(ValueError, match=f'{name}.*expected values in'):
            build_case(name)(pred, bad_target)


def test_builds_through_mmdet_registry():
    loss = MMDET_MODELS.build(dict(type='mmloss_ext.FocalLoss', gamma=1.0, alpha=0.5, loss_weight=2.0))
    assert type(loss) is FocalLoss and (loss.gamma, loss.alpha, loss.loss_weight) == (1.0, 0.5, 2.0)
    assert loss.use_sigmoid is True  # read by mmdet's dense heads
    assert type(MMDET_MODELS.build(dict(type='FocalLoss'))) is mm.FocalLoss  # mmdet's name stays mmdet's
    pred, labels = torch.randn(5, 3, dtype=F64), torch.tensor([0, 3, 2, 3, 1])
    torch.testing.assert_close(loss(pred, labels), mm.FocalLoss(gamma=1.0, alpha=0.5, loss_weight=2.0)(pred, labels))
    with pytest.raises(ValueError, match='QualityFocalLoss.*use_sigmoid'):
        MMDET_MODELS.build(dict(type='mmloss_ext.QualityFocalLoss', use_sigmoid=False))


def test_qfl_and_vfl_take_bare_labels_as_hard_targets(g):
    """RetinaNet's head passes labels (N,) in [0, C] (C = background) and no quality scores: QFL
    reads them as (labels, scores of 1), VFL as one-hot targets of 1; both paths (eager, fused)."""
    pred = torch.randn(37, 5, generator=g, dtype=F64)
    labels = torch.randint(0, 6, (37,), generator=g)
    onehot = F.one_hot(labels, 6)[:, :5].to(F64)
    for impl in ('eager', 'fused'):
        qfl = build('QualityFocalLoss', impl=impl, reduction='none')
        torch.testing.assert_close(qfl(pred, labels), qfl(pred, (labels, torch.ones(37, dtype=F64))))
        torch.testing.assert_close(qfl(pred, labels), qfl(pred, onehot))
        vfl = build('VarifocalLoss', impl=impl, reduction='none')
        torch.testing.assert_close(vfl(pred, labels), vfl(pred, onehot))
    with pytest.raises(ValueError, match=r'VarifocalLoss: `target` expected values in \[0, 5\]'):
        build('VarifocalLoss')(pred, torch.full((37,), 7))
