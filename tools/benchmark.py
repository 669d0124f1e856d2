#!/usr/bin/env python
"""Benchmark the hot losses: mmdet's implementation, mmloss_ext eager, mmloss_ext fused.

For each case (detector-scale inputs) the table gives the median forward+backward time over
repeated runs after warm-up, its ratio to mmdet's in the same run, its ratio to one
``torch.sigmoid`` pass over the same ``pred`` (the memory-bandwidth floor), the extra peak memory
of one forward+backward call and the time of that first call, both measured in a fresh process
(peak reset with ``/proc/self/clear_refs``, read from ``VmHWM``; the extra is ``VmHWM`` after the
call minus the resident size before it, inputs already allocated).

    python tools/benchmark.py            # full sizes (a few minutes on 2 cores)
    python tools/benchmark.py --quick    # 1/10 sizes, fewer repeats
    python tools/benchmark.py --cases focal giou
    python tools/benchmark.py --device cuda   # CUDA: mmdet, ours eager, ours Triton (+ torchvision's focal)

On CUDA (``--device cuda``) times come from CUDA events (median fwd+bwd), the extra peak memory from
``torch.cuda.max_memory_allocated`` over one call (inputs already allocated), and the first-call
time includes Triton's compilation of the kernels (paid once per process and shape class). mmdet's
focal loss runs mmcv's CUDA op when mmcv was built with it (the header says so);
``torchvision.ops.sigmoid_focal_loss`` is timed too for the focal case, on a one-hot target made
outside the timed region.

Efficient-IoU and Wise-IoU (v3, training) have no mmdet implementation: their ``vs mmdet``
column is ``—``; compare fused with eager. Losses run with ``impl='eager'`` / ``impl='fused'``
explicitly. The CE case also times torch's ``F.cross_entropy`` (mean over the batch) as a
``torch`` row.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# name: (mmdet type or None, mmloss_ext type, input kind, size, has a fused path, extra config)
CASES = {
    'focal': ('FocalLoss', 'FocalLoss', 'labels', (200_000, 80), True, {}),
    'qfl': ('QualityFocalLoss', 'QualityFocalLoss', 'pair', (200_000, 80), True, {}),
    'vfl': ('VarifocalLoss', 'VarifocalLoss', 'soft', (200_000, 80), True, {}),
    'iou': ('IoULoss', 'IoULoss', 'boxes', (1_000_000,), True, {}),
    'giou': ('GIoULoss', 'GIoULoss', 'boxes', (1_000_000,), True, {}),
    'diou': ('DIoULoss', 'DIoULoss', 'boxes', (1_000_000,), True, {}),
    'ciou': ('CIoULoss', 'CIoULoss', 'boxes', (1_000_000,), True, {}),
    'eiou': ('EIoULoss', 'EIoULoss', 'boxes', (1_000_000,), True, {}),
    'siou': ('SIoULoss', 'SIoULoss', 'boxes', (1_000_000,), True, {}),
    'efficient_iou': (None, 'EfficientIoULoss', 'boxes', (1_000_000,), True, {}),  # no mmdet implementation
    'wiou': (None, 'WIoULoss', 'boxes', (1_000_000,), True, {}),  # v3, training: the running mean updated
    'smooth_l1': ('SmoothL1Loss', 'SmoothL1Loss', 'residual', (1_000_000, 4), True, {}),
    'l1': ('L1Loss', 'L1Loss', 'residual', (1_000_000, 4), True, {}),
    'balanced_l1': ('BalancedL1Loss', 'BalancedL1Loss', 'residual', (1_000_000, 4), True, {}),
    'ce': ('CrossEntropyLoss', 'CrossEntropyLoss', 'ce', (200_000, 81), True, {}),
    'dice': ('DiceLoss', 'DiceLoss', 'dice', (8, 1, 512, 512), True, {}),
}
IMPLS = ('mmdet', 'torch', 'eager', 'fused')
#: cases with a plain torch reference, timed as the 'torch' row
TORCH_REFS = {'ce': lambda x, target: torch.nn.functional.cross_entropy(x, target)}


def make_inputs(kind, size, scale=1.0):
    gen = torch.Generator().manual_seed(0)
    size = (max(1, int(size[0] * scale)),) + tuple(size[1:]) if kind != 'dice' else size
    if kind in ('labels', 'pair', 'soft'):
        n, c = size
        x = torch.randn(n, c, generator=gen)
        labels = torch.randint(0, c + 1, (n,), generator=gen)
        if kind == 'labels':
            return x, labels
        scores = torch.rand(n, generator=gen)
        if kind == 'pair':
            return x, (labels, scores)
        t = torch.zeros(n, c)
        pos = labels < c
        t[pos.nonzero()[:, 0], labels[pos]] = scores[pos]
        return x, t
    if kind == 'boxes':
        n = size[0]
        xy = torch.rand(n, 2, generator=gen) * 100
        t = torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=gen) * 50], 1)
        return t + torch.randn(n, 4, generator=gen) * 5, t
    if kind == 'residual':
        return torch.randn(*size, generator=gen), torch.randn(*size, generator=gen)
    if kind == 'ce':
        n, c = size
        return torch.randn(n, c, generator=gen), torch.randint(0, c, (n,), generator=gen)
    return torch.randn(*size, generator=gen), (torch.rand(*size, generator=gen) > 0.5).float()  # dice


def build(case, impl):
    mm_type, ours_type, _, _, has_fused, extra = CASES[case]
    if impl == 'torch':
        return TORCH_REFS[case]
    if impl == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
        register_all_modules()
        return MODELS.build(dict(type=mm_type, **extra))
    import mmloss_ext  # noqa: F401
    from mmloss_ext.registry import MODELS
    cfg = dict(type=f'mmloss_ext.{ours_type}', **extra)
    if has_fused:
        cfg['impl'] = impl
    return MODELS.build(cfg)


def step(loss, x, target):
    x = x.detach().requires_grad_()
    loss(x, target).backward()


def median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _vm(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    return 0


def measure_fresh(case, impl, scale):
    """In this (fresh) process: first-call time and extra peak memory of one fwd+bwd."""
    loss = build(case, impl)
    x, target = make_inputs(CASES[case][2], CASES[case][3], scale)
    x = x.detach().requires_grad_()
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset VmHWM to the current resident size
    before = _vm('VmRSS')
    t0 = time.perf_counter()
    loss(x, target).backward()
    first = time.perf_counter() - t0
    return dict(peak=_vm('VmHWM') - before, first=first)


def fresh(case, impl, scale):
    out = subprocess.run([sys.executable, __file__, '--_fresh', case, impl, str(scale)], capture_output=True,
                         text=True, check=True, env={**os.environ, 'PYTHONWARNINGS': 'ignore'})
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_case(case, scale, repeat, out):
    _, _, kind, size, has_fused, _ = CASES[case]
    x, target = make_inputs(kind, size, scale)
    floor = median_time(lambda: torch.sigmoid(x), repeat)
    rows = {}
    for impl in IMPLS:
        if ((impl == 'fused' and not has_fused) or (impl == 'mmdet' and CASES[case][0] is None)
                or (impl == 'torch' and case not in TORCH_REFS)):
            continue
        loss = build(case, impl)
        step(loss, x, target)  # warm-up
        step(loss, x, target)
        rows[impl] = dict(time=median_time(lambda: step(loss, x, target), repeat), **fresh(case, impl, scale))
    shape = 'x'.join(map(str, x.shape))
    out.write(f'\n{case} ({shape}; one sigmoid pass {floor * 1e3:.1f} ms)\n')
    out.write(f'  {"impl":<6} {"fwd+bwd ms":>11} {"vs mmdet":>9} {"/sigmoid":>9} {"extra peak MB":>14} '
              f'{"1st call ms":>12}\n')
    for impl, r in rows.items():
        vs = f'{rows["mmdet"]["time"] / r["time"]:>8.2f}x' if 'mmdet' in rows else f'{"—":>9}'
        out.write(f'  {impl:<6} {r["time"] * 1e3:>11.1f} {vs} '
                  f'{r["time"] / floor:>8.1f}x {r["peak"] / 2 ** 20:>14.0f} {r["first"] * 1e3:>12.1f}\n')
    out.flush()
    return dict(case=case, shape=shape, sigmoid=floor, **{k: v for k, v in rows.items()})


def _to_cuda(obj):
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_cuda(o) for o in obj)
    return obj.cuda()


def cuda_time(fn, repeat):
    """Median seconds of ``fn`` by CUDA events."""
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def cuda_first_call(fn):
    """Seconds of the first call (kernel compilation included)."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def cuda_extra_peak(fn):
    """Bytes allocated at the peak of one call beyond what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def _torchvision_focal(x, target):
    """torchvision's sigmoid focal loss on ``labels`` (one-hot outside the timed region), or None."""
    try:
        from torchvision.ops import sigmoid_focal_loss
    except ImportError:
        return None
    onehot = torch.nn.functional.one_hot(target, x.shape[1] + 1)[:, :-1].to(x.dtype)
    return lambda xx: sigmoid_focal_loss(xx, onehot, alpha=0.25, gamma=2.0, reduction='sum') / max(1, len(target))


