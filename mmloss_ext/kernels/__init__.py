"""Fused fast paths of the hot losses.

The readable eager functionals in :mod:`mmloss_ext.losses` are the spec; the fused paths compute
the same losses in one pass over memory forward and one backward, saving only the inputs, with the
analytic gradient over the C++ kernels of ``kernels/csrc/`` (built by ``setup.py`` as
``mmloss_ext._fused``) or their Triton twins.

* :mod:`.dispatch` — whether a call takes its fused kernel (:func:`~.dispatch.use_fused`, over the
  ``impl`` switch of :mod:`mmloss_ext.core.impl`) and :func:`~.dispatch.backend`, the kernels of a device;
* :mod:`.ops` — the kernels as PyTorch custom operators (``torch.ops.mmloss_ext.*``: fake
  implementations and autograd formulas, so ``torch.compile`` and ``torch.export`` trace them as
  one node), and the guard that turns a failing Triton kernel into an eager fallback;
* :mod:`.functions` — the per-family entry points called by the losses (one code path for both
  backends: weights, ``avg_factor``, reductions, half precision); :mod:`.heatmap` and :mod:`.ghm`
  those of the Gaussian focal loss and GHM-C;
* :mod:`.gpu`, :mod:`.gpu_heatmap`, :mod:`.gpu_ghm` — the same kernels in Triton, for CUDA tensors
  (same interface as the C++ extension; imported on first use).

What runs where: CPU tensors use the C++ extension; CUDA tensors use the Triton kernels where the
loss's call site lists ``'cuda'`` in ``use_fused(..., devices=...)`` (sigmoid-focal, residual,
IoU, Gaussian focal and GHM-C) and ``triton`` imports. When the extension is missing (not built,
or built for a vector ISA the running CPU lacks) or Triton is, the loss runs its eager path;
:func:`fused_available` says which.
"""
from .dispatch import CPU_AND_CUDA, ENV_IMPL, ENV_MIN_NUMEL, IMPLS, backend, fused_available, resolve_impl, use_fused

__all__ = ['CPU_AND_CUDA', 'ENV_IMPL', 'ENV_MIN_NUMEL', 'IMPLS', 'backend', 'fused_available', 'resolve_impl', 'use_fused']
