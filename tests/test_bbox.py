"""Box losses: mmdet parity, hand-derived values, identities between variants, numerics, Wise-IoU state.

Parity (values and gradients, float64, tol 1e-5) against mmdet's own classes for the seven losses
mmdet ships; the newer losses have no reference and are checked against values worked out by hand
and against the identities that tie them to their base variants.
"""
import copy
import math
import pickle

import pytest
import torch

import mmloss_ext  # noqa: F401  (registers the losses)
from helpers import gloo_ranks
from loss_cases.bbox import boxes, pair
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.structures.bbox import bbox_overlaps
from mmloss_ext.losses import _boxes
from mmloss_ext.losses.bbox import (alpha_iou_loss, efficient_iou_loss, focaler_iou_loss, inner_iou_loss,
                                    mpdiou_loss, nwd_loss, shape_iou_loss, wiou_loss)
from mmloss_ext.losses.bbox.modern import _EPS
from mmloss_ext.registry import MODELS

ALL = ['IoULoss', 'BoundedIoULoss', 'GIoULoss', 'DIoULoss', 'CIoULoss', 'EIoULoss', 'SIoULoss',
       'EfficientIoULoss', 'AlphaIoULoss', 'WIoULoss', 'MPDIoULoss', 'InnerIoULoss', 'FocalerIoULoss',
       'ShapeIoULoss', 'NWDLoss']
TOL = dict(rtol=1e-5, atol=1e-5)


def ours(name, **cfg):
    return MODELS.build(dict(type=f'mmloss_ext.{name}', **cfg))


def per_box(loss, name):
    """BoundedIoU is per coordinate: sum its 4 terms so every loss gives one value per box."""
    return loss.sum(-1) if name == 'BoundedIoULoss' else loss


def jittered(gen, n, dtype=torch.float64):
    """High-overlap pairs: the target's centre moved by ~20% of the size, its size scaled by ~e^0.2."""
    pred = boxes(n, dtype, gen)
    wh = pred[:, 2:] - pred[:, :2]
    centre = (pred[:, :2] + pred[:, 2:]) / 2 + 0.2 * torch.randn(n, 2, generator=gen, dtype=dtype) * wh
    twh = wh * torch.exp(0.2 * torch.randn(n, 2, generator=gen, dtype=dtype))
    return pred, torch.cat([centre - twh / 2, centre + twh / 2], dim=-1)


def parity_boxes(gen, n=16):
    """Disjoint or loosely overlapping pairs (IoU < 0.45) and high-overlap pairs (CIoU's alpha > 0)."""
    (p1, t1), (p2, t2) = pair(n, torch.float64, gen), jittered(gen, n)
    pred, target = torch.cat([p1, p2]), torch.cat([t1, t2])
    assert (bbox_overlaps(pred, target, is_aligned=True) > 0.5).sum() >= 4  # the parity sees both regimes
    return pred, target


# --- mmdet parity ---------------------------------------------------------------------------------

PARITY = [('IoULoss', {}), ('IoULoss', {'mode': 'linear'}), ('IoULoss', {'mode': 'square'}),
          ('IoULoss', {'linear': True}), ('IoULoss', {'eps': 0.01}),
          ('BoundedIoULoss', {}), ('BoundedIoULoss', {'beta': 0.5, 'eps': 0.01}),
          ('GIoULoss', {}), ('DIoULoss', {}), ('CIoULoss', {}),
          ('EIoULoss', {}), ('EIoULoss', {'smooth_point': 0.3}),
          ('SIoULoss', {}), ('SIoULoss', {'neg_gamma': True})]


