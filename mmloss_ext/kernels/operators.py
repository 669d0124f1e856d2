"""The fused kernels as PyTorch custom operators (``torch.ops.mmloss_ext.*``), defined the same
way for every operation (:func:`define`).

Each fused operation registers its forward (``mmloss_ext::boxes``, ...) and backward (the same
name with ``_backward``, taking the upstream gradient first, then the forward's arguments) with
:mod:`torch.library`; an operation without a gradient (GHM-C's histogram) registers the forward
alone. Every operator has a fake (meta) implementation giving its output's shape and dtype, and
each forward has its autograd formula (the backward operator, once differentiable), so
``torch.compile`` traces a fused loss as one node with no graph break and ``torch.export`` keeps
it. An eager call runs the same forward and backward through an autograd Function instead (no
dispatcher overhead, and no import of ``torch._dynamo`` on the first call). Inside the operators
the kernels are those of the tensors' device (:func:`.backends.kernels`); reading the upstream
gradient as a number (a host read on the CPU) happens inside the backward operator, where the
compiler does not see it.

Where torch has no custom operators (``torch.library.custom_op``, torch 2.4+), the calls are the
autograd Functions alone, and under ``torch.compile`` they run outside the graph (a graph break
around the kernel, the same values).

Outputs by ``out_mode`` (:class:`~mmloss_ext.core.abi.OutMode`): ``TOTAL``, the weighted total as
a float64 0-d tensor; ``ELEMENTS``, the weighted loss per element (per box for the box kernels);
``ROWS``, per row of ``x``.
"""
from __future__ import annotations

import functools
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..core.abi import OutMode
from ..core.errors import KernelError, LossValueError
from ..core.compat import HAS_CUSTOM_OP, is_compiling, outside_graph
from . import backends

__all__ = ['define', 'fake_out', 'is_fused_node', 'upstream']

NAMESPACE = 'mmloss_ext'
_TOTAL, _ELEMENTS, _ROWS = int(OutMode.TOTAL), int(OutMode.ELEMENTS), int(OutMode.ROWS)


#: the autograd Functions of the eager calls (:func:`is_fused_node`)
_EAGER_FUNCTIONS: set = set()


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


def fake_out(x: Tensor, out_mode: int, elements: Sequence[int]) -> Tensor:
    if out_mode == _TOTAL:
        return x.new_empty((), dtype=torch.float64)
    return x.new_empty(tuple(elements) if out_mode == _ELEMENTS else (x.shape[0],))


def define(op: str, name: str, args: str, forward: Callable, backward: Optional[Callable], fake: Callable, *,
           aux: Optional[str] = None, kernels_in: Tuple[str, ...] = backends.BACKENDS) -> Callable:
    """Register the operator ``mmloss_ext::name`` of the fused operation ``op`` (its folder), whose
    kernels the backends ``kernels_in`` have (:data:`.backends.OPERATIONS`); returns the call.

    ``forward(k, *args)`` (schema ``(args) -> Tensor``, or ``(Tensor, Tensor)`` with a second
    output ``aux`` that the backward needs) and, unless ``backward`` is None (an operator without a
    gradient), ``mmloss_ext::name_backward``: ``backward(k, grad, *args[, aux])`` returning the
    gradient of the first argument, shaped like it. ``k`` is the kernels of the first argument's
    device (:func:`.backends.kernels`); ``fake`` gives the forward's outputs from its arguments.

    Kernels other than the C++ extension (Triton) are guarded: a failure to compile or launch
    raises :class:`~mmloss_ext.core.errors.KernelError`, in the forward and in the backward alike,
    which the calling loss answers eagerly (:func:`~mmloss_ext.core.impl.run_with_fallback`). The
    first forward of each configuration also runs the backward once, so that its kernel fails
    there, where the loss can still fall back, rather than in ``loss.backward()``."""
    out = '(Tensor, Tensor)' if aux else 'Tensor'
    #: per kernels module (by id; the module is kept, so that its id is never another's), the
    #: module and the configurations whose backward has run once
    probed: Dict[int, Tuple[object, set]] = {}
    backends.OPERATIONS[op] = tuple(kernels_in)

    def kernels_of(device) -> Tuple[object, bool]:
        """The kernels of ``device``, and whether their failures are guarded (any but the C++ extension's)."""
        try:
            return backends.kernels(op, device), backends.backend_of(device) != 'cpp'
        except Exception as err:  # noqa: BLE001 - a Triton module that does not import (an older Triton)
            raise KernelError(name, err) from err

    def run_kernel(run, kernels, *a):
        """``run(k, *a)`` with ``kernels = (k, guarded)``; a guarded kernel's failure raised as KernelError."""
        k, guard = kernels
        if not guard:
            return run(k, *a)
        try:
            return run(k, *a)
        except LossValueError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure of the kernel: compile, launch, dtype
            raise KernelError(name, err) from err

    def run_forward(*a):
        kernels = kernels_of(a[0].device)
        result = run_kernel(forward, kernels, *a)
        k, guard = kernels
        if guard and backward is not None:
            seen = probed.setdefault(id(k), (k, set()))[1]
            key = (a[0].dtype,) + tuple(v if isinstance(v, (int, float, bool, str)) else v is None for v in a[1:]
                                        if not isinstance(v, list))
            if key not in seen:
                first = result[0] if aux else result
                run_kernel(backward, kernels, torch.ones_like(first), *a, *((result[1],) if aux else ()))
                seen.add(key)
        return result

    fwd = None
    if HAS_CUSTOM_OP:
        fwd = torch.library.custom_op(f'{NAMESPACE}::{name}', run_forward, mutates_args=(),
                                      schema=f'({args}) -> {out}')
        fwd.register_fake(fake)
    if backward is None:  # no gradient: the operator when traced, the kernel itself when called eagerly
        def plain(*a):
            return (fwd if _traced(a[0]) else run_forward)(*a)

        call = plain if fwd is not None else outside_graph(run_forward)
        call.op, call.__name__ = fwd, name
        return call

    def run_backward(grad, *a):
        return run_kernel(backward, kernels_of(a[0].device), grad, *a)

    def setup_context(ctx, inputs, output):
        ctx.consts = [None if isinstance(a, Tensor) else a for a in inputs]
        kept = [a if isinstance(a, Tensor) else None for a in inputs]
        ctx.save_for_backward(*kept, *((output[1],) if aux else ()))

    def grad_formula(ctx, grad, *unused, backward_op=run_backward):
        saved = ctx.saved_tensors
        inputs = [s if c is None else c for s, c in zip(saved, ctx.consts)]
        dx = backward_op(grad, *inputs, *saved[len(inputs):])
        return (dx,) + (None,) * (len(inputs) - 1)

    if fwd is not None:
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
