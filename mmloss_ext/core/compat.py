"""What differs between the torch releases the package supports (2.1 to the newest), detected by
feature, never by version number.

* :func:`is_compiling` -- ``torch.compiler.is_compiling`` (torch 2.3+), else
  ``torch._utils.is_compiling`` (no import of TorchDynamo, which costs about a second);
* :data:`HAS_CUSTOM_OP` -- ``torch.library.custom_op`` (torch 2.4+): the fused kernels become
  custom operators that ``torch.compile`` and ``torch.export`` trace as one node; without it they
  run as autograd Functions, and a compiled model runs each loss call outside the graph
  (:func:`outside_graph`: a graph break around the loss, the same values).

Example:
    >>> is_compiling()
    False
"""
from __future__ import annotations

import functools
import sys
from typing import Callable

import torch

__all__ = ['HAS_CUSTOM_OP', 'is_compiling', 'outside_graph']

#: whether ``torch.library.custom_op`` exists (torch 2.4+)
HAS_CUSTOM_OP = hasattr(torch.library, 'custom_op')

#: whether the code runs under ``torch.compile`` / ``torch.export`` tracing: ``torch.compiler``'s
#: (torch 2.3+), else ``torch._utils``'s, which TorchDynamo folds to True as it traces
is_compiling: Callable[[], bool] = getattr(getattr(torch, 'compiler', None), 'is_compiling', None) \
    or torch._utils.is_compiling


def outside_graph(fn: Callable) -> Callable:
    """``fn`` run eagerly when called inside a compiled region (a graph break around it), as is
    outside one: how a torch without custom operators keeps the losses and their kernels out of
    the graph (its TorchDynamo traces neither the kernels nor all of the losses' host-side code,
    e.g. their reads of ``os.environ``)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        if is_compiling():
            return sys.modules['torch._dynamo'].disable(fn)(*args, **kwargs)
        return fn(*args, **kwargs)

    return run
