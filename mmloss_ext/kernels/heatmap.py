"""The fused path of the Gaussian focal loss (CornerNet / CenterNet heatmaps): the entry point
:func:`gaussian_focal` that :func:`~mmloss_ext.losses.gaussian_focal_loss` calls (custom operator
``mmloss_ext::gaussian_focal``, :mod:`.ops`).

One pass forward (the weighted total when reduced, else the elementwise loss) and one pass
backward, saving only the inputs. The kernels are those of the tensors' device
(:func:`backend`): ``heatmap_forward`` / ``heatmap_backward`` of the C++ extension
(``csrc/heatmap.cpp``) on the CPU, of the Triton module :mod:`.gpu_heatmap` on CUDA; both take

* ``hp = [alpha, gamma, pos_weight, neg_weight]`` (the ``eps`` inside the logs:
  :data:`~mmloss_ext.core.abi.GAUSSIAN_FOCAL_EPS`);
* ``x`` (pred, probabilities) and ``target``, contiguous, of one dtype (float32 or float64), any
  shape, seen flat;
* an optional per-row weight ``wrow`` (``x.shape[0]`` values, each for ``x.numel() / x.shape[0]``
  consecutive elements) or an elementwise ``wfull`` of ``x``'s shape;
* forward: ``out_mode`` 0 (the weighted total, a float64 0-d tensor: per-block partial sums added
  in a fixed order, the same for any number of threads) or 1 (the weighted elementwise loss);
* backward: the upstream gradient as a scale (a float, or a 1-element CUDA tensor) and an optional
  elementwise ``gfull``; returns ``d x``.
"""
from __future__ import annotations

from types import ModuleType
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..core.reduction import AvgFactor
from .dispatch import cpu_kernels
from . import ops
from .functions import _ELEMENTS, _compute_dtype, _prepare, _reduce, split_weight

__all__ = ['available', 'backend', 'gaussian_focal']


def backend(device) -> ModuleType:
    """The heatmap kernels for ``device``: the C++ extension on the CPU, :mod:`.gpu_heatmap`
    (Triton, imported on first use) on CUDA."""
    if torch.device(device).type == 'cuda':
        from . import gpu_heatmap
        return gpu_heatmap
    return cpu_kernels()


def available(device) -> bool:
    """Whether this device's kernels include the heatmap ones (an extension built before them
    lacks them: the loss then runs eagerly). Triton's availability is :func:`~.dispatch.use_fused`'s."""
    return torch.device(device).type == 'cuda' or hasattr(cpu_kernels(), 'heatmap_forward')


def gaussian_focal(name: str, hp: Sequence[float], x: Tensor, target: Tensor, *, weight: Optional[Tensor] = None,
                   reduction: str = 'mean', avg_factor: AvgFactor = None) -> Tensor:
    """The Gaussian focal loss of probabilities ``x`` against ``target`` (validated, same shape),
    ``hp = (alpha, gamma, pos_weight, neg_weight)``: weighted as
    :func:`~.functions.split_weight` accepts, reduced with mmdet's rules, in the compute dtype
    (float32 for half precision; the caller casts back)."""
    dtype = _compute_dtype(x)
    shape = tuple(x.shape)
    x = _prepare(x, dtype)
    t = _prepare(target.detach(), dtype)
    wrow, wfull = split_weight(name, weight, shape, dtype)
    hp = [float(h) for h in hp]

    def run(out_mode: int = _ELEMENTS) -> Tensor:
        return ops.gaussian_focal(x, t, hp, wrow, wfull, out_mode)

    return _reduce(run, shape, reduction, avg_factor, name)