@pytest.mark.filterwarnings('ignore:.*linear')
@pytest.mark.parametrize('weight_kind', ['none', 'per_box', 'per_coordinate'])
@pytest.mark.parametrize('name,cfg', PARITY)
def test_mmdet_parity_values_and_gradients(name, cfg, weight_kind, gen):
    pred, target = parity_boxes(gen)
    weight = {'none': None, 'per_box': torch.rand(len(pred), generator=gen, dtype=torch.float64) + 0.5,
              'per_coordinate': torch.rand(pred.shape, generator=gen, dtype=torch.float64) + 0.5}[weight_kind]
    ref_weight = weight
    if name == 'BoundedIoULoss' and weight_kind == 'per_box':
        ref_weight = weight[:, None]  # mmdet's bounded loss does not broadcast an (n,) weight itself
    ref_loss = MMDET_MODELS.build(dict(type=name, loss_weight=1.7, **cfg))
    assert type(ref_loss).__module__.startswith('mmdet.')
    our_loss = ours(name, loss_weight=1.7, **cfg)
    for reduction, avg_factor in [('none', None), ('mean', None), ('mean', 7.5), ('sum', None)]:
        p_ref, p_our = pred.clone().requires_grad_(), pred.clone().requires_grad_()
        expected = ref_loss(p_ref, target, weight=ref_weight, avg_factor=avg_factor, reduction_override=reduction)
        got = our_loss(p_our, target, weight=weight, avg_factor=avg_factor, reduction_override=reduction)
        torch.testing.assert_close(got, expected, **TOL)
        assert got.shape == expected.shape
        upstream = torch.linspace(0.5, 1.5, got.numel(), dtype=got.dtype).view_as(got)
        (expected * upstream).sum().backward()
        (got * upstream).sum().backward()
        torch.testing.assert_close(p_our.grad, p_ref.grad, **TOL)


# --- hand-derived values --------------------------------------------------------------------------
#
# One pair worked out on paper: pred P = (0, 0, 4, 2), target T = (2, 1, 5, 5).
#   sizes  P 4 x 2 (area 8), T 3 x 4 (area 12); intersection x [2, 4] * y [1, 2] = 2; union 18;
#   IoU = 1/9.  Enclosing box (0, 0, 5, 5): C_w = C_h = 5, area 25, diagonal^2 c^2 = 50.
#   Centres P (2, 1), T (3.5, 3): dx = 1.5, dy = 2, rho^2 = 6.25.
#   Corners: top-left (0,0)-(2,1): 5; bottom-right (4,2)-(5,5): 1 + 9 = 10.
P = torch.tensor([[0.0, 0.0, 4.0, 2.0]], dtype=torch.float64)
T = torch.tensor([[2.0, 1.0, 5.0, 5.0]], dtype=torch.float64)
IOU, RHO2_C2 = 1 / 9, 6.25 / 50

