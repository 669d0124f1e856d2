r"""Image-restoration losses on :math:`(N, C, H, W)` images: total variation, PSNR, SSIM.

Half-precision inputs are computed in float32 and the loss is returned in the input dtype.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.errors import LossValueError
from ..core.hparams import NON_NEGATIVE, ODD_POSITIVE_INT, POSITIVE, Choice, declare
from ..core.inputs import check_ndim, check_same_device, check_same_shape, check_tensor, upcast
from ..core.reduction import AvgFactor, adapt_weight, weight_reduce_loss
from ..registry import register_loss
from .base import BaseLoss

__all__ = [
    'tv_loss', 'weighted_tv_loss', 'psnr_loss', 'ssim_loss',
    'TVLoss', 'WeightedTVLoss', 'PSNRLoss', 'SSIMLoss',
]

#: BT.601 luma of the studio-swing Y'CbCr (MATLAB ``rgb2ycbcr``, BasicSR ``to_y``), per unit RGB
_Y_COEFFS = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)
#: kornia's floor of the SSIM denominator; also the floor of the weighted-TV normalisers
_TINY = 1e-12


def _image(name: str, pred: Tensor) -> Tensor:
    check_tensor(name, 'pred', pred)
    check_ndim(name, 'pred', pred, 4)
    (pred32,) = upcast(pred)
    return pred32


def _image_pair(name: str, pred: Tensor, target: Tensor) -> Tuple[Tensor, Tensor]:
    """Validate two (N, C, H, W) images of one shape; float32 for half inputs."""
    check_tensor(name, 'pred', pred)
    check_tensor(name, 'target', target)
    check_ndim(name, 'pred', pred, 4)
    check_same_shape(name, pred, target)
    check_same_device(name, pred, target)
    return upcast(pred, target)


def _abs_diffs(x: Tensor) -> Tuple[Tensor, Tensor]:
    """``|x[i+1, j] - x[i, j]|`` and ``|x[i, j+1] - x[i, j]|`` at ``(i, j)``, zero-padded to x's shape."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs()
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs()
    return F.pad(dh, (0, 0, 0, 1)), F.pad(dw, (0, 1, 0, 0))


@declare('TVLoss')
def tv_loss(pred: Tensor, *, weight: Optional[Tensor] = None, reduction: str = 'mean',
            avg_factor: AvgFactor = None) -> Tensor:
    r"""Anisotropic L1 total variation (Rudin et al. 1992) of ``pred``, a loss of the prediction alone.

    .. math::
        m_{ij} = |x_{i+1,j} - x_{ij}| + |x_{i,j+1} - x_{ij}|,
        \qquad \text{'sum'} = \sum m = \sum|\Delta_h| + \sum|\Delta_w|,
        \qquad \text{'mean'} = \frac{\sum m}{N C H W}

    (the differences past the last row / column are 0). 'sum' is kornia's ``total_variation``
    summed over the batch and channels.

    Args:
        pred: :math:`(N, C, H, W)` image.
        weight: elementwise :math:`(N, C, H, W)` (or per-sample :math:`(N,)`) weight of the map
            :math:`m`.
        reduction, avg_factor: as in mmdet.

    Returns:
        The map :math:`m` of shape :math:`(N, C, H, W)` for ``'none'``, else a scalar.

    Example:
        >>> img = torch.tensor([[[[0.0, 1.0], [3.0, 1.0]]]])  # |dh| = [3, 0], |dw| = [1, 2]
        >>> tv_loss(img, reduction='sum')
        tensor(6.)
        >>> tv_loss(img)  # 6 / 4
        tensor(1.5000)
    """
    name = tv_loss.spec.loss
    dh, dw = _abs_diffs(_image(name, pred))
    return weight_reduce_loss(dh + dw, weight, reduction, avg_factor, name=name).to(pred.dtype)


