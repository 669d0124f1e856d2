"""The behaviours mmdet 3.x's own loss unit tests check, run against mmdet's classes and ours.

Every check is parametrized over the implementation: against mmdet's class it shows the check
itself is right, against ours that the drop-in behaves the same. The classes are constructed and
called as mmdet's tests do (constructor defaults or keywords, forward arguments by position).

One deliberate difference is checked as ours documents it: ``DiceLoss(use_sigmoid=False)`` is the
Dice of the softmax over dim 1 where mmdet raises ``NotImplementedError`` (README, "Differences
from mmdet").
"""
import math

import pytest
import torch
import torch.nn.functional as F

from mmdet_losses import mmdet_class, our_class

IMPLS = {'mmdet': mmdet_class, 'mmloss_ext': our_class}

IOU_FAMILY = ['IoULoss', 'BoundedIoULoss', 'GIoULoss', 'DIoULoss', 'CIoULoss', 'EIoULoss', 'SIoULoss']
REGRESSION = IOU_FAMILY + ['MSELoss', 'L1Loss', 'SmoothL1Loss', 'BalancedL1Loss', 'MarginL2Loss']
#: the classes mmdet's tests hold to refusing an unknown ``reduction_override``
CHECK_REDUCTION = ['BalancedL1Loss', 'BoundedIoULoss', 'CIoULoss', 'CrossEntropyLoss', 'DIoULoss', 'EIoULoss',
                   'SIoULoss', 'FocalLoss', 'DistributionFocalLoss', 'MSELoss', 'SeesawLoss', 'GaussianFocalLoss',
                   'GIoULoss', 'QualityFocalLoss', 'IoULoss', 'L1Loss', 'VarifocalLoss', 'GHMR', 'GHMC',
                   'SmoothL1Loss', 'KnowledgeDistillationKLDivLoss', 'DiceLoss']


@pytest.fixture(params=sorted(IMPLS))
def impl(request):
    """The implementation under test: its loss class by mmdet's name."""
    return IMPLS[request.param]


@pytest.fixture
def is_ours(request):
    return request.node.callspec.params['impl'] == 'mmloss_ext'


def rand(gen, *shape):
    return torch.rand(*shape, generator=gen)


def assert_reduced(loss):
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0 and loss.is_floating_point()


@pytest.mark.parametrize('name', IOU_FAMILY)
def test_iou_family_with_zero_weight_is_zero(impl, name, gen):
    loss = impl(name)()(rand(gen, 10, 4), rand(gen, 10, 4), torch.zeros(10))
    assert loss == 0.0


@pytest.mark.parametrize('reduction_override', [True, 'max'])
@pytest.mark.parametrize('name', CHECK_REDUCTION)
def test_an_unknown_reduction_override_is_an_assertion_error(impl, name, reduction_override, gen):
    # as in mmdet's test, the target is a 1-tuple: the reduction is checked before any input is read
    with pytest.raises(AssertionError):
        impl(name)()(rand(gen, 10, 4), (rand(gen, 10, 4),), None, reduction_override=reduction_override)


@pytest.mark.parametrize('activated', [False, True])
def test_quality_focal_label_score_pair_equals_its_one_hot_form(impl, activated, gen):
    pred = rand(gen, 4, 5)
    label = torch.tensor([0, 1, 2, 0])
    score = rand(gen, 4)
    loss = impl('QualityFocalLoss')(activated=activated)
    pair = loss(pred, (label, score))
    dense = loss(pred, F.one_hot(label, 5) * score.view(4, 1))
    assert_reduced(pair)
    assert pair > 0
    assert dense == pair


def _calls_every_reduction(loss_cls, *inputs, weight=None):
    """mmdet's sequence of calls: plain, weighted, reduction_override, avg_factor (refused with 'sum')."""
    assert_reduced(loss_cls()(*inputs))
    if weight is not None:
        assert_reduced(loss_cls()(*inputs, weight))
    assert_reduced(loss_cls()(*inputs, reduction_override='mean'))
    assert_reduced(loss_cls()(*inputs, avg_factor=10))
    with pytest.raises(ValueError):
        loss_cls()(*inputs, avg_factor=10, reduction_override='sum')
    for reduction_override in (None, 'none', 'mean'):
        out = loss_cls()(*inputs, avg_factor=10, reduction_override=reduction_override)
        assert isinstance(out, torch.Tensor)
        if reduction_override == 'none' and inputs[0].shape[0]:  # (mmdet's L1 family: 0-d when empty)
            assert out.dim() >= 1 and out.shape[0] == inputs[0].shape[0]


