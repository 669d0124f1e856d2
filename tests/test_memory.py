"""The fused paths' memory, held by a test rather than by a README figure.

For every case of tools/benchmark.py with a fused path, at a moderate size (:data:`PRED_ELEMENTS`),
the extra peak memory of one forward + backward call of the fused path is under :data:`FRACTION` of
the eager path's. Both are measured as the benchmark measures them (``CpuMeter.fresh``: a fresh
process per cell, forked from a helper that has imported everything and run no loss, the peak read
from ``VmHWM`` after resetting it), so the test and the README's figures measure the same thing.
Peak memory, unlike time, hardly moves from one run to the next (a few pages): the bound is not
flaky. It fails when a fused path takes a large share of the eager path's memory: a first call
that imports ``torch._dynamo`` (100 MB, as GHM-C's histogram operator once did), or an extra
buffer of ``pred``'s size where the eager path holds only a few (L1, cross-entropy).
"""
import pytest

from helpers import load_tool
from mmloss_ext.kernels import fused_available

#: about this many elements of ``pred`` per case (16 MB: 50k x 80 logits, 1M boxes, 8 x 512 x 512 masks)
PRED_ELEMENTS = 4_000_000
#: the fused path's extra peak memory is under this fraction of the eager path's, in every case.
#: The fused paths allocate the gradient of ``pred`` and nothing else of its size; the eager paths
#: hold several intermediates besides (at these sizes the fused/eager ratio is 0.06 for the
#: Gaussian focal loss, 0.19 for GHM-C, 0.38 for L1, whose eager path holds the fewest).
FRACTION = 0.5


BENCH = load_tool('benchmark')
FUSED_BENCHMARKS = [name for name, case in BENCH.BENCHMARKS.items() if case.fused]


def moderate_scale(case) -> float:
    """The benchmark's scale that gives ``case`` about :data:`PRED_ELEMENTS` elements of ``pred``."""
    x, _ = BENCH.make_inputs(case, scale=1 / case.size[0])  # one unit of the first dimension
    return min(1.0, PRED_ELEMENTS / (x.numel() * case.size[0]))


@pytest.fixture(scope='module')
def peaks():
    """``{(case, variant): measure_fresh's result}`` for the eager and fused rows of every fused case."""
    assert fused_available(), 'mmloss_ext._fused is missing: run `make install`'
    meter = BENCH.CpuMeter()
    try:
        yield {(name, variant): meter.fresh(dict(case=name, variant=variant, scale=moderate_scale(case)))
               for name, case in BENCH.BENCHMARKS.items() if case.fused for variant in ('eager', 'fused')}
    finally:
        meter.close()


def test_the_cases_are_the_benchmarks_fused_ones_at_moderate_sizes():
    assert len(FUSED_BENCHMARKS) >= 18
    assert {'focal', 'giou', 'ce', 'dice', 'ghmc', 'gaussian_focal'} <= set(FUSED_BENCHMARKS)
    for name in FUSED_BENCHMARKS:
        case = BENCH.BENCHMARKS[name]
        x, _ = BENCH.make_inputs(case, moderate_scale(case))
        assert PRED_ELEMENTS / 2 <= x.numel() <= PRED_ELEMENTS * 1.05, (name, tuple(x.shape))


@pytest.mark.needs_mmcv_ops  # a fresh process imports mmdet's models
@pytest.mark.parametrize('case', FUSED_BENCHMARKS)
def test_fused_extra_peak_is_a_fraction_of_eager(peaks, case):
    eager, fused = peaks[case, 'eager'], peaks[case, 'fused']
    assert (eager['ran_fused'], fused['ran_fused']) == (False, True), case
    mb = 2 ** 20
    assert fused['peak'] < FRACTION * eager['peak'], (
        f'{case}: the fused path adds {fused["peak"] / mb:.1f} MB at its peak, the eager one '
        f'{eager["peak"] / mb:.1f} MB (ratio {fused["peak"] / eager["peak"]:.2f}, bound {FRACTION})')
