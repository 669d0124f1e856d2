"""tools/benchmark.py at tiny sizes: the rows each case gets, the ratios and the table, on the CPU and
through the CUDA measuring strategy (run on the CPU with a stand-in for ``torch.cuda``), the
fresh-process measurements, and the command line. Correctness only: no timing is asserted."""
import importlib.util
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmloss_ext.kernels import fused_available

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'tools' / 'benchmark.py'
TINY = 1e-3  # of the detector-scale sizes: 200 x 80 logits, 1000 boxes, ...
FUSED = 'fused' if fused_available() else 'fused [ran eager]'  # CPU tensors: the C++ kernels, when built
TRITON = 'fused (triton)' if fused_available() else 'fused (triton) [ran eager]'


@pytest.fixture(scope='module')
def bench():
    """tools/benchmark.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location('benchmark_tool', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look up the module of their class
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


class FakeCuda:
    """Stands in for ``torch.cuda`` so that the CUDA strategy runs on the CPU: events read
    ``time.perf_counter``; every call appears to allocate 3 MiB beyond the 1 MiB held before it."""

    class Event:
        def __init__(self, enable_timing=False):
            assert enable_timing
            self.at = None

        def record(self):
            self.at = time.perf_counter()

        def elapsed_time(self, end):  # milliseconds, as CUDA events
            return (end.at - self.at) * 1e3

    def __init__(self):
        self.syncs = self.peak_resets = 0

    def synchronize(self):
        self.syncs += 1

    def reset_peak_memory_stats(self):
        self.peak_resets += 1

    def memory_allocated(self):
        return 1 << 20

    def max_memory_allocated(self):
        return 4 << 20

    def get_device_name(self):
        return 'stand-in device (the CPU)'


def parse_tables(text):
    """{case: {row label: [fwd+bwd ms, vs mmdet, /sigmoid, extra peak MB, 1st call ms]}} of a printout."""
    tables, case = {}, None
    for line in text.splitlines():
        if line and not line.startswith(' ') and ' one sigmoid pass ' in line:
            case = line.split(' (')[0]
            tables[case] = {}
        elif case and line.startswith('  ') and not line.split()[0] == 'impl':
            *name, ms, vs, sig, peak, first = line.split()
            tables[case][' '.join(name)] = [ms, vs, sig, peak, first]
    return tables


def check_table(bench, results, text):
    """The printed table is the results: ratios against mmdet's time when there is an mmdet row, else '—'."""
    tables = parse_tables(text)
    assert list(tables) == [r['case'] for r in results]
    for result in results:
        table = tables[result['case']]
        assert list(table) == [row['label'] for row in result['rows']]
        mmdet = [row['time'] for row in result['rows'] if row['variant'] == 'mmdet']
        for row in result['rows']:
            ms, vs, sig, peak, first = table[row['label']]
            assert ms == bench._ms(row['time'])
            assert vs == (f'{mmdet[0] / row["time"]:.2f}x' if mmdet else '—')
            assert sig == f'{row["time"] / result["sigmoid"]:.1f}x'
            assert peak == f'{row["peak"] / 2 ** 20:.1f}' and first == f'{row["first"] * 1e3:.1f}'
        if mmdet:
            assert table['mmdet'][1] == '1.00x'
    return tables


@pytest.mark.needs_mmcv_ops  # a fresh process imports mmdet's models
def test_cpu_run_rows_ratios_and_json(bench, tmp_path):
    out = io.StringIO()
    results = bench.run(['focal', 'giou', 'ce', 'dice'], 'cpu', scale=TINY, repeat=1, out=out,
                        json_path=str(tmp_path / 'bench.json'))
    text = out.getvalue()
    assert text.splitlines()[0].startswith(f'torch {torch.__version__}, CPU')
    tables = check_table(bench, results, text)
    tv = ['torchvision'] if 'torchvision' not in bench.probe_missing() else []
    assert {case: list(rows) for case, rows in tables.items()} == {
        'focal': ['mmdet', *tv, 'eager', FUSED], 'giou': ['mmdet', 'eager', FUSED],
        'ce': ['mmdet', 'torch', 'eager', FUSED], 'dice': ['mmdet', 'eager', FUSED]}
    assert [r['shape'] for r in results] == ['200x80', '1000x4', '200x81', '1x1x512x512']
    for result in results:
        assert result['device'] == 'cpu' and result['sigmoid'] > 0 and result['others_cpu'] >= 0
        for row in result['rows']:
            assert row['time'] > 0 and row['first'] > 0 and row['peak'] >= 0
            assert row['ran_fused'] == {'eager': False, 'fused': fused_available()}.get(row['variant'])
    saved = json.loads((tmp_path / 'bench.json').read_text())
    assert saved['cases'] == results
    env = saved['environment']
    assert (env['device'], env['torch'], env['threads']) == ('cpu', torch.__version__, torch.get_num_threads())
    assert env['cpu_capability'] == torch.backends.cpu.get_cpu_capability()
    assert env['fused_kernels'] == fused_available() and env['versions']['mmdet'] == '3.3.0'
    assert (env['scale'], env['repeat'], env['min_time'], env['max_others'], env['retries'],
            env['compile_backend']) == (TINY, 1, 0.0, None, 0, None)
    assert [r['title'] for r in results] == ['sigmoid focal', 'GIoU', 'softmax cross-entropy', 'Dice']


