"""Per-loss input factories: the one place a new loss adds an entry to join the contract tests.

Each family module calls :func:`case` once per registered loss. ``make(n, dtype, gen)`` returns
the positional forward arguments ``(pred, target, ...)`` for a batch of ``n`` samples (``n=0`` must
work: the empty batch). Everything else has a default that fits elementwise losses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import torch
from torch import Tensor

Args = tuple


@dataclass(frozen=True)
class Case:
    name: str
    #: (n, dtype, generator) -> positional forward args, pred first
    make: Callable[[int, torch.dtype, torch.Generator], Args]
    #: constructor hyper-parameters used by the contract build (beyond the defaults)
    cfg: Dict[str, object] = field(default_factory=dict)
    #: args -> expected shape of the 'none' output
    none_shape: Callable[[Args], tuple] = lambda args: tuple(args[0].shape)
    #: (args, generator) -> a positive weight accepted by the loss
    weight: Optional[Callable[[Args, torch.Generator], Tensor]] = None
    #: args -> the same args with a shape mismatch the loss must reject
    mismatch: Callable[[Args], Args] = lambda args: (args[0], args[1][:-1], *args[2:])
    #: whether 'sum' is the sum of 'none' and 'mean' with avg_factor is that sum / avg_factor
    additive: bool = True
    #: whether the loss has a gradient w.r.t. pred (float64 gradcheck)
    differentiable: bool = True

    def make_weight(self, args: Args, gen: torch.Generator) -> Tensor:
        if self.weight is not None:
            return self.weight(args, gen)
        shape = self.none_shape(args)
        return torch.rand(shape, generator=gen, dtype=args[0].dtype) + 0.5


CASES: Dict[str, Case] = {}


def case(name: str, make, **kw) -> Case:
    if name in CASES:
        raise KeyError(f'duplicate case {name}')
    CASES[name] = c = Case(name, make, **kw)
    return c


def randn(gen: torch.Generator, *shape: int, dtype=torch.float32, scale: float = 1.0) -> Tensor:
    return torch.randn(*shape, generator=gen, dtype=dtype) * scale


from . import regression  # noqa: E402,F401  (each family module registers its cases)
from . import classification, segmentation, bbox, image  # noqa: E402,F401
from . import ghm  # noqa: E402,F401