def run_case_cuda(case, scale, repeat, out):
    """mmdet, ours eager, ours Triton (and torchvision for focal) on CUDA tensors."""
    from mmloss_ext.kernels.functions import ran_fused

    _, _, kind, size, has_fused, _ = CASES[case]
    x, target = (_to_cuda(a) for a in make_inputs(kind, size, scale))
    floor = cuda_time(lambda: torch.sigmoid(x), repeat)
    runs = {}
    for impl in IMPLS:
        if impl == 'fused' and not has_fused:
            continue
        loss = build(case, impl)
        name = 'triton' if impl == 'fused' else impl
        if impl == 'fused' and not ran_fused(loss(x.detach().requires_grad_(), target)):
            name = 'triton (ran eager!)'
        runs[name] = lambda xx, loss=loss: loss(xx, target)
    if case == 'focal':
        tv = _torchvision_focal(x, target)
        if tv is not None:
            runs['torchvision'] = tv
    rows = {}
    for name, fn in runs.items():
        def one(fn=fn):
            fn(x.detach().requires_grad_()).backward()
        first = cuda_first_call(one)
        one()
        rows[name] = dict(time=cuda_time(one, repeat), peak=cuda_extra_peak(one), first=first)
    shape = 'x'.join(map(str, x.shape))
    out.write(f'\n{case} ({shape}; one sigmoid pass {floor * 1e3:.3f} ms)\n')
    out.write(f'  {"impl":<20} {"fwd+bwd ms":>11} {"vs mmdet":>9} {"/sigmoid":>9} {"extra peak MB":>14} '
              f'{"1st call ms":>12}\n')
    for name, r in rows.items():
        out.write(f'  {name:<20} {r["time"] * 1e3:>11.3f} {rows["mmdet"]["time"] / r["time"]:>8.2f}x '
                  f'{r["time"] / floor:>8.1f}x {r["peak"] / 2 ** 20:>14.0f} {r["first"] * 1e3:>12.1f}\n')
    out.flush()
    return dict(case=case, shape=shape, device='cuda', sigmoid=floor, **rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='1/10 of the sizes, 3 repeats')
    parser.add_argument('--repeat', type=int, default=None, help='timed runs per implementation (default 7)')
    parser.add_argument('--cases', nargs='*', default=list(CASES), choices=list(CASES))
    parser.add_argument('--json', help='also write the results to this file')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu',
                        help='cuda: time mmdet / ours eager / ours Triton on the GPU')
    parser.add_argument('--_fresh', nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._fresh:
        case, impl, scale = args._fresh
        print(json.dumps(measure_fresh(case, impl, float(scale))))
        return
    scale = 0.1 if args.quick else 1.0
    repeat = args.repeat or (3 if args.quick else 7)
    if args.device == 'cuda':
        if not torch.cuda.is_available():
            parser.error('--device cuda: no CUDA device is available to torch')
        from mmloss_ext.kernels.dispatch import triton_available
        try:
            from mmcv.ops import sigmoid_focal_loss  # noqa: F401
            mmcv_focal = 'mmcv.ops.sigmoid_focal_loss imports (mmdet focal uses it)'
        except ImportError:
            mmcv_focal = 'mmcv.ops.sigmoid_focal_loss missing'
        print(f'torch {torch.__version__}, {torch.cuda.get_device_name()}, triton available: {triton_available()}, '
              f'{mmcv_focal}')
        results = [run_case_cuda(c, scale, repeat, sys.stdout) for c in args.cases]
    else:
        from mmloss_ext.kernels import fused_available
        print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability '
              f'{torch.backends.cpu.get_cpu_capability()}, fused kernels available: {fused_available()}')
        results = [run_case(c, scale, repeat, sys.stdout) for c in args.cases]
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