def test_cuda_code_path_on_the_cpu(bench):
    """The CUDA strategy (events, first call in process, allocator peak) with the tensors on the CPU:
    the rows, labels and table a GPU run prints, including cases with no mmdet and no torch row."""
    fake = FakeCuda()
    out = io.StringIO()
    results = bench.run(['focal', 'wiou', 'ce', 'l1'], 'cuda', scale=TINY, repeat=2, out=out,
                        meter=bench.CudaMeter(device='cpu', cuda=fake),
                        missing={'torchvision': 'left out by the test'})
    text = out.getvalue()
    head = text.split('\n\n')[0].splitlines()
    assert 'stand-in device (the CPU)' in head[0]
    assert head[1:] == ['no torchvision rows: torchvision.ops does not import (left out by the test)']
    tables = check_table(bench, results, text)
    assert {case: list(rows) for case, rows in tables.items()} == {
        'focal': ['mmdet', 'eager', TRITON], 'wiou': ['eager', TRITON],
        'ce': ['mmdet', 'torch', 'eager', TRITON], 'l1': ['mmdet', 'torch', 'eager', TRITON]}
    assert all(vs == '—' for _, vs, *_ in tables['wiou'].values())
    n_rows = sum(len(r['rows']) for r in results)
    assert fake.peak_resets == n_rows  # one peak measurement per row, by the allocator's counters
    assert all(row['peak'] == 3 << 20 for r in results for row in r['rows'])
    assert all(r['device'] == 'cuda' for r in results)


def test_without_mmdet_no_row_and_every_ratio_is_a_dash(bench):
    out = io.StringIO()
    results = bench.run(['giou', 'ce'], 'cuda', scale=TINY, repeat=1, out=out,
                        meter=bench.CudaMeter(device='cpu', cuda=FakeCuda()),
                        missing={'mmdet': 'ModuleNotFoundError: no mmdet here'})
    text = out.getvalue()
    assert 'no mmdet rows: mmdet.models does not import (ModuleNotFoundError: no mmdet here)' in text
    tables = check_table(bench, results, text)
    assert {case: list(rows) for case, rows in tables.items()} == {
        'giou': ['eager', TRITON], 'ce': ['torch', 'eager', TRITON]}
    assert {vs for table in tables.values() for _, vs, *_ in table.values()} == {'—'}


def test_compile_rows(bench):
    """The --compile rows, compiled by AOTAutograd without code generation (the default backend,
    inductor, takes half a minute per row on 2 cores)."""
    out = io.StringIO()
    variants = bench.DEFAULT_VARIANTS + bench.COMPILE_VARIANTS
    results = bench.run(['l1'], 'cpu', scale=TINY, repeat=1, variants=variants, out=out,
                        meter=bench.CudaMeter(device='cpu', cuda=FakeCuda()), missing={}, compile_backend='aot_eager')
    assert [row['label'] for row in results[0]['rows']] == ['mmdet', 'torch', 'eager', FUSED, 'compile-eager',
                                                            'compile-fused']
    assert [row['ran_fused'] for row in results[0]['rows']][-2:] == [None, None]  # not checked under compile
    assert "compile-* rows: torch.compile(backend='aot_eager') of the loss call" in out.getvalue()
    check_table(bench, results, out.getvalue())
    c = bench.BENCHMARKS['l1']
    x, target = bench.make_inputs(c, TINY)
    for variant in bench.COMPILE_VARIANTS:
        xx = x.detach().requires_grad_()
        value = bench.build_variant(c, variant, x, target, compile_backend='aot_eager')(xx)
        value.backward()
        assert value.grad_fn is not None and 'Compiled' in type(value.grad_fn).__name__  # it did compile
        torch.testing.assert_close(value, bench.build_variant(c, 'eager', x, target)(x))
        torch.testing.assert_close(xx.grad, torch.sign(x - target) / x.numel())


