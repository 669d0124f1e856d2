"""The fused kernels as PyTorch custom operators (``torch.ops.mmloss_ext.*``).

Each fused path is a pair of operators registered with :mod:`torch.library`: the forward
(``mmloss_ext::elementwise``, ``::boxes``, ``::cross_entropy``, ``::dice``, ``::gaussian_focal``,
``::ghmc``) and its backward (the same name with ``_backward``, taking the upstream gradient
first, then the forward's arguments), plus ``::ghmc_histogram`` (no gradient). Every operator
has a fake (meta) implementation giving its output's shape and dtype, and each forward has its
autograd formula (the backward operator, once differentiable), so ``torch.compile`` traces a
fused loss as one node with no graph break and ``torch.export`` keeps it. An eager call runs the
same forward and backward through an autograd Function instead (no dispatcher overhead, and no
import of ``torch._dynamo`` on the first call). Inside the operators
the kernels are those of the tensors' device (:func:`~.dispatch.backend`: the C++ extension on
the CPU, Triton on CUDA); reading the upstream gradient as a number (a host read on the CPU)
happens inside the backward operator, where the compiler does not see it.

Where torch has no custom operators (``torch.library.custom_op``, torch 2.4+), the calls are the
autograd Functions alone, and under ``torch.compile`` they run outside the graph (a graph break
around the kernel, the same values).

Outputs by ``out_mode`` (:class:`~mmloss_ext.core.abi.OutMode`): ``TOTAL``, the weighted total as
a float64 0-d tensor; ``ELEMENTS``, the weighted loss per element (per box for the box kernels);
``ROWS``, per row of ``x``.
"""
from __future__ import annotations

import functools
import importlib
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..core.abi import OutMode
from ..core.errors import KernelError, LossValueError
from ..core.inputs import check_label_range
from ..core.compat import HAS_CUSTOM_OP, is_compiling, outside_graph
from .dispatch import backend, cpu_kernels

__all__ = ['KERNELS', 'elementwise', 'boxes', 'cross_entropy', 'dice', 'gaussian_focal', 'ghmc', 'ghmc_histogram',
           'is_fused_node']

NAMESPACE = 'mmloss_ext'
_TOTAL, _ELEMENTS, _ROWS = int(OutMode.TOTAL), int(OutMode.ELEMENTS), int(OutMode.ROWS)


def _family_backend(family: str, device):
    """The kernels of the family module ``family`` (``'heatmap'``, ``'ghm'``: its ``backend``) for
    ``device``, looked up per call (those modules import this one)."""
    return importlib.import_module(f'.{family}', __package__).backend(device)


#: the autograd Functions of the eager calls (:func:`is_fused_node`)
_EAGER_FUNCTIONS: set = set()
#: every fused operation and the device types with a kernel for it (``'cpu'``: C++, ``'cuda'``: Triton)
KERNELS: Dict[str, Tuple[str, ...]] = {}


def is_fused_node(node) -> bool:
    """Whether the autograd node ``node`` is the backward of one of these operators (called
    eagerly, or through the dispatcher)."""
    return (getattr(node, '_forward_cls', None) in _EAGER_FUNCTIONS
            or type(node).__name__.startswith(f'GeneratedBackwardFor_{NAMESPACE}_'))


def upstream(out_mode: int, grad: Tensor) -> Tuple[object, Optional[Tensor], Optional[Tensor]]:
    """The upstream gradient as (scale, per row, per element) for the backward kernels; a CUDA
    scale stays a tensor (reading it would synchronise)."""
    if out_mode == _TOTAL:
        return (float(grad) if grad.device.type == 'cpu' else grad), None, None
    if out_mode == _ROWS:
        return 1.0, grad.contiguous(), None
    return 1.0, None, grad.contiguous()


def _traced(x) -> bool:
    """Whether a call with first argument ``x`` is being traced (``torch.compile``, ``torch.export``:
    a fake or functional tensor), when it must go through the operator; an eager call calls the
    kernel directly, since the dispatcher's first call of a custom operator in a process imports
    ``torch._dynamo`` (about a second, and 100 MB of resident memory)."""
    return is_compiling() or type(x) not in (Tensor, torch.nn.Parameter)


def _fake_out(x: Tensor, out_mode: int, elements: Sequence[int]) -> Tensor:
    if out_mode == _TOTAL:
        return x.new_empty((), dtype=torch.float64)
    return x.new_empty(tuple(elements) if out_mode == _ELEMENTS else (x.shape[0],))


