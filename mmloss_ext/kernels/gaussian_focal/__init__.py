"""The Gaussian focal loss kernel (CornerNet / CenterNet heatmaps).

* entry point: :func:`gaussian_focal_family`, which :func:`~mmloss_ext.losses.gaussian_focal_loss`
  calls;
* operator ``mmloss_ext::gaussian_focal(x, target, hp, wrow, wfull, out_mode)``
  (:mod:`..operators`): one pass forward (the weighted total when reduced, else the elementwise
  loss) and one pass backward, saving only the inputs;
* kernels: ``gaussian_focal.cpp`` (C++) and :mod:`.gaussian_focal_triton`, both as
  ``heatmap_forward`` / ``heatmap_backward``, taking:

- ``hp`` in the layout of :data:`~mmloss_ext.core.abi.GAUSSIAN_FOCAL_HP` (the ``eps`` inside the
  logs: :data:`~mmloss_ext.core.abi.GAUSSIAN_FOCAL_EPS`);
- ``x`` (pred, probabilities) and ``target``, contiguous, of one dtype (float32 or float64), any
  shape, seen flat;
- an optional per-row weight ``wrow`` (``x.shape[0]`` values, each for ``x.numel() / x.shape[0]``
  consecutive elements) or an elementwise ``wfull`` of ``x``'s shape;
- forward: ``out_mode`` 0 (the weighted total, a float64 0-d tensor: per-block partial sums added
  in a fixed order, the same for any number of threads) or 1 (the weighted elementwise loss);
- backward: the upstream gradient as a scale (a float, or a 1-element CUDA tensor) and an optional
  elementwise ``gfull``; returns ``d x``.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from ...core import abi
from ...core.reduction import AvgFactor
from ..common import ELEMENTS, compute_dtype, prepare, reduce, split_weight
from ..operators import define, fake_out, upstream

__all__ = ['gaussian_focal', 'gaussian_focal_family']


def _forward(k, x, target, hp, wrow, wfull, out_mode):
    return k.heatmap_forward(hp, x, target, wrow, wfull, out_mode)


def _backward(k, grad, x, target, hp, wrow, wfull, out_mode):
    scale, _, gfull = upstream(out_mode, grad.to(x.dtype))
    return k.heatmap_backward(hp, x, target, wrow, wfull, scale, gfull)


gaussian_focal = define(
    'gaussian_focal', 'gaussian_focal', 'Tensor x, Tensor target, float[] hp, Tensor? wrow, Tensor? wfull, '
    'int out_mode', _forward, _backward,
    lambda x, target, hp, wrow, wfull, out_mode: fake_out(x, out_mode, x.shape))


def gaussian_focal_family(name: str, x: Tensor, target: Tensor, *, alpha: float, gamma: float, pos_weight: float,
                          neg_weight: float, weight: Optional[Tensor] = None, reduction: str = 'mean',
                          avg_factor: AvgFactor = None) -> Tensor:
    """The Gaussian focal loss of probabilities ``x`` against ``target`` (validated, same shape),
    its hyper-parameters packed in :data:`~mmloss_ext.core.abi.GAUSSIAN_FOCAL_HP`'s layout; weighted as
    :func:`~mmloss_ext.kernels.common.split_weight` accepts, reduced with mmdet's rules, in the compute dtype
    (float32 for half precision; the caller casts back)."""
    dtype = compute_dtype(x)
    shape = tuple(x.shape)
    x = prepare(x, dtype)
    t = prepare(target.detach(), dtype)
    wrow, wfull = split_weight(name, weight, shape, dtype)
    hp = abi.pack(abi.GAUSSIAN_FOCAL_HP, alpha=alpha, gamma=gamma, pos_weight=pos_weight, neg_weight=neg_weight)

    def run(out_mode: int = ELEMENTS) -> Tensor:
        return gaussian_focal(x, t, hp, wrow, wfull, out_mode)

    return reduce(run, shape, reduction, avg_factor, name)