HAND = [
    # Efficient-IoU: 1 - IoU + rho^2/c^2 + (4 - 3)^2 / C_w^2 + (2 - 4)^2 / C_h^2
    (efficient_iou_loss, {}, 1 - IOU + RHO2_C2 + 1 / 25 + 4 / 25),
    # Focal-EIoU: IoU^0.5 times the above
    (efficient_iou_loss, {'focal_gamma': 0.5}, IOU ** 0.5 * (1 - IOU + RHO2_C2 + 1 / 25 + 4 / 25)),
    # Alpha-IoU: 1 - IoU^3; alpha-GIoU (alpha 2): + ((25 - 18) / 25)^2; alpha-CIoU: IoU < 0.5 -> only rho^2/c^2
    (alpha_iou_loss, {}, 1 - IOU ** 3),
    (alpha_iou_loss, {'alpha': 2.0, 'mode': 'giou'}, 1 - IOU ** 2 + (7 / 25) ** 2),
    (alpha_iou_loss, {'alpha': 2.0, 'mode': 'ciou'}, 1 - IOU ** 2 + RHO2_C2 ** 2),
    # Wise-IoU v1: exp(rho^2 / c^2) * (1 - IoU); v3 with running mean = 1 - IoU: beta = 1,
    # r = 1 / (3 * 1.9^(1 - 3)) = 1.9^2 / 3; v2 with running mean 4/9: sqrt((8/9) / (4/9)) = sqrt(2)
    (wiou_loss, {'version': 'v1'}, math.exp(RHO2_C2) * (1 - IOU)),
    (wiou_loss, {'running_mean': torch.tensor(8 / 9, dtype=torch.float64)},
     1.9 ** 2 / 3 * math.exp(RHO2_C2) * (1 - IOU)),
    (wiou_loss, {'running_mean': torch.tensor(4 / 9, dtype=torch.float64), 'version': 'v2'},
     2 ** 0.5 * math.exp(RHO2_C2) * (1 - IOU)),
    # MPDIoU: (5 + 10) / c^2 = 0.3, or / (10^2 + 20^2) with the image shape
    (mpdiou_loss, {}, 1 - IOU + 15 / 50),
    (mpdiou_loss, {'img_shape': (10, 20)}, 1 - IOU + 15 / 500),
    # Inner-IoU, ratio 1.5: P' = (-1, -0.5, 5, 2.5) (18), T' = (1.25, 0, 5.75, 6) (27), intersection
    # 3.75 * 2.5 = 9.375, union 35.625: IoU' = 5/19;  loss = (1 - IoU) + IoU - IoU'
    (inner_iou_loss, {'ratio': 1.5}, 1 - 5 / 19),
    # ... on GIoU: + (25 - 18) / 25
    (inner_iou_loss, {'ratio': 1.5, 'iou_mode': 'giou'}, 1 - 5 / 19 + 7 / 25),
    # Focaler-IoU, d = 0.05, u = 0.5: IoU^f = (1/9 - 0.05) / 0.45
    (focaler_iou_loss, {'d': 0.05, 'u': 0.5}, 1 - (IOU - 0.05) / 0.45),
    (focaler_iou_loss, {'d': 0.2, 'u': 0.5, 'iou_mode': 'diou'}, 1 + RHO2_C2),  # IoU < d: IoU^f = 0
    # Shape-IoU, scale 1: ww = 2*3/7, hh = 2*4/7; distance (hh dx^2 + ww dy^2) / c^2 = 6/50;
    # omega_w = hh * 1/4 = 2/7, omega_h = ww * 2/4 = 3/7
    (shape_iou_loss, {'scale': 1.0},
     1 - IOU + 6 / 50 + 0.5 * ((1 - math.exp(-2 / 7)) ** 4 + (1 - math.exp(-3 / 7)) ** 4)),
    # scale 0: ww = hh = 1, omega_w = 1/4, omega_h = 2/4
    (shape_iou_loss, {}, 1 - IOU + RHO2_C2 + 0.5 * ((1 - math.exp(-1 / 4)) ** 4 + (1 - math.exp(-1 / 2)) ** 4)),
    # NWD: W2^2 = rho^2 + ((4 - 3)^2 + (2 - 4)^2) / 4 = 7.5
    (nwd_loss, {'eps': 0.0}, 1 - math.exp(-math.sqrt(7.5) / 12.8)),
]


@pytest.mark.parametrize('fn,kwargs,expected', HAND, ids=[f'{f.__name__}-{i}' for i, (f, _, _) in enumerate(HAND)])
def test_hand_derived_values(fn, kwargs, expected):
    # exact up to float64 rounding: every denominator of this pair (2 and up) is far above eps,
    # and the guard max(d, eps) leaves it as it is
    got = fn(P, T, **kwargs)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_ciou_tradeoff_is_active_above_half_iou():
    # P = (0, 0, 2, 2), T = (0, 0, 2, 1.5): IoU 0.75, centres 0.25 apart in y, c^2 = 8;
    # v = 4/pi^2 (atan(2/1.5) - atan(1))^2, alpha = v / (1 - 0.75 + v)
    p, t = torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[0.0, 0.0, 2.0, 1.5]])
    v = 4 / math.pi ** 2 * (math.atan(2 / 1.5) - math.atan(1.0)) ** 2
    expected = 1 - 0.75 + 0.0625 / 8 + v / (0.25 + v) * v
    torch.testing.assert_close(ours('CIoULoss', eps=0.0)(p, t), torch.tensor(expected), rtol=1e-6, atol=1e-6)


