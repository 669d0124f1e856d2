"""GaussianFocalLoss (CornerNet / CenterNet heatmaps): parity with mmdet (values and gradients in
float64, every reduction, weights, avg_factor, both forms), hand-derived values, the fused C++
kernel and the Triton kernel (under Triton's interpreter without a GPU) against the eager path,
empty input, probabilities of exactly 0 and 1, half precision and a CenterNet head end to end.
"""
import math

import mmdet.models.losses as mm
import pytest
import torch
from mmdet.models.losses.gaussian_focal_loss import gaussian_focal_loss_with_pos_inds

from helpers import FUSED_TOL, build, value_and_pred_grad
from mmloss_ext.kernels import backends, dispatch
from mmloss_ext.kernels.common import ran_fused
from mmloss_ext.core.abi import GAUSSIAN_FOCAL_EPS as EPS
from mmloss_ext.losses.classification.heatmap import GaussianFocalLoss, gaussian_focal_loss

F64 = torch.float64
#: (reduction_override, avg_factor) combinations every parity test runs through
REDUCTIONS = [('none', None), ('mean', None), ('mean', 7.5), ('sum', None)]
#: hyper-parameters: mmdet's defaults, and others (whole and fractional powers, zero weights)
HPARAMS = [dict(), dict(alpha=1.5, gamma=2.5, pos_weight=2.0, neg_weight=0.5), dict(alpha=3.0, gamma=1.0),
           dict(alpha=0.0, gamma=0.0), dict(alpha=1.0, gamma=5.0, pos_weight=0.0)]
IMPLS = ['eager', 'fused']

needs_ext = pytest.mark.skipif(backends.cpu_kernels() is None, reason='the fused C++ kernels are not built')


def heatmap(g, *shape, dtype=F64, peaks=0.05):
    """Probabilities in (0, 1) and a target in [0, 1) with about ``peaks`` of it exactly 1."""
    pred = torch.sigmoid(torch.randn(*shape, generator=g, dtype=F64) * 2)
    target = torch.rand(*shape, generator=g, dtype=F64) * 0.98
    target[torch.rand(*shape, generator=g) < peaks] = 1.0
    return pred.to(dtype), target.to(dtype)


def gaussian_heatmap(n, c, h, w, centres=3, gen=None, dtype=torch.float32):
    """A CenterNet-like target: a few Gaussians (sigma 2 px) per image, each exactly 1 at its
    centre, the element-wise max where they overlap."""
    gen = gen or torch.Generator().manual_seed(0)
    ys = torch.arange(h, dtype=torch.float64).view(h, 1)
    xs = torch.arange(w, dtype=torch.float64).view(1, w)
    target = torch.zeros(n, c, h, w, dtype=torch.float64)
    for i in range(n):
        for _ in range(centres):
            k = int(torch.randint(0, c, (1,), generator=gen))
            cy, cx = (int(v) for v in torch.randint(0, min(h, w), (2,), generator=gen))
            blob = torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * 2.0 ** 2))
            target[i, k] = torch.maximum(target[i, k], blob)
    return target.to(dtype)


@pytest.fixture
def g():
    return torch.Generator().manual_seed(0)


def assert_close_both(ours, ref, pred, *args, rtol=1e-10, atol=1e-12, **kw):
    """``ours`` and ``ref`` agree in value and in gradient w.r.t. ``pred``."""
    value, grad = value_and_pred_grad(ours, pred, *args, **kw)
    ref_value, ref_grad = value_and_pred_grad(ref, pred, *args, **kw)
    torch.testing.assert_close(value, ref_value, rtol=rtol, atol=atol)
    torch.testing.assert_close(grad, ref_grad, rtol=rtol, atol=atol)
    return value, grad


# --- parity with mmdet ------------------------------------------------------------------------------

