"""Seed-averaged comparisons (mmloss_ext.experiment, tools/compare.py): the mmdet arm, the run
summaries, the statistics and the report."""
import json
import math
import os.path as osp
import runpy

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmloss_ext.experiment import Run, difference, markdown_table, mmdet_arm_options, run_summary, summarise

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SHAPES = osp.join(ROOT, 'configs', 'shapes')
RETINANET = osp.join(SHAPES, 'retinanet_r18s_fpn_shapes_giou.py')
CASCADE = osp.join(SHAPES, 'cascade-rpn_faster-rcnn_r18s_fpn_shapes_giou.py')
SOLOV2 = osp.join(SHAPES, 'solov2_r18s_fpn_shapes_dice.py')


def _losses(model):
    return {name: type(mod) for name, mod in model.named_modules() if name.split('.')[-1].startswith('loss_')}


@pytest.mark.parametrize('config', [RETINANET, CASCADE, SOLOV2], ids=osp.basename)
def test_mmdet_arm_swaps_every_loss_for_mmdet_own(config):
    cfg = Config.fromfile(config)
    options = mmdet_arm_options(cfg.model)
    assert options and all(o.startswith('model.') and '.type=' in o for o in options)
    swapped = Config.fromfile(config)
    swapped.merge_from_dict(dict(o.split('=', 1) for o in options))
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    ours, theirs = MODELS.build(cfg.model), MODELS.build(swapped.model)
    assert _losses(ours).keys() == _losses(theirs).keys()
    swapped_any = False
    for name, cls in _losses(ours).items():
        assert _losses(theirs)[name].__module__.startswith('mmdet'), name
        assert _losses(theirs)[name].__name__ == cls.__name__
        # a loss the config does not write is the head's own default (the unused stage-0 loss_cls)
        swapped_any |= cls.__module__.startswith('mmloss_ext')
    assert swapped_any
    if config == CASCADE:  # list entries (the RPN stages) are addressed by index
        assert 'model.rpn_head.stages.1.loss_bbox.type=GIoULoss' in options
    if config == SOLOV2:  # the mask head's Dice loss (same keywords: use_sigmoid, loss_weight)
        assert 'model.mask_head.loss_mask.type=DiceLoss' in options
        assert theirs.mask_head.loss_mask.use_sigmoid and theirs.mask_head.loss_mask.loss_weight == 3.0


def test_mmdet_arm_refuses_what_mmdet_lacks():
    cfg = Config.fromfile(osp.join(SHAPES, 'retinanet_r18s_fpn_shapes_wiou.py'))
    with pytest.raises(ValueError, match=r'model.bbox_head.loss_bbox: mmdet has no WIoULoss'):
        mmdet_arm_options(cfg.model)
    cfg = Config.fromfile(osp.join(SHAPES, 'solov2_r18s_fpn_shapes_lovasz.py'))
    with pytest.raises(ValueError, match=r'model.mask_head.loss_mask: mmdet has no LovaszLoss'):
        mmdet_arm_options(cfg.model)
    cfg = Config.fromfile(RETINANET)
    cfg.model.bbox_head.loss_bbox.impl = 'fused'
    with pytest.raises(ValueError, match="mmdet's GIoULoss takes no impl"):
        mmdet_arm_options(cfg.model)


def write_log(work_dir, losses, times, maps, val=None):
    """An mmengine scalars.json with per-iteration records and one final validation (bbox mAP,
    mAP@0.5, mAP@0.75 from ``maps``, or the metrics ``val``)."""
    path = osp.join(work_dir, '20250101_000000', 'vis_data', 'scalars.json')
    import os
    os.makedirs(osp.dirname(path))
    with open(path, 'w') as f:
        for i, (loss, t) in enumerate(zip(losses, times), 1):
            f.write(json.dumps({'loss': loss, 'loss_cls': loss / 4, 's0.loss_rpn_reg': loss / 2, 'acc': 90.0,
                                'time': t, 'epoch': 1, 'iter': i, 'step': i}) + '\n')
        f.write(json.dumps({**(val or {'coco/bbox_mAP': maps[0], 'coco/bbox_mAP_50': maps[1],
                                       'coco/bbox_mAP_75': maps[2]}),
                            'step': 1}) + '\n')