# --- identities -----------------------------------------------------------------------------------

BASES = {'iou': ('IoULoss', {'mode': 'linear'}), 'giou': ('GIoULoss', {}), 'diou': ('DIoULoss', {}),
         'ciou': ('CIoULoss', {}), 'eiou': ('EfficientIoULoss', {}), 'siou': ('SIoULoss', {'neg_gamma': True})}
COMPOSED = {'FocalerIoULoss': {'d': 0.0, 'u': 1.0}, 'InnerIoULoss': {'ratio': 1.0}, 'AlphaIoULoss': {'alpha': 1.0}}


@pytest.mark.parametrize('iou_mode', list(BASES))
@pytest.mark.parametrize('composed', list(COMPOSED))
def test_composed_loss_reduces_to_its_base_variant(composed, iou_mode, gen):
    """Focaler d=0,u=1, Inner ratio=1 and Alpha alpha=1 are the plain variant (values and grads)."""
    pred, target = parity_boxes(gen)
    mode_key = 'mode' if composed == 'AlphaIoULoss' else 'iou_mode'
    base_name, base_cfg = BASES[iou_mode]
    p1, p2 = pred.clone().requires_grad_(), pred.clone().requires_grad_()
    got = ours(composed, **COMPOSED[composed], **{mode_key: iou_mode})(p1, target, reduction_override='none')
    expected = ours(base_name, **base_cfg)(p2, target, reduction_override='none')
    torch.testing.assert_close(got, expected, **TOL)
    got.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(p1.grad, p2.grad, **TOL)


def test_composed_losses_differ_from_base_off_identity(gen):
    pred, target = parity_boxes(gen)
    for composed, cfg in [('FocalerIoULoss', {'d': 0.1, 'u': 0.8}), ('InnerIoULoss', {'ratio': 0.75}),
                          ('AlphaIoULoss', {'alpha': 3.0, 'mode': 'iou'})]:
        got = ours(composed, **cfg)(pred, target, reduction_override='none')
        base = ours('IoULoss', mode='linear', eps=_EPS)(pred, target, reduction_override='none')
        assert (got - base).abs().max() > 1e-2, composed


def test_focal_eiou_is_iou_power_times_eiou_with_detached_weight(gen):
    pred, target = parity_boxes(gen)
    iou = bbox_overlaps(pred, target, is_aligned=True, eps=1e-7)
    p0, p1 = pred.clone().requires_grad_(), pred.clone().requires_grad_()
    plain = efficient_iou_loss(p0, target, reduction='none')
    focal = efficient_iou_loss(p1, target, focal_gamma=0.5, reduction='none')
    torch.testing.assert_close(focal, iou ** 0.5 * plain, **TOL)
    plain.sum().backward()
    focal.sum().backward()
    # the weight IoU^gamma carries no gradient: d focal = IoU^gamma * d plain, box by box
    torch.testing.assert_close(p1.grad, iou[:, None] ** 0.5 * p0.grad, **TOL)


def test_nwd_of_identical_boxes_is_zero_with_zero_gradient(gen):
    pred = boxes(8, torch.float64, gen).requires_grad_()
    loss = nwd_loss(pred, pred.detach(), reduction='none')
    assert float(loss.abs().max()) == 0.0
    loss.sum().backward()
    assert float(pred.grad.abs().max()) == 0.0