@pytest.mark.parametrize('case', ['focal', 'qfl', 'vfl', 'giou', 'wiou', 'smooth_l1', 'l1', 'ce', 'dice'])
def test_every_row_of_a_case_computes_the_same_loss(bench, case):
    """The rows compare like with like: mmdet, the plain-torch reference and ours agree."""
    c = bench.BENCHMARKS[case]
    x, target = bench.make_inputs(c, scale=TINY)
    if c.kind == 'boxes':  # mmdet and mmloss_ext treat inverted boxes differently (~9% of the inputs)
        valid = (x[:, 2] > x[:, 0]) & (x[:, 3] > x[:, 1])
        assert 0.8 < valid.float().mean() < 1
        x, target = x[valid], target[valid]
    variants = bench.select_variants(c, bench.DEFAULT_VARIANTS, bench.probe_missing())
    assert {'eager', 'fused'} <= set(variants) and ('mmdet' in variants) == (c.mmdet is not None)
    assert ('torch' in variants) == (case in ('smooth_l1', 'l1', 'ce'))
    if case == 'wiou':  # stateful (running mean): each row starts from a fresh loss
        variants = ['eager', 'fused']
    ref = bench.build_variant(c, 'eager', x, target)(x)
    for variant in variants:
        value = bench.build_variant(c, variant, x, target)(x)
        torch.testing.assert_close(value, ref, rtol=1e-4, atol=1e-5, msg=f'{case} / {variant}')


def test_variant_selection_and_labels(bench):
    focal, wiou = bench.BENCHMARKS['focal'], bench.BENCHMARKS['wiou']
    every = bench.VARIANTS
    assert bench.select_variants(focal, every) == ['mmdet', 'torchvision', 'eager', 'fused', 'compile-eager',
                                                   'compile-fused']
    assert bench.select_variants(focal, every, {'mmdet': 'x', 'torchvision': 'y'}) == [
        'eager', 'fused', 'compile-eager', 'compile-fused']
    assert bench.select_variants(wiou, ('fused', 'eager', 'mmdet', 'torch')) == ['eager', 'fused']
    assert bench.label('fused', 'cuda') == 'fused (triton)' and bench.label('fused', 'cpu') == 'fused'
    assert bench.label('fused', 'cuda', ran_fused=False) == 'fused (triton) [ran eager]'
    assert bench.label('eager', 'cpu', ran_fused=True) == 'eager [ran fused]'
    assert bench.label('eager', 'cpu', ran_fused=False) == 'eager'
    with pytest.raises(ValueError, match='unknown variants'):
        bench.run(['l1'], 'cpu', variants=('eager', 'triton'), out=None)


def test_a_failure_in_the_fresh_process_is_reported_and_the_next_row_still_runs(bench):
    meter = bench.CpuMeter()
    try:
        with pytest.raises(RuntimeError, match=r"no_such_case / eager in a fresh process:(.|\n)*KeyError"):
            meter.first_and_peak(dict(case='no_such_case', variant='eager', scale=1.0), None)
        first, peak = meter.first_and_peak(dict(case='l1', variant='eager', scale=TINY), None)
        assert first > 0 and peak >= 0
    finally:
        meter.close()


