"""Parity with mmdet 3.3 of the IoU-family losses mmdet also has, at three scales of boxes.

Values and gradients of ours against mmdet's own class (built through its registry) on the same
boxes, for IoULoss (three modes), GIoU, DIoU, CIoU, Extended-IoU, SIoU (both gammas) and
Bounded-IoU, in float64 and float32, eager and fused, at

* pixel scale: sizes 8-300 px in a 600 px image;
* normalised scale: ``[0, 1]`` coordinates, sizes 0.001-0.05 (YOLO- and DETR-style heads);
* 1e-3 px boxes: sizes 5e-4 to 2e-3, where ``eps = 1e-6`` is the size of an area.

3000 pairs each, the predictions jittered about the targets (IoU from 0 to near 1: CIoU's
trade-off both on and off). The boxes lie on a dyadic grid: their sizes, centres and offsets are
exact in float32 as in float64, so the two implementations differ only by the rounding of
products and quotients, never by the side of a kink (max, min, clamp) a rounded value falls on.
The tolerances are relative to the largest magnitude compared; the differences measured are
~1e-12 (float64) and ~3e-6 (float32), where ``eps`` in the wrong place gave up to 0.7 (IoU and
GIoU on 1e-3 px boxes) and 1e-3 relative (SIoU's gradients on normalised boxes).
"""
import functools
import math

import pytest
import torch

import mmloss_ext  # noqa: F401  (registers the losses)
from mmdet.structures.bbox import bbox_overlaps
from mmdet_losses import build_mmdet, build_ours
from mmloss_ext.kernels.common import ran_fused

PARITY = [('IoULoss', {'mode': 'log'}), ('IoULoss', {'mode': 'linear'}), ('IoULoss', {'mode': 'square'}),
          ('GIoULoss', {}), ('DIoULoss', {}), ('CIoULoss', {}), ('EIoULoss', {}), ('SIoULoss', {}),
          ('SIoULoss', {'neg_gamma': True}), ('BoundedIoULoss', {})]
FUSED = {'IoULoss', 'GIoULoss', 'DIoULoss', 'CIoULoss', 'EIoULoss', 'SIoULoss'}  # Bounded-IoU has no kernel

#: scale: (smallest size, largest size, span of the top-left corners, grid step)
SCALES = {'pixel': (8.0, 300.0, 600.0, 2.0 ** -6), 'normalised': (0.001, 0.05, 0.95, 2.0 ** -22),
          '1e-3px': (5e-4, 2e-3, 1.0, 2.0 ** -22)}
N = 3000

#: relative to the largest magnitude of what is compared (rounding only; see the module docstring)
RTOL = {torch.float64: 1e-10, torch.float32: 1e-5}


@functools.lru_cache(maxsize=None)
def scale_boxes(scale):
    """``(pred, target)`` float64 ``(N, 4)`` at ``scale``, on its grid (exact in float32 too)."""
    lo, hi, span, step = SCALES[scale]
    gen = torch.Generator().manual_seed(2024)
    xy = torch.rand(N, 2, generator=gen, dtype=torch.float64) * span
    wh = torch.rand(N, 2, generator=gen, dtype=torch.float64) * (hi - lo) + lo
    target = torch.cat([xy, xy + wh], -1)
    centre = xy + wh / 2 + 0.4 * torch.randn(N, 2, generator=gen, dtype=torch.float64) * wh
    pwh = wh * torch.exp(0.3 * torch.randn(N, 2, generator=gen, dtype=torch.float64))
    pred = torch.cat([centre - pwh / 2, centre + pwh / 2], -1)
    pred, target = (pred / step).round() * step, (target / step).round() * step
    # under 2^23 steps: coordinates and their sums (centres, offsets) are exact in float32
    assert (pred.abs() / step < 2 ** 23).all() and (target.abs() / step < 2 ** 23).all()
    return pred, target


def assert_matches(got, expected, dtype, what):
    rtol = RTOL[dtype]
    torch.testing.assert_close(got, expected, rtol=rtol, atol=rtol * float(expected.detach().abs().max()), msg=what)


def values_and_grads(loss, pred, target, **kwargs):
    """Per-box loss (``'none'``) and the gradient of its sum weighted by a non-uniform upstream."""
    x = pred.clone().requires_grad_()
    out = loss(x, target, reduction_override='none', **kwargs)
    upstream = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).view_as(out)
    (out * upstream).sum().backward()
    return out, x.grad