def test_giou_equals_iou_for_nested_boxes_and_diou_for_concentric():
    # T contains P: the enclosing box is T, GIoU's penalty (|C| - |U|)/|C| is 0; concentric: rho = 0
    p, t = torch.tensor([[1.0, 1.0, 3.0, 3.0]]), torch.tensor([[0.0, 0.0, 4.0, 4.0]])  # IoU 4/16
    for name in ('GIoULoss', 'DIoULoss'):
        torch.testing.assert_close(ours(name, eps=0.0)(p, t), torch.tensor(0.75))


# --- numerics, per loss ---------------------------------------------------------------------------

def _degenerate(kind, dtype=torch.float32):
    f = lambda rows: torch.tensor(rows, dtype=dtype)  # noqa: E731
    if kind == 'zero_size':  # zero width and/or height, including identical zero-area boxes
        return (f([[0, 0, 0, 2], [1, 1, 3, 1], [0, 0, 0, 0], [2, 2, 2, 2], [0, 0, 0, 2], [5, 5, 5, 5]]),
                f([[0, 0, 0, 2], [1, 1, 4, 1], [1, 1, 1, 1], [0, 0, 3, 3], [1, 0, 1, 2], [5, 5, 5, 5]]))
    if kind == 'inverted':  # an untrained head's x2 < x1 / y2 < y1, one exactly at -eps
        return (f([[3, 0, 1, 2], [0, 3, 2, 1], [4, 4, 0, 0], [1, 1, 1 - 1e-6, 1 - 1e-6], [2, 2, 1.5, 3]]),
                f([[0, 0, 2, 2], [0, 0, 2, 2], [1, 1, 3, 3], [0, 0, 2, 2], [2, 2, 1.5, 3]]))
    if kind == 'far':  # 1e4 px apart
        return f([[0, 0, 10, 10], [0, 0, 1, 30]]), f([[1e4, 1e4, 1e4 + 20, 1e4 + 5], [-1e4, 5, -1e4 + 3, 9]])
    if kind == 'tiny':  # 1e-9 px boxes (near the origin, where float32 resolves them): identical, shifted, nested
        return (f([[0, 0, 1e-9, 1e-9], [0, 0, 1e-9, 1e-9], [1e-9, 1e-9, 2e-9, 3e-9]]),
                f([[0, 0, 1e-9, 1e-9], [1e-9, 0, 2e-9, 1e-9], [0, 0, 4e-9, 4e-9]]))
    raise KeyError(kind)


@pytest.mark.parametrize('kind', ['zero_size', 'inverted', 'far', 'tiny'])
@pytest.mark.parametrize('name', ALL)
def test_finite_loss_and_gradient_on_degenerate_boxes(name, kind):
    pred, target = _degenerate(kind)
    pred.requires_grad_()
    loss = ours(name)(pred, target, reduction_override='none')
    assert torch.isfinite(loss).all(), loss
    loss.sum().backward()
    assert torch.isfinite(pred.grad).all(), pred.grad


@pytest.mark.parametrize('name', ALL)
def test_identical_boxes_give_the_minimum(name, gen):
    """Every loss is >= 0 and (up to eps) 0 for identical boxes, with a finite gradient there."""
    pred, target = jittered(gen, 16, torch.float32)
    loss = ours(name).eval()
    assert float(loss(pred, target, reduction_override='none').min()) >= -1e-6
    same = target.clone().requires_grad_()
    at_min = loss(same, target, reduction_override='none')
    assert float(at_min.abs().max()) < 1e-4, at_min
    at_min.sum().backward()
    assert torch.isfinite(same.grad).all()


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('name', ALL)
def test_half_inputs_are_computed_in_float32(name, dtype, gen):
    pred, target = jittered(gen, 16, torch.float32)
    pred, target = pred.to(dtype).requires_grad_(), target.to(dtype)
    loss = ours(name).eval()  # eval: WIoU's running mean stays put between the two calls
    out = loss(pred, target, reduction_override='none')
    assert out.dtype == dtype and torch.isfinite(out).all()
    reference = loss(pred.detach().float(), target.float(), reduction_override='none').to(dtype)
    torch.testing.assert_close(out, reference, rtol=0, atol=0)
    out.sum().backward()
    assert pred.grad.dtype == dtype and torch.isfinite(pred.grad).all()


