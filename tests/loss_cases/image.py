"""Contract cases for the image-restoration losses: (n, C, H, W) images with values in [0, 1]."""
import torch

from . import case


def image(gen, n, c, h, w, dtype):
    return torch.rand(n, c, h, w, generator=gen, dtype=dtype)


def alone(n, dtype, gen):
    return (image(gen, n, 2, 5, 6, dtype),)


def pair(n, dtype, gen):
    return image(gen, n, 3, 6, 6, dtype), image(gen, n, 3, 6, 6, dtype)


def per_image(args):
    return (args[0].shape[0],)


def wrong_rank(args):
    """A loss of pred alone: the mismatch is a 3-D pred."""
    return (args[0][0],)


case('TVLoss', alone, mismatch=wrong_rank)
# the weight normalises per direction; 'none' is the map whose plain mean is the weighted mean,
# so 'sum' and avg_factor stay additive over it (see weighted_tv_loss)
case('WeightedTVLoss', alone, mismatch=wrong_rank)
# -PSNR is negative for an error below max_val
case('PSNRLoss', pair, cfg={'to_y': True, 'max_val': 2.0}, none_shape=per_image, signed=True)
case('SSIMLoss', pair, cfg={'window_size': 5, 'sigma': 1.2})