def _case_id(name, cfg):
    return name + ''.join(f'-{k}={v}' for k, v in cfg.items())


@pytest.mark.parametrize('scale', list(SCALES))
def test_the_boxes_cover_both_regimes(scale):
    pred, target = scale_boxes(scale)
    iou = bbox_overlaps(pred, target, is_aligned=True)
    assert (iou > 0.5).sum() > 300 and (iou < 0.5).sum() > 300  # CIoU's trade-off on and off
    assert (iou == 0).sum() > 10  # disjoint pairs: the enclosing-box terms alone pull them together
    wh = torch.cat([pred[:, 2:] - pred[:, :2], target[:, 2:] - target[:, :2]])
    lo, hi, _, _ = SCALES[scale]
    assert wh.min() > 0 and wh.max() < 3 * hi and float(wh.median()) > lo


@pytest.mark.parametrize('impl', ['eager', 'fused'])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=['float64', 'float32'])
@pytest.mark.parametrize('scale', list(SCALES))
@pytest.mark.parametrize('name,cfg', [c for c in PARITY], ids=[_case_id(*c) for c in PARITY])
def test_values_and_gradients_equal_mmdets(name, cfg, scale, dtype, impl):
    if impl == 'fused' and name not in FUSED:
        impl = 'eager'  # (a loss without a kernel: the eager run is its only path)
    pred, target = (b.to(dtype) for b in scale_boxes(scale))
    ref = build_mmdet(name, **cfg)
    assert type(ref).__module__.startswith('mmdet.')
    ours = build_ours(name, **cfg, **({'impl': impl} if name in FUSED else {}))
    v_ref, g_ref = values_and_grads(ref, pred, target)
    v_our, g_our = values_and_grads(ours, pred, target)
    if impl == 'fused':
        assert ran_fused(v_our), 'the fused kernel did not run (build it: python setup.py build_ext --inplace)'
    assert torch.isfinite(v_ref).all() and torch.isfinite(g_ref).all()  # mmdet is finite on all of these boxes
    assert v_our.dtype == v_ref.dtype and v_our.shape == v_ref.shape
    assert_matches(v_our, v_ref, dtype, f'{name} values')
    assert_matches(g_our, g_ref, dtype, f'{name} gradients')


# --- the small-box example, by hand --------------------------------------------------------------
#
# P = (0, 0, 1e-3, 1e-3), T = (0, 0, 1e-3, 2e-3): intersection = |P| = 1e-6, union = |T| = 2e-6.
# IoU and GIoU guard the union as bbox_overlaps does, max(union, 1e-6) = 2e-6: IoU = 1/2 exactly;
# T encloses P, so GIoU's penalty (|C| - union) / |C| is 0. DIoU adds eps as mmdet's diou_loss:
# IoU = 1e-6 / (2e-6 + 1e-6) = 1/3; centres 0.5e-3 apart, rho^2 = 2.5e-7; c^2 = 1e-6 + 4e-6 + 1e-6.

SMALL_P = torch.tensor([[0.0, 0.0, 1e-3, 1e-3]], dtype=torch.float64)
SMALL_T = torch.tensor([[0.0, 0.0, 1e-3, 2e-3]], dtype=torch.float64)
SMALL = [
    ('IoULoss', {'mode': 'linear'}, 0.5),
    ('IoULoss', {'mode': 'linear', 'eps': 0.0}, 0.5),  # IoULoss's eps floors the IoU; the union's is 1e-6
    ('IoULoss', {'mode': 'square'}, 0.75),
    ('IoULoss', {'mode': 'log'}, math.log(2.0)),
    ('GIoULoss', {}, 0.5),
    ('GIoULoss', {'eps': 0.0}, 0.5),
    ('DIoULoss', {}, 1 - 1 / 3 + 2.5e-7 / 6e-6),
]


@pytest.mark.parametrize('impl', ['eager', 'fused'])
@pytest.mark.parametrize('name,cfg,expected', SMALL, ids=[_case_id(n, c) for n, c, _ in SMALL])
def test_small_box_example_by_hand(name, cfg, expected, impl):
    got = build_ours(name, impl=impl, **cfg)(SMALL_P, SMALL_T)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(build_mmdet(name, **cfg)(SMALL_P, SMALL_T), got, rtol=1e-12, atol=0)


