"""Contract case for the heatmap loss: probabilities (N, C, H, W) against a Gaussian-like target
heatmap of the same shape with a few exact 1s (the positives)."""
import torch

from . import case, randn


def heatmap(n, dtype, gen, c=2, h=3, w=3):
    """``(pred, target)``: sigmoid probabilities (kept away from 0 and 1, as float16 resolves them)
    and a target in [0, 1) with about one element in seven set to exactly 1."""
    pred = torch.sigmoid(randn(gen, n, c, h, w, scale=1.5)).to(dtype)
    target = torch.rand(n, c, h, w, generator=gen) * 0.95
    target[torch.rand(n, c, h, w, generator=gen) < 0.15] = 1.0
    return pred, target.to(dtype)


# probabilities: their extremes, 0 and 1, are tested with the loss (tests/test_heatmap.py)
case('GaussianFocalLoss', heatmap, cfg={'alpha': 2.0, 'gamma': 3.5, 'pos_weight': 1.5, 'neg_weight': 0.75},
     probabilities=True)