@pytest.mark.parametrize('input_shape', [(10, 4), (0, 4)], ids=['10x4', 'empty'])
@pytest.mark.parametrize('name', REGRESSION)
def test_regression_losses_take_every_reduction(impl, name, input_shape, gen):
    pred, target, weight = rand(gen, *input_shape), rand(gen, *input_shape), rand(gen, *input_shape)
    _calls_every_reduction(impl(name), pred, target, weight=weight)


@pytest.mark.parametrize('input_shape', [(10, 5), (0, 5)], ids=['10x5', 'empty'])
def test_cross_entropy_takes_every_reduction(impl, input_shape, gen):
    target = torch.randint(0, 5, (input_shape[0],), generator=gen)
    _calls_every_reduction(impl('CrossEntropyLoss'), rand(gen, *input_shape), target)


@pytest.mark.parametrize('input_shape', [(10, 5), (3, 5, 40, 40)], ids=['labels', 'one-hot-maps'])
def test_focal_loss_takes_labels_and_one_hot_maps(impl, input_shape, gen):
    pred = rand(gen, *input_shape)
    if len(input_shape) == 2:
        target = torch.randint(0, 5, (input_shape[0],), generator=gen)
    else:
        n, c, h, w = input_shape
        target = F.one_hot(torch.randint(0, c, (n, h, w), generator=gen), c).permute(0, 3, 1, 2)
    _calls_every_reduction(impl('FocalLoss'), pred, target)


@pytest.mark.parametrize('input_shape', [(10, 4), (0, 4)], ids=['10x4', 'empty'])
def test_ghmr_takes_regular_and_empty_batches(impl, input_shape, gen):
    loss = impl('GHMR')()(rand(gen, *input_shape), rand(gen, *input_shape), rand(gen, *input_shape))
    assert_reduced(loss)


@pytest.mark.parametrize('avg_non_ignore', [True, False])
@pytest.mark.parametrize('reduction', ['sum', 'mean', None])
@pytest.mark.parametrize('use_sigmoid', [True, False])
def test_cross_entropy_ignore_index_configured_per_call_and_averaged(impl, use_sigmoid, reduction,
                                                                    avg_non_ignore, gen):
    loss = impl('CrossEntropyLoss')(use_sigmoid=use_sigmoid, use_mask=False, ignore_index=255,
                                    avg_non_ignore=avg_non_ignore)
    pred = rand(gen, 10, 5)
    target = torch.randint(0, 5, (10,), generator=gen)
    target[torch.tensor([1, 6])] = 255

    configured = loss(pred, target, reduction_override=reduction)
    per_call = loss(pred, target, ignore_index=255, reduction_override=reduction)
    kept = target != 255
    if avg_non_ignore:  # averaging over the non-ignored labels: as if the ignored were not there
        reference = loss(pred[kept], target[kept], reduction_override=reduction)
    else:
        reference = loss(pred, target, reduction_override=reduction)
    torch.testing.assert_close(configured, reference)
    torch.testing.assert_close(per_call, reference)
    if reduction == 'sum':  # the ignored labels contribute nothing
        torch.testing.assert_close(configured, loss(pred[kept], target[kept], reduction_override='sum'))

    everything_ignored = torch.full((10,), 255)
    assert loss(rand(gen, 10, 5), everything_ignored, reduction_override=reduction) == 0


@pytest.mark.parametrize('naive_dice', [True, False])
def test_dice_loss_calls_and_weight_shape_errors(impl, naive_dice, gen):
    pred, target = rand(gen, 10, 4, 4), rand(gen, 10, 4, 4)
    dice = impl('DiceLoss')
    _calls_every_reduction(lambda **kw: dice(naive_dice=naive_dice, **kw), pred, target, weight=rand(gen, 10))
    with pytest.raises(AssertionError):  # weight.ndim != loss.ndim
        dice(naive_dice=naive_dice)(pred, target, rand(gen, 2, 8))
    with pytest.raises(AssertionError):  # len(weight) != len(pred)
        dice(naive_dice=naive_dice)(pred, target, rand(gen, 8))


