"""Contract cases for the gradient harmonizing losses, GHMC and GHMR.

Both take mmdet's forward ``(pred, target, label_weight, ...)``; the contract tests pass the weight
as ``weight=``, which the classes accept as the same argument (mmloss_ext's name for it), so the
cases are plain ``(pred, target)`` pairs and the generic weight tests (shapes, devices, zeros)
exercise ``label_weight`` itself.

``additive=False``: GHM's ``'mean'`` divides the weighted sum by its own count of valid elements
(GHMR: the sum of the weights), not by the number of elements nor by ``avg_factor`` (accepted and
not used, as mmdet), so the generic ``'mean'``/``avg_factor`` identities do not hold;
tests/test_ghm.py checks GHM's own (``'sum'`` is the sum of ``'none'``, ``'mean'`` that sum over
``tot``). ``momentum`` stays 0 here: with a running histogram a training-mode module changes on
every call (tests/test_ghm.py covers it).
"""

from . import case, randn
from .classification import C, labels


def ghmc_inputs(n, dtype, gen):
    """Logits (n, C) and labels in [0, C] (C: mmdet's background)."""
    return randn(gen, n, C, dtype=dtype, scale=2.0), labels(gen, n, C + 1)


def ghmr_inputs(n, dtype, gen):
    """Box deltas (n, 4) whose residuals spread over the bins of mu=0.05 (|d| ~ mu)."""
    return randn(gen, n, 4, dtype=dtype, scale=0.05), randn(gen, n, 4, dtype=dtype, scale=0.05)


case('GHMC', ghmc_inputs, cfg={'bins': 5}, additive=False)
case('GHMR', ghmr_inputs, cfg={'mu': 0.05, 'bins': 6}, additive=False)