@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('hp', HPARAMS, ids=lambda hp: ','.join(f'{k}={v}' for k, v in hp.items()) or 'defaults')
def test_matches_mmdet_in_float64(g, hp, impl):
    pred, target = heatmap(g, 3, 4, 9, 11, peaks=0.1)
    weights = [None, torch.rand(pred.shape, generator=g, dtype=F64),  # elementwise, and a per-class map
               torch.rand(1, 4, 1, 1, generator=g, dtype=F64) + 0.5]
    ours = build('GaussianFocalLoss', impl=impl, loss_weight=1.7, **hp)
    ref = mm.GaussianFocalLoss(loss_weight=1.7, **hp)
    for weight in weights:
        for reduction, avg in REDUCTIONS:
            assert_close_both(ours, ref, pred, target, weight=weight, avg_factor=avg, reduction_override=reduction)


def test_matches_mmdet_with_a_tensor_avg_factor_and_positional_arguments(g):
    """CenterNet passes ``avg_factor`` as a tensor; mmdet's forward takes pos_inds, pos_labels, weight
    positionally, in that order; the constructor takes mmdet's positional order."""
    pred, target = heatmap(g, 2, 3, 8, 8)
    weight = torch.rand(pred.shape, generator=g, dtype=F64)
    ours = GaussianFocalLoss(1.5, 3.0, 'sum', 2.0, 0.5, 1.5)
    assert (ours.alpha, ours.gamma, ours.reduction, ours.loss_weight, ours.pos_weight, ours.neg_weight) == (
        1.5, 3.0, 'sum', 2.0, 0.5, 1.5)
    ref = mm.GaussianFocalLoss(1.5, 3.0, 'sum', 2.0, 0.5, 1.5)
    assert_close_both(ours, ref, pred, target, None, None, weight)
    avg = torch.tensor(5.0)
    assert_close_both(ours, ref, pred, target, None, None, weight, avg, 'mean')


def positives(g, n, c, m):
    """``m`` positives: rows and classes, one of them listed twice (mmdet counts it twice)."""
    inds = torch.randint(0, n, (m,), generator=g)
    labels = torch.randint(0, c, (m,), generator=g)
    inds[-1], labels[-1] = inds[0], labels[0]
    return inds, labels


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('hp', HPARAMS[:3], ids=['defaults', 'hp1', 'hp2'])
def test_listed_positives_match_mmdet(g, hp, impl):
    """CenterNet-update's form: the positives are listed, the two parts reduced separately (each
    mean over its own count; avg_factor divides both sums)."""
    pred, target = heatmap(g, 300, 5)
    inds, labels = positives(g, 300, 5, 12)
    ours = build('GaussianFocalLoss', impl=impl, loss_weight=0.8, **hp)
    ref = mm.GaussianFocalLoss(loss_weight=0.8, **hp)
    for reduction, avg in (('mean', None), ('mean', 7.5), ('mean', torch.tensor(3.0)), ('sum', None)):
        assert_close_both(ours, ref, pred, target, inds, labels, avg_factor=avg, reduction_override=reduction)


@pytest.mark.parametrize('impl', IMPLS)
def test_listed_positives_none_is_the_map_whose_sum_is_mmdets_sum(g, impl):
    """mmdet's 'none' adds an (M, 1) tensor to an (N, C) one; here 'none' is pred's shape with each
    positive's loss added at its element (twice for a repeated one)."""
    pred, target = heatmap(g, 40, 3)
    inds, labels = positives(g, 40, 3, 5)
    loss = build('GaussianFocalLoss', impl=impl, pos_weight=2.0)
    none = loss(pred, target, inds, labels, reduction_override='none')
    assert none.shape == pred.shape
    expected = 1.0 * -(torch.log(1 - pred + EPS) * pred ** 2 * (1 - target) ** 4)
    for i, k in zip(inds.tolist(), labels.tolist()):
        expected[i, k] += 2.0 * -(torch.log(pred[i, k] + EPS) * (1 - pred[i, k]) ** 2)
    torch.testing.assert_close(none, expected, rtol=1e-12, atol=1e-14)
    ref = mm.GaussianFocalLoss(pos_weight=2.0)(pred, target, inds, labels, reduction_override='sum')
    torch.testing.assert_close(none.sum(), ref, rtol=1e-12, atol=1e-14)