@declare('WeightedTVLoss')
def weighted_tv_loss(pred: Tensor, *, weight: Optional[Tensor] = None, reduction: str = 'mean',
                     avg_factor: AvgFactor = None) -> Tensor:
    r"""Weighted total variation: per direction, the weighted mean of the absolute differences.

    With :math:`w` the weight map and the weight of a difference taken at its first pixel
    (:math:`w^h_{ij} = w_{ij}` for :math:`i < H-1`, 0 on the last row; likewise :math:`w^w`):

    .. math::
        \text{'mean'} = \frac{\sum w^h |\Delta_h|}{\sum w^h} + \frac{\sum w^w |\Delta_w|}{\sum w^w}

    ``weight=None`` is an all-ones map, i.e. :math:`\operatorname{mean}|\Delta_h| +
    \operatorname{mean}|\Delta_w|`. The weight is a normaliser, not a factor applied after the
    fact: ``'none'`` returns the map whose plain mean is the value above,

    .. math:: m = \frac{w^h |\Delta_h|}{\bar w^h} + \frac{w^w |\Delta_w|}{\bar w^w},
        \qquad \bar w = \frac{\sum w}{N C H W}

    so ``'sum'`` is :math:`NCHW` times ``'mean'`` and ``avg_factor`` divides that sum.
    The normalisation runs over the whole batch; :math:`\bar w` is floored at ``1e-12`` (an
    all-zero weight gives a zero loss).

    Args:
        pred: :math:`(N, C, H, W)` image.
        weight: non-negative map broadcastable to ``pred`` (or per-sample :math:`(N,)`).
        reduction, avg_factor: as in mmdet.

    Returns:
        :math:`(N, C, H, W)` for ``'none'``, else a scalar.

    Example:
        >>> img = torch.tensor([[[[0.0, 1.0], [3.0, 1.0]]]])  # |dh| = [3, 0], |dw| = [1, 2]
        >>> weighted_tv_loss(img)  # mean [3, 0] + mean [1, 2]
        tensor(3.)
        >>> w = torch.tensor([[[[1.0, 0.0], [3.0, 1.0]]]])  # dh: (1*3 + 0*0) / 1, dw: (1*1 + 3*2) / 4
        >>> weighted_tv_loss(img, weight=w)
        tensor(4.7500)
    """
    name = weighted_tv_loss.spec.loss
    x = _image(name, pred)
    dh, dw = _abs_diffs(x)
    w = torch.ones_like(x) if weight is None else adapt_weight(name, weight, x).to(x.dtype).expand_as(x)
    wh = F.pad(w[..., :-1, :], (0, 0, 0, 1))
    ww = F.pad(w[..., :, :-1], (0, 1, 0, 0))
    numel = max(x.numel(), 1)
    loss = wh * dh / (wh.sum() / numel).clamp_min(_TINY) + ww * dw / (ww.sum() / numel).clamp_min(_TINY)
    return weight_reduce_loss(loss, None, reduction, avg_factor, name=name).to(pred.dtype)


def _rgb_to_y(img: Tensor, name: str) -> Tensor:
    """(N, 3, H, W) RGB -> (N, 1, H, W) BT.601 luma, without the constant offset (it cancels in MSE)."""
    if img.shape[1] != 3:
        raise LossValueError(f'{name}: `pred` expected 3 (RGB) channels with to_y=True, got shape {tuple(img.shape)}')
    r, g, b = img.unbind(1)
    return (_Y_COEFFS[0] * r + _Y_COEFFS[1] * g + _Y_COEFFS[2] * b).unsqueeze(1)


@declare('PSNRLoss', max_val=POSITIVE, eps=NON_NEGATIVE)
def psnr_loss(pred: Tensor, target: Tensor, *, max_val: float = 1.0, eps: float = 1e-8, to_y: bool = False,
              weight: Optional[Tensor] = None, reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    r"""Negative PSNR per image.

    .. math::
        L_n = -\mathrm{PSNR}_n = 10 \log_{10}(\mathrm{MSE}_n + \epsilon) - 20 \log_{10}(\text{max\_val})

    with :math:`\mathrm{MSE}_n` the mean over the :math:`C H W` elements of image :math:`n`.
    ``eps`` keeps the loss and its gradient finite for identical images.

    Args:
        pred, target: :math:`(N, C, H, W)` images with values in ``[0, max_val]``.
        max_val: the dynamic range.
        eps: added to the MSE.
        to_y: compare the BT.601 luma
            :math:`Y = (65.481 R + 128.553 G + 24.966 B) / 255` (+ an offset, which cancels) of
            RGB images (C = 3), as SR benchmarks do (MATLAB ``rgb2ycbcr``, BasicSR).
        weight: per-image :math:`(N,)` weight.
        reduction, avg_factor: as in mmdet.

    Returns:
        :math:`(N,)` for ``'none'``, else a scalar.

    Example:
        >>> pred, target = torch.full((1, 1, 2, 2), 0.1), torch.zeros(1, 1, 2, 2)
        >>> psnr_loss(pred, target, eps=0.0)  # 10 * log10(0.01)
        tensor(-20.)
    """
    name = psnr_loss.spec.loss
    p, t = _image_pair(name, pred, target)
    if to_y:
        p, t = _rgb_to_y(p, name), _rgb_to_y(t, name)
    mse = (p - t).square().flatten(1).mean(1)
    loss = 10.0 * torch.log10(mse + eps) - 20.0 * math.log10(max_val)
    return weight_reduce_loss(loss, weight, reduction, avg_factor, name=name).to(pred.dtype)


def _reflect_index(n: int, pad: int, device: torch.device) -> Tensor:
    """Indices of ``reflect`` padding (edge not repeated) by ``pad`` on both sides of a length ``n``.

    Equal to ``F.pad(mode='reflect')`` where that works (``pad < n``), and folded again for
    larger pads, so images smaller than the window (down to a single pixel) still pad.
    """
    idx = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= n, period - idx, idx)


