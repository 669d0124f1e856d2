#!/usr/bin/env python
"""Benchmark the hot losses: mmdet's implementation, plain torch references, mmloss_ext eager and fused.

For each case (detector-scale inputs) the table has one row per variant:

* ``mmdet``: mmdet's loss (only where mmdet has one and ``mmdet.models`` imports: without mmdet the
  header says so and every ``vs mmdet`` is ``—``);
* ``torch``: a plain torch functional with the same semantics, where there is one
  (``F.cross_entropy``, ``F.l1_loss``, ``F.smooth_l1_loss``);
* ``torchvision``: ``torchvision.ops.sigmoid_focal_loss`` for the focal case, when torchvision imports
  (its one-hot target is made outside the timed region);
* ``eager`` / ``fused``: mmloss_ext with ``impl='eager'`` / ``impl='fused'``. The fused kernels are
  the C++ extension on the CPU and Triton on CUDA (labelled ``fused (triton)``). A loss that ran
  its other path although asked for one (no kernel for the device, the extension not built) is
  marked ``[ran eager]`` (``[ran fused]``), from the autograd graph of its output;
* with ``--compile``: ``compile-eager`` / ``compile-fused``, ``torch.compile`` of a function calling
  the loss with ``impl='eager'`` / ``impl='fused'``: Inductor's code for the eager formula, against
  the graph that calls the fused kernel as one custom operator (compiled ahead of time: the first
  call compiles Inductor's part only).

Columns: the median time of one forward+backward call after two warm-up calls, its ratio to
mmdet's in the same run (``—`` without an mmdet row), its ratio to one ``torch.sigmoid`` pass over
the same ``pred`` (the memory-bandwidth floor), the extra peak memory of one forward+backward call
(inputs already allocated), and the time of the first call in a process. The rows of a case are
timed in turns, ``--repeat`` rounds, a row running as many calls per round as make up
``--min-time`` seconds in all (a loss of a few ms: hundreds of calls), so that a short case's
figures hold from one run to the next. The title line of a case says how many CPU cores other
processes used on average while its rows were timed: figures taken while another job ran are
that job's as much as the loss's, so a case timed while others used more than ``--max-others``
cores is timed again after a pause (unless they stayed busy during it; at most ``--retries`` times),
and the quietest timing kept: ``--json`` records the cores others used for each case. With ``--compile``, Inductor
caches in a new directory: the compiled rows' first call compiles.

    python tools/benchmark.py            # full sizes (a few minutes on 2 cores)
    python tools/benchmark.py --quick    # 1/10 sizes, fewer repeats
    python tools/benchmark.py --quick --scale 0.001   # tiny sizes: checks that every row runs
    python tools/benchmark.py --cases focal giou --json results.json   # with the environment and settings
    python tools/benchmark.py --device cuda --compile   # on a GPU, with the torch.compile rows

One code path serves both devices; only the measuring differs:

* CPU: times by ``time.perf_counter``; the extra peak memory and the first call in a fresh process
  per row, forked from a helper process that has imported torch, mmloss_ext and mmdet but run
  nothing; the child makes the inputs, starts torch's threads with one tiny backward (what any
  program has done before its loss runs) and measures (peak reset with ``/proc/self/clear_refs``,
  read from ``VmHWM``; the extra is ``VmHWM`` after the call minus the resident size before it).
* CUDA: times by CUDA events; the first call is the first one in this process (including Triton's
  and torch.compile's compilation for its shapes), the extra peak memory is
  ``torch.cuda.max_memory_allocated`` over one later call minus what was allocated before it. The
  header says whether mmcv's CUDA focal op (which mmdet's focal loss uses) imports.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, TextIO, Tuple

import torch
import torch.nn.functional as F

SCRIPT = os.path.abspath(__file__)

#: ``(pred, target) -> (pred -> loss)``: a reference loss for one input pair (target preparation done
#: outside the returned function, i.e. outside the timed region)
Reference = Callable[[torch.Tensor, Any], Callable[[torch.Tensor], torch.Tensor]]


def _torch_cross_entropy(x, target):
    return lambda xx: F.cross_entropy(xx, target)


def _torch_l1(x, target):
    return lambda xx: F.l1_loss(xx, target)


def _torch_smooth_l1(x, target):
    return lambda xx: F.smooth_l1_loss(xx, target, beta=1.0)  # mmdet's default beta


def _torchvision_focal(x, labels):
    from torchvision.ops import sigmoid_focal_loss
    onehot = F.one_hot(labels, x.shape[1] + 1)[:, :-1].to(x.dtype)  # label C is the background
    avg = max(1, len(labels))  # mmdet's mean over the rows
    return lambda xx: sigmoid_focal_loss(xx, onehot, alpha=0.25, gamma=2.0, reduction='sum') / avg


@dataclass(frozen=True)
class Case:
    """One benchmark case: the losses compared and their inputs."""
    name: str
    mmdet: Optional[str]  # mmdet's type; None where mmdet has no such loss
    ours: str  # mmloss_ext's type
    kind: str  # the inputs, see make_inputs
    size: Tuple[int, ...]  # full size; scale applies to the first dimension
    fused: bool = True  # has a fused path (impl='fused')
    extra: Mapping[str, Any] = field(default_factory=dict)  # config given to both losses
    torch_ref: Optional[Reference] = None  # the 'torch' row
    torchvision_ref: Optional[Reference] = None  # the 'torchvision' row
    title: str = ''  # what the documentation calls it (default: the name)


BENCHMARKS: Dict[str, Case] = {c.name: c for c in (
    Case('focal', 'FocalLoss', 'FocalLoss', 'labels', (200_000, 80), torchvision_ref=_torchvision_focal,
         title='sigmoid focal'),
    Case('qfl', 'QualityFocalLoss', 'QualityFocalLoss', 'pair', (200_000, 80), title='quality focal'),
    Case('vfl', 'VarifocalLoss', 'VarifocalLoss', 'soft', (200_000, 80), title='varifocal'),
    Case('iou', 'IoULoss', 'IoULoss', 'boxes', (1_000_000,), title='IoU'),
    Case('giou', 'GIoULoss', 'GIoULoss', 'boxes', (1_000_000,), title='GIoU'),
    Case('diou', 'DIoULoss', 'DIoULoss', 'boxes', (1_000_000,), title='DIoU'),
    Case('ciou', 'CIoULoss', 'CIoULoss', 'boxes', (1_000_000,), title='CIoU'),
    Case('eiou', 'EIoULoss', 'EIoULoss', 'boxes', (1_000_000,), title='EIoU'),
    Case('siou', 'SIoULoss', 'SIoULoss', 'boxes', (1_000_000,), title='SIoU'),
    Case('efficient_iou', None, 'EfficientIoULoss', 'boxes', (1_000_000,), title='Efficient-IoU'),
    # v3, training: the running mean updated
    Case('wiou', None, 'WIoULoss', 'boxes', (1_000_000,), title='Wise-IoU v3'),
    Case('smooth_l1', 'SmoothL1Loss', 'SmoothL1Loss', 'residual', (1_000_000, 4), torch_ref=_torch_smooth_l1,
         title='SmoothL1'),
    Case('l1', 'L1Loss', 'L1Loss', 'residual', (1_000_000, 4), torch_ref=_torch_l1, title='L1'),
    Case('balanced_l1', 'BalancedL1Loss', 'BalancedL1Loss', 'residual', (1_000_000, 4), title='BalancedL1'),
    Case('ce', 'CrossEntropyLoss', 'CrossEntropyLoss', 'ce', (200_000, 81), torch_ref=_torch_cross_entropy,
         title='softmax cross-entropy'),
    Case('dice', 'DiceLoss', 'DiceLoss', 'dice', (8, 1, 512, 512), title='Dice'),
    # CenterNet's heatmaps (batch 16, 80 classes, 512 px images at stride 4)
    Case('gaussian_focal', 'GaussianFocalLoss', 'GaussianFocalLoss', 'heatmap', (16, 80, 128, 128),
         title='Gaussian focal (CenterNet)'),
    # RetinaNet's anchors with mmdet's GHM config (labels and label weights, as RetinaHead passes them)
    Case('ghmc', 'GHMC', 'GHMC', 'weighted_labels', (200_000, 80), extra=dict(bins=30, momentum=0.75),
         title='GHM-C (RetinaNet)'),
    # LVIS RoIs of a Mask R-CNN (1203 classes): Seesaw's scores have 2 objectness columns, EQLv2's 1
    Case('seesaw', 'SeesawLoss', 'SeesawLoss', 'rois', (1024, 1205), fused=False, extra=dict(num_classes=1203),
         title='Seesaw (LVIS RoIs)'),
    Case('eqlv2', 'EQLV2Loss', 'EQLV2Loss', 'rois', (1024, 1204), fused=False, extra=dict(num_classes=1203),
         title='EQLv2 (LVIS RoIs)'),
)}


class Positional(tuple):
    """The arguments after ``pred`` when a loss takes more than a target (e.g. GHMC's label
    weights), passed unpacked."""


def call_loss(loss, x, target):
    """``loss(x, target)``, or ``loss(x, *target)`` for :class:`Positional` arguments."""
    return loss(x, *target) if isinstance(target, Positional) else loss(x, target)


def as_tensor(out):
    """One tensor of a loss's result: a dict of parts (SeesawLoss) summed."""
    return sum(out.values()) if isinstance(out, dict) else out