@pytest.mark.parametrize('name', ALL)
def test_translation_invariance(name, gen):
    pred, target = parity_boxes(gen)
    shift = torch.tensor([7.25, -41.5, 7.25, -41.5], dtype=torch.float64)
    loss = ours(name).eval()
    torch.testing.assert_close(loss(pred + shift, target + shift, reduction_override='none'),
                               loss(pred, target, reduction_override='none'), **TOL)


def test_general_batch_shape_and_weight_rules(gen):
    pred, target = parity_boxes(gen)
    w = torch.rand(pred.shape, generator=gen, dtype=torch.float64) + 0.5
    flat = ours('GIoULoss')(pred, target, weight=w, reduction_override='none')
    batched = ours('GIoULoss')(pred.view(4, 8, 4), target.view(4, 8, 4), weight=w.view(4, 8, 4),
                               reduction_override='none')
    torch.testing.assert_close(batched, flat.view(4, 8))
    torch.testing.assert_close(flat, ours('GIoULoss')(pred, target, reduction_override='none') * w.mean(-1))
    bounded = ours('BoundedIoULoss')(pred, target, weight=w[:, 0], reduction_override='none')
    torch.testing.assert_close(bounded, ours('BoundedIoULoss')(pred, target, reduction_override='none') * w[:, :1])