def test_run_summary_reads_the_last_validation_losses_and_time(tmp_path):
    wd = str(tmp_path / 'a')
    write_log(wd, [4.0, 2.0, 1.0], [9.0, 0.2, 0.4], (0.5, 0.8, 0.6))
    run = run_summary(Run('a', 0, wd))
    assert run.ok and run.metrics == {'coco/bbox_mAP': 0.5, 'coco/bbox_mAP_50': 0.8, 'coco/bbox_mAP_75': 0.6}
    # the stage-prefixed term of a cascade is a loss too; the accuracy is not
    assert run.losses == {'loss': 1.0, 'loss_cls': 0.25, 's0.loss_rpn_reg': 0.5}
    assert run.time_per_iter == pytest.approx(0.3)  # the first (warm-up) record left out: (0.2 + 0.4) / 2
    assert run.iters == 3
    assert not run_summary(Run('b', 0, str(tmp_path / 'missing'))).ok


def test_summary_and_difference_by_hand():
    runs = [Run('x', s, '', metrics={'coco/bbox_mAP': m}, time_per_iter=0.1) for s, m in enumerate((0.5, 0.7))]
    runs += [Run('y', s, '', metrics={'coco/bbox_mAP': m}, time_per_iter=0.2) for s, m in enumerate((0.4, 0.4, 0.7))]
    runs.append(Run('y', 9, '', ok=False))  # a failed run counts for nothing
    s = summarise(runs)
    assert s['x']['coco/bbox_mAP']['mean'] == pytest.approx(0.6) and s['x']['coco/bbox_mAP']['n'] == 2
    assert s['x']['coco/bbox_mAP']['std'] == pytest.approx(math.sqrt(0.02))  # sample std of 0.5, 0.7
    assert s['y']['coco/bbox_mAP']['mean'] == pytest.approx(0.5) and s['y']['time_per_iter']['n'] == 3
    # Welch by hand: se^2 = 0.02 / 2 + 0.03 / 3 = 0.02; df = 0.02^2 / (0.01^2 / 1 + 0.01^2 / 2) = 2.667
    d = difference([0.5, 0.7], [0.4, 0.4, 0.7])
    assert d['diff'] == pytest.approx(0.1) and d['df'] == pytest.approx(8 / 3)
    from scipy import stats
    half = stats.t.ppf(0.975, 8 / 3) * math.sqrt(0.02)
    assert (d['low'], d['high']) == (pytest.approx(0.1 - half), pytest.approx(0.1 + half))
    assert math.isnan(difference([0.5], [0.4, 0.5])['low'])  # one run: no interval
    table = markdown_table(s)
    assert '| x | 2 | 0.600 ± 0.141 |' in table and '| y | 3 | 0.500 ± 0.173 |' in table


def test_report_writes_the_table_the_json_and_the_figures(tmp_path):
    compare = runpy.run_path(osp.join(ROOT, 'tools', 'compare.py'))
    runs = []
    for arm, base in (('mmloss_ext', 0.6), ('mmdet', 0.58)):
        for seed in range(3):
            wd = str(tmp_path / arm / f'seed{seed}')
            write_log(wd, [3.0, 2.0, 1.5], [1.0, 0.2, 0.2], (base + 0.01 * seed, 0.9, 0.7))
            runs.append(run_summary(Run(arm, seed, wd)))
    out = str(tmp_path / 'report')
    result = compare['report'](runs, ('mmloss_ext', 'mmdet'), out, 'title', against=('mmloss_ext', 'mmdet'))
    assert result['differences']['coco/bbox_mAP']['diff'] == pytest.approx(0.02)
    text = open(out + '.md').read()
    assert '| mmloss_ext | 3 | 0.610 ± 0.010 |' in text and '| bbox mAP | +0.0200 |' in text
    saved = json.load(open(out + '.json'))
    assert len(saved['runs']) == 6 and saved['summary']['mmdet']['coco/bbox_mAP']['n'] == 3
    assert open(out + '.png', 'rb').read()[:4] == b'\x89PNG'
    three = [Run(a, r.seed, r.work_dir, metrics=r.metrics) for a in ('p', 'q', 'r') for r in runs[:2]]
    compare['report'](three, ('p', 'q', 'r'), out + '3', 'three arms')
    assert open(out + '3_arms.png', 'rb').read()[:4] == b'\x89PNG'