def test_listed_positives_take_a_weight_elementwise(g):
    """mmdet drops ``weight`` in this form; here both parts take it at their elements."""
    pred, target = heatmap(g, 30, 4)
    inds, labels = positives(g, 30, 4, 6)
    weight = torch.rand(pred.shape, generator=g, dtype=F64)
    for impl in IMPLS:
        loss = build('GaussianFocalLoss', impl=impl)
        got = loss(pred, target, inds, labels, weight, reduction_override='sum')
        expected = (gaussian_focal_loss(pred, target, impl='eager', pos_weight=0.0, reduction='none') * weight).sum()
        expected = expected + (weight[inds, labels] * -(torch.log(pred[inds, labels] + EPS)
                                                         * (1 - pred[inds, labels]) ** 2)).sum()
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)
        none = loss(pred, target, inds, labels, weight, reduction_override='none')
        torch.testing.assert_close(none.sum(), got, rtol=1e-12, atol=1e-14)
        # a weight of ones is mmdet's (weightless) loss
        torch.testing.assert_close(loss(pred, target, inds, labels, torch.ones_like(pred)),
                                   mm.GaussianFocalLoss()(pred, target, inds, labels), rtol=1e-12, atol=1e-14)


def test_listed_positives_with_none_listed(g):
    """M = 0: mmdet's mean of an empty tensor is NaN; here the positives' part is 0."""
    pred, target = heatmap(g, 20, 3)
    empty = torch.zeros(0, dtype=torch.long)
    for impl in IMPLS:
        loss = build('GaussianFocalLoss', impl=impl)
        out = loss(pred, target, empty, empty)
        expected = mm.GaussianFocalLoss(pos_weight=0.0)(pred, target)  # the negatives' mean over N * C
        assert torch.isnan(gaussian_focal_loss_with_pos_inds(pred, target, empty, empty))
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(loss(pred, target, empty, empty, avg_factor=4.0),
                                   mm.GaussianFocalLoss()(pred, target, empty, empty, avg_factor=4.0))


def test_listed_positives_bad_input_names_the_argument(g):
    pred, target = heatmap(g, 10, 3)
    loss = build('GaussianFocalLoss')
    inds, labels = torch.tensor([1, 2]), torch.tensor([0, 2])
    with pytest.raises(ValueError, match='GaussianFocalLoss: `pos_labels` expected along with `pos_inds`, got None'):
        loss(pred, target, inds)
    with pytest.raises(ValueError, match='GaussianFocalLoss: `pos_inds` expected along with `pos_labels`'):
        loss(pred, target, None, labels)
    with pytest.raises(TypeError, match='GaussianFocalLoss: `pos_inds` expected an integer tensor'):
        loss(pred, target, inds.float(), labels)
    with pytest.raises(ValueError, match=r'GaussianFocalLoss: `pos_inds` and `pos_labels` expected the same shape '
                                         r'\(M,\), got \(2,\) and \(3,\)'):
        loss(pred, target, inds, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r'GaussianFocalLoss: `pos_inds` expected values in \[0, 9\], got values in '
                                         r'\[10, 10\]'):
        loss(pred, target, torch.tensor([1, 10]), labels)
    with pytest.raises(ValueError, match=r'GaussianFocalLoss: `pos_labels` expected values in \[0, 2\]'):
        loss(pred, target, inds, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r'GaussianFocalLoss: `pred` expected shape \(N, C\) with `pos_inds`, '
                                         r'got \(10, 3, 1\)'):
        loss(pred[..., None], target[..., None], inds, labels)
    with pytest.raises(ValueError, match='GaussianFocalLoss: `pred` and `pos_inds` expected to be on the same device'):
        loss(pred, target, inds.to('meta'), labels)


@pytest.mark.parametrize('key', ['alpha', 'gamma', 'pos_weight', 'neg_weight'])
def test_hyper_parameters_are_declared_non_negative(key):
    with pytest.raises(ValueError, match=rf'GaussianFocalLoss: `{key}` expected a value in \[0.0, inf\), got -0.5'):
        build('GaussianFocalLoss', **{key: -0.5})
    assert getattr(build('GaussianFocalLoss', **{key: 0.0}), key) == 0.0


