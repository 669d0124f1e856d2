"""The fixed inputs of the fused paths' self-check (:mod:`mmloss_ext.core.selfcheck`): one maker
per kind of input, named on each loss with a fused path (``declare(..., probe=...)``).

A maker takes the call's ``pred``, ``target`` and hyper-parameters and returns a small
``(pred, target)`` of the same kind -- the call's number of classes, the form of its target
(labels, a dense target, a ``(labels, scores)`` pair), probabilities where the loss takes them,
its ``ignore_index`` -- on ``pred``'s device, in its dtype, with fixed values. The values stay
where the eager spec and the kernels agree to the tests' tolerance in every dtype (no degenerate
boxes, no logits that saturate float16), so that a difference is a wrong kernel. None: the
configuration has no kernel.

Example:
    >>> x, t = boxes(torch.zeros(2, 4), torch.zeros(2, 4), {})
    >>> tuple(x.shape), bool((x[:, 2:] > x[:, :2]).all() and (t[:, 2:] > t[:, :2]).all())
    ((6, 4), True)
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ['residuals', 'boxes', 'logits', 'heatmap', 'dice']

ROWS = 6
Made = Optional[Tuple[Tensor, object]]


def _fixed(shape, scale: float, step: float) -> Tensor:
    """``scale * sin(step * i)`` over the elements of ``shape``, in float64 on the CPU."""
    n = torch.Size(shape).numel()
    return (torch.arange(n, dtype=torch.float64) * step).sin().mul(scale).view(shape)


def _like(t: Tensor, pred: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    return t.to(device=pred.device, dtype=dtype or pred.dtype)


def residuals(pred: Tensor, target, hp: dict) -> Made:
    """Regression: ``(6, 4)`` predictions and targets; residuals in ``[-1.5, 1.5]`` (both sides of
    the default ``beta``), two of them 0 (the subgradient of ``|d|``)."""
    x = _fixed((ROWS, 4), 2.0, 0.7)
    d = _fixed((ROWS, 4), 1.5, 1.3)
    d[0, :2] = 0.0
    return _like(x, pred), _like(x + d, pred)


#: overlapping, nested, apart, of several aspect ratios (``x1 y1 x2 y2``, all proper boxes)
_PRED = [[0, 0, 10, 10], [2, 3, 8, 9], [5, 5, 15, 12], [1, 1, 4, 7], [20, 20, 30, 35], [0, 0, 6, 3]]
_TARGET = [[1, 2, 11, 9], [0, 0, 10, 10], [7, 4, 13, 14], [10, 10, 14, 12], [21, 19, 29, 36], [0.5, 0.5, 6.5, 3.5]]


def boxes(pred: Tensor, target, hp: dict) -> Made:
    """The IoU family: six pairs of ``x1y1x2y2`` boxes."""
    return _like(torch.tensor(_PRED, dtype=torch.float64), pred), _like(torch.tensor(_TARGET, dtype=torch.float64),
                                                                        pred)


def logits(pred: Tensor, target, hp: dict) -> Made:
    """Classification: ``(6, C)`` logits (``C``: the call's; probabilities with ``activated``)
    against a target of the call's form -- integer labels (in ``[0, C]`` with the sigmoid, ``C``
    the background, else ``[0, C - 1]``; one of them ``ignore_index`` when set), a dense target in
    ``[0, 1]`` or a ``(labels, scores)`` pair. None for mask targets (``use_mask``: no kernel)."""
    if hp.get('use_mask'):
        return None
    shape = (ROWS,) + tuple(pred.shape[1:2])
    x = _fixed(shape, 4.0, 0.61)
    if hp.get('activated'):
        x = torch.sigmoid(x)
    classes = shape[1] if len(shape) > 1 else 1
    top = classes if hp.get('use_sigmoid', True) else classes - 1
    labels = torch.tensor([(5 * i) % (top + 1) for i in range(ROWS)])
    labels[:2] = torch.tensor([0, top])
    if hp.get('ignore_index') is not None:
        labels[2] = hp['ignore_index']
    if isinstance(target, (tuple, list)):
        scores = torch.linspace(0.1, 0.9, ROWS, dtype=torch.float64)
        return _like(x, pred), (_like(labels, pred, target[0].dtype), _like(scores, pred, target[1].dtype))
    if isinstance(target, Tensor) and not target.is_floating_point():
        return _like(x, pred), _like(labels, pred, target.dtype)
    dense = _fixed(shape, 1.0, 0.37).abs()
    flat = dense.view(-1)
    flat[::3] = 0.0
    flat[1::5] = 1.0
    return _like(x, pred), _like(dense, pred, target.dtype if isinstance(target, Tensor) else None)


def heatmap(pred: Tensor, target, hp: dict) -> Made:
    """Gaussian heatmaps: ``(2, 3, 4, 5)`` probabilities and a target in ``[0, 1]`` that is exactly
    1 at a few peaks."""
    shape = (2, 3, 4, 5)
    p = torch.sigmoid(_fixed(shape, 3.0, 0.53))
    t = _fixed(shape, 1.0, 0.29).square()
    t.view(-1)[::17] = 1.0
    return _like(p, pred), _like(t, pred)


def dice(pred: Tensor, target, hp: dict) -> Made:
    """Binary segmentation: ``(3, 4, 5)`` logits (probabilities without ``activate``) and a binary
    mask of the call's dtype, some of it ``ignore_index`` when set. None in multiclass mode (no
    kernel)."""
    if hp.get('mode', 'binary') != 'binary':
        return None
    shape = (3, 4, 5)
    x = _fixed(shape, 3.0, 0.47)
    if not hp.get('activate', True):
        x = torch.sigmoid(x)
    t = (_fixed(shape, 1.0, 0.83) > 0).to(torch.float64)
    if hp.get('ignore_index') is not None:
        t.view(-1)[::7] = float(hp['ignore_index'])
    return _like(x, pred), _like(t, pred, target.dtype if isinstance(target, Tensor) else None)