def _define(name: str, args: str, forward: Callable, backward: Callable, fake: Callable, *,
            aux: Optional[str] = None, kernels: Callable = lambda x: backend(x.device),
            devices: Tuple[str, ...] = ('cpu', 'cuda')) -> Callable:
    """Register ``mmloss_ext::name`` (``forward(k, *args)``, schema ``(args) -> Tensor``, or
    ``(Tensor, Tensor)`` with an ``aux`` output the backward needs) and
    ``mmloss_ext::name_backward`` (``backward(k, grad, *args[, aux])`` returning the gradient of
    the first argument, shaped like it), ``k`` being the kernels of the first argument's device
    (``kernels(x)``) of the device types ``devices``; ``fake`` gives the forward's outputs from its
    arguments. Returns the forward.

    Kernels other than the C++ extension (Triton) are guarded: a failure to compile or launch
    raises :class:`~mmloss_ext.core.errors.KernelError`, which the calling loss answers eagerly
    (:func:`~mmloss_ext.core.impl.run_with_fallback`). The first forward of each configuration
    also runs the backward once, so that its kernel fails there, where the loss can still fall
    back, rather than in ``loss.backward()``."""
    out = '(Tensor, Tensor)' if aux else 'Tensor'
    probed = set()
    KERNELS[name] = devices

    def run_forward(*a):
        try:
            k = kernels(a[0])  # a Triton module that does not import (an older Triton) fails here
        except Exception as err:  # noqa: BLE001
            raise KernelError(name, err) from err
        if k is cpu_kernels():
            return forward(k, *a)
        key = (id(k), a[0].dtype) + tuple(v if isinstance(v, (int, float, bool, str)) else v is None for v in a[1:]
                                          if not isinstance(v, list))
        try:
            result = forward(k, *a)
            if key not in probed:
                first = result[0] if aux else result
                backward(k, torch.ones_like(first), *a, *((result[1],) if aux else ()))
                probed.add(key)
            return result
        except LossValueError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure of the kernel: compile, launch, dtype
            raise KernelError(name, err) from err

    def run_backward(grad, *a):
        return backward(kernels(a[0]), grad, *a)

    def setup_context(ctx, inputs, output):
        ctx.consts = [None if isinstance(a, Tensor) else a for a in inputs]
        kept = [a if isinstance(a, Tensor) else None for a in inputs]
        ctx.save_for_backward(*kept, *((output[1],) if aux else ()))

    def grad_formula(ctx, grad, *unused, backward_op=run_backward):
        saved = ctx.saved_tensors
        inputs = [s if c is None else c for s, c in zip(saved, ctx.consts)]
        dx = backward_op(grad, *inputs, *saved[len(inputs):])
        return (dx,) + (None,) * (len(inputs) - 1)

    fwd = None
    if HAS_CUSTOM_OP:
        fwd = torch.library.custom_op(f'{NAMESPACE}::{name}', run_forward, mutates_args=(),
                                      schema=f'({args}) -> {out}')
        fwd.register_fake(fake)
        extra = f', Tensor {aux}' if aux else ''
        bwd = torch.library.custom_op(f'{NAMESPACE}::{name}_backward', run_backward, mutates_args=(),
                                      schema=f'(Tensor grad, {args}{extra}) -> Tensor')
        bwd.register_fake(lambda grad, x, *rest: torch.empty_like(x))
        fwd.register_autograd(functools.partial(grad_formula, backward_op=bwd), setup_context=setup_context)

    class Eager(torch.autograd.Function):
        """The same forward and backward for eager calls: an autograd Function skips the operator
        dispatch (whose first call in a process imports torch._dynamo, about a second)."""

        @staticmethod
        def forward(ctx, *a):
            result = run_forward(*a)
            setup_context(ctx, a, result)
            if aux:
                ctx.mark_non_differentiable(result[1])
            return result

        @staticmethod
        @once_differentiable
        def backward(ctx, grad, *unused):
            return grad_formula(ctx, grad)

    Eager.__name__ = Eager.__qualname__ = f'Fused_{name}'
    _EAGER_FUNCTIONS.add(Eager)

    def call(*a):
        if _traced(a[0]):
            return fwd(*a)  # traced (torch.compile, torch.export): the operator, one node
        return Eager.apply(*a)

    if fwd is None:  # no custom operators (torch < 2.4): the Function, outside a compiled graph
        call = outside_graph(Eager.apply)
    call.op, call.__name__ = fwd, name
    return call


