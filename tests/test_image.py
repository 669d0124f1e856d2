"""Image-restoration family: parity with kornia, hand-derived values, identities, numerics."""
import math

import pytest
import torch
from kornia.losses import psnr_loss as kornia_psnr_loss, total_variation
from kornia.metrics import ssim as kornia_ssim

from helpers import assert_parity
from mmloss_ext.losses import image as I

EPS32 = torch.finfo(torch.float32).eps
SETTINGS = [('none', None), ('mean', None), ('sum', None), ('mean', 7.0)]
F64 = torch.float64


def images(gen, n=3, c=3, h=8, w=9, dtype=F64):
    return torch.rand(n, c, h, w, generator=gen, dtype=dtype)


def reduce_like_mmdet(loss, weight, reduction, avg):
    """mmdet's weight/avg_factor/reduction rule applied to a reference's per-item losses."""
    loss = loss * weight
    if reduction == 'none':
        return loss
    if avg is not None:
        return loss.sum() / (avg + EPS32)
    return loss.sum() if reduction == 'sum' else loss.mean()


# --- TVLoss -----------------------------------------------------------------------------------------

@pytest.mark.parametrize('reduction, avg', SETTINGS[1:])
def test_tv_parity_with_kornia(reduction, avg, gen):
    img = images(gen)
    weight = torch.rand(3, generator=gen, dtype=F64) + 0.5  # per image
    loss = I.TVLoss(loss_weight=0.5)
    # kornia's total_variation(reduction='sum') is (N, C): sum |dh| + sum |dw| per channel;
    # 'mean' divides the weighted total by N*C*H*W (not by the number of differences)
    per_image = lambda x: total_variation(x, reduction='sum').sum(1)
    numel = img[0].numel()
    ref = {'sum': lambda x, w: (per_image(x) * w).sum(),
           'mean': lambda x, w: (per_image(x) * w).sum() / (numel * 3 if avg is None else avg + EPS32)}[reduction]
    assert_parity(lambda x, w: loss(x, weight=w, avg_factor=avg, reduction_override=reduction),
                  lambda x, w: 0.5 * ref(x, w), img, weight)


def test_tv_hand_values_and_none_map():
    # 2x3 image [[0, 1, 3], [2, 2, 0]]:
    # |dh| = [2, 1, 3] (row 0; row 1 has none), |dw| = [1, 2] (row 0), [0, 2] (row 1)
    img = torch.tensor([[[[0.0, 1.0, 3.0], [2.0, 2.0, 0.0]]]], dtype=F64)
    expected_map = torch.tensor([[[[2 + 1, 1 + 2, 3 + 0], [0 + 0, 0 + 2, 0 + 0]]]], dtype=F64)
    torch.testing.assert_close(I.tv_loss(img, reduction='none'), expected_map)
    assert float(I.tv_loss(img, reduction='sum')) == 11.0
    assert float(I.tv_loss(img)) == pytest.approx(11.0 / 6)
    # a constant image has no variation, and neither does a 1x1 image
    assert float(I.tv_loss(torch.full((2, 3, 4, 4), 0.7))) == 0.0
    assert float(I.tv_loss(torch.rand(2, 3, 1, 1), reduction='sum')) == 0.0


# --- WeightedTVLoss ---------------------------------------------------------------------------------

def weighted_tv_reference(x, w):
    """The documented formula, written out: sum w |d| / sum w per direction, w taken at the first pixel of a difference."""
    dh, dw = (x[..., 1:, :] - x[..., :-1, :]).abs(), (x[..., :, 1:] - x[..., :, :-1]).abs()
    wh, ww = w[..., :-1, :], w[..., :, :-1]
    return (wh * dh).sum() / wh.sum() + (ww * dw).sum() / ww.sum()


