"""Regression family: parity with mmdet and torch, hand-derived values, numerics."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmdet.models import losses as mmdet_losses

from helpers import assert_parity
from mmloss_ext.losses import regression as R

SETTINGS = [dict(reduction='none'), dict(reduction='mean'), dict(reduction='sum'),
            dict(reduction='mean', avg_factor=7.0)]


def data(gen, n=32, dtype=torch.float64):
    pred = torch.randn(n, 4, generator=gen, dtype=dtype) * 2
    target = torch.randn(n, 4, generator=gen, dtype=dtype) * 2
    weight = torch.rand(n, 4, generator=gen, dtype=dtype)
    return pred, target, weight


@pytest.mark.parametrize('setting', SETTINGS)
@pytest.mark.parametrize('ours, theirs', [
    (R.L1Loss(loss_weight=1.5), mmdet_losses.L1Loss(loss_weight=1.5)),
    (R.MSELoss(loss_weight=0.5), mmdet_losses.MSELoss(loss_weight=0.5)),
    (R.SmoothL1Loss(beta=0.3), mmdet_losses.SmoothL1Loss(beta=0.3)),
    (R.SmoothL1Loss(beta=2.0, loss_weight=3.0), mmdet_losses.SmoothL1Loss(beta=2.0, loss_weight=3.0)),
    (R.BalancedL1Loss(), mmdet_losses.BalancedL1Loss()),
    (R.BalancedL1Loss(alpha=0.3, gamma=2.0, beta=0.7), mmdet_losses.BalancedL1Loss(alpha=0.3, gamma=2.0, beta=0.7)),
])
def test_parity_with_mmdet(ours, theirs, setting, gen):
    pred, target, weight = data(gen)
    red, avg = setting['reduction'], setting.get('avg_factor')

    def run(loss):
        return lambda p, t, w: loss(p, t, w, avg_factor=avg, reduction_override=red)

    assert_parity(run(ours), run(theirs), pred, target, weight)
    # per-sample (N, 1) weights, as mmdet heads pass them
    assert_parity(run(ours), run(theirs), pred, target, weight[:, :1])


@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
def test_parity_with_torch(reduction, gen):
    pred, target, _ = data(gen)
    cases = [
        (R.l1_loss, lambda p, t: F.l1_loss(p, t, reduction=reduction), {}),
        (R.mse_loss, lambda p, t: F.mse_loss(p, t, reduction=reduction), {}),
        (R.smooth_l1_loss, lambda p, t: F.smooth_l1_loss(p, t, reduction=reduction, beta=0.4), {'beta': 0.4}),
        (R.huber_loss, lambda p, t: F.huber_loss(p, t, reduction=reduction, delta=0.6), {'delta': 0.6}),
        (R.huber_loss, lambda p, t: F.huber_loss(p, t, reduction=reduction, delta=3.0), {'delta': 3.0}),
    ]
    for fn, ref, kw in cases:
        assert_parity(lambda p, t: fn(p, t, reduction=reduction, **kw), ref, pred, target)
    # SSE is torch's mse_loss with reduction='sum', and that is its default
    assert_parity(R.sse_loss, lambda p, t: F.mse_loss(p, t, reduction='sum'), pred, target)


def test_huber_is_delta_times_smooth_l1(gen):
    pred, target, weight = data(gen)
    for delta in (0.1, 1.0, 4.0):
        torch.testing.assert_close(R.huber_loss(pred, target, delta=delta, weight=weight),
                                   delta * R.smooth_l1_loss(pred, target, beta=delta, weight=weight))


def test_hand_derived_values():
    pred = torch.tensor([0.0, 1.0, -3.0, 0.5], dtype=torch.float64)
    target = torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    # residuals d = [0, 1, -4, 0.5]
    # RMSE: mean(d^2) = (0 + 1 + 16 + 0.25) / 4 = 4.3125, root taken after the mean
    torch.testing.assert_close(R.rmse_loss(pred, target, eps=0.0), torch.tensor(math.sqrt(4.3125), dtype=torch.float64))
    # 'sum' with weights [1,1,0,2]: 1 + 0 + 2*0.25 = 1.5 -> sqrt(1.5 + eps)
    w = torch.tensor([1.0, 1.0, 0.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(R.rmse_loss(pred, target, eps=0.25, weight=w, reduction='sum'),
                               torch.tensor(math.sqrt(1.75), dtype=torch.float64))
    # 'none' is the elementwise root sqrt(d^2 + eps) = |d| for eps = 0
    torch.testing.assert_close(R.rmse_loss(pred, target, eps=0.0, reduction='none'), (pred - target).abs())
    # log cosh from its definition, directly, for residuals where cosh does not overflow
    expected = torch.log(torch.cosh(pred - target))
    torch.testing.assert_close(R.log_cosh_loss(pred, target, reduction='none'), expected)
    # quantile q=0.25: e = target - pred = [0, -1, 4, -0.5]
    #   e >= 0 -> q*e ; e < 0 -> (q-1)*e  =>  [0, 0.75, 1.0, 0.375]
    torch.testing.assert_close(R.quantile_loss(pred, target, quantile=0.25, reduction='none'),
                               torch.tensor([0.0, 0.75, 1.0, 0.375], dtype=torch.float64))
    # Charbonnier with eps=9: sqrt(d^2 + 9) = [3, sqrt(10), 5, sqrt(9.25)]
    torch.testing.assert_close(R.charbonnier_loss(pred, target, eps=9.0, reduction='none'),
                               torch.tensor([3.0, math.sqrt(10), 5.0, math.sqrt(9.25)], dtype=torch.float64))
    # Balanced L1 at |d| = beta: both branches meet (continuity): alpha/b (b+1) ln(b+1) - alpha
    #   = gamma (b+1)/b - alpha = gamma + gamma/b - alpha (alpha ln(b+1) = gamma)
    alpha, gamma, b = 0.5, 1.5, math.exp(3.0) - 1
    at_beta = R.balanced_l1_loss(torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64))
    torch.testing.assert_close(at_beta, torch.tensor(gamma + gamma / b - alpha, dtype=torch.float64))


def test_quantile_half_is_half_l1(gen):
    pred, target, weight = data(gen)
    torch.testing.assert_close(R.quantile_loss(pred, target, quantile=0.5, weight=weight),
                               0.5 * R.l1_loss(pred, target, weight=weight))


def test_log_cosh_finite_for_huge_residuals():
    # cosh(1e4) overflows even float64; log cosh(d) = |d| - log 2 + O(e^{-2|d|}) there
    pred = torch.tensor([1e4, -1e4, 90.0, 0.0], requires_grad=True)
    loss = R.log_cosh_loss(pred, torch.zeros(4), reduction='none')
    torch.testing.assert_close(loss.detach(), torch.tensor([1e4 - math.log(2), 1e4 - math.log(2), 90 - math.log(2), 0.0]))
    loss.sum().backward()
    torch.testing.assert_close(pred.grad, torch.tanh(pred.detach()))  # d/dd log cosh d = tanh d


@pytest.mark.parametrize('beta', [0.0, 1e-12, 1e-6])
def test_smooth_l1_beta_to_zero_has_no_nan_gradient(beta):
    pred = torch.tensor([0.0, 1e-9, -2.0, 3.0], requires_grad=True)
    loss = R.smooth_l1_loss(pred, torch.zeros(4), beta=beta, reduction='sum')
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()
    torch.testing.assert_close(loss.detach(), R.l1_loss(pred.detach(), torch.zeros(4), reduction='sum'))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('name', R.__all__[10:])
def test_half_precision_is_computed_in_float32(name, dtype, gen):
    cls = getattr(R, name)
    pred, target, _ = data(gen, dtype=torch.float32)
    ref = cls()(pred, target)
    half = pred.to(dtype).requires_grad_()
    out = cls()(half, target.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out)
    out.backward()
    assert half.grad.dtype == dtype and torch.isfinite(half.grad).all()
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)


def test_bad_hyper_parameters_are_reported():
    with pytest.raises(ValueError, match=r'HuberLoss: `delta` expected a value in \(0.0, inf\), got -1'):
        R.huber_loss(torch.zeros(2), torch.zeros(2), delta=-1)
    with pytest.raises(ValueError, match='QuantileLoss: `quantile`'):
        R.QuantileLoss(quantile=1.5)(torch.zeros(2), torch.zeros(2))
    with pytest.raises(TypeError, match="SmoothL1Loss: `beta` expected a number, got str '1'"):
        R.SmoothL1Loss(beta='1')
    with pytest.raises(TypeError, match='L1Loss: `target` expected a floating-point tensor, got dtype torch.int64'):
        R.l1_loss(torch.zeros(2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r'MSELoss: `pred` and `target` expected the same shape, got \(2, 3\) and \(3, 2\)'):
        R.mse_loss(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r'L1Loss: `weight` expected shape \(2, 3\)'):
        R.l1_loss(torch.zeros(2, 3), torch.zeros(2, 3), weight=torch.ones(3, 2))
