"""Per-loss input factories: the one place a new loss adds an entry to join the contract tests.

Each family module calls :func:`case` once per registered loss. ``make(n, dtype, gen)`` returns
the positional forward arguments ``(pred, target, ...)`` for a batch of ``n`` samples (``n=0`` must
work: the empty batch). Everything else has a default that fits elementwise losses.

What a generic test needs to know about a loss (it saturates, it takes probabilities, a
hyper-parameter takes any value, ...) is a field of its :class:`Case`, set here next to its inputs,
never a list of names in a test file.

Two kinds of loss need more than inputs, and ``tests/helpers.build_case`` (which every generic
test builds through) handles both:

* a loss whose ``forward`` returns a dict of parts (``BaseLoss.parts()`` non-empty, e.g.
  SeesawLoss) gets a forward hook that sums the parts, so the generic checks see one tensor
  (``helpers.total`` sums a functional's dict the same way);
* a ``stateful`` case (statistics that every training-mode call moves, e.g. EQLV2Loss) is built
  in eval mode, so repeated calls, clones and module-vs-functional comparisons see the same
  statistics (the loss's initial ones); its own test file covers the updates.

A hyper-parameter without a default (``REQUIRED``, e.g. ``num_classes``) is given by ``cfg``.
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
    #: whether the loss, as configured by ``cfg``, reads an infinite pred as its limit (a certain
    #: prediction, e.g. a sigmoid into a bounded ratio), instead of propagating it
    saturates: bool = False
    #: whether pred holds probabilities, not logits (a logit of 1e4 is outside their domain)
    probabilities: bool = False
    #: whether an infinite logit of 1e4 keeps the loss's value inside float16's range (a squared
    #: violation of 1e4 is 1e8, past float16's largest finite value)
    float16_at_1e4: bool = True
    #: whether the loss range-checks a float target (a NaN there is an input error, not propagated)
    target_range: bool = False
    #: whether the loss may legitimately be negative
    signed: bool = False
    #: for a box loss: whether scaling both boxes leaves it unchanged (no absolute length scale)
    scale_invariant: bool = True
    #: whether integer targets are class indices the loss range-checks (identity labels are any ints)
    label_range: bool = True
    #: whether the loss also takes what mmdet's own tests pass it: float 0/1 targets, integer scores
    mmdet_dtypes: bool = False
    #: for a loss returning a tuple (``(pull, push)``): how the generic checks read the result as
    #: one tensor (e.g. ``sum``); ``helpers.build_case`` applies it to the module's output
    combine: Optional[Callable[[object], Tensor]] = None

    #: whether every training-mode call moves statistics the loss keeps: built in eval mode
    stateful: bool = False
    #: numeric hyper-parameters that take any value of their type, each with the reason (every other
    #: one declares a range)
    unbounded: Dict[str, str] = field(default_factory=dict)
    #: values to build with inside a declared range, where the range's own closed bound is ruled out
    #: by another hyper-parameter's default (e.g. ``d < u``)
    inside: Dict[str, object] = field(default_factory=dict)

    def read(self, out) -> Tensor:
        """The loss's result as the one tensor the generic checks compare: through ``combine``, a
        dict of parts summed, a tensor as it is."""
        if self.combine is not None:
            return self.combine(out)
        return sum(out.values()) if isinstance(out, dict) else out

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
from . import distill, embedding, ghm, heatmap, long_tail  # noqa: E402,F401