@pytest.mark.parametrize('name', ALL)
def test_bad_input_names_the_loss(name):
    good = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match=f'{name}.*pred.*\\(N, 4\\)'):
        ours(name)(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(TypeError, match=f'{name}.*target'):
        ours(name)(good, torch.ones(1, 4, dtype=torch.long))


@pytest.mark.parametrize('name,cfg,match', [
    ('IoULoss', {'mode': 'cube'}, 'mode'), ('AlphaIoULoss', {'mode': 'xiou'}, 'mode'),
    ('InnerIoULoss', {'iou_mode': 'xiou'}, 'iou_mode'), ('FocalerIoULoss', {'iou_mode': 'xiou'}, 'iou_mode'),
    ('WIoULoss', {'version': 'v4'}, 'version')])
def test_bad_choice_is_rejected_at_build(name, cfg, match):
    with pytest.raises(ValueError, match=f'{name}.*{match}'):
        ours(name, **cfg)


@pytest.mark.parametrize('name,cfg,match', [
    ('GIoULoss', {'eps': -1.0}, 'eps'), ('BoundedIoULoss', {'beta': 0.0}, 'beta'),
    ('EIoULoss', {'smooth_point': 0.0}, 'smooth_point'), ('EfficientIoULoss', {'focal_gamma': -0.5}, 'focal_gamma'),
    ('AlphaIoULoss', {'alpha': 0.0}, 'alpha'), ('WIoULoss', {'momentum': 1.5}, 'momentum'),
    ('MPDIoULoss', {'img_shape': (0, 10)}, 'img_shape'), ('InnerIoULoss', {'ratio': 0.0}, 'ratio'),
    ('FocalerIoULoss', {'d': 0.5, 'u': 0.5}, 'd < u'), ('FocalerIoULoss', {'u': 1.5}, 'u'),
    ('ShapeIoULoss', {'scale': -1.0}, 'scale'), ('NWDLoss', {'constant': 0.0}, 'constant')])
def test_bad_range_is_rejected_at_build(name, cfg, match):
    with pytest.raises(ValueError, match=f'{name}.*{match}'):
        ours(name, **cfg)


@pytest.mark.parametrize('fn,kwargs,match', [
    (focaler_iou_loss, {'d': 0.6, 'u': 0.5}, 'd < u'), (mpdiou_loss, {'img_shape': (10,)}, 'img_shape'),
    (alpha_iou_loss, {'alpha': 0.0}, 'alpha'), (inner_iou_loss, {'ratio': -1.0}, 'ratio'),
    (wiou_loss, {'running_mean': torch.ones(3)}, 'running_mean')])
def test_bad_hyper_parameter_values(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(P, T, **kwargs)


def test_iou_loss_linear_alias_warns_and_equals_linear_mode(gen):
    pred, target = parity_boxes(gen)
    with pytest.warns(DeprecationWarning, match='linear'):
        alias = ours('IoULoss', linear=True)
    torch.testing.assert_close(alias(pred, target), ours('IoULoss', mode='linear')(pred, target))


def test_case_generator_keeps_ciou_tradeoff_off(gen):
    """The contract gradcheck of CIoU relies on pair() giving IoU < 0.5 (detached alpha = 0)."""
    pred, target = pair(512, torch.float64, gen)
    assert float(bbox_overlaps(pred, target, is_aligned=True).max()) < 0.45


# --- Wise-IoU running mean ------------------------------------------------------------------------

def _loss_iou(pred, target):
    return 1 - bbox_overlaps(pred, target, is_aligned=True, eps=_EPS)


def test_wiou_running_mean_updates_in_training_only(gen):
    pred, target = parity_boxes(gen)
    loss = ours('WIoULoss', momentum=0.1)
    assert 'iou_mean' in loss.state_dict() and float(loss.iou_mean) == 1.0  # the authors' initial value
    out = loss(pred, target, reduction_override='none')
    updated = 0.9 * 1.0 + 0.1 * float(_loss_iou(pred, target).mean())
    assert float(loss.iou_mean) == pytest.approx(updated, rel=1e-6)
    # the updated mean is the one used (update first, then normalise, as the authors' code)
    expected = wiou_loss(pred, target, torch.tensor(updated, dtype=torch.float64), reduction='none')
    torch.testing.assert_close(out, expected, **TOL)
    loss.eval()
    loss(pred[:5], target[:5])
    assert float(loss.iou_mean) == pytest.approx(updated, rel=1e-6)
    # v1 never reads the mean, and so never updates it
    v1 = ours('WIoULoss', version='v1')
    v1(pred, target)
    assert float(v1.iou_mean) == 1.0


def test_wiou_without_running_mean_uses_the_batch_mean(gen):
    pred, target = parity_boxes(gen)
    mean = _loss_iou(pred, target).mean()
    torch.testing.assert_close(wiou_loss(pred, target, reduction='none'),
                               wiou_loss(pred, target, mean.clone(), reduction='none'), **TOL)


def test_wiou_state_survives_state_dict_deepcopy_and_pickle(gen):
    pred, target = parity_boxes(gen)
    loss = ours('WIoULoss', version='v2')
    loss(pred, target)
    loss(pred[:7], target[:7])
    loss.eval()
    ref = loss(pred, target)
    fresh = ours('WIoULoss', version='v2').eval()
    assert not torch.allclose(fresh(pred, target), ref)
    fresh.load_state_dict(loss.state_dict())
    for clone in (fresh, copy.deepcopy(loss), pickle.loads(pickle.dumps(loss))):
        assert float(clone.iou_mean) == float(loss.iou_mean)
        torch.testing.assert_close(clone(pred, target), ref)


def test_wiou_focusing_is_not_monotonic_in_v3(gen):
    """v3's gain r(beta) = beta / (delta alpha^(beta - delta)) peaks at beta = 1/ln(alpha) and then decays."""
    p = torch.tensor([[0.0, 0.0, 2.0, 2.0]], dtype=torch.float64)
    t = torch.tensor([[0.0, 0.0, 2.0, 1.0]], dtype=torch.float64)  # L_IoU = 0.5, v1 = exp(1/32) / 2
    v1 = math.exp(0.25 / 8) * 0.5
    for beta in (0.5, 1 / math.log(1.9), 4.0, 12.0):
        got = wiou_loss(p, t, torch.tensor(0.5 / beta, dtype=torch.float64))
        assert float(got) == pytest.approx(beta / (3.0 * 1.9 ** (beta - 3.0)) * v1, rel=1e-12)  # max(d, eps): exact
    r = [float(wiou_loss(p, t, torch.tensor(0.5 / b, dtype=torch.float64))) for b in (1.0, 1 / math.log(1.9), 4.0)]
    assert r[1] > r[0] and r[1] > r[2]


def _wiou_rank(rank):
    gen = torch.Generator().manual_seed(rank)
    # rank 1 has no boxes and rank 3 only zero weights: BaseLoss answers both without the
    # functional, yet they must join the all-reduce (else the others hang), counting nothing
    n = [5, 0, 11, 4][rank]
    pred, target = jittered(gen, n)
    weight = torch.zeros(n, dtype=pred.dtype) if rank == 3 else None
    loss = MODELS.build(dict(type='mmloss_ext.WIoULoss', momentum=0.5)).double()
    loss(pred, target, weight=weight)
    counted = (0.0, 0) if rank == 3 else (float(_loss_iou(pred, target).sum()), n)
    return (float(loss.iou_mean), *counted)


def test_wiou_running_mean_is_averaged_across_ranks():
    world = 4
    results = dict(enumerate(gloo_ranks(_wiou_rank, world)))
    total = sum(r[1] for r in results.values()) / sum(r[2] for r in results.values())
    for rank in range(world):  # every rank holds the same mean: 0.5 * 1 + 0.5 * (mean over counted boxes)
        assert results[rank][0] == pytest.approx(0.5 + 0.5 * total, rel=1e-12)  # both guard as bbox_overlaps


def test_box_pair_is_computed_once():
    g = _boxes.BoxPair(P, T, eps=0.0)
    assert g.iou is g.iou and g.enclose_diag2 is g.enclose_diag2
    assert float(g.iou) == pytest.approx(IOU) and float(g.enclose_area) == 25.0


def test_wiou_running_mean_ignores_zero_weight_boxes():
    """A dense head passes every anchor with zero weight on the negatives (reg_decoded_bbox=True):
    only the weighted boxes may move Wise-IoU's running mean (found in the shapes RetinaNet run)."""
    from mmloss_ext.losses import WIoULoss
    gen = torch.Generator().manual_seed(0)
    pos_pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 4.0]], dtype=torch.float64)
    pos_target = torch.tensor([[0.0, 0.0, 2.0, 1.0], [1.0, 1.0, 3.0, 3.0]], dtype=torch.float64)
    negatives = torch.rand(6, 4, generator=gen, dtype=torch.float64) * 10
    pred = torch.cat([pos_pred, negatives])
    target = torch.cat([pos_target, torch.zeros(6, 4, dtype=torch.float64)])  # all-zero targets
    weight = torch.cat([torch.ones(2), torch.zeros(6)]).double()
    alone, padded = WIoULoss(momentum=0.5).double(), WIoULoss(momentum=0.5).double()
    alone(pos_pred, pos_target)
    padded(pred, target, weight)
    # 1 - IoU of the two positives: 1 - 2/4 = 0.5 and 1 - 4/6 = 1/3 -> batch mean 5/12;
    # running mean 0.5 * 1 + 0.5 * 5/12
    torch.testing.assert_close(padded.iou_mean, torch.tensor(0.5 + 0.5 * 5 / 12, dtype=torch.float64))
    torch.testing.assert_close(padded.iou_mean, alone.iou_mean)
    # and the loss of the positives is the same with or without the zero-weight padding
    a = WIoULoss().double().eval()
    torch.testing.assert_close(a(pred, target, weight, reduction_override='sum'),
                               a(pos_pred, pos_target, reduction_override='sum'))
