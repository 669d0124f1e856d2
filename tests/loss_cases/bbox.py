"""Contract cases for the box losses: decoded boxes (n, 4) as (x1, y1, x2, y2).

The generic float64 gradcheck compares against finite differences, which also differentiate the
terms the papers deliberately detach. The inputs are chosen so that those terms are locally
constant and the check stays exact:

* :func:`pair`: partially overlapping or disjoint pairs with IoU < 0.45, so CIoU's trade-off
  ``[IoU > 0.5] v / (1 - IoU + v)`` (no gradient, as mmdet) is 0 around them;
* :func:`nested`: the prediction strictly inside the target, so the enclosing box (WIoU's detached
  normaliser) is the target's. WIoU is checked with ``version='v1'``: v2/v3 normalise by a running
  mean that a training-mode module updates on every call (tests/test_bbox.py covers them).
"""
import torch

from . import case


def boxes(n, dtype, gen, low=1.0, high=5.0):
    """Random valid boxes: corner in [0, 10)^2, sizes in [low, high)."""
    xy = torch.rand(n, 2, generator=gen, dtype=dtype) * 10.0
    wh = torch.rand(n, 2, generator=gen, dtype=dtype) * (high - low) + low
    return torch.cat([xy, xy + wh], dim=-1)


def _uniform(gen, dtype, n, k, low, high):
    return torch.rand(n, k, generator=gen, dtype=dtype) * (high - low) + low


def pair(n, dtype, gen):
    """Targets shifted by 0.6-1.5 widths in x (either side), up to 0.6 heights in y, sizes x0.8-1.25.

    The x overlap is at most 0.65 of the prediction's width, which bounds the IoU by 0.41.
    """
    pred = boxes(n, dtype, gen)
    wh = pred[:, 2:] - pred[:, :2]
    sign = torch.randint(0, 2, (n, 2), generator=gen).to(dtype) * 2.0 - 1.0
    shift = torch.cat([_uniform(gen, dtype, n, 1, 0.6, 1.5), _uniform(gen, dtype, n, 1, 0.0, 0.6)], dim=-1)
    lt = pred[:, :2] + sign * shift * wh
    target = torch.cat([lt, lt + wh * _uniform(gen, dtype, n, 2, 0.8, 1.25)], dim=-1)
    return pred, target


def nested(n, dtype, gen):
    """Predictions strictly inside their targets (each side moved in by 5-40% of the target size)."""
    target = boxes(n, dtype, gen)
    wh = (target[:, 2:] - target[:, :2]).repeat(1, 2)
    inset = _uniform(gen, dtype, n, 4, 0.05, 0.4) * wh * torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=dtype)
    return target + inset, target


def per_coordinate_weight(args, gen):
    """An (n, 4) weight: averaged over the coordinates by the per-box losses (mmdet's rule)."""
    return torch.rand(args[0].shape, generator=gen, dtype=args[0].dtype) + 0.5


def box_case(name, make, **kw):
    """A per-box loss: 'none' gives one value per box, shape (n,)."""
    kw.setdefault('none_shape', lambda args: tuple(args[0].shape[:-1]))
    case(name, make, **kw)


box_case('IoULoss', pair, cfg={'mode': 'square'})
# eps=1e-3 is added to the widths in pixels, as mmdet does: an absolute length scale
case('BoundedIoULoss', pair, cfg={'beta': 0.3}, none_shape=lambda args: tuple(args[0].shape), scale_invariant=False)
box_case('GIoULoss', pair, weight=per_coordinate_weight)
box_case('DIoULoss', pair)
box_case('CIoULoss', pair, weight=per_coordinate_weight)
box_case('EIoULoss', pair, cfg={'smooth_point': 0.2})
box_case('SIoULoss', pair, cfg={'neg_gamma': True})
box_case('EfficientIoULoss', pair)
box_case('AlphaIoULoss', pair, cfg={'alpha': 2.0, 'mode': 'diou'})
box_case('WIoULoss', nested, cfg={'version': 'v1'})
box_case('MPDIoULoss', pair, cfg={'img_shape': (32, 24)})
box_case('InnerIoULoss', pair, cfg={'ratio': 1.25, 'iou_mode': 'giou'})
# u's closed bound 0 is ruled out by d's default (d < u)
box_case('FocalerIoULoss', pair, cfg={'d': 0.05, 'u': 0.9, 'iou_mode': 'eiou'}, inside={'u': 1.0})
box_case('ShapeIoULoss', pair, cfg={'scale': 0.5})
# the constant C is a length (pixels)
box_case('NWDLoss', pair, cfg={'constant': 4.0}, scale_invariant=False)
