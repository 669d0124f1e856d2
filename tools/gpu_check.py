#!/usr/bin/env python
"""Check the fused kernels on a CUDA GPU in one command (``make gpu-check``).

Three parts, written as ``OUT.md`` and ``OUT.json``:

1. parity: for every loss with a fused path (the cases of ``tools/benchmark.py``), the fused call
   (Triton on CUDA) against the eager formula on the same device, values and gradients, in
   float32, float16 and bfloat16 (tolerances in :data:`DTYPES`), and whether the kernel ran;
2. compilation: Triton's first call (forward + backward, from an empty kernel cache) per case,
   against a warm call;
3. the benchmark table of ``tools/benchmark.py`` on the device: our eager, our Triton kernels,
   ``torch.compile`` of our eager formula, and torchvision's ``sigmoid_focal_loss`` where
   torchvision imports.

The exit status is 1 when a parity check fails. It needs torch and triton only (the mmdet rows of
the benchmark appear where mmdet imports)::

    python tools/gpu_check.py --out gpu_check        # about 2 minutes on an H100-class GPU

Without a GPU, ``--interpret`` runs the same code path on the CPU under Triton's interpreter
(``TRITON_INTERPRET=1`` is set before triton is imported) at tiny sizes; the test suite runs it.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import os.path as osp
import sys
import tempfile
import time
from typing import List, Optional, Sequence

if '--interpret' in sys.argv:  # before anything imports triton
    os.environ['TRITON_INTERPRET'] = '1'
# the parity part compares the kernels' own results: no self-check answering a wrong one eagerly
os.environ['MMLOSS_EXT_SELF_CHECK'] = '0'

import torch  # noqa: E402

TOOLS = osp.dirname(osp.abspath(__file__))

#: the parity dtypes and their tolerances: fused and eager both compute in float32 and round the
#: result to the input dtype, so half precision differs by a few of its rounding steps
DTYPES = {'float32': (torch.float32, dict(rtol=1e-4, atol=1e-5)),
          'float16': (torch.float16, dict(rtol=1e-2, atol=1e-2)),
          'bfloat16': (torch.bfloat16, dict(rtol=5e-2, atol=5e-2))}

#: the interpreter's sizes (Triton's interpreter runs each program in Python)
TINY_SIZES = {'labels': (64, 8), 'pair': (64, 8), 'soft': (64, 8), 'boxes': (96,), 'residual': (64, 4),
              'ce': (64, 9), 'dice': (2, 1, 8, 8), 'heatmap': (2, 3, 8, 8), 'weighted_labels': (64, 8)}


def load_benchmark():
    """tools/benchmark.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location('mmloss_benchmark', osp.join(TOOLS, 'benchmark.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look up the module of their class
    spec.loader.exec_module(module)
    return module


class HostClock:
    """Stands in for ``torch.cuda`` in the benchmark's CUDA meter under ``--interpret``: events
    read ``time.perf_counter``, no device memory is counted."""

    class Event:
        def __init__(self, enable_timing=False):
            self.at = None

        def record(self):
            self.at = time.perf_counter()

        def elapsed_time(self, end):
            return (end.at - self.at) * 1e3

    def synchronize(self):
        pass

    def reset_peak_memory_stats(self):
        pass

    def memory_allocated(self):
        return 0

    def max_memory_allocated(self):
        return 0

    def get_device_name(self):
        return "the CPU, under Triton's interpreter"


def _value_and_grad(fn, x, target, call_loss, as_tensor):
    x = x.detach().requires_grad_()
    out = as_tensor(call_loss(fn, x, target))
    out.backward()
    return out.detach(), x.grad


def parity(bench, case, device: str, scale: float, dtype_name: str) -> dict:
    """Fused against eager for one case and dtype: the largest differences, and whether they pass."""
    from mmloss_ext.kernels.common import ran_fused
    from mmloss_ext.registry import MODELS
    dtype, tol = DTYPES[dtype_name]
    x, target = bench.make_inputs(case, scale, device)
    x = x.to(dtype)
    build = lambda impl: MODELS.build(dict(type=f'mmloss_ext.{case.ours}', impl=impl, **case.extra)).to(device)  # noqa: E731
    fused, eager = build('fused'), build('eager')
    probe = bench.as_tensor(bench.call_loss(fused, x.detach().requires_grad_(), target))
    ran = ran_fused(probe)
    fused, eager = build('fused'), build('eager')  # fresh state (the running statistics of WIoU, GHM-C)
    got = _value_and_grad(fused, x, target, bench.call_loss, bench.as_tensor)
    expected = _value_and_grad(eager, x, target, bench.call_loss, bench.as_tensor)
    row = dict(case=case.name, dtype=dtype_name, ran_fused=ran, ok=True)
    for what, g, e in zip(('value', 'grad'), got, expected):
        g, e = g.double(), e.double()
        row[f'{what}_max_abs'] = float((g - e).abs().max()) if g.numel() else 0.0
        row[f'{what}_finite'] = bool(torch.isfinite(g).all())
        try:
            torch.testing.assert_close(g, e, **tol)
        except AssertionError:
            row['ok'] = False
        row['ok'] = row['ok'] and row[f'{what}_finite']
    return row


def first_call(bench, case, device: str, scale: float, sync) -> dict:
    """Seconds of the first fused forward + backward of ``case`` (Triton compiles its kernels
    there) and of a warm one."""
    from mmloss_ext.registry import MODELS
    x, target = bench.make_inputs(case, scale, device)
    loss = MODELS.build(dict(type=f'mmloss_ext.{case.ours}', impl='fused', **case.extra)).to(device)
    times = []
    for _ in range(2):
        sync()
        t0 = time.perf_counter()
        bench.as_tensor(bench.call_loss(loss, x.detach().requires_grad_(), target)).backward()
        sync()
        times.append(time.perf_counter() - t0)
    return dict(case=case.name, first=times[0], warm=times[1])


def markdown(header: str, parities: List[dict], firsts: List[dict], results: List[dict]) -> str:
    lines = ['# GPU check', '', header, '', '## Fused against eager', '',
             '| case | dtype | kernel ran | value max abs diff | grad max abs diff | ok |', '|---|---|---|---|---|---|']
    for p in parities:
        lines.append(f'| {p["case"]} | {p["dtype"]} | {"yes" if p["ran_fused"] else "no (eager)"} | '
                     f'{p["value_max_abs"]:.2e} | {p["grad_max_abs"]:.2e} | {"ok" if p["ok"] else "FAIL"} |')
    lines += ['', '## First call (compilation) and a warm call, fused forward + backward', '',
              '| case | first call ms | warm call ms |', '|---|---|---|']
    for f in firsts:
        lines.append(f'| {f["case"]} | {f["first"] * 1e3:.1f} | {f["warm"] * 1e3:.2f} |')
    variants = [v for v in ('eager', 'fused', 'compile-eager', 'torchvision')
                if any(r['variant'] == v for res in results for r in res['rows'])]
    lines += ['', '## Benchmark (median forward + backward, ms)', '',
              '| case | shape | ' + ' | '.join(variants) + ' | fused vs eager | fused vs compiled eager |',
              '|---|---|' + '---|' * (len(variants) + 2)]
    for res in results:
        t = {r['variant']: r['time'] for r in res['rows']}
        cells = [f'{t[v] * 1e3:.3f}' if v in t else '—' for v in variants]
        vs = [f'{t[ref] / t["fused"]:.2f}×' if ref in t and 'fused' in t else '—' for ref in ('eager', 'compile-eager')]
        lines.append(f'| {res["case"]} | {res["shape"]} | ' + ' | '.join(cells + vs) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='gpu_check', help='report files OUT.md and OUT.json')
    parser.add_argument('--scale', type=float, default=1.0, help="fraction of the benchmark's sizes")
    parser.add_argument('--repeat', type=int, default=10)
    parser.add_argument('--cases', nargs='+', help='benchmark case names (default: every fused one)')
    parser.add_argument('--no-compile', action='store_true', help='leave out the torch.compile rows')
    parser.add_argument('--interpret', action='store_true',
                        help="no GPU: the CPU under Triton's interpreter, at tiny sizes")
    args = parser.parse_args(argv)

    bench = load_benchmark()
    import mmloss_ext  # noqa: F401
    from mmloss_ext.kernels.backends import triton_available, triton_on_cpu

    os.environ.setdefault('TRITON_CACHE_DIR', tempfile.mkdtemp(prefix='mmloss_triton_'))  # first calls compile
    cases = [bench.BENCHMARKS[n] for n in (args.cases or [n for n, c in bench.BENCHMARKS.items() if c.fused])]
    if args.interpret:
        device, cuda = 'cpu', HostClock()
        cases = [dataclasses.replace(c, size=TINY_SIZES[c.kind]) for c in cases]
        routing = triton_on_cpu()
    else:
        if not torch.cuda.is_available():
            parser.exit(2, 'gpu_check.py: no CUDA device (use --interpret to run the code path on the CPU)\n')
        device, cuda = 'cuda', torch.cuda
        routing = _nothing()
    if not triton_available():
        parser.exit(2, 'gpu_check.py: triton does not import\n')

    variants = ('eager', 'fused', 'torchvision') + (() if args.no_compile else ('compile-eager',))
    with routing:
        parities = [parity(bench, c, device, args.scale, d) for c in cases for d in DTYPES]
        firsts = [first_call(bench, c, device, args.scale, cuda.synchronize) for c in cases]
        meter = bench.CudaMeter(device=device, cuda=cuda)
        results = bench.run(cases, device='cuda', scale=args.scale, repeat=args.repeat, variants=variants,
                            out=sys.stdout, meter=meter, missing=bench.probe_missing())
    header = meter.header() + f', triton {bench.version("triton") or "missing"}'
    with open(args.out + '.md', 'w') as f:
        f.write(markdown(header, parities, firsts, results))
    with open(args.out + '.json', 'w') as f:
        json.dump(dict(header=header, parity=parities, first_call=firsts, benchmark=results), f, indent=1)
    failed = [f'{p["case"]} {p["dtype"]}' for p in parities if not p['ok']]
    print(f'\nparity: {len(parities) - len(failed)} of {len(parities)} ok' + (f'; FAILED: {failed}' if failed else ''))
    print(f'wrote {args.out}.md and {args.out}.json')
    return 1 if failed else 0


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == '__main__':
    sys.exit(main())