#: the row variants, in table order (see the module docstring)
VARIANTS = ('mmdet', 'torch', 'torchvision', 'eager', 'fused', 'compile-eager', 'compile-fused')
COMPILE_VARIANTS = ('compile-eager', 'compile-fused')
DEFAULT_VARIANTS = tuple(v for v in VARIANTS if v not in COMPILE_VARIANTS)
#: the optional libraries of the reference rows: their row is left out when they do not import
OPTIONAL = {'mmdet': 'mmdet.models', 'torchvision': 'torchvision.ops'}


# ---------------------------------------------------------------------------------------------------
# inputs, variants


def make_inputs(case: Case, scale: float = 1.0, device='cpu'):
    """``(pred, target)`` of ``case`` at ``scale`` of its size (the first dimension, at least 1)."""
    gen = torch.Generator().manual_seed(0)
    size = (max(1, int(case.size[0] * scale)),) + tuple(case.size[1:])
    kind = case.kind
    if kind in ('labels', 'pair', 'soft'):
        n, c = size
        x = torch.randn(n, c, generator=gen)
        labels = torch.randint(0, c + 1, (n,), generator=gen)
        if kind == 'labels':
            target = labels
        else:
            scores = torch.rand(n, generator=gen)
            if kind == 'pair':
                target = (labels, scores)
            else:
                target = torch.zeros(n, c)
                pos = labels < c
                target[pos.nonzero()[:, 0], labels[pos]] = scores[pos]
    elif kind == 'boxes':
        n = size[0]
        xy = torch.rand(n, 2, generator=gen) * 100
        target = torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=gen) * 50], 1)
        x = target + torch.randn(n, 4, generator=gen) * 5  # ~9% come out inverted (x2 < x1): mmdet and
        # mmloss_ext give those different losses; the benchmark times, it does not compare values
    elif kind == 'residual':
        x, target = torch.randn(*size, generator=gen), torch.randn(*size, generator=gen)
    elif kind == 'ce':
        n, c = size
        x, target = torch.randn(n, c, generator=gen), torch.randint(0, c, (n,), generator=gen)
    elif kind == 'dice':
        x, target = torch.randn(*size, generator=gen), (torch.rand(*size, generator=gen) > 0.5).float()
    elif kind == 'heatmap':  # probabilities (after the head's sigmoid) and Gaussian-like targets with peaks of 1
        x = torch.rand(*size, generator=gen).clamp_(1e-4, 1 - 1e-4)
        target = torch.rand(*size, generator=gen).pow_(16)
        target.view(-1)[torch.randint(0, target.numel(), (target.numel() // 10_000,), generator=gen)] = 1.0
    elif kind == 'weighted_labels':  # labels in [0, C] (C: background) and per-anchor weights
        n, c = size
        x = torch.randn(n, c, generator=gen)
        target = Positional((torch.randint(0, c + 1, (n,), generator=gen), torch.ones(n)))
    elif kind == 'rois':  # sampled RoIs, a quarter positive: labels in [0, num_classes), else background
        n, c = size
        classes = case.extra['num_classes']
        x = torch.randn(n, c, generator=gen)
        target = torch.randint(0, classes, (n,), generator=gen)
        target[torch.rand(n, generator=gen) < 0.75] = classes
    else:
        raise ValueError(f'unknown input kind {kind!r}')
    return _to(x, device), _to(target, device)


def _to(obj, device):
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(o, device) for o in obj)
    return obj.to(device)


def probe_missing() -> Dict[str, str]:
    """The optional libraries (:data:`OPTIONAL`) that do not import here, with why."""
    missing = {}
    for name, module in OPTIONAL.items():
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - ImportError, or a broken build (mmcv's ops, CUDA libraries)
            missing[name] = f'{type(exc).__name__}: {exc}'.splitlines()[0]
    return missing


def applicable(case: Case, variant: str, missing: Mapping[str, str] = ()) -> bool:
    """Whether ``case`` has a ``variant`` row, given the optional libraries ``missing``."""
    if variant == 'mmdet':
        return case.mmdet is not None and 'mmdet' not in missing
    if variant == 'torch':
        return case.torch_ref is not None
    if variant == 'torchvision':
        return case.torchvision_ref is not None and 'torchvision' not in missing
    if variant in ('fused', 'compile-fused'):
        return case.fused
    if variant in ('eager', 'compile-eager'):
        return True
    raise ValueError(f'unknown variant {variant!r}; known: {VARIANTS}')


def select_variants(case: Case, variants: Sequence[str], missing: Mapping[str, str] = ()) -> List[str]:
    """The rows of ``case``: the ``variants`` it has, in :data:`VARIANTS` order."""
    return [v for v in VARIANTS if v in variants and applicable(case, v, missing)]


def label(variant: str, device: str, ran_fused: Optional[bool] = None) -> str:
    """A row's label; ``ran_fused`` (when known) marks an eager/fused row that ran the other path."""
    name = 'fused (triton)' if variant == 'fused' and device == 'cuda' else variant
    if variant == 'fused' and ran_fused is False:
        name += ' [ran eager]'
    elif variant == 'eager' and ran_fused:
        name += ' [ran fused]'
    return name


def build_variant(case: Case, variant: str, x: torch.Tensor, target,
                  compile_backend: str = 'inductor') -> Callable[[torch.Tensor], torch.Tensor]:
    """The loss of one row, as a function of ``pred`` (``target`` bound, losses on ``x``'s device;
    the compile rows compiled by ``torch.compile(backend=compile_backend)``)."""
    if variant == 'torch':
        return case.torch_ref(x, target)
    if variant == 'torchvision':
        return case.torchvision_ref(x, target)
    if variant == 'mmdet':
        import mmdet.models  # noqa: F401  (registers mmdet's losses)
        from mmdet.registry import MODELS
        loss = MODELS.build(dict(type=case.mmdet, **case.extra)).to(x.device)
        return lambda xx: as_tensor(call_loss(loss, xx, target))
    import mmloss_ext  # noqa: F401
    from mmloss_ext.registry import MODELS
    cfg = dict(type=f'mmloss_ext.{case.ours}', **case.extra)
    if case.fused:
        cfg['impl'] = 'fused' if variant.endswith('fused') else 'eager'
    loss = MODELS.build(cfg).to(x.device)  # with its buffers (Wise-IoU's running mean)

    def call(xx):
        return as_tensor(call_loss(loss, xx, target))

    if variant.startswith('compile-'):
        return torch.compile(call, backend=compile_backend)
    return call


# ---------------------------------------------------------------------------------------------------
# measuring: one strategy per device. A meter has ``device`` (where the inputs go), ``environment()``
# (what the figures were measured on, stored with them), ``header()`` (the first line of the
# printout), ``samples(fn, n)`` (the seconds of ``n`` calls of ``fn()``, one by one),
# ``first_and_peak(cell, step)`` (seconds of the first call and bytes of extra peak memory of one
# call; called before the row's warm-up, ``cell`` naming the row, ``step()`` running it once) and
# ``close()``.


def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            return next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), 'unknown')
    except OSError:
        return 'unknown'


class CpuMeter:
    """CPU: ``time.perf_counter``; first call and extra peak memory in a fresh process per row."""
    device = 'cpu'

    def __init__(self):
        self._helper = _ForkHelper()  # started now: its imports overlap with this process's

    def environment(self) -> dict:
        from mmloss_ext.kernels import fused_available
        return dict(device='cpu', torch=torch.__version__, cpu=_cpu_model(), threads=torch.get_num_threads(),
                    cpu_capability=torch.backends.cpu.get_cpu_capability(), fused_kernels=fused_available())

    def header(self) -> str:
        e = self.environment()
        return (f'torch {e["torch"]}, CPU, {e["threads"]} threads, CPU capability {e["cpu_capability"]}, '
                f'fused C++ kernels available: {e["fused_kernels"]}')

    def samples(self, fn: Callable[[], Any], n: int) -> List[float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return times

    def fresh(self, cell: Mapping[str, Any]) -> dict:
        """:func:`measure_fresh` of ``cell`` (its arguments) in a fresh process."""
        return self._helper.measure(cell)

    def first_and_peak(self, cell: Mapping[str, Any], step: Callable[[], Any]) -> Tuple[float, int]:
        """In a fresh process: ``cell`` holds :func:`measure_fresh`'s arguments (``step`` is unused)."""
        r = self.fresh(cell)
        return r['first'], r['peak']

    def close(self) -> None:
        self._helper.close()


class CudaMeter:
    """CUDA: CUDA events; the first call in this process; ``max_memory_allocated`` over one call.

    ``cuda`` is the module measured with (``torch.cuda``) and ``device`` where the tensors go; the
    tests pass a stand-in for both to run this strategy on the CPU.
    """

    def __init__(self, device='cuda', cuda=torch.cuda):
        self.device, self.cuda = device, cuda

    def environment(self) -> dict:
        from mmloss_ext.kernels.backends import triton_available
        try:
            from mmcv.ops import sigmoid_focal_loss  # noqa: F401
            mmcv_focal = True
        except Exception:  # noqa: BLE001 - no mmcv, or one built without ops
            mmcv_focal = False
        return dict(device='cuda', torch=torch.__version__, gpu=self.cuda.get_device_name(),
                    triton=triton_available(), mmcv_focal=mmcv_focal)

    def header(self) -> str:
        e = self.environment()
        mmcv_focal = ('mmcv.ops.sigmoid_focal_loss imports (mmdet focal uses it)' if e['mmcv_focal']
                      else 'mmcv.ops.sigmoid_focal_loss missing')
        return f'torch {e["torch"]}, {e["gpu"]}, triton available: {e["triton"]}, {mmcv_focal}'

    def samples(self, fn: Callable[[], Any], n: int) -> List[float]:
        times = []
        for _ in range(n):
            start, end = self.cuda.Event(enable_timing=True), self.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            self.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return times

    def first_and_peak(self, cell: Mapping[str, Any], step: Callable[[], Any]) -> Tuple[float, int]:
        """Called before the row's warm-up: the first ``step()``, then the extra peak of a second one."""
        self.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        self.cuda.synchronize()
        first = time.perf_counter() - t0
        self.cuda.reset_peak_memory_stats()
        before = self.cuda.memory_allocated()
        step()
        self.cuda.synchronize()
        return first, self.cuda.max_memory_allocated() - before

    def close(self) -> None:
        pass


METERS = {'cpu': CpuMeter, 'cuda': CudaMeter}


def _vm(field_name):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field_name + ':'):
                return int(line.split()[1]) * 1024
    return 0


def _start_torch() -> None:
    """What a program has done before its loss first runs: torch's thread pool started and one
    backward run (a few MB of thread stacks and autograd state that belong to no loss)."""
    y = torch.ones(1 << 17, requires_grad=True)  # above at::parallel_for's grain: every thread starts
    (y * 2).sum().backward()


def measure_fresh(case: str, variant: str, scale: float, compile_backend: str = 'inductor') -> dict:
    """In a process that has run no loss (only :func:`_start_torch`): first-call time and extra peak
    memory of one fwd+bwd, and for the eager and fused rows whether the fused kernel ran."""
    from mmloss_ext.kernels.common import ran_fused

    c = BENCHMARKS[case]
    x, target = make_inputs(c, scale)
    fn = build_variant(c, variant, x, target, compile_backend)
    x = x.detach().requires_grad_()
    _start_torch()
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset VmHWM to the current resident size
    before = _vm('VmRSS')
    t0 = time.perf_counter()
    out = fn(x)
    out.backward()
    first = time.perf_counter() - t0
    peak = _vm('VmHWM') - before
    return dict(first=first, peak=peak, ran_fused=ran_fused(out) if variant in ('eager', 'fused') else None)


class _ForkHelper:
    """A helper process (this script, ``--_fork-helper``) that imports torch, mmloss_ext and the
    optional references, then runs nothing itself: for each request it forks a child, which builds
    the row's inputs and loss and measures :func:`measure_fresh`. Each child is a fresh process
    without paying the imports again."""

    def __init__(self):
        self._stderr = tempfile.TemporaryFile(mode='w+')
        self._proc = subprocess.Popen([sys.executable, SCRIPT, '--_fork-helper'], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                      env={**os.environ, 'PYTHONWARNINGS': 'ignore'})

    def measure(self, cell: Mapping[str, Any]) -> dict:
        self._proc.stdin.write(json.dumps(dict(cell)) + '\n')
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            self._stderr.seek(0)
            raise RuntimeError(f'the measuring process exited ({self._proc.wait()}):\n{self._stderr.read()[-3000:]}')
        result = json.loads(line)
        if 'error' in result:
            raise RuntimeError(f'{cell["case"]} / {cell["variant"]} in a fresh process:\n{result["error"]}')
        return result

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait(timeout=60)
        self._proc.stdout.close()
        self._stderr.close()


def fork_helper_main() -> None:
    """The helper's loop (see :class:`_ForkHelper`): one JSON request per line in, one result out."""
    import mmloss_ext  # noqa: F401
    probe_missing()  # imports the optional references that are there
    for line in sys.stdin:
        request = json.loads(line)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: measure, answer through the pipe, exit without cleanup
            os.close(read)
            os.dup2(2, 1)  # whatever it prints stays out of the answers
            try:
                result = measure_fresh(**request)
            except BaseException:  # noqa: BLE001 - reported to the benchmark
                result = dict(error=traceback.format_exc())
            with os.fdopen(write, 'w') as f:
                f.write(json.dumps(result))
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as f:
            answer = f.read()
        _, status = os.waitpid(pid, 0)
        sys.stdout.write((answer or json.dumps(dict(error=f'the child died (wait status {status})'))) + '\n')
        sys.stdout.flush()


# ---------------------------------------------------------------------------------------------------
# the benchmark


def _cpu_seconds() -> Tuple[float, float]:
    """(CPU seconds all processes have used, of which this process's), from ``/proc``."""
    with open('/proc/stat') as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    with open('/proc/self/stat') as f:
        utime, stime = map(int, f.read().rsplit(')', 1)[1].split()[11:13])
    tick = os.sysconf('SC_CLK_TCK')
    return (user + nice + system + irq + softirq + steal) / tick, (utime + stime) / tick


def others_since(cpu_seconds: Callable[[], Tuple[float, float]] = _cpu_seconds,
                 clock: Callable[[], float] = time.perf_counter) -> Callable[[], Optional[float]]:
    """A clock of the other processes: calling the result gives the CPU cores they used on average
    since (``None`` without ``/proc``). A timing taken while they used a large share of the cores
    measures them too. (``cpu_seconds`` and ``clock``: :func:`_cpu_seconds` and the wall clock.)"""
    try:
        start, t0 = cpu_seconds(), clock()
    except OSError:
        return lambda: None

    def cores() -> float:
        (busy, own), wall = cpu_seconds(), clock() - t0
        return max(0.0, (busy - start[0]) - (own - start[1])) / max(wall, 1e-9)

    return cores


def time_in_turns(meter, steps: Sequence[Callable[[], Any]], estimates: Sequence[float], repeat: int,
                  min_time: float = 0.0) -> List[float]:
    """The median seconds of one call of each of ``steps`` (warmed up; ``estimates``: the seconds of
    one call), timed in turns: ``repeat`` rounds, in each of which every step runs the calls that
    bring its total to at least ``min_time`` seconds over the rounds (hundreds for a loss of a few
    ms). Taking turns, a slowdown of the machine while a case runs (another process) falls on all
    its rows alike, and the ratios between them hold."""
    calls = [max(1, math.ceil(min_time / (repeat * max(t, 1e-9)))) for t in estimates]
    samples: List[List[float]] = [[] for _ in steps]
    for _ in range(repeat):
        for step, n, times in zip(steps, calls, samples):
            times += meter.samples(step, n)
    return [statistics.median(times) for times in samples]


#: seconds to wait before timing a case again because other processes were busy
RETRY_WAIT = 30.0


def bench_case(case: Case, device: str, meter, scale: float, repeat: int, variants: Sequence[str],
               missing: Mapping[str, str] = (), compile_backend: str = 'inductor', min_time: float = 0.0,
               max_others: Optional[float] = None, retries: int = 2) -> dict:
    """Time the rows of one case (see :func:`time_in_turns`); return its result (what the table prints
    and ``--json`` stores). When other processes used more than ``max_others`` CPU cores meanwhile
    (:func:`others_since`), the rows are timed again after :data:`RETRY_WAIT` seconds, up to
    ``retries`` times, and the quietest timing is kept (``timings``: how many were taken). A pause
    during which the others stayed busy ends the retries: a long job (a training run) would be
    measured again with the loss."""
    from mmloss_ext.kernels.common import ran_fused

    x, target = make_inputs(case, scale, meter.device)

    def floor_step():
        return torch.sigmoid(x)

    floor_step()
    steps, estimates = [floor_step], meter.samples(floor_step, 1)
    selected = select_variants(case, variants, missing)
    if any(v in COMPILE_VARIANTS for v in selected):
        torch.compiler.reset()  # each case's compiled rows start from empty caches (and recompilation counts)
    rows = []
    for variant in selected:
        fn = build_variant(case, variant, x, target, compile_backend)

        def step(fn=fn):
            out = fn(x.detach().requires_grad_())
            out.backward()
            return out

        cell = dict(case=case.name, variant=variant, scale=scale, compile_backend=compile_backend)
        first, peak = meter.first_and_peak(cell, step)
        out = step()  # warm-up
        estimates += meter.samples(step, 1)  # the second warm-up call
        steps.append(step)
        ran = ran_fused(out) if variant in ('eager', 'fused') else None
        rows.append(dict(variant=variant, label=label(variant, device, ran), peak=peak, first=first, ran_fused=ran))
    timings = []
    for attempt in range(1 + (retries if max_others is not None else 0)):
        if attempt:
            waited = others_since()
            time.sleep(RETRY_WAIT)
            if (waited() or 0.0) > max_others:
                break  # still busy while this process slept: another timing would measure them again
        others = others_since()
        medians = time_in_turns(meter, steps, estimates, repeat, min_time)
        timings.append((others(), medians))
        if max_others is None or timings[-1][0] is None or timings[-1][0] <= max_others:
            break
    others_cpu, (floor, *seconds) = min(timings, key=lambda t: t[0] or 0.0)
    for row, t in zip(rows, seconds):
        row['time'] = t
    return dict(case=case.name, title=case.title or case.name, kind=case.kind, device=device,
                shape='x'.join(map(str, x.shape)), sigmoid=floor, others_cpu=others_cpu, timings=len(timings),
                rows=rows)


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f'{ms:.3f}' if ms < 1 else f'{ms:.2f}' if ms < 10 else f'{ms:.1f}'


def format_case(result: dict) -> str:
    """The table of one case: a title line, the column header, one line per row."""
    rows = result['rows']
    mmdet = next((r for r in rows if r['variant'] == 'mmdet'), None)
    width = max([6] + [len(r['label']) for r in rows])
    others = '' if result['others_cpu'] is None else f'; other processes: {result["others_cpu"]:.2f} cores'
    if result['timings'] > 1:
        others += f', the quietest of {result["timings"]} timings'
    lines = [f'{result["case"]} ({result["shape"]}; one sigmoid pass {_ms(result["sigmoid"])} ms{others})',
             f'  {"impl":<{width}} {"fwd+bwd ms":>11} {"vs mmdet":>9} {"/sigmoid":>9} {"extra peak MB":>14} '
             f'{"1st call ms":>12}']
    for r in rows:
        vs = f'{mmdet["time"] / r["time"]:>8.2f}x' if mmdet else f'{"—":>9}'
        lines.append(f'  {r["label"]:<{width}} {_ms(r["time"]):>11} {vs} {r["time"] / result["sigmoid"]:>8.1f}x '
                     f'{r["peak"] / 2 ** 20:>14.1f} {r["first"] * 1e3:>12.1f}')
    return '\n'.join(lines)


def header(meter, cases: Sequence[Case], variants: Sequence[str], missing: Mapping[str, str],
           compile_backend: str) -> str:
    lines = [meter.header()]
    for name, why in missing.items():  # the optional libraries are named as their rows
        if name in variants and any(applicable(c, name) for c in cases):
            lines.append(f'no {name} rows: {OPTIONAL[name]} does not import ({why})')
    if any(v in variants for v in COMPILE_VARIANTS):
        lines.append(f'compile-* rows: torch.compile(backend={compile_backend!r}) of the loss call')
    return '\n'.join(lines)


def version(module: str) -> Optional[str]:
    """``module``'s version, or None when it does not import (missing or broken: its rows say so)."""
    try:
        return importlib.import_module(module).__version__
    except Exception:  # noqa: BLE001
        return None


def _versions() -> Dict[str, str]:
    """The versions of the libraries whose rows the benchmark has (those that import)."""
    return {name: v for name in ('mmdet', 'mmcv', 'mmengine', 'torchvision') if (v := version(name)) is not None}


def run(cases: Sequence[str], device: str = 'cpu', scale: float = 1.0, repeat: int = 7,
        variants: Sequence[str] = DEFAULT_VARIANTS, out: Optional[TextIO] = sys.stdout,
        json_path: Optional[str] = None, *, meter=None, missing: Optional[Mapping[str, str]] = None,
        compile_backend: str = 'inductor', min_time: float = 0.0, max_others: Optional[float] = None,
        retries: int = 2, command: Optional[str] = None) -> List[dict]:
    """Benchmark ``cases`` (names of :data:`BENCHMARKS`, or :class:`Case` objects) on ``device`` ('cpu' or
    'cuda'), print the tables to ``out`` and return the results.

    ``json_path``: also write them there, as ``{"environment": ..., "cases": results}``, the
    environment being the meter's (torch, the CPU or GPU, threads, ...) with the libraries'
    versions, the date, the settings and ``command`` (the command line, when given).
    ``meter`` measures (default: :data:`METERS`\\ [device]); ``missing`` names the optional libraries
    to leave out, with why (default: :func:`probe_missing`); ``compile_backend`` is the
    ``torch.compile`` backend of the compile rows; ``min_time``: the least total seconds of the
    timed calls of a row (:func:`time_in_turns`); ``max_others`` and ``retries``: a case timed while
    other processes used more cores than that is timed again (:func:`bench_case`).
    """
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f'unknown variants {sorted(unknown)}; known: {VARIANTS}')
    selected = [c if isinstance(c, Case) else BENCHMARKS[c] for c in cases]
    missing = probe_missing() if missing is None else dict(missing)
    own_meter = meter is None
    meter = METERS[device]() if own_meter else meter
    results = []
    try:
        if out is not None:
            out.write(header(meter, selected, variants, missing, compile_backend) + '\n')
        for case in selected:
            results.append(bench_case(case, device, meter, scale, repeat, variants, missing, compile_backend,
                                      min_time, max_others, retries))
            if out is not None:
                out.write('\n' + format_case(results[-1]) + '\n')
                out.flush()
        environment = dict(meter.environment(), versions=_versions(), date=time.strftime('%Y-%m-%d'),
                           command=command, scale=scale, repeat=repeat, min_time=min_time, max_others=max_others,
                           retries=retries if max_others is not None else 0,
                           compile_backend=compile_backend if any(v in variants for v in COMPILE_VARIANTS) else None)
    finally:
        if own_meter:
            meter.close()
    if json_path:
        with open(json_path, 'w') as f:
            json.dump(dict(environment=environment, cases=results), f, indent=1)
            f.write('\n')
    return results


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='1/10 of the sizes, 3 repeats')
    parser.add_argument('--scale', type=float, default=None,
                        help='fraction of the full sizes (default 1, or 0.1 with --quick)')
    parser.add_argument('--repeat', type=int, default=None,
                        help='rounds of timed calls per row (default 7, or 3 with --quick)')
    parser.add_argument('--min-time', type=float, default=None,
                        help='least total seconds of the timed calls of a row: a fast row runs several calls '
                             'per round (default 1, or 0.2 with --quick)')
    parser.add_argument('--cases', nargs='*', default=list(BENCHMARKS), choices=list(BENCHMARKS))
    parser.add_argument('--max-others', type=float, default=None,
                        help=f'time a case again (after {RETRY_WAIT:g} s, if others were quiet then; at most '
                             '--retries times) when other processes used more CPU cores than this meanwhile '
                             '(default 0.25; none with --quick)')
    parser.add_argument('--retries', type=int, default=2, help='see --max-others (default 2)')
    parser.add_argument('--json', help='also write the results to this file')
    parser.add_argument('--device', choices=tuple(METERS), default='cpu',
                        help='cuda: the same rows on the GPU, the fused row running the Triton kernels')
    parser.add_argument('--compile', action='store_true', help='add the torch.compile rows')
    parser.add_argument('--compile-backend', default='inductor',
                        help="torch.compile's backend for those rows (default inductor)")
    parser.add_argument('--_fork-helper', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._fork_helper:
        fork_helper_main()
        return []
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is available to torch')
    variants = DEFAULT_VARIANTS + (COMPILE_VARIANTS if args.compile else ())
    min_time = args.min_time if args.min_time is not None else 0.2 if args.quick else 1.0
    command = ' '.join(['tools/benchmark.py', *(sys.argv[1:] if argv is None else argv)])
    cache = None
    if args.compile and 'TORCHINDUCTOR_CACHE_DIR' not in os.environ:
        # the compiled rows' first call compiles, rather than read what an earlier run left in the cache
        cache = os.environ['TORCHINDUCTOR_CACHE_DIR'] = tempfile.mkdtemp(prefix='mmloss_inductor_')
    try:
        return run(args.cases, args.device, scale=args.scale or (0.1 if args.quick else 1.0),
                   repeat=args.repeat or (3 if args.quick else 7), variants=variants, out=sys.stdout,
                   json_path=args.json, compile_backend=args.compile_backend, min_time=min_time,
                   max_others=args.max_others if args.max_others is not None else None if args.quick else 0.25,
                   retries=args.retries, command=command)
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)
            del os.environ['TORCHINDUCTOR_CACHE_DIR']


if __name__ == '__main__':
    main()