# --- degenerate boxes ----------------------------------------------------------------------------

#: pairs at the edges of the geometry (pixels), one per row; none inverted (an ``x2 < x1`` box has
#: zero area here and a negative one in mmdet: deliberately different, tests/test_adversarial.py)
DEGENERATE = torch.tensor([
    [[2.0, 3.0, 7.0, 9.0], [2.0, 3.0, 7.0, 9.0]],       # 0 identical
    [[4.0, 1.0, 4.0, 6.0], [4.0, 2.0, 4.0, 8.0]],       # 1 both of zero width, on one line
    [[1.0, 4.0, 6.0, 4.0], [0.0, 0.0, 8.0, 8.0]],       # 2 a zero-height prediction inside the target
    [[3.0, 3.0, 3.0, 3.0], [0.0, 0.0, 8.0, 8.0]],       # 3 a point inside the target
    [[3.0, 3.0, 3.0, 3.0], [3.0, 3.0, 3.0, 3.0]],       # 4 one point twice
    [[0.0, 0.0, 2.0, 2.0], [2.0, 0.0, 4.0, 2.0]],       # 5 touching edges
    [[0.0, 0.0, 2.0, 2.0], [1e4, 1e4, 1e4 + 3.0, 1e4 + 1.0]],  # 6 far apart
    [[1.0, 1.0, 2.0, 2.0], [0.0, 0.0, 8.0, 8.0]],       # 7 nested
    [[5.0, 0.0, 5.0, 4.0], [1.0, 1.0, 3.0, 3.0]],       # 8 a zero-width prediction beside the target
    [[0.0, 0.0, 1e-5, 2e-5], [-7e-7, -3e-7, 1e-5 - 7e-7, 2e-5 - 3e-7]],  # 9 1e-5 boxes, centres < eps apart:
], dtype=torch.float64)                                 #   SIoU's offsets d + eps (3e-7, 7e-7) are below eps

#: the rows where mmdet's own loss or gradient is not finite, left out of the comparison: SIoU's
#: width term |w_p - w_t| / max(w_p, w_t) is 0/0 when both widths are 0 (rows 1 and 4); ours
#: guards that denominator, max(., eps)
MMDET_NOT_FINITE = {'SIoULoss': [1, 4]}


@pytest.mark.parametrize('impl', ['eager', 'fused'])
@pytest.mark.parametrize('name,cfg', PARITY, ids=[_case_id(*c) for c in PARITY])
def test_degenerate_boxes_are_finite_and_equal_mmdets_where_it_is_finite(name, cfg, impl):
    pred, target = DEGENERATE[:, 0], DEGENERATE[:, 1]
    ours = build_ours(name, **cfg, **({'impl': impl} if name in FUSED else {}))
    v_our, g_our = values_and_grads(ours, pred, target)
    assert torch.isfinite(v_our).all() and torch.isfinite(g_our).all()
    v_ref, g_ref = values_and_grads(build_mmdet(name, **cfg), pred, target)
    finite = torch.isfinite(v_ref.reshape(len(pred), -1)).all(-1) & torch.isfinite(g_ref).all(-1)
    assert (~finite).nonzero().flatten().tolist() == MMDET_NOT_FINITE.get(name, [])
    assert_matches(v_our[finite], v_ref[finite], torch.float64, f'{name} values')
    assert_matches(g_our[finite], g_ref[finite], torch.float64, f'{name} gradients')


# --- the rule on our own losses ------------------------------------------------------------------

@pytest.mark.parametrize('name', ['GIoULoss', 'EfficientIoULoss', 'MPDIoULoss'])
def test_clamped_denominators_do_not_depend_on_eps_below_them(name):
    # every union, enclosing area, squared diagonal and squared side of these normalised boxes
    # exceeds 1e-9, so max(d, eps) is d for eps = 1e-9 and eps = 0 alike: the same values and
    # gradients, bit for bit (an added eps would change every value)
    pred, target = scale_boxes('normalised')
    (v1, g1), (v0, g0) = (values_and_grads(build_ours(name, eps=eps), pred, target) for eps in (1e-9, 0.0))
    assert torch.equal(v1, v0) and torch.equal(g1, g0)