@pytest.mark.parametrize('naive_dice', [True, False])
def test_dice_loss_without_sigmoid(impl, is_ours, naive_dice, gen):
    """mmdet: NotImplementedError. Ours (documented difference): the Dice of softmax(pred, dim=1)."""
    pred, target = rand(gen, 10, 4, 4), rand(gen, 10, 4, 4)
    loss = impl('DiceLoss')(use_sigmoid=False, activate=True, naive_dice=naive_dice)
    if not is_ours:
        with pytest.raises(NotImplementedError):
            loss(pred, target)
        return
    p, t, eps = pred.softmax(dim=1).flatten(1), target.flatten(1), 1e-3
    inter = (p * t).sum(1)
    if naive_dice:
        coeff = (2 * inter + eps) / (p.sum(1) + t.sum(1) + eps)
    else:
        coeff = 2 * inter / ((p * p).sum(1) + eps + (t * t).sum(1) + eps)
    torch.testing.assert_close(loss(pred, target), (1 - coeff).mean())


def test_eqlv2_on_1204_classes(impl, gen):
    cls_score = torch.randn(1204, 1204, generator=gen)
    label = torch.randint(0, 2, (1204,), generator=gen)
    loss = impl('EQLV2Loss')()(cls_score, label, None)
    assert_reduced(loss)
    assert torch.isfinite(loss) and loss > 0


def test_gaussian_focal_loss_reductions_and_positive_indices(impl, gen):
    pred, target = rand(gen, 10, 4), rand(gen, 10, 4)
    loss = impl('GaussianFocalLoss')
    assert_reduced(loss()(pred, target))
    assert_reduced(loss()(pred, target, avg_factor=0.5))
    assert loss(reduction='none')(pred, target).shape == (10, 4)
    assert loss(reduction='none')(pred, target, reduction_override='mean').dim() == 0
    with pytest.raises(AssertionError):
        loss(reduction='none')(pred, target, reduction_override='max')
    pos_inds = (rand(gen, 5) * 8).long()
    pos_labels = (rand(gen, 5) * 2).long()
    assert_reduced(loss()(pred, target, pos_inds, pos_labels))


def test_l2_loss_margins_and_hard_negative_mining(impl):
    pred = torch.tensor([[1.0, 1, 0, 0, 0, 0, 1]])
    target = torch.tensor([[1.0, 1, 0, 0, 0, 0, 0]])
    loss = impl('L2Loss')(neg_pos_ub=2, pos_margin=0, neg_margin=0.1, hard_mining=True, loss_weight=1.0)
    # negatives lose the 0.1 margin and clamp to [0, 1]: (0, 0, 0, 0, 0.9); 2 positives allow 4
    # negatives, the hardest (0.9, cost 0.81) among them; the mean over the 6 kept is 0.81 / 6
    torch.testing.assert_close(loss(pred, target), torch.tensor(0.81 / 6))


def test_multi_positive_cross_entropy_on_integer_costs(impl):
    costs = torch.tensor([[1, 0], [0, 1]])
    loss = impl('MultiPosCrossEntropyLoss')(reduction='mean', loss_weight=1.0)
    # rows without a negative (or without a positive) add log(1 + 0) = 0
    torch.testing.assert_close(loss(costs, torch.tensor([[1, 1], [0, 0]])).float(), torch.tensor(0.0))
    # each row: log(1 + exp(cost_neg - cost_pos)) = log(1 + e^-1)
    torch.testing.assert_close(loss(costs, torch.tensor([[1.0, 0], [0, 1]])).float(),
                               torch.tensor(math.log1p(math.exp(-1.0))))


def test_triplet_loss_with_hard_mining(impl):
    feature = torch.tensor([[1.0, 1], [1, 1], [0, 0], [0, 0]])
    loss = impl('TripletLoss')(margin=0.3, loss_weight=1.0)
    torch.testing.assert_close(loss(feature, torch.tensor([1.0, 1, 0, 0])), torch.tensor(0.0))
    # the hardest positive is sqrt(2) away, the hardest negative at the 1e-6 distance floor
    torch.testing.assert_close(loss(feature, torch.tensor([1.0, 0, 1, 0])),
                               torch.tensor(math.sqrt(2) - 1e-6 + 0.3))


@pytest.mark.parametrize('name', ['MarginL2Loss', 'L2Loss'])
def test_margin_l2_losses_on_similarity_targets(impl, name, gen):
    pred = rand(gen, 6, 5)
    target = (rand(gen, 6, 5) > 0.7).float()
    target[0, 0] = 1.0
    out = impl(name)(neg_pos_ub=3, pos_margin=0, neg_margin=0.1, hard_mining=True)(pred.clone(), target.clone())
    assert_reduced(out)
    assert torch.isfinite(out) and out >= 0
