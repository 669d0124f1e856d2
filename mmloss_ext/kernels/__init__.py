"""Fused fast paths of the hot losses.

The readable eager functionals in :mod:`mmloss_ext.losses` are the spec; the fused paths compute
the same losses in one pass over memory forward and one backward, saving only the inputs, with the
analytic gradient. Every fused operation has the same shape, one folder ``kernels/<op>/``:

* ``__init__.py`` -- its entry point, which the losses call after their own validation (weights in
  mmdet's shapes, ``avg_factor`` and reductions through :mod:`.common`, half precision computed in
  float32), and its custom operator (:func:`.operators.define`);
* ``<op>.cpp`` -- its C++ kernel, built with the others into ``mmloss_ext._fused`` (it registers
  itself with ``MMLOSS_REGISTER_OP``);
* ``<op>_triton.py`` -- its Triton kernel, the same functions for CUDA (when it has one);
* its ids, hyper-parameter layout and constants in :mod:`mmloss_ext.core.abi`.

A loss reaches an operation by importing its entry point (``from ..kernels import boxes``), which
defines the operator and so registers the operation and its backends
(:data:`.backends.OPERATIONS`). Around the operations:

* :mod:`.backends` -- the one table from device type to backend (CPU: the C++ extension; CUDA:
  Triton; :func:`.backends.triton_on_cpu`: Triton's interpreter on the CPU) and the backends;
* :mod:`.dispatch` -- whether a call takes its fused kernel (:func:`~.dispatch.use_fused`, over the
  ``impl`` switch of :mod:`mmloss_ext.core.impl`);
* :mod:`.operators` -- how an operation becomes a PyTorch custom operator (``torch.ops.mmloss_ext.*``:
  fake implementations and autograd formulas, so ``torch.compile`` and ``torch.export`` trace it as
  one node) and the guard that turns a failing Triton kernel into an eager fallback;
* :mod:`.common` and :mod:`.triton_common` -- what the entry points and the Triton kernels share;
* :mod:`.build` -- how the C++ kernels are compiled (by ``setup.py``, or on first use).

When a device's backend is missing (the extension not built, or built for a vector ISA the
running CPU lacks; ``triton`` not installed) or has no kernel for the operation, the loss runs
its eager path; :func:`fused_available` says which.
"""
from .dispatch import ENV_IMPL, ENV_MIN_NUMEL, IMPLS, fused_available, resolve_impl, use_fused

__all__ = ['ENV_IMPL', 'ENV_MIN_NUMEL', 'IMPLS', 'fused_available', 'resolve_impl', 'use_fused']