# --- the elementwise kernels: focal / quality focal / varifocal, smooth L1 / balanced L1 -------------

def _elementwise(k, x, kind, hp, target, labels, score, wrow, wfull, out_mode):
    return k.elementwise_forward(kind, hp, x, target, labels, score, wrow, wfull, out_mode)


def _elementwise_backward(k, grad, x, kind, hp, target, labels, score, wrow, wfull, out_mode):
    scale, grow, gfull = upstream(out_mode, grad.to(x.dtype))
    return k.elementwise_backward(kind, hp, x, target, labels, score, wrow, wfull, scale, grow, gfull)


#: ``elementwise(x, kind, hp, target, labels, score, wrow, wfull, out_mode)``
elementwise = _define(
    'elementwise', 'Tensor x, int kind, float[] hp, Tensor? target, Tensor? labels, Tensor? score, Tensor? wrow, '
    'Tensor? wfull, int out_mode', _elementwise, _elementwise_backward,
    lambda x, kind, hp, target, labels, score, wrow, wfull, out_mode: _fake_out(x, out_mode, x.shape))


# --- the box kernels: the IoU family ----------------------------------------------------------------

def _boxes(k, pred, target, kind, eps, hp, w, out_mode):
    return k.box_forward(kind, eps, hp, pred, target, w, out_mode)


def _boxes_backward(k, grad, pred, target, kind, eps, hp, w, out_mode):
    scale, _, per_box = upstream(out_mode, grad.to(pred.dtype))
    return k.box_backward(kind, eps, hp, pred, target, w, scale, per_box)


#: ``boxes(pred (N, 4), target (N, 4), kind, eps, hp, w, out_mode)``: per box
boxes = _define(
    'boxes', 'Tensor pred, Tensor target, int kind, float eps, float[] hp, Tensor? w, int out_mode',
    _boxes, _boxes_backward,
    lambda pred, target, kind, eps, hp, w, out_mode: _fake_out(pred, out_mode, pred.shape[:1]))


# --- softmax cross-entropy (C++ only): the (N,) log-sum-exp is kept for the backward ----------------

def _cross_entropy(k, x, labels, class_weight, w, ignore_index, out_mode, save_lse, name):
    out, lse, bad = k.ce_forward(x, labels, class_weight, w, ignore_index, out_mode, save_lse)
    if bad:  # the kernel checked the labels in its pass: the eager check gives the error
        check_label_range(name, 'target', labels, 0, x.shape[1] - 1, ignore_index)
    return out, (lse if lse is not None else x.new_empty(0))


def _cross_entropy_backward(k, grad, x, labels, class_weight, w, ignore_index, out_mode, save_lse, name, lse):
    scale, _, grow = upstream(out_mode, grad.to(x.dtype))  # a loss per row: its elements are its rows
    return k.ce_backward(x, labels, class_weight, w, ignore_index, scale, grow, lse if lse.numel() else None)


#: ``cross_entropy(x (N, C), labels (N,), class_weight, w, ignore_index, out_mode, save_lse, name)``:
#: per row, and the log-sum-exp (empty unless ``save_lse``)
cross_entropy = _define(
    'cross_entropy', 'Tensor x, Tensor labels, Tensor? class_weight, Tensor? w, int ignore_index, int out_mode, '
    'bool save_lse, str name', _cross_entropy, _cross_entropy_backward,
    lambda x, labels, class_weight, w, ignore_index, out_mode, save_lse, name: (
        _fake_out(x, out_mode, x.shape[:1]), x.new_empty(x.shape[:1] if save_lse else (0,))),
    aux='lse', kernels=lambda x: cpu_kernels(), devices=('cpu',))


# --- binary Dice (C++ only): the (N, 3) row sums are kept for the backward --------------------------

def _dice(k, x, target, hp, w, out_mode):
    return k.dice_forward(hp, x, target, w, out_mode)


def _dice_backward(k, grad, x, target, hp, w, out_mode, sums):
    scale, _, grow = upstream(out_mode, grad.to(x.dtype))  # a loss per row: its elements are its rows
    return k.dice_backward(hp, x, target, sums, w, scale, grow)