@pytest.mark.needs_mmcv_ops  # a fresh process imports mmdet's models
def test_command_line(tmp_path):
    """``--quick`` at a hundredth of its sizes: the command line's rows, table and JSON."""
    proc = subprocess.run([sys.executable, str(SCRIPT), '--device', 'cpu', '--quick', '--scale', '0.001', '--cases',
                           'focal', 'giou', '--json', str(tmp_path / 'out.json')], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tables = parse_tables(proc.stdout)
    assert list(tables) == ['focal', 'giou']
    assert list(tables['giou']) == ['mmdet', 'eager', FUSED]
    assert {'mmdet', 'eager', FUSED} <= set(tables['focal'])
    saved = json.loads((tmp_path / 'out.json').read_text())
    assert [r['shape'] for r in saved['cases']] == ['200x80', '1000x4']
    assert [len(r['rows']) for r in saved['cases']] == [len(t) for t in tables.values()]
    assert saved['environment']['command'] == ('tools/benchmark.py --device cpu --quick --scale 0.001 --cases focal '
                                               f'giou --json {tmp_path / "out.json"}')
    assert (saved['environment']['repeat'], saved['environment']['min_time']) == (3, 0.2)
    assert saved['environment']['max_others'] is None  # --quick: no second timing of a case


class CountingMeter:
    """A meter whose calls take the seconds their step returns: it records the order of the calls."""

    def __init__(self):
        self.calls = []

    def samples(self, fn, n):
        return [fn() for _ in range(n)]


def test_rows_are_timed_in_turns_for_at_least_min_time(bench):
    meter = CountingMeter()

    def step(name, seconds):
        return lambda: meter.calls.append(name) or seconds

    # a 1 ms row and a 250 ms row: 3 rounds, at least 0.6 s each -> 200 calls a round, and 1
    medians = bench.time_in_turns(meter, [step('fast', 1e-3), step('slow', 0.25)], [1e-3, 0.25], repeat=3,
                                  min_time=0.6)
    assert medians == [1e-3, 0.25]
    assert meter.calls.count('fast') == 3 * 200 and meter.calls.count('slow') == 3
    rounds = ''.join('f' if c == 'fast' else 's' for c in meter.calls).split('s')
    assert [len(r) for r in rounds] == [200, 200, 200, 0]  # in turns: each round, every row
    meter.calls.clear()
    bench.time_in_turns(meter, [step('fast', 1e-3)], [1e-3], repeat=5)  # no min_time: one call per round
    assert meter.calls == ['fast'] * 5


def test_the_clock_of_the_other_processes(bench):
    """others_since: the CPU time of every process less this one's, over the wall time."""
    readings = iter([(100.0, 20.0), (104.0, 21.0)])  # CPU seconds (all processes, this one): 4 and 1 more
    clock = iter([50.0, 52.0])  # 2 s later
    assert bench.others_since(lambda: next(readings), lambda: next(clock))() == 1.5  # (4 - 1) s over 2 s
    # the readings: this process's CPU time grows as it spins and is part of all processes'. (How
    # much the system-wide count grows meanwhile is not asserted: containers may virtualise
    # /proc/stat coarsely, and others_since clamps a negative difference to 0.)
    busy0, own0 = bench._cpu_seconds()
    deadline = time.perf_counter() + 30
    while bench._cpu_seconds()[1] < own0 + 0.05 and time.perf_counter() < deadline:
        sum(range(10_000))  # spin
    busy1, own1 = bench._cpu_seconds()
    assert own1 >= own0 + 0.05 and busy1 >= busy0
    assert 0 < own1 <= busy1


def test_a_case_timed_while_others_were_busy_is_timed_again(bench, monkeypatch):
    """bench_case keeps the quietest of up to 1 + retries timings, stopping at the first quiet one, or
    when the others stayed busy through the pause before a timing (the clock is read for each timing
    and each pause, in turn)."""
    def fake_clock(readings):
        readings = iter(readings)
        return lambda: (lambda: next(readings))  # others_since() -> cores()

    monkeypatch.setattr(bench, 'RETRY_WAIT', 0.0)
    meter = bench.CudaMeter(device='cpu', cuda=FakeCuda())
    monkeypatch.setattr(bench, 'others_since', fake_clock([1.2, 0.0, 0.1]))  # busy, a quiet pause, quiet
    result = bench.bench_case(bench.BENCHMARKS['l1'], 'cpu', meter, TINY, 1, ('eager', 'fused'), max_others=0.25)
    assert (result['others_cpu'], result['timings']) == (0.1, 2)
    # busy in every timing, the pauses quiet: 1 + 2 retries, the quietest kept
    monkeypatch.setattr(bench, 'others_since', fake_clock([1.2, 0.0, 0.9, 0.1, 1.0]))
    result = bench.bench_case(bench.BENCHMARKS['l1'], 'cpu', meter, TINY, 1, ('eager', 'fused'), max_others=0.25)
    assert (result['others_cpu'], result['timings']) == (0.9, 3)
    assert '; other processes: 0.90 cores, the quietest of 3 timings)' in bench.format_case(result).splitlines()[0]
    monkeypatch.setattr(bench, 'others_since', fake_clock([1.2, 1.5]))  # busy through the pause: no retiming
    result = bench.bench_case(bench.BENCHMARKS['l1'], 'cpu', meter, TINY, 1, ('eager', 'fused'), max_others=0.25)
    assert (result['others_cpu'], result['timings']) == (1.2, 1)
    monkeypatch.setattr(bench, 'others_since', fake_clock([1.2]))  # no bound: one timing
    assert bench.bench_case(bench.BENCHMARKS['l1'], 'cpu', meter, TINY, 1, ('eager',))['timings'] == 1
