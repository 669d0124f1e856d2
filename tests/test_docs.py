"""The catalogue is generated from the code: docs/losses.md and the CLI never drift from it."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mmloss_ext  # noqa: F401
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