#: ``dice(x (N, P), target (N, P), hp, w, out_mode)``: per row, and the row sums
dice = _define(
    'dice', 'Tensor x, Tensor target, float[] hp, Tensor? w, int out_mode', _dice, _dice_backward,
    lambda x, target, hp, w, out_mode: (_fake_out(x, out_mode, x.shape[:1]),
                                        x.new_empty((x.shape[0], 3), dtype=torch.float64)),
    aux='sums', kernels=lambda x: cpu_kernels(), devices=('cpu',))


# --- the Gaussian focal loss of heatmaps ------------------------------------------------------------

def _gaussian_focal(k, x, target, hp, wrow, wfull, out_mode):
    return k.heatmap_forward(hp, x, target, wrow, wfull, out_mode)


def _gaussian_focal_backward(k, grad, x, target, hp, wrow, wfull, out_mode):
    scale, _, gfull = upstream(out_mode, grad.to(x.dtype))
    return k.heatmap_backward(hp, x, target, wrow, wfull, scale, gfull)


#: ``gaussian_focal(x, target, hp, wrow, wfull, out_mode)``: elementwise
gaussian_focal = _define(
    'gaussian_focal', 'Tensor x, Tensor target, float[] hp, Tensor? wrow, Tensor? wfull, int out_mode',
    _gaussian_focal, _gaussian_focal_backward,
    lambda x, target, hp, wrow, wfull, out_mode: _fake_out(x, out_mode, x.shape),
    kernels=lambda x: _family_backend('heatmap', x.device))


# --- GHM-C: the histogram pass (no gradient), then the weighted loss --------------------------------

def _ghmc_histogram(x: Tensor, target: Optional[Tensor], labels: Optional[Tensor], wrow: Optional[Tensor],
                    wfull: Optional[Tensor], edges: Tensor) -> Tuple[Tensor, Tensor]:
    """``(counts, sums)``: valid elements and BCE summed per bin (``bins + 1`` slots each)."""
    k = None
    try:
        k = _family_backend('ghm', x.device)
        return tuple(k.ghmc_histogram(x, target, labels, wrow, wfull, edges))
    except Exception as err:  # noqa: BLE001 - as _define's guard
        if k is not None and k is cpu_kernels():
            raise
        raise KernelError('ghmc_histogram', err) from err


def ghmc_histogram(x: Tensor, target: Optional[Tensor], labels: Optional[Tensor], wrow: Optional[Tensor],
                   wfull: Optional[Tensor], edges: Tensor) -> Tuple[Tensor, Tensor]:
    """``(counts, sums)``: valid elements and BCE summed per bin (``bins + 1`` slots each); the
    operator ``mmloss_ext::ghmc_histogram`` when traced, the kernel itself when called eagerly."""
    return (_ghmc_histogram_op if _traced(x) else _ghmc_histogram)(x, target, labels, wrow, wfull, edges)


if HAS_CUSTOM_OP:
    _ghmc_histogram_op = torch.library.custom_op(f'{NAMESPACE}::ghmc_histogram', _ghmc_histogram, mutates_args=())

    @_ghmc_histogram_op.register_fake
    def _(x, target, labels, wrow, wfull, edges):
        return edges.new_empty(edges.shape, dtype=torch.long), edges.new_empty(edges.shape, dtype=torch.float64)
else:  # no custom operators (torch < 2.4); no gradient, no autograd Function needed: outside a compiled graph
    ghmc_histogram = outside_graph(_ghmc_histogram)


def _ghmc(k, x, target, labels, wrow, wfull, edges, table, sums, out_mode):
    if out_mode == _TOTAL:  # 0 * the last slot: a non-finite BCE of an unweighted element propagates
        return (table.to(torch.float64) * sums).sum()
    return k.ghmc_forward(x, target, labels, wrow, wfull, edges, table)


def _ghmc_backward(k, grad, x, target, labels, wrow, wfull, edges, table, sums, out_mode):
    scale, _, gfull = upstream(out_mode, grad.to(x.dtype))
    return k.ghmc_backward(x, target, labels, wrow, wfull, edges, table, scale, gfull)


#: ``ghmc(x (N, K), target, labels, wrow, wfull, edges, table, sums, out_mode)``: elementwise
ghmc = _define(
    'ghmc', 'Tensor x, Tensor? target, Tensor? labels, Tensor? wrow, Tensor? wfull, Tensor edges, Tensor table, '
    'Tensor sums, int out_mode', _ghmc, _ghmc_backward,
    lambda x, target, labels, wrow, wfull, edges, table, sums, out_mode: _fake_out(x, out_mode, x.shape),
    kernels=lambda x: _family_backend('ghm', x.device))