def _gaussian_blur(x: Tensor, window_size: int, sigma: float, padding: str) -> Tensor:
    """Separable normalised Gaussian filter per channel; 'same' pads by reflection, 'valid' crops."""
    half = window_size // 2
    taps = torch.arange(window_size, device=x.device, dtype=x.dtype) - half
    kernel = torch.exp(-taps.square() / (2.0 * sigma ** 2))
    kernel = kernel / kernel.sum()
    if padding == 'same':
        h, w = x.shape[-2:]
        x = x.index_select(-2, _reflect_index(h, half, x.device)).index_select(-1, _reflect_index(w, half, x.device))
    c = x.shape[1]
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


@declare('SSIMLoss', window_size=ODD_POSITIVE_INT, sigma=POSITIVE, max_val=POSITIVE,
         padding=Choice('same', 'valid'))
def ssim_loss(pred: Tensor, target: Tensor, *, window_size: int = 11, sigma: float = 1.5, max_val: float = 1.0,
              padding: str = 'same', weight: Optional[Tensor] = None, reduction: str = 'mean',
              avg_factor: AvgFactor = None) -> Tensor:
    r"""1 − SSIM (Wang et al. 2004) with a Gaussian window, as a loss map.

    .. math::
        L = 1 - \frac{(2\mu_x\mu_y + c_1)(2\sigma_{xy} + c_2)}
                    {(\mu_x^2 + \mu_y^2 + c_1)(\sigma_x^2 + \sigma_y^2 + c_2)},
        \quad c_1 = (0.01\,L)^2,\ c_2 = (0.03\,L)^2,\ L = \text{max\_val}

    The local statistics are Gaussian-weighted (``window_size``, ``sigma``) per channel, as in
    ``kornia.metrics.ssim`` (whose value this matches, with its ``1e-12`` in the denominator).
    ``padding='same'`` reflects the borders (folding again when the image is smaller than the
    window, so even a 1×1 image is valid); ``'valid'`` keeps only the positions where the window
    fits (requires H, W ≥ ``window_size``).

    Args:
        pred, target: :math:`(N, C, H, W)` images.
        window_size: odd Gaussian window size.
        sigma: Gaussian standard deviation.
        max_val: the dynamic range :math:`L`.
        padding: ``'same'`` | ``'valid'``.
        weight: elementwise weight of the loss map (or per-sample :math:`(N,)`).
        reduction, avg_factor: as in mmdet.

    Returns:
        The loss map, :math:`(N, C, H, W)` (``'valid'``: :math:`(N, C, H - k + 1, W - k + 1)`) for
        ``'none'``, else a scalar.

    Example:
        >>> img = torch.rand(1, 1, 8, 8)
        >>> ssim_loss(img, img).abs() < 1e-6  # identical images
        tensor(True)
    """
    name = ssim_loss.spec.loss
    x, y = _image_pair(name, pred, target)
    if padding == 'valid' and min(x.shape[-2:]) < window_size:
        raise LossValueError(f"{name}: padding='valid' expected H and W >= window_size={window_size}, "
                         f'got shape {tuple(pred.shape)}')
    c = x.shape[1]
    stats = _gaussian_blur(torch.cat([x, y, x * x, y * y, x * y], dim=1), window_size, sigma, padding)
    mu_x, mu_y, xx, yy, xy = stats.split(c, dim=1)
    var_x, var_y, cov = xx - mu_x * mu_x, yy - mu_y * mu_y, xy - mu_x * mu_y
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    num = (2.0 * mu_x * mu_y + c1) * (2.0 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    loss = 1.0 - num / (den + _TINY)
    return weight_reduce_loss(loss, weight, reduction, avg_factor, name=name).to(pred.dtype)


# --- registered modules ---------------------------------------------------------------------------

class ImageLoss(BaseLoss):
    """Base of the image-restoration family: ``(N, C, H, W)`` images."""
    family = 'image'
    inputs = 'pred, target: (N, C, H, W)'


@register_loss
class TVLoss(ImageLoss):
    """Total-variation module (no target: ``loss(pred)``); see :func:`tv_loss`."""
    loss_fn = staticmethod(tv_loss)
    takes_target = False
    inputs = 'pred: (N, C, H, W) (no target)'
    reference = 'kornia total_variation'


@register_loss
class WeightedTVLoss(ImageLoss):
    """Weighted total-variation module (no target: ``loss(pred, weight=w)``); see :func:`weighted_tv_loss`."""
    loss_fn = staticmethod(weighted_tv_loss)
    takes_target = False
    inputs = 'pred: (N, C, H, W); weight: (N, C, H, W) map (no target)'


@register_loss
class PSNRLoss(ImageLoss):
    """Negative-PSNR module; see :func:`psnr_loss`."""
    loss_fn = staticmethod(psnr_loss)
    reference = 'kornia psnr_loss'


@register_loss
class SSIMLoss(ImageLoss):
    """1 − SSIM module; see :func:`ssim_loss`."""
    loss_fn = staticmethod(ssim_loss)
    reference = 'kornia metrics.ssim'
