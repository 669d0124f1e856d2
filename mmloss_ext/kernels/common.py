"""What every fused operation's entry point does the same way: the compute dtype and layout of
the inputs, mmdet's weight shapes split into a per-row or a full weight, and mmdet's reductions
over a kernel that gives either the unreduced loss or its total (:func:`reduce`).

The entry points of the operations (``kernels/<op>/__init__.py``) run their custom operator
(:mod:`.operators`), whose autograd formula saves only its inputs; its forward returns the
weighted total (``'mean'``/``'sum'``: no elementwise loss is materialised), the elementwise loss
(``'none'``) or the per-row sums; its backward is one pass writing the gradient of ``pred``.
Losses call them after their own validation, and only when :func:`~.dispatch.use_fused` said
so; half precision is computed in float32 and returned in ``pred``'s dtype.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..core.abi import OutMode
from ..core.reduction import AvgFactor, adapt_weight, reduce_summed
from .operators import is_fused_node

__all__ = ['ran_fused', 'compute_dtype', 'prepare', 'split_weight', 'reduce', 'TOTAL', 'ELEMENTS', 'ROWS']

TOTAL, ELEMENTS, ROWS = OutMode.TOTAL, OutMode.ELEMENTS, OutMode.ROWS


def ran_fused(out: Tensor) -> bool:
    """Whether a fused kernel (one of the custom operators of :mod:`.ops`, either backend) produced
    ``out``: its autograd graph is searched through the casts and reductions after the kernel.

    Example:
        >>> from mmloss_ext import smooth_l1_loss
        >>> x = torch.zeros(3, 4, requires_grad=True)
        >>> ran_fused(smooth_l1_loss(x, torch.ones(3, 4), impl='eager'))
        False
    """
    todo, seen = [out.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if is_fused_node(node):
            return True
        todo.extend(n for n, _ in node.next_functions)
    return False


def compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def prepare(x: Tensor, dtype: torch.dtype) -> Tensor:
    return x.to(dtype).contiguous()


def split_weight(name: str, weight: Optional[Tensor], shape: Sequence[int],
                 dtype: torch.dtype) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """``weight`` (any shape :func:`~mmloss_ext.core.reduction.adapt_weight` accepts for a loss
    of ``shape``) as ``(per_row (N,), full)``, at most one of them set."""
    if weight is None:
        return None, None
    w = adapt_weight(name, weight, weight.new_empty(()).expand(shape))  # shape only, no memory
    shape = torch.Size(shape)
    if w.dim() == len(shape) >= 1 and w.shape[0] == shape[0] > 0 and w[0].numel() == 1:
        return prepare(w.reshape(-1), dtype), None
    return None, prepare(w.expand(shape), dtype)


def reduce(run, shape: Sequence[int], reduction: str, avg_factor: AvgFactor, name: str) -> Tensor:
    """``run(out_mode)`` gives the unreduced loss or its total: mmdet's reduction rules, once."""
    return reduce_summed(run, lambda: run(TOTAL), torch.Size(shape).numel(), reduction, avg_factor, name=name)
