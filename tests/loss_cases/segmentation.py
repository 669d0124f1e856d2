"""Contract cases for the segmentation losses.

Binary cases: logits (n, 5, 6) and a 0/1 float mask of the same shape; 'none' is (n,).
Multiclass cases: logits (n, 3, 5, 6) and int64 labels (n, 5, 6) in [0, 2]; 'none' is (n, 3)
(LovaszLoss with per_image=True: (n,)).
"""
import torch

from . import case, randn

NUM_CLASSES = 3


def binary(n, dtype, gen):
    pred = randn(gen, n, 5, 6, dtype=dtype, scale=2.0)
    target = (torch.rand(n, 5, 6, generator=gen) > 0.5).to(dtype)
    return pred, target


def multiclass(n, dtype, gen):
    pred = randn(gen, n, NUM_CLASSES, 5, 6, dtype=dtype, scale=2.0)
    target = torch.randint(0, NUM_CLASSES, (n, 5, 6), generator=gen)
    return pred, target


def per_sample(args):
    return (args[0].shape[0],)


def per_sample_and_class(args):
    return tuple(args[0].shape[:2])


# binary mode (the default): a sigmoid into a bounded ratio, where an infinite logit is its limit
case('DiceLoss', binary, cfg={'eps': 1e-2}, none_shape=per_sample, saturates=True)
case('JaccardLoss', multiclass, cfg={'mode': 'multiclass', 'smooth': 1.0}, none_shape=per_sample_and_class)
case('TverskyLoss', binary, cfg={'alpha': 0.3, 'beta': 0.7}, none_shape=per_sample, saturates=True)
case('FocalTverskyLoss', multiclass, cfg={'mode': 'multiclass', 'alpha': 0.7, 'beta': 0.3, 'gamma': 0.8},
     none_shape=per_sample_and_class)
case('LovaszLoss', multiclass, cfg={'mode': 'multiclass', 'per_image': True}, none_shape=per_sample)
