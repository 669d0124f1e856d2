"""Shared test utilities: building losses, the registry's name lists, value-and-gradient parity."""
import datetime
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from mmdet.registry import MODELS as MMDET_MODELS

import mmloss_ext  # noqa: F401  (registers the losses)
from loss_cases import CASES
from mmloss_ext.core.selfcheck import TOLERANCE
from mmloss_ext.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]


def load_tool(name):
    """The script ``tools/<name>.py`` as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f'mmloss_tool_{name}', ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look up the module of their class
    spec.loader.exec_module(module)
    return module


#: every registered loss, and the names of each family (each class says its family)
NAMES = sorted(MODELS.module_dict)


def family_names(family):
    return [n for n in NAMES if MODELS.get(n).family == family]


BOX_NAMES = family_names('bbox')


def build(name, **cfg):
    """``mmloss_ext.<name>`` built through mmdet's registry (the scope resolves it), from ``cfg`` only."""
    return MMDET_MODELS.build(dict(type=f'mmloss_ext.{name}', **cfg))


def build_case(name, **cfg):
    """:func:`build` with the loss's contract case configuration (``tests/loss_cases``) under ``cfg``.

    The module's output is read as one tensor (a forward hook): a tuple result through the case's
    ``combine``, a loss of several parts (a dict) as their sum; a stateful case is in eval mode.
    The module is otherwise the real one.
    """
    loss = build(name, **{**CASES[name].cfg, **cfg})
    if CASES[name].combine is not None or loss.parts():
        loss.register_forward_hook(_read_as_one_tensor)
    return loss.eval() if CASES[name].stateful else loss


def total(out):
    """A loss result as one tensor: the sum of a dict's parts, a tensor as it is."""
    return sum(out.values()) if isinstance(out, dict) else out


def _read_as_one_tensor(module, args, output):
    """Forward hook of :func:`build_case` (module level: built losses stay picklable)."""
    return CASES[type(module).__name__].read(output)


def required_cfg(name):
    """The case's values of the loss's hyper-parameters that have no default (``REQUIRED``)."""
    return {k: CASES[name].cfg[k] for k in MODELS.get(name).spec().required()}


def value_and_grad(fn, *tensors):
    """``fn(*tensors)`` and the gradients of its sum w.r.t. every floating-point input."""
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in tensors]
    out = fn(*leaves)
    diff = [t for t in leaves if t.requires_grad]
    grads = torch.autograd.grad(out.sum(), diff, allow_unused=True)
    return out.detach(), [torch.zeros_like(t) if g is None else g for t, g in zip(diff, grads)]


def value_and_pred_grad(fn, pred, *args, **kw):
    """``fn(pred, *args, **kw)`` and the gradient of its sum w.r.t. ``pred`` only."""
    p = pred.detach().clone().requires_grad_()
    out = fn(p, *args, **kw)
    grad, = torch.autograd.grad(out.sum(), p)
    return out.detach(), grad


def assert_parity(ours, ref, *tensors, atol=1e-5, rtol=1e-5):
    """Values and gradients of ``ours`` and ``ref`` agree on the same inputs."""
    v1, g1 = value_and_grad(ours, *tensors)
    v2, g2 = value_and_grad(ref, *tensors)
    torch.testing.assert_close(v1, v2.to(v1.dtype), atol=atol, rtol=rtol)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b.to(a.dtype), atol=atol, rtol=rtol)


#: fused == eager tolerances (float64 tight, float32 1e-5 relative; half precision looser): the
#: self-check's, which holds a kernel on a new device to them
FUSED_TOL = TOLERANCE


def gloo_ranks(worker, world):
    """``[worker(rank) for rank in range(world)]``, each call in its own process of a ``world``-rank
    gloo group (``torch.distributed``), for the losses that all-reduce their state.

    Forked, so the workers inherit the imported modules instead of importing mmdet again;
    single-threaded, since a forked child of a process whose OpenMP pool has run deadlocks in its
    first parallel kernel (libgomp is not fork-safe). A rank that skips a collective makes the
    others time out (and the test fail) instead of hang."""
    with tempfile.TemporaryDirectory() as tmp:
        torch.multiprocessing.start_processes(_gloo_rank, args=(world, tmp, worker), nprocs=world, start_method='fork')
        return [torch.load(os.path.join(tmp, f'rank{rank}.pt')) for rank in range(world)]


def _gloo_rank(rank, world, tmp, worker):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{tmp}/store', rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=30))
    torch.save(worker(rank), os.path.join(tmp, f'rank{rank}.pt'))
    dist.barrier()  # every rank is done with the group
    # leave without tearing the group down: on torch 2.1, gloo's destructor can hang joining its
    # threads once the other rank has gone (the group dies with the process anyway)
    os._exit(0)