def test_weighted_tv_values_and_gradients(gen):
    img, w = images(gen), images(gen) + 0.1
    assert_parity(lambda x, w: I.weighted_tv_loss(x, weight=w), weighted_tv_reference, img, w)
    # weight=None is mean |dh| + mean |dw| (the means over the H-1 rows / W-1 columns of differences)
    plain = (img[..., 1:, :] - img[..., :-1, :]).abs().mean() + (img[..., :, 1:] - img[..., :, :-1]).abs().mean()
    torch.testing.assert_close(I.weighted_tv_loss(img), plain)
    torch.testing.assert_close(I.weighted_tv_loss(img, weight=torch.ones_like(img)), plain)
    # the weight normalises: scaling it changes nothing; a (N, 1, H, W) weight broadcasts over channels
    torch.testing.assert_close(I.weighted_tv_loss(img, weight=w * 7.0), I.weighted_tv_loss(img, weight=w))
    torch.testing.assert_close(I.weighted_tv_loss(img, weight=w[:, :1]),
                               weighted_tv_reference(img, w[:, :1].expand_as(img)))


def test_weighted_tv_hand_value_and_reductions(gen):
    # image [[0, 1], [3, 1]]: |dh| = [3, 0] at row 0, |dw| = [1] at (0, 0) and [2] at (1, 0)
    # weight [[1, 0], [3, 1]]: dh direction (1*3 + 0*0) / (1 + 0) = 3; dw direction (1*1 + 3*2) / (1 + 3) = 7/4
    img = torch.tensor([[[[0.0, 1.0], [3.0, 1.0]]]], dtype=F64)
    w = torch.tensor([[[[1.0, 0.0], [3.0, 1.0]]]], dtype=F64)
    torch.testing.assert_close(I.weighted_tv_loss(img, weight=w), torch.tensor(4.75, dtype=F64))
    # 'none' is the map whose plain mean is that value; 'sum' = N*C*H*W * 'mean'; avg_factor divides the sum
    img, w = images(gen), images(gen) + 0.1
    mean = I.weighted_tv_loss(img, weight=w)
    none = I.weighted_tv_loss(img, weight=w, reduction='none')
    assert none.shape == img.shape
    torch.testing.assert_close(none.mean(), mean)
    torch.testing.assert_close(I.weighted_tv_loss(img, weight=w, reduction='sum'), mean * img.numel())
    torch.testing.assert_close(I.weighted_tv_loss(img, weight=w, avg_factor=5.0), none.sum() / (5.0 + EPS32))
    # an all-zero weight gives a zero loss with a zero gradient (the functional, not BaseLoss's shortcut)
    x = img.clone().requires_grad_()
    out = I.weighted_tv_loss(x, weight=torch.zeros_like(img))
    out.backward()
    assert float(out) == 0.0 and float(x.grad.abs().sum()) == 0.0


# --- PSNRLoss ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('reduction, avg', SETTINGS)
@pytest.mark.parametrize('max_val', [1.0, 255.0])
def test_psnr_parity_with_kornia(max_val, reduction, avg, gen):
    pred, target = images(gen) * max_val, images(gen) * max_val
    weight = torch.rand(3, generator=gen, dtype=F64) + 0.5
    loss = I.PSNRLoss(max_val=max_val, eps=0.0, loss_weight=2.0)
    # kornia's psnr_loss of one image at a time; eps=0 is kornia's definition exactly
    per_image = lambda p, t: torch.stack([kornia_psnr_loss(p[i:i + 1], t[i:i + 1], max_val) for i in range(len(p))])
    assert_parity(lambda p, t, w: loss(p, t, weight=w, avg_factor=avg, reduction_override=reduction),
                  lambda p, t, w: 2.0 * reduce_like_mmdet(per_image(p, t), w, reduction, avg), pred, target, weight)
    # the default eps shifts the value by 10 log10(1 + eps / MSE) only
    torch.testing.assert_close(I.PSNRLoss(max_val=max_val)(pred, target), loss(pred, target) / 2.0,
                               atol=1e-6, rtol=0)


