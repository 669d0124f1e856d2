"""Generated documentation never drifts: docs/losses.md and the CLI from the code, the README's benchmark
tables and docs/benchmarks.md from the committed benchmark run."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mmloss_ext  # noqa: F401
from helpers import load_tool
from mmloss_ext.__main__ import main
from mmloss_ext.catalogue import _split_paper, entries, entry, families, plain, render_markdown
from mmloss_ext.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]


def test_every_registered_loss_says_its_family_inputs_and_reference():
    assert families() == ['regression', 'classification', 'segmentation', 'bbox', 'image', 'embedding']
    assert [e.name for e in entries()] and {e.name for e in entries()} == set(MODELS.module_dict)
    for e in entries():
        assert e.family in families() and e.inputs and e.reference, e.name
        assert e.family == MODELS.get(e.name).family


def test_the_paper_is_the_summarys_citation():
    assert _split_paper('Smooth L1 loss (Fast R-CNN, Girshick 2015).') == ('Smooth L1 loss.', 'Fast R-CNN, Girshick 2015')
    assert _split_paper('Hinge loss (squared hinge when ``squared``).') == (
        'Hinge loss (squared hinge when ``squared``).', '')  # no year: not a citation
    assert _split_paper('Focal loss (Lin et al., 2017, "Focal Loss (for) Detection") here.') == (
        'Focal loss here.', 'Lin et al., 2017, "Focal Loss (for) Detection"')
    papers = {e.name: e.paper for e in entries()}
    assert papers['FocalLoss'].startswith('Lin et al., 2017') and papers['GIoULoss'].startswith('Rezatofighi')


def test_docs_are_up_to_date():
    current = (ROOT / 'docs' / 'losses.md').read_text()
    assert current == render_markdown(), 'docs/losses.md is stale: run `python tools/gen_docs.py`'


def test_a_one_line_formula_goes_on_over_its_indented_lines():
    """Regression: the catalogue kept the first line of a ``.. math::`` continued below it."""
    assert entry('KLDivLoss').formula.endswith(r'q = \operatorname{softmax}(t/T)')


def test_every_entry_has_a_summary_and_the_formula_is_documented():
    for e in entries():
        assert e.summary, e.name
        assert e.formula, f'{e.name}: its functional docstring has no `.. math::` block'


def test_cli_list_filters_by_family(capsys):
    assert main(['list', '--family', 'regression']) == 0
    out = capsys.readouterr().out
    assert 'CharbonnierLoss' in out and 'regression' in out
    assert 'GIoULoss' not in out
    names = [line.split()[0] for line in out.splitlines()[2:]]
    assert names == [e.name for e in entries('regression')]


def test_cli_show_prints_doc_defaults_and_a_config_that_builds(capsys):
    from mmdet.registry import MODELS as MMDET_MODELS
    assert main(['show', 'HuberLoss']) == 0
    out = capsys.readouterr().out
    assert 'huber' in out.lower() and "'delta': 1.0" in out
    cfg = eval(out.split('config:\n', 1)[1])  # the printed dict is valid Python and builds
    assert type(MMDET_MODELS.build(cfg)).__name__ == 'HuberLoss'


def test_cli_as_a_module_and_unknown_name():
    proc = subprocess.run([sys.executable, '-m', 'mmloss_ext', 'show', 'NoSuchLoss'], capture_output=True, text=True)
    assert proc.returncode != 0 and "no loss named 'NoSuchLoss'" in proc.stderr


@pytest.mark.parametrize('name', ['mmloss_ext.GIoULoss', 'giouloss', 'MMLOSS_EXT.GIOULOSS'])
def test_cli_show_takes_the_prefix_and_any_case(name, capsys):
    assert main(['show', name]) == 0
    assert capsys.readouterr().out.startswith('GIoULoss (bbox)\n')


def test_cli_show_suggests_the_three_closest():
    with pytest.raises(SystemExit) as err:
        main(['show', 'GIOLoss'])
    assert err.value.code == ("mmloss_ext: no loss named 'GIOLoss'; did you mean GIoULoss, IoULoss, WIoULoss? "
                              f'(`python -m mmloss_ext list` shows all {len(MODELS.module_dict)})')


def test_cli_show_gives_the_losss_own_parameters_and_call(capsys):
    main(['show', 'GIoULoss'])
    out = capsys.readouterr().out
    # its docstring documents its own eps and says "Args and returns as iou_loss" for the rest
    assert "  eps=1e-06         a value in [0.0, inf): the floor of the union and of |C|, `max(., eps)`." in out
    assert "  impl='auto'       one of 'auto', 'eager', 'fused' (see `mmloss_ext.kernels.dispatch`)." in out
    assert "  loss_weight=1.0   a finite number: multiplies the reduced loss." in out
    assert 'call: loss(pred, target, weight=None, avg_factor=None, reduction_override=None)\n' in out
    main(['show', 'DiceLoss'])
    out = capsys.readouterr().out
    assert 'call: loss(pred, target, weight=None, reduction_override=None, avg_factor=None)\n' in out
    assert 'DiceLoss.forward takes (pred, target, weight, reduction_override, avg_factor) positionally' in out
    main(['show', 'GHMC'])
    assert ('call: loss(pred, target, label_weight=None, reduction_override=None, *, weight=None, avg_factor=None)'
            in capsys.readouterr().out)


def test_rest_roles_render_as_plain_text_and_code(capsys):
    assert plain(':func:`mse_loss` of :func:`~mmloss_ext.core.reduction.weight_reduce_loss`') == (
        '`mse_loss` of `weight_reduce_loss`')
    assert plain('scaled by :math:`T^2`, ``reduction=\'sum\'``') == "scaled by T^2, `reduction='sum'`"
    assert plain(':math:`T^2`', markdown=True) == '$T^2$'
    role = re.compile(r':(func|math|class|mod|data|meth|attr):`|(?<!`)``(?!`)')  # not a ``` fence
    assert main(['list']) == 0
    listed = capsys.readouterr().out
    assert 'SSELoss' in listed and 'KLDivLoss' in listed and not role.search(listed)
    assert '`mse_loss`' in listed and 'T^2' in listed
    for name in ('SSELoss', 'KLDivLoss', 'GIoULoss'):
        main(['show', name])
        assert not role.search(capsys.readouterr().out), name
    assert not role.search(render_markdown())


def test_list_into_a_closed_pipe_ends_quietly():
    """Regression: ``list | head -5`` ended in a BrokenPipeError traceback."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write: every write fails
    try:
        proc = subprocess.run([sys.executable, '-m', 'mmloss_ext', 'list', '--family', 'bbox'], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr and 'BrokenPipeError' not in proc.stderr


def test_docs_give_each_losss_call():
    """Not every loss is called as loss(pred, target, weight, avg_factor, reduction_override): each
    entry says how, and the intro names the ones of another positional order."""
    md = render_markdown()
    for e in entries():
        section = md.split(f'\n### {e.name}\n', 1)[1].split('\n### ', 1)[0]
        assert f'- call: `{e.call}`' in section, e.name
    assert entry('DiceLoss').call == 'loss(pred, target, weight=None, reduction_override=None, avg_factor=None)'
    intro = md.split('\n| Name |', 1)[0]
    assert '[DiceLoss](#diceloss)' in intro and '[GHMC](#ghmc)' in intro and '[GIoULoss]' not in intro
    assert 'Every loss is called as' not in md


def test_plot_losses_writes_the_four_figures(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'plot_losses.py'), '--out', str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ('regression', 'focal', 'iou_family', 'segmentation'):
        png = tmp_path / f'{name}.png'
        assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
        assert png.stat().st_size > 30_000, f'{name}.png looks empty'


# --- the benchmark tables: generated from the committed run (tools/gen_docs.py) -----------------------

@pytest.fixture(scope='module')
def gen_docs():
    return load_tool('gen_docs')


def test_readme_benchmark_tables_are_generated_from_the_committed_run(gen_docs):
    data = gen_docs.load_benchmark()
    readme = (ROOT / 'README.md').read_text()
    assert gen_docs.generated_part(readme) == gen_docs.readme_tables(data), \
        'the README\'s benchmark tables are not those of docs/benchmarks/cpu.json: run `python tools/gen_docs.py`'
    assert (ROOT / 'docs' / 'benchmarks.md').read_text() == gen_docs.benchmarks_markdown(data), \
        'docs/benchmarks.md is stale: run `python tools/gen_docs.py`'


def test_the_committed_run_is_one_full_run_of_every_case(gen_docs):
    """docs/benchmarks/cpu.json: every case of tools/benchmark.py at full size, with the torch.compile rows,
    the fused rows run by the kernels, and what it ran on."""
    bench = load_tool('benchmark')
    data = gen_docs.load_benchmark()
    env = data['environment']
    assert [r['case'] for r in data['cases']] == list(bench.BENCHMARKS)
    assert (env['device'], env['scale'], env['fused_kernels']) == ('cpu', 1.0, True)
    assert env['command'].startswith('tools/benchmark.py --compile') and env['compile_backend'] == 'inductor'
    assert env['min_time'] >= 1.0 and env['repeat'] >= 7
    # how busy the machine was is recorded for every case (the README says it), and a case timed again because
    # others were busy was timed at most 1 + --retries times (a run from before the retiming has neither field)
    assert all(r['others_cpu'] is not None for r in data['cases'])
    assert all(1 <= r.get('timings', 1) <= 1 + env.get('retries', 0) for r in data['cases'])
    assert {'torch', 'cpu', 'threads', 'cpu_capability', 'date', 'versions'} <= set(env)
    assert 'mmdet' in env['versions']  # the claim: against mmdet in the same run
    missing = {name: 'not installed for the run' for name in bench.OPTIONAL if name not in env['versions']}
    for result in data['cases']:
        case = bench.BENCHMARKS[result['case']]
        rows = [r['variant'] for r in result['rows']]
        assert rows == bench.select_variants(case, bench.VARIANTS, missing), result['case']
        dims = tuple(int(d) for d in result['shape'].split('x'))
        assert dims[:len(case.size)] == tuple(case.size), result['case']  # full size (boxes: (N, 4) of (N,))


def _row(variant, ms, peak_mb, first_ms=10.0, ran=None):
    return dict(variant=variant, label=variant, time=ms / 1e3, peak=peak_mb * 2 ** 20, first=first_ms / 1e3,
                ran_fused=ran)


def _synthetic_run():
    """Two cases with hand-picked times: ratios and formatting below are derived by hand from them."""
    env = dict(device='cpu', torch='2.13.0', cpu='Test CPU', threads=2, cpu_capability='AVX512', fused_kernels=True,
               versions={'mmdet': '3.3.0'}, date='2026-01-01', command='tools/benchmark.py --compile --json x.json',
               scale=1.0, repeat=7, min_time=1.0, max_others=0.25, retries=2, compile_backend='inductor')
    focal = dict(case='focal', title='sigmoid focal', kind='labels', device='cpu', shape='200000x80', sigmoid=0.02,
                 others_cpu=0.02, timings=1,
                 rows=[_row('mmdet', 500.0, 600.0), _row('eager', 100.0, 300.0, ran=False),
                       _row('fused', 25.0, 62.4, first_ms=12.5, ran=True), _row('compile-eager', 80.0, 200.0, 9000.0),
                       _row('compile-fused', 20.0, 62.0, 4000.0)])
    wiou = dict(case='wiou', title='Wise-IoU v3', kind='boxes', device='cpu', shape='1000000x4', sigmoid=0.005,
                others_cpu=1.2, timings=3,  # timed while other processes were busy
                rows=[_row('eager', 90.0, 150.0, ran=False), _row('fused', 9.0, 40.0, first_ms=30.0, ran=True)])
    seesaw = dict(case='seesaw', title='Seesaw (LVIS RoIs)', kind='rois', device='cpu', shape='1024x1205',
                  sigmoid=0.0005, others_cpu=0.0, timings=1,
                  rows=[_row('mmdet', 16.0, 43.0), _row('eager', 5.0, 31.0, ran=False)])
    return dict(environment=env, cases=[focal, wiou, seesaw])


def test_readme_tables_of_a_hand_made_run(gen_docs):
    text = gen_docs.readme_tables(_synthetic_run())
    lines = text.splitlines()
    prose = ' '.join(line for line in lines if not line.startswith('|')).split()  # the paragraphs, unwrapped
    assert ' '.join(prose).startswith(
        'Figures from one run of `OMP_NUM_THREADS=2 .venv/bin/python tools/benchmark.py --compile --json x.json` '
        '(Test CPU, 2 threads, CPU capability AVX512, torch 2.13.0, mmdet 3.3.0, 2026-01-01): the median of one '
        'forward + backward call, the rows of a case timed in turns (7 rounds, at least 1 s of calls per row; other '
        'processes used at most 1.20 of the 2 cores while a case was timed, more than 0.25 for 1 of the 3 cases, '
        'each timed up to 3 times and the quietest kept)')  # the largest of the cases'; wiou's above max_others
    assert all(len(line) <= 100 for line in lines if not line.startswith('|'))
    # focal: 500 / 25 = 20x mmdet; 25 ms / 20 ms sigmoid = 1.25 -> 1.2 (round half to even); 62.4 MB -> 62
    assert '| sigmoid focal, 200k × 80 | 500 | 25.0 | 20.0× | 1.2× | 600 → 62 |' in lines
    # no mmdet row: against our eager, 90 / 9 = 10x
    assert '| Wise-IoU v3, 1M boxes (no mmdet: vs our eager) | 90.0 | 9.0 | 10.0× | 1.8× | 150 → 40 |' in lines
    # no fused row: our eager against mmdet, 16 / 5 = 3.2x; 5 / 0.5 = 10x the sigmoid pass
    assert ('| Seesaw (LVIS RoIs), 1024 × 1205 (no fused path: our eager) | 16.0 | 5.0 | 3.2× | 10.0× | 43 → 31 |'
            in lines)
    # torch.compile: 80 / 20 = 4x; first calls 9 s and 4 s
    assert '| sigmoid focal, 200k × 80 | 80.0 | 20.0 | 4.0× | 25.0 | 9000 / 4000 |' in lines
    # the first call of a fused row over a later one: focal 12.5 - 25 ms (none), Wise-IoU 30 - 9 = 21 ms
    assert ' '.join(prose).endswith('The CPU kernels compile nothing at run time: the first call of a fused loss '
                                    'in a fresh process takes at most 21.0 ms longer than a later one (Wise-IoU '
                                    'v3, 1M boxes).')


def test_docs_benchmarks_of_a_hand_made_run(gen_docs):
    text = gen_docs.benchmarks_markdown(_synthetic_run())
    assert text.count('\n## ') == 4  # the compile table and three cases
    # fused focal: 500 / 25 = 20x mmdet, 100 / 25 = 4x our eager
    assert '| fused | 25.0 | 20.0× | 4.0× | 1.2× | 62.4 | 12.5 |' in text.splitlines()
    assert '| eager | 90.0 | — | 1.0× | 18.0× | 150.0 | 10.0 |' in text.splitlines()  # wiou: no mmdet
    assert 'other processes used 1.20 cores while it was timed (the quietest of 3 timings).' in text  # wiou
    assert 'other processes used 0.02 cores while it was timed.' in text  # focal: one timing


def test_a_run_without_the_kernels_is_refused(gen_docs):
    run = _synthetic_run()
    run['cases'][0]['rows'][2]['ran_fused'] = False  # the fused focal row ran eagerly
    with pytest.raises(ValueError, match='focal: the fused row ran the eager path'):
        gen_docs.readme_tables(run)
    run = _synthetic_run()
    del run['cases'][0]['rows'][3:]  # no compile rows
    with pytest.raises(ValueError, match='focal: no torch.compile rows'):
        gen_docs.readme_tables(run)


def test_splice_replaces_only_the_generated_part(gen_docs):
    text = f'# title\n\nprose\n{gen_docs.BEGIN}\nold table\n{gen_docs.END}\nmore prose\n'
    assert gen_docs.splice(text, 'new\n') == f'# title\n\nprose\n{gen_docs.BEGIN}\nnew\n{gen_docs.END}\nmore prose\n'
    assert gen_docs.generated_part(text) == 'old table\n'
    with pytest.raises(ValueError, match='expected one line'):
        gen_docs.splice('# title\nno markers\n', 'new\n')