def test_segm_runs_are_summarised_by_their_segm_and_bbox_metrics(tmp_path):
    """Instance segmentation reports segm mAP, mAP@0.5, mAP@0.75 before the bbox ones; a detection
    comparison keeps its bbox columns only."""
    from mmloss_ext.viz import SEGM_MAP_KEYS, map_keys, plot_arms, plot_runs
    runs = []
    for seed, (segm, bbox) in enumerate(((0.70, 0.60), (0.74, 0.64))):
        wd = str(tmp_path / f'seed{seed}')
        write_log(wd, [1.0, 0.5], [0.3, 0.3], None, val={
            'coco/segm_mAP': segm, 'coco/segm_mAP_50': 0.9, 'coco/segm_mAP_75': segm + 0.1,
            'coco/bbox_mAP': bbox, 'coco/bbox_mAP_50': 0.8, 'coco/bbox_mAP_75': bbox + 0.1})
        runs.append(run_summary(Run('dice', seed, wd)))
    assert runs[0].metrics['coco/segm_mAP'] == 0.70 and runs[0].metrics['coco/bbox_mAP_75'] == pytest.approx(0.7)
    s = summarise(runs)
    assert s['dice']['coco/segm_mAP']['mean'] == pytest.approx(0.72)
    head = markdown_table(s).splitlines()[0]
    assert head.startswith('| arm | runs | segm mAP | segm mAP@0.5 | segm mAP@0.75 | bbox mAP | mAP@0.5 | mAP@0.75 |')
    assert '| dice | 2 | 0.720 ± 0.028 |' in markdown_table(s)
    detection = summarise([Run('giou', 0, '', metrics={'coco/bbox_mAP': 0.5}, time_per_iter=0.1)])
    assert 'segm' not in markdown_table(detection) and 'coco/segm_mAP' not in detection['giou']
    assert map_keys(s.values()) == SEGM_MAP_KEYS and map_keys(detection.values())[0] == 'coco/bbox_mAP'
    assert plot_runs([r.work_dir for r in runs], str(tmp_path / 'curves.png'), groups=['dice', 'dice'])
    assert open(plot_arms(s, str(tmp_path / 'arms.png')), 'rb').read()[:4] == b'\x89PNG'


def _cell(values):
    import statistics
    return dict(mean=statistics.fmean(values), std=statistics.stdev(values), n=len(values), values=values)


def test_arms_chart_rows_are_labelled_sorted_and_an_outlier_breaks_the_axis(monkeypatch, tmp_path):
    from mmloss_ext import viz
    figures = []
    monkeypatch.setattr(viz, '_save', lambda fig, out, title, dpi: figures.append(fig) or out)
    summary = {'a': {'coco/bbox_mAP': _cell([0.74, 0.75, 0.76])}, 'b': {'coco/bbox_mAP': _cell([0.22, 0.23, 0.22])},
               'c': {'coco/bbox_mAP': _cell([0.75, 0.76, 0.77])}, 'd': {'coco/bbox_mAP': _cell([0.69, 0.70, 0.68])}}
    viz.plot_arms(summary, str(tmp_path / 'x.png'), metrics=('coco/bbox_mAP',), labels={'c': 'Focal + CIoU'})
    (fig,) = figures
    low, high = fig.axes  # the outlier's part and the others', side by side
    assert [t.get_text() for t in low.get_yticklabels()][::-1] == ['Focal + CIoU', 'a', 'd', 'b']  # best on top
    assert low.get_xlim()[1] < 0.3 and high.get_xlim()[0] > 0.6  # the others' spread is not squeezed
    assert high.get_xlim()[1] - high.get_xlim()[0] < 0.15
    figures.clear()
    del summary['b']  # no outlier: one axis
    viz.plot_arms(summary, str(tmp_path / 'y.png'), metrics=('coco/bbox_mAP',))
    (fig,) = figures
    assert len(fig.axes) == 1 and fig.axes[0].get_xlim()[0] > 0.6


def test_the_ablation_chart_reads_the_published_table():
    """tools/plot_ablation.py draws docs/img/ablation.png from docs/ablation.md: every variant of the
    table, its seeds, and the mean ± std the table prints."""
    import re
    tool = runpy.run_path(osp.join(ROOT, 'tools', 'plot_ablation.py'))
    doc = osp.join(ROOT, 'docs', 'ablation.md')
    summary = tool['read_table'](doc)
    rows = [line for line in open(doc) if line.startswith('| ') and 'retinanet_r18s' in line]
    assert len(summary) == len(rows) >= 9
    for row in rows:
        variant, _, bbox = [c.strip() for c in row.strip('|\n').split('|')][:3]
        mean, std = map(float, re.match(r'([\d.]+) ± ([\d.]+)', bbox).groups())
        cell = summary[variant]['coco/bbox_mAP']
        assert cell['n'] == 3 and round(cell['mean'], 3) == mean and abs(cell['std'] - std) <= 0.0006