def test_psnr_hand_values_and_to_y(gen):
    # MSE = 0.1^2 = 0.01 -> -PSNR = 10 log10(0.01) = -20; with max_val = 2: -20 - 20 log10(2)
    pred, target = torch.full((1, 3, 2, 2), 0.1, dtype=F64), torch.zeros(1, 3, 2, 2, dtype=F64)
    torch.testing.assert_close(I.psnr_loss(pred, target, eps=0.0), torch.tensor(-20.0, dtype=F64))
    torch.testing.assert_close(I.psnr_loss(pred, target, eps=0.0, max_val=2.0),
                               torch.tensor(-20.0 - 20 * math.log10(2.0), dtype=F64))
    # to_y on grey images (R = G = B = v): Y = v * (65.481 + 128.553 + 24.966) / 255 = v * 219/255, so the
    # MSE scales by (219/255)^2 and the loss shifts by 20 log10(219/255)
    grey_p = images(gen, c=1).expand(-1, 3, -1, -1)
    grey_t = images(gen, c=1).expand(-1, 3, -1, -1)
    torch.testing.assert_close(I.psnr_loss(grey_p, grey_t, eps=0.0, to_y=True, reduction='none'),
                               I.psnr_loss(grey_p, grey_t, eps=0.0, reduction='none') + 20 * math.log10(219 / 255))
    # to_y on colour images: the BT.601 luma written out, values and gradients
    pred, target = images(gen), images(gen)
    coeff = torch.tensor([65.481, 128.553, 24.966], dtype=F64).view(1, 3, 1, 1) / 255
    luma = lambda x: (x * coeff).sum(1, keepdim=True) + 16 / 255
    assert_parity(lambda p, t: I.psnr_loss(p, t, eps=0.0, to_y=True, reduction='none'),
                  lambda p, t: I.psnr_loss(luma(p), luma(t), eps=0.0, reduction='none'), pred, target)
    # identical images: finite, 10 log10(eps) - 0
    x = pred.clone().requires_grad_()
    out = I.psnr_loss(x, pred)
    out.backward()
    torch.testing.assert_close(out, torch.tensor(-80.0, dtype=F64))
    assert torch.isfinite(x.grad).all()


# --- SSIMLoss ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('reduction, avg', SETTINGS)
@pytest.mark.parametrize('window_size, max_val, padding, size',
                         [(11, 1.0, 'same', (12, 13)), (5, 2.0, 'same', (7, 6)), (7, 1.0, 'valid', (10, 9))])
def test_ssim_parity_with_kornia(window_size, max_val, padding, size, reduction, avg, gen):
    pred, target = images(gen, h=size[0], w=size[1]) * max_val, images(gen, h=size[0], w=size[1]) * max_val
    loss = I.SSIMLoss(window_size=window_size, max_val=max_val, padding=padding)  # kornia's sigma is 1.5
    ref_map = lambda p, t: 1.0 - kornia_ssim(p, t, window_size, max_val=max_val, padding=padding)
    weight = torch.rand(ref_map(pred, target).shape, generator=gen, dtype=F64) + 0.5
    assert_parity(lambda p, t, w: loss(p, t, weight=w, avg_factor=avg, reduction_override=reduction),
                  lambda p, t, w: reduce_like_mmdet(ref_map(p, t), w, reduction, avg), pred, target, weight)


def test_ssim_sigma_identity_and_tiny_images(gen):
    pred, target = images(gen), images(gen)
    # identical images: SSIM = 1 everywhere
    torch.testing.assert_close(I.ssim_loss(pred, pred, reduction='none'), torch.zeros_like(pred))
    # a larger sigma widens the window: different values (sigma is really used)
    assert not torch.allclose(I.ssim_loss(pred, target, sigma=3.0), I.ssim_loss(pred, target))
    # images smaller than the window (where F.pad's reflect fails) and single pixels: finite, with gradients
    for h, w in [(1, 1), (2, 3), (4, 4)]:
        p = images(gen, h=h, w=w).requires_grad_()
        t = images(gen, h=h, w=w)
        out = I.ssim_loss(p, t, reduction='none')
        assert out.shape == p.shape and torch.isfinite(out).all()
        out.sum().backward()
        assert torch.isfinite(p.grad).all()
    # 1x1: the local mean is the pixel and the variances are 0, so SSIM = (2xy + c1) / (x^2 + y^2 + c1)
    x, y, c1 = 0.3, 0.8, 0.01 ** 2
    got = I.ssim_loss(torch.full((1, 1, 1, 1), x, dtype=F64), torch.full((1, 1, 1, 1), y, dtype=F64))
    torch.testing.assert_close(got, torch.tensor(1 - (2 * x * y + c1) / (x * x + y * y + c1), dtype=F64))