def test_drop_in_for_mmdet_signatures():
    import inspect
    assert list(inspect.signature(GaussianFocalLoss).parameters)[:6] == list(
        inspect.signature(mm.GaussianFocalLoss).parameters)
    assert {k: p.default for k, p in inspect.signature(GaussianFocalLoss).parameters.items()
            if k != 'impl'} == {k: p.default for k, p in inspect.signature(mm.GaussianFocalLoss).parameters.items()}
    forward = list(inspect.signature(GaussianFocalLoss().forward).parameters)
    assert forward[:7] == list(inspect.signature(mm.GaussianFocalLoss().forward).parameters)


# --- hand-derived values ----------------------------------------------------------------------------

def test_hand_derived_values_and_gradients():
    # alpha = 2, gamma = 4:
    #   p = 0.5, t = 1 (positive): -log(0.5) 0.5^2 = ln(2) / 4;
    #       d/dp = -(1 - p)^2 / p + log(p) 2 (1 - p) = -0.5 - ln(2)
    #   p = 0.1, t = 0.5: -log(0.9) 0.1^2 0.5^4;  d/dp = 0.5^4 (0.1^2 / 0.9 - log(0.9) 2 0.1)
    #   p = 0.9, t = 0: -log(0.1) 0.81;  d/dp = 0.81 / 0.1 - log(0.1) 1.8
    #   p = 0, t = 1: -log(1e-12) = 12 ln(10);  d/dp = -1 / 1e-12 + log(1e-12) 2
    #   p = 1, t = 0: -log(1e-12) again;  d/dp = 1 / 1e-12 - log(1e-12) 2
    #   p = 1, t = 1 and p = 0, t = 0: 0, gradient 0 (each factor p^2 or (1 - p)^2 and its slope vanish)
    pred = torch.tensor([0.5, 0.1, 0.9, 0.0, 1.0, 1.0, 0.0], dtype=F64)
    target = torch.tensor([1.0, 0.5, 0.0, 1.0, 0.0, 1.0, 0.0], dtype=F64)
    ln = math.log
    expected = torch.tensor([ln(2) / 4, -ln(0.9) * 0.01 * 0.0625, -ln(0.1) * 0.81, 12 * ln(10), 12 * ln(10), 0, 0],
                            dtype=F64)
    expected_grad = torch.tensor([-0.5 - ln(2), 0.0625 * (0.01 / 0.9 - ln(0.9) * 0.2), 0.81 / 0.1 - ln(0.1) * 1.8,
                                  -1e12 + 2 * ln(1e-12), 1e12 - 2 * ln(1e-12), 0, 0], dtype=F64)
    for impl in IMPLS:
        value, grad = value_and_pred_grad(gaussian_focal_loss, pred, target, impl=impl, reduction='none')
        torch.testing.assert_close(value, expected, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-9)


def test_hand_derived_weights_and_reductions():
    # one positive at p = 0.5 (ln 2 / 4 each) and a negative p = 0.5, t = 0 (ln 2 / 4 too):
    # pos_weight 3, neg_weight 0.5 -> 3.5 ln 2 / 4; mean of 2: half of it; avg_factor 0.5: twice it
    # (eps = 1e-12 inside the logs moves them by ~3e-12 relative)
    pred = torch.tensor([[0.5, 0.5]], dtype=F64)
    target = torch.tensor([[1.0, 0.0]], dtype=F64)
    total = 3.5 * math.log(2) / 4
    for impl in IMPLS:
        kw = dict(impl=impl, pos_weight=3.0, neg_weight=0.5)
        assert math.isclose(gaussian_focal_loss(pred, target, reduction='sum', **kw), total, rel_tol=1e-10)
        assert math.isclose(gaussian_focal_loss(pred, target, **kw), total / 2, rel_tol=1e-10)
        assert math.isclose(gaussian_focal_loss(pred, target, avg_factor=0.5, **kw),
                            total / (0.5 + torch.finfo(torch.float32).eps), rel_tol=1e-10)
        # gamma = 0: the target 1 is a negative as well, (1 - 1)^0 = 1: ln 2 / 4 more, weighted 0.5
        assert math.isclose(gaussian_focal_loss(pred, target, reduction='sum', gamma=0.0, **kw),
                            total + 0.5 * math.log(2) / 4, rel_tol=1e-10)


