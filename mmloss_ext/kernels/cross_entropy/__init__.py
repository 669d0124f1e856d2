"""The softmax cross-entropy kernel (C++ only): one loss per row of logits ``x`` (N, C).

* entry point: :func:`cross_entropy_family`, which the losses call;
* operator ``mmloss_ext::cross_entropy(x, labels, class_weight, w, ignore_index, out_mode,
  save_lse, name)`` (:mod:`..operators`): per row, and the (N,) log-sum-exp kept for the backward
  (empty unless ``save_lse``);
* kernel: ``cross_entropy.cpp`` (``ce_forward`` / ``ce_backward``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ...core.inputs import check_label_range
from ...core.reduction import AvgFactor
from ..common import ELEMENTS, compute_dtype, prepare, reduce, split_weight
from ..operators import define, fake_out, upstream

__all__ = ['cross_entropy', 'cross_entropy_family']


def _forward(k, x, labels, class_weight, w, ignore_index, out_mode, save_lse, name):
    out, lse, bad = k.ce_forward(x, labels, class_weight, w, ignore_index, out_mode, save_lse)
    if bad:  # the kernel checked the labels in its pass: the eager check gives the error
        check_label_range(name, 'target', labels, 0, x.shape[1] - 1, ignore_index)
    return out, (lse if lse is not None else x.new_empty(0))


def _backward(k, grad, x, labels, class_weight, w, ignore_index, out_mode, save_lse, name, lse):
    scale, _, grow = upstream(out_mode, grad.to(x.dtype))  # a loss per row: its elements are its rows
    return k.ce_backward(x, labels, class_weight, w, ignore_index, scale, grow, lse if lse.numel() else None)


cross_entropy = define(
    'cross_entropy', 'cross_entropy', 'Tensor x, Tensor labels, Tensor? class_weight, Tensor? w, int ignore_index, '
    'int out_mode, bool save_lse, str name', _forward, _backward,
    lambda x, labels, class_weight, w, ignore_index, out_mode, save_lse, name: (
        fake_out(x, out_mode, x.shape[:1]), x.new_empty(x.shape[:1] if save_lse else (0,))),
    aux='lse', kernels_in=('cpp',))


def cross_entropy_family(name: str, x: Tensor, labels: Tensor, pred_dtype: torch.dtype, *,
                         class_weight: Optional[Tensor] = None, ignore_index: int = -100,
                         weight: Optional[Tensor] = None, reduction: str = 'mean',
                         avg_factor: AvgFactor = None) -> Tensor:
    """Softmax cross-entropy of logits ``x`` (N, C) at integer ``labels`` (N,) in ``[0, C)`` or
    ``ignore_index`` (loss 0); ``class_weight`` (C,); per-sample ``weight``. The kernel checks the
    label values (``ValueError`` as :func:`~mmloss_ext.core.inputs.check_label_range`)."""
    dtype = compute_dtype(x)
    x = prepare(x, dtype)
    shape = (x.shape[0],)
    wrow, wfull = split_weight(name, weight, shape, dtype)
    w = wrow if wfull is None else wfull
    cw = None if class_weight is None else prepare(class_weight.detach(), dtype)
    labels = labels.long().contiguous()

    def run(out_mode: int = ELEMENTS) -> Tensor:
        return cross_entropy(x, labels, cw, w, int(ignore_index), out_mode, x.requires_grad, name)[0]

    return reduce(run, shape, reduction, avg_factor, name).to(pred_dtype)