# --- shared checks ----------------------------------------------------------------------------------

ALL = [('TVLoss', {}), ('WeightedTVLoss', {}), ('PSNRLoss', {}), ('PSNRLoss', {'to_y': True}), ('SSIMLoss', {}),
       ('SSIMLoss', {'padding': 'valid', 'window_size': 3})]


def call(name, cfg, x, y, **kw):
    loss = getattr(I, name)(**cfg)
    return loss(x, **kw) if not loss.takes_target else loss(x, y, **kw)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('name, cfg', ALL)
def test_half_precision(name, cfg, dtype, gen):
    pred, target = images(gen).to(dtype).requires_grad_(), images(gen).to(dtype)
    out = call(name, cfg, pred, target)
    assert out.dtype == dtype and torch.isfinite(out)
    out.backward()
    assert pred.grad.dtype == dtype and torch.isfinite(pred.grad).all()
    ref = call(name, cfg, pred.detach().float(), target.float())
    torch.testing.assert_close(out.float(), ref, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize('name, cfg', ALL)
def test_empty_batch(name, cfg, gen):
    for reduction in ('none', 'mean', 'sum'):
        pred, target = images(gen, n=0).requires_grad_(), images(gen, n=0)
        fn = getattr(I, name).loss_fn
        out = fn(pred, reduction=reduction, **cfg) if name.endswith('TVLoss') else \
            fn(pred, target, reduction=reduction, **cfg)
        if reduction != 'none':
            assert out.shape == () and float(out) == 0.0
        else:
            assert out.shape[0] == 0
        out.sum().backward()
        assert pred.grad.shape == pred.shape


@pytest.mark.parametrize('name', ['TVLoss', 'WeightedTVLoss', 'PSNRLoss', 'SSIMLoss'])
def test_bad_inputs_name_the_loss(name, gen):
    pred, target = images(gen), images(gen)
    with pytest.raises(ValueError, match=f'{name}.*pred.*4-D'):
        call(name, {}, pred[0], target[0])
    with pytest.raises(TypeError, match=f'{name}.*pred'):
        call(name, {}, pred.long(), target)
    with pytest.raises(ValueError, match=f'{name}.*weight'):
        call(name, {}, pred, target, weight=torch.ones(2, 3, dtype=F64))
    if name in ('PSNRLoss', 'SSIMLoss'):
        with pytest.raises(ValueError, match=f'{name}.*same shape'):
            call(name, {}, pred, target[..., :-1])
    if name.endswith('TVLoss'):
        with pytest.raises(TypeError, match=f'{name}.*target'):
            getattr(I, name)()(pred, target)


def test_bad_hyper_parameters_name_the_loss(gen):
    pred, target = images(gen), images(gen)
    with pytest.raises(ValueError, match='PSNRLoss.*3 \\(RGB\\) channels'):
        I.psnr_loss(pred[:, :1], target[:, :1], to_y=True)
    with pytest.raises(ValueError, match='PSNRLoss.*max_val'):
        I.PSNRLoss(max_val=0.0)(pred, target)
    with pytest.raises(ValueError, match='SSIMLoss.*window_size.*odd'):
        I.SSIMLoss(window_size=4)(pred, target)
    with pytest.raises(ValueError, match='SSIMLoss.*valid.*window_size=11'):
        I.SSIMLoss(padding='valid')(pred, target)
    with pytest.raises(ValueError, match="SSIMLoss.*padding.*'same', 'valid'"):
        I.SSIMLoss(padding='reflect')
    with pytest.raises(TypeError, match='SSIMLoss.*window_size'):
        I.SSIMLoss(window_size=11.0)