# --- fused == eager ----------------------------------------------------------------------------------

def _fused_vs_eager(pred, target, *, tol, weight=None, reduction='mean', avg_factor=None, **hp):
    outs = []
    for impl in ('eager', 'fused'):
        x = pred.detach().clone().requires_grad_()
        out = gaussian_focal_loss(x, target, impl=impl, weight=weight, reduction=reduction, avg_factor=avg_factor,
                                  **hp)
        assert ran_fused(out) == (impl == 'fused')
        out.sum().backward()
        outs.append((out.detach(), x.grad))
    torch.testing.assert_close(outs[1][0], outs[0][0], **tol)
    torch.testing.assert_close(outs[1][1], outs[0][1], **tol)
    assert outs[1][0].dtype == pred.dtype and outs[1][1].dtype == pred.dtype
    return outs[1]


def _weights(g, shape, dtype):
    return {'none': None, 'full': torch.rand(shape, generator=g, dtype=F64).to(dtype),
            'row': torch.rand(shape[0], generator=g, dtype=F64).to(dtype),
            'broadcast': torch.rand(1, *shape[1:2], *[1] * (len(shape) - 2), generator=g, dtype=F64).to(dtype)}


@needs_ext
@pytest.mark.parametrize('reduction, avg', REDUCTIONS)
@pytest.mark.parametrize('dtype', [F64, torch.float32])
@pytest.mark.parametrize('hp', HPARAMS + [dict(alpha=2.5, gamma=8.0), dict(alpha=0.5, gamma=0.7)],
                         ids=lambda hp: ','.join(f'{k}={v}' for k, v in hp.items()) or 'defaults')
def test_fused_equals_eager(g, hp, dtype, reduction, avg):
    # 3 x 5 x 37 x 41 = 22755 elements: several kernel blocks, rows that are no multiple of a vector
    pred, target = heatmap(g, 3, 5, 37, 41, dtype=dtype)
    for kind, weight in _weights(g, pred.shape, dtype).items():
        _fused_vs_eager(pred, target, tol=FUSED_TOL[dtype], weight=weight, reduction=reduction, avg_factor=avg, **hp)


@needs_ext
@pytest.mark.parametrize('shape', [(1,), (7,), (17,), (5, 1), (33, 3), (2, 3, 5, 7), (1, 80, 16, 16)])
def test_fused_equals_eager_across_shapes(g, shape):
    """Tails shorter than a vector, a 1-D pred (its (N,) weight is elementwise), rows of one element."""
    pred, target = heatmap(g, *shape, peaks=0.3)
    for weight in _weights(g, shape, F64).values():
        for reduction in ('none', 'sum'):
            _fused_vs_eager(pred, target, tol=FUSED_TOL[F64], weight=weight, reduction=reduction)


@needs_ext
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_fused_half_precision(g, dtype):
    pred, target = heatmap(g, 2, 3, 19, 23, dtype=dtype)
    for reduction, avg in REDUCTIONS:
        out, grad = _fused_vs_eager(pred, target, tol=FUSED_TOL[dtype], reduction=reduction, avg_factor=avg)
        assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    # close to the float32 loss: computed in float32, only the inputs and the result are rounded
    ref = gaussian_focal_loss(pred.float(), target.float(), impl='fused')
    torch.testing.assert_close(gaussian_focal_loss(pred, target, impl='fused').float(), ref, rtol=1e-2, atol=1e-3)


