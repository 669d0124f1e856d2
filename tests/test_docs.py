"""The catalogue is generated from the code: docs/losses.md and the CLI never drift from it."""
import subprocess
import sys
from pathlib import Path

import pytest

import mmloss_ext  # noqa: F401
from mmloss_ext.__main__ import main
from mmloss_ext.catalogue import _split_paper, entries, families, render_markdown
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


def test_plot_losses_writes_the_four_figures(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'plot_losses.py'), '--out', str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ('regression', 'focal', 'iou_family', 'segmentation'):
        png = tmp_path / f'{name}.png'
        assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
        assert png.stat().st_size > 30_000, f'{name}.png looks empty'