@needs_ext
def test_fused_listed_positives_equal_eager(g):
    pred, target = heatmap(g, 500, 7, dtype=torch.float32)
    inds, labels = positives(g, 500, 7, 40)
    for reduction, avg in REDUCTIONS:
        outs = []
        for impl in IMPLS:
            x = pred.detach().clone().requires_grad_()
            out = gaussian_focal_loss(x, target, inds, labels, impl=impl, reduction=reduction, avg_factor=avg)
            out.sum().backward()
            outs.append((out.detach(), x.grad))
        torch.testing.assert_close(outs[1][0], outs[0][0], **FUSED_TOL[torch.float32])
        torch.testing.assert_close(outs[1][1], outs[0][1], **FUSED_TOL[torch.float32])


@needs_ext
def test_fused_total_does_not_depend_on_the_number_of_threads(g):
    pred, target = heatmap(g, 4, 8, 64, 64, dtype=torch.float32)
    threads = torch.get_num_threads()
    try:
        totals = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            totals.append(gaussian_focal_loss(pred, target, impl='fused', reduction='sum'))
    finally:
        torch.set_num_threads(threads)
    assert totals[0].item() == totals[1].item() == totals[2].item()


@needs_ext
def test_auto_takes_the_kernel_from_min_numel_and_not_for_a_target_gradient(g, monkeypatch):
    pred, target = heatmap(g, 2, 4, 32, 32, dtype=torch.float32)  # 8192 elements
    assert ran_fused(gaussian_focal_loss(pred.requires_grad_(), target))
    assert not ran_fused(gaussian_focal_loss(pred[:, :1, :8], target[:, :1, :8]))
    assert not ran_fused(gaussian_focal_loss(pred, target.requires_grad_(), impl='fused'))
    monkeypatch.setenv(dispatch.ENV_IMPL, 'eager')
    assert not ran_fused(gaussian_focal_loss(pred, target.detach()))


def test_target_gradient_matches_mmdet(g):
    """A target that requires grad runs eagerly, and its gradient is mmdet's."""
    pred, target = heatmap(g, 2, 3, 9, 9)
    for alpha, gamma in ((2.0, 4.0), (1.0, 2.5)):
        grads = []
        for fn in (lambda p, t: build('GaussianFocalLoss', alpha=alpha, gamma=gamma)(p, t),
                   lambda p, t: mm.GaussianFocalLoss(alpha=alpha, gamma=gamma)(p, t)):
            t = target.clone().requires_grad_()
            fn(pred, t).backward()
            grads.append(t.grad)
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)


# --- empty input and extreme probabilities ----------------------------------------------------------

@pytest.mark.parametrize('impl', IMPLS)
def test_empty_input(impl):
    for shape in ((0, 4, 8, 8), (2, 0, 8, 8), (0, 3)):
        for reduction in ('none', 'mean', 'sum'):
            x = torch.zeros(shape, requires_grad=True)
            out = gaussian_focal_loss(x, torch.zeros(shape), impl=impl, reduction=reduction)
            assert out.shape == (shape if reduction == 'none' else ())
            assert (out == 0).all()
            out.sum().backward()
            assert x.grad is not None and x.grad.shape == x.shape
    # through the module (its empty-input shortcut) and the listed form with an empty batch
    x = torch.zeros(0, 3, requires_grad=True)
    out = build('GaussianFocalLoss', impl=impl)(x, torch.zeros(0, 3), torch.zeros(0, dtype=torch.long),
                                                torch.zeros(0, dtype=torch.long), avg_factor=1.0)
    assert float(out.detach()) == 0.0
    out.backward()


EXTREMES = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.5, 1e-30, 1.0 - 2 ** -24])
EXTREME_TARGETS = torch.tensor([0.0, 0.0, 0.5, 0.5, 1.0, 1.0, 1.0, 0.0, 0.9])


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('dtype', [F64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize('hp', [dict(), dict(alpha=0.5, gamma=0.5), dict(alpha=1.0, gamma=1.0)],
                         ids=['defaults', 'fractional', 'ones'])
def test_probabilities_of_exactly_0_and_1_give_finite_values_and_gradients(impl, dtype, hp):
    pred = EXTREMES.to(dtype).repeat(3).requires_grad_()
    target = EXTREME_TARGETS.to(dtype).repeat(3)
    for reduction in ('none', 'mean', 'sum'):
        out = gaussian_focal_loss(pred, target, impl=impl, reduction=reduction, **hp)
        assert out.dtype == dtype and torch.isfinite(out).all(), out
        grad, = torch.autograd.grad(out.sum(), pred)
        assert grad.dtype == dtype and torch.isfinite(grad).all(), grad
    if dtype == F64:  # and mmdet's value (its gradient is not finite for 0 < alpha < 1 at p = 0 or 1)
        ref = mm.GaussianFocalLoss(**hp, reduction='none')(pred.detach(), target)
        torch.testing.assert_close(gaussian_focal_loss(pred.detach(), target, impl=impl, reduction='none', **hp), ref,
                                   rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('impl', IMPLS)
def test_float16_at_0_and_1(impl):
    """float16 computes in float32: mmdet's eps = 1e-12 underflows in float16, and its loss is inf.
    The gradient at a probability of exactly 0 (positive) or 1 (negative) is about -+1/eps = -+1e12,
    past float16's range: it comes back saturated at float16's largest finite value."""
    pred = EXTREMES.half().requires_grad_()
    target = EXTREME_TARGETS.half()
    out = gaussian_focal_loss(pred, target, impl=impl, reduction='sum')
    assert out.dtype == torch.float16 and torch.isfinite(out)
    pred32 = pred.detach().float().requires_grad_()
    ref = gaussian_focal_loss(pred32, target.float(), reduction='sum', impl='eager')
    torch.testing.assert_close(out.float(), ref, rtol=1e-3, atol=1e-3)
    out.backward()
    ref.backward()
    big = torch.finfo(torch.float16).max
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[3] == big and pred.grad[4] == -big  # p = 1, t = 0.5 (6.25e10) and p = 0, t = 1 (-1e12)
    torch.testing.assert_close(pred.grad.float(), pred32.grad.clamp(-big, big), rtol=1e-3, atol=1e-3)
    assert not torch.isfinite(mm.GaussianFocalLoss(reduction='sum')(pred.detach(), target))


@pytest.mark.parametrize('impl', IMPLS)
def test_nan_and_out_of_range_probabilities_propagate(impl):
    pred = torch.full((4, 3, 8, 8), 0.3)
    target = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    target[0, 0, 0, :2] = 1.0
    for bad in (float('nan'), -0.5, 1.5, math.inf, -math.inf):
        p = pred.clone()
        p[1, 2, 3, 4] = bad
        out = gaussian_focal_loss(p, target, impl=impl, reduction='none')
        assert not torch.isfinite(out[1, 2, 3, 4]) and torch.isfinite(out).sum() == out.numel() - 1
        assert not torch.isfinite(gaussian_focal_loss(p, target, impl=impl, reduction='sum'))


# --- the Triton kernel (compiled on CUDA, else under Triton's interpreter) --------------------------

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


#: (reduction, avg_factor, weight kind): every reduction and every weight shape, in few calls (the
#: interpreter is slow)
TRITON_COMBOS = [('none', None, 'none'), ('mean', None, 'none'), ('mean', 7.5, 'full'), ('sum', None, 'row'),
                 ('none', None, 'broadcast')]


@pytest.mark.parametrize('dtype, hp', [(F64, dict()), (F64, HPARAMS[1]), (F64, HPARAMS[4]),
                                       (F64, dict(alpha=0.5, gamma=0.7)), (torch.float32, dict())],
                         ids=['defaults', 'fractional', 'pos_weight0', 'below1', 'float32'])
def test_triton_equals_eager(g, hp, dtype, on_triton):
    pred, target = heatmap(g, 2, 3, 11, 13, dtype=dtype, peaks=0.1)
    weights = _weights(g, pred.shape, dtype)
    for reduction, avg, kind in TRITON_COMBOS:
        weight = None if weights[kind] is None else weights[kind].to(DEVICE)
        _fused_vs_eager(pred.to(DEVICE), target.to(DEVICE), tol=FUSED_TOL[dtype], weight=weight, reduction=reduction,
                        avg_factor=avg, **hp)
    assert {'heatmap_forward', 'heatmap_backward'} <= set(on_triton)


def test_triton_several_programs(g, on_triton):
    # 2 x 3 x 17 x 23 = 2346 elements: three programs, the last one masked, partial sums added up
    pred, target = heatmap(g, 2, 3, 17, 23, peaks=0.1)
    weight = torch.rand(2, generator=g, dtype=F64).to(DEVICE)
    for reduction in ('sum', 'none'):
        _fused_vs_eager(pred.to(DEVICE), target.to(DEVICE), tol=FUSED_TOL[F64], weight=weight, reduction=reduction)
    assert on_triton.count('heatmap_forward') == 2


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_triton_half_precision(g, dtype, on_triton):
    pred, target = heatmap(g, 2, 3, 11, 13, dtype=dtype)
    for reduction in ('mean', 'none'):
        _fused_vs_eager(pred.to(DEVICE), target.to(DEVICE), tol=FUSED_TOL[dtype], reduction=reduction)
    assert on_triton


def test_triton_extremes_empty_and_listed_positives(g, on_triton):
    pred = EXTREMES.to(DEVICE).repeat(2).view(2, -1)
    target = EXTREME_TARGETS.to(DEVICE).repeat(2).view(2, -1)
    for dtype in (F64, torch.float32):
        out, grad = _fused_vs_eager(pred.to(dtype), target.to(dtype), tol=FUSED_TOL[dtype], reduction='none')
        assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    x = torch.zeros(0, 5, device=DEVICE, requires_grad=True)
    for reduction in ('none', 'mean', 'sum'):
        out = gaussian_focal_loss(x, torch.zeros(0, 5, device=DEVICE), impl='fused', reduction=reduction)
        assert (out == 0).all()
        out.sum().backward()
    p, t = heatmap(g, 60, 5)
    inds, labels = positives(g, 60, 5, 7)
    p, t, inds, labels = p.to(DEVICE), t.to(DEVICE), inds.to(DEVICE), labels.to(DEVICE)
    assert_close_both(build('GaussianFocalLoss', impl='fused'), mm.GaussianFocalLoss(), p, t, inds, labels,
                      avg_factor=3.0)
    assert on_triton


# --- a CenterNet head end to end --------------------------------------------------------------------

def test_centernet_head_losses_match_mmdet():
    """mmdet's CenterNetHead with mmloss_ext's GaussianFocalLoss and L1Loss gives mmdet's losses and
    gradients (the head passes a tensor avg_factor, and an elementwise weight to the L1 losses)."""
    from mmdet.models.dense_heads import CenterNetHead
    from mmengine.structures import InstanceData

    torch.manual_seed(0)
    kw = dict(num_classes=4, in_channels=8, feat_channels=8)
    ours = CenterNetHead(**kw, loss_center_heatmap=dict(type='mmloss_ext.GaussianFocalLoss', loss_weight=1.0),
                         loss_wh=dict(type='mmloss_ext.L1Loss', loss_weight=0.1),
                         loss_offset=dict(type='mmloss_ext.L1Loss', loss_weight=1.0))
    ref = CenterNetHead(**kw)
    ref.load_state_dict(ours.state_dict())
    feat = torch.randn(2, 8, 32, 32)
    gts = [InstanceData(bboxes=torch.tensor([[10.0, 12.0, 60.0, 70.0], [80.0, 20.0, 120.0, 64.0]]),
                        labels=torch.tensor([1, 3])),
           InstanceData(bboxes=torch.tensor([[4.0, 4.0, 30.0, 50.0]]), labels=torch.tensor([0]))]
    metas = [dict(batch_input_shape=(128, 128), img_shape=(128, 128))] * 2
    results = []
    for head in (ours, ref):
        head.zero_grad()
        losses = head.loss_by_feat(*head.forward((feat,)), gts, metas)
        sum(losses.values()).backward()
        results.append((losses, [p.grad.clone() for p in head.parameters()]))
    assert ours.loss_center_heatmap.__class__.__module__.startswith('mmloss_ext')
    for key in results[1][0]:
        torch.testing.assert_close(results[0][0][key], results[1][0][key], rtol=1e-5, atol=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
