"""The training tools: the Config built from their options (mmloss_ext.runner), the curves loaded and
plotted (mmloss_ext.viz, tools/plot_curves.py), and end to end on the bundled shapes data with tiny
settings: tools/train.py and tools/test.py on the shapes RetinaNet, Cascade-RPN and SOLOv2, checkpoint +
--resume restoring the Wise-IoU running mean, and a 2-process gloo run (tools/dist_train.sh) whose
ranks keep identical Wise-IoU running means."""
import json
import os
import os.path as osp
import re
import runpy
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mmloss_ext.datasets.shapes import generate_shapes
from mmloss_ext.viz import load_scalars

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(ROOT, 'tools')
SHAPES = osp.join(ROOT, 'configs', 'shapes')
RETINANET = osp.join(SHAPES, 'retinanet_r18s_fpn_shapes_giou.py')
RETINANET_WIOU = osp.join(SHAPES, 'retinanet_r18s_fpn_shapes_wiou.py')
CASCADE_RPN = osp.join(SHAPES, 'cascade-rpn_faster-rcnn_r18s_fpn_shapes_giou.py')
SOLOV2 = osp.join(SHAPES, 'solov2_r18s_fpn_shapes_dice.py')
WIOU_BUFFER = 'bbox_head.loss_bbox.iou_mean'  # WIoULoss keeps its running mean in the buffer `iou_mean`
TIMEOUT = 240


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    """A tiny shapes dataset: 16 train and 8 val images of 128 px."""
    return generate_shapes(str(tmp_path_factory.mktemp('shapes')), num_train=16, num_val=8, verbose=False)


def tiny(epochs, batch_size=4, val=True):
    """cfg-options: a few iterations of the shapes configs, in-process data loading, per-iteration logs."""
    opts = [f'train_cfg.max_epochs={epochs}', 'train_cfg.val_interval=1',
            f'train_dataloader.batch_size={batch_size}', 'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False', 'param_scheduler.0.end=2',
            f'param_scheduler.1.T_max={epochs}', f'param_scheduler.1.end={epochs}',
            'default_hooks.logger.interval=1', 'log_processor.window_size=1',
            'default_hooks.checkpoint.interval=1', 'randomness.seed=0',
            'shapes_data.num_train=16', 'shapes_data.num_val=8']  # what the data_root fixture made
    for loader in ('val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.batch_size=4', f'{loader}.num_workers=0', f'{loader}.persistent_workers=False']
    return opts


def run(cmd, env=None, timeout=TIMEOUT):
    env = dict(os.environ if env is None else env)
    env.setdefault('OMP_NUM_THREADS', '2')
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.stdout


def train(config, work_dir, data_root, *extra):
    return run([sys.executable, osp.join(TOOLS, 'train.py'), config, '--work-dir', str(work_dir),
                '--data-root', data_root, *extra])


def scalars(work_dir):
    return load_scalars(str(work_dir))


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_shapes_dataset_is_deterministic_and_well_formed(tmp_path):
    a = generate_shapes(str(tmp_path / 'a'), num_train=6, num_val=3, seed=3, verbose=False)
    b = generate_shapes(str(tmp_path / 'b'), num_train=6, num_val=3, seed=3, verbose=False)
    c = generate_shapes(str(tmp_path / 'c'), num_train=6, num_val=3, seed=4, verbose=False)
    files = sorted(os.path.relpath(os.path.join(d, f), a) for d, _, fs in os.walk(a) for f in fs)
    same = [open(osp.join(a, f), 'rb').read() == open(osp.join(b, f), 'rb').read() for f in files]
    assert len(files) == 6 + 3 + 3 and all(same)  # images, annotations and meta.json, byte for byte
    assert open(osp.join(a, 'train', '000000.png'), 'rb').read() != open(osp.join(c, 'train', '000000.png'), 'rb').read()
    with open(osp.join(a, 'annotations', 'train.json')) as f:
        coco = json.load(f)
    assert [cat['name'] for cat in coco['categories']] == ['rectangle', 'ellipse', 'triangle']
    assert len(coco['images']) == 6 and len(coco['annotations']) >= 6  # at least one object per image
    for ann in coco['annotations']:
        x, y, w, h = ann['bbox']
        assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128 and w >= 8 and h >= 8
        assert ann['category_id'] in (1, 2, 3) and ann['area'] == w * h and ann['iscrowd'] == 0
    # an existing, identical dataset is reused, not rewritten
    stamp = os.path.getmtime(osp.join(a, 'meta.json'))
    generate_shapes(a, num_train=6, num_val=3, seed=3, verbose=False)
    assert os.path.getmtime(osp.join(a, 'meta.json')) == stamp


def test_shapes_boxes_are_tight():
    """Each object's box is exactly the extent of the pixels drawn for it."""
    from mmloss_ext.datasets.shapes import make_image
    yy, xx = np.mgrid[0:128, 0:128]
    design = np.stack([np.ones(128 * 128), xx.ravel(), yy.ravel()], axis=1)
    for i in range(30):
        img, objects = make_image(0, 'train', i, max_objects=1, noise_std=0.0)
        (label, (x, y, w, h)), = objects
        x, y, w, h = map(int, (x, y, w, h))
        # the background is a linear ramp per channel: fit it outside the box, then the shape is what
        # departs from it (the shape colours are chosen far from the background)
        outside = np.ones((128, 128), bool)
        outside[y:y + h, x:x + w] = False
        pixels = img.reshape(-1, 3).astype(float)
        coef, *_ = np.linalg.lstsq(design[outside.ravel()], pixels[outside.ravel()], rcond=None)
        mask = np.abs(pixels - design @ coef).sum(1).reshape(128, 128) > 40
        rows, cols = np.nonzero(mask)
        assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x, y, x + w, y + h), (i, label)


def test_build_config_applies_the_tool_options(data_root, monkeypatch):
    """What tools/train.py and tools/test.py build from their options (mmloss_ext.runner.build_config)."""
    from mmloss_ext.runner import build_config
    options = {'train_cfg.max_epochs': 1, 'shapes_data.num_train': 16, 'shapes_data.num_val': 8}
    for var in ('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', 'TORCH_FORCE_WEIGHTS_ONLY_LOAD'):
        monkeypatch.delenv(var, raising=False)

    cfg = build_config(RETINANET, cfg_options=options, data_root=data_root)
    assert cfg.train_cfg.max_epochs == 1 and cfg.launcher == 'none'
    assert cfg.work_dir == osp.join('./work_dirs', 'retinanet_r18s_fpn_shapes_giou')
    assert cfg.train_dataloader.dataset.data_root == data_root + '/'  # repointed at the generated data
    assert cfg.val_evaluator.ann_file == osp.join(data_root, 'annotations', 'val.json')
    assert not cfg.get('resume') and cfg.get('load_from') is None and cfg.val_cfg is not None
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ  # nothing to load: left alone

    cfg = build_config(RETINANET, work_dir='w', cfg_options=options, data_root=data_root, resume='auto',
                       validate=False)
    assert cfg.work_dir == 'w' and cfg.resume is True and cfg.load_from is None
    assert cfg.val_cfg is None and cfg.val_dataloader is None and cfg.val_evaluator is None
    assert os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] == '1'
    cfg = build_config(RETINANET, cfg_options=options, data_root=data_root, resume='w/epoch_1.pth')
    assert cfg.resume is True and cfg.load_from == 'w/epoch_1.pth'
    cfg = build_config(RETINANET, cfg_options=options, data_root=data_root, load_from='w/epoch_1.pth')
    assert cfg.resume is False and cfg.load_from == 'w/epoch_1.pth'
    with pytest.raises(ValueError, match='resume or load_from'):
        build_config(RETINANET, resume='auto', load_from='w/epoch_1.pth')


def test_runner_options_and_cpu_launchers(monkeypatch):
    import argparse

    from mmengine.config import Config

    from mmloss_ext.runner import add_runner_args, parse_runner_args, setup_cpu_distributed
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    parser = add_runner_args(argparse.ArgumentParser())
    args = parse_runner_args(parser, ['--cfg-options', 'a.b=2', 'c=x', '--local-rank', '3', '--launcher', 'pytorch'])
    assert args.cfg_options == {'a.b': 2, 'c': 'x'} and args.launcher == 'pytorch'
    assert os.environ['LOCAL_RANK'] == '3'
    monkeypatch.setenv('LOCAL_RANK', '1')  # set by the launcher: kept
    parse_runner_args(parser, ['--local-rank', '0'])
    assert os.environ['LOCAL_RANK'] == '1'

    cfg = Config(dict(model=dict(type='M')))
    setup_cpu_distributed(cfg, 'none')
    assert 'model_wrapper_cfg' not in cfg and 'env_cfg' not in cfg
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="only the pytorch launcher.*'slurm'"):
            setup_cpu_distributed(cfg, 'slurm')


def test_compare_runs_train_py_with_its_options():
    """Each variant of tools/compare.py is a tools/train.py command line that parses as intended."""
    compare = runpy.run_path(osp.join(TOOLS, 'compare.py'))
    train_tool = runpy.run_path(osp.join(TOOLS, 'train.py'))
    for data_root in (None, 'data/elsewhere'):
        cmd = compare['train_command'](RETINANET, 'wd/giou', 3, data_root, ['randomness.seed=1'])
        assert cmd[:3] == [sys.executable, osp.join(TOOLS, 'train.py'), RETINANET]
        args = train_tool['parse_args'](cmd[2:])
        assert (args.config, args.work_dir, args.data_root, args.no_plot) == (RETINANET, 'wd/giou', data_root, True)
        assert args.cfg_options['train_cfg.max_epochs'] == 3 and args.cfg_options['param_scheduler.1.T_max'] == 3
        assert args.cfg_options['randomness.seed'] == 1


def test_compare_sees_the_models_its_cfg_options_train(tmp_path):
    """The labels and the mmdet arm's swap come from each config with --cfg-options applied: a loss
    set there is named in the chart and swapped for mmdet's in the mmdet arm (the swap after it)."""
    compare = runpy.run_path(osp.join(TOOLS, 'compare.py'))
    main, module = compare['main'], compare['train_arms'].__globals__  # (main is wrapped elsewhere)
    trained = []
    module['train_arms'] = lambda arms, seeds, work_dir, **kw: trained.extend(arms) or []
    module['report'] = lambda *a, **kw: trained.append(kw.get('labels'))
    ciou = ['model.bbox_head.loss_bbox.type=mmloss_ext.CIoULoss', 'randomness.seed=3']
    model = compare['model_config'](RETINANET, ciou)
    assert model.bbox_head.loss_bbox.type == 'mmloss_ext.CIoULoss'
    assert compare['model_config'](RETINANET).bbox_head.loss_bbox.type == 'mmloss_ext.GIoULoss'

    main(['--against-mmdet', RETINANET, '--seeds', '1', '--work-dir', str(tmp_path), '--cfg-options', *ciou])
    (_, _, ours), (_, _, theirs), _ = trained
    assert ours == ciou
    assert theirs[:2] == ciou  # then the swap, which wins over the option that set the loss
    assert theirs[2:] == ['model.bbox_head.loss_cls.type=FocalLoss', 'model.bbox_head.loss_bbox.type=CIoULoss']

    trained.clear()
    main([RETINANET, '--seeds', '1', '--work-dir', str(tmp_path), '--cfg-options', *ciou])
    assert trained[-1] == {'retinanet_r18s_fpn_shapes_giou': 'Focal + CIoU'}


def write_log(path, losses, maps, iters_per_epoch):
    """An mmengine scalars.json: one training record per iteration, one val record per epoch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w') as f:
        for i, loss in enumerate(losses, 1):
            epoch = (i - 1) // iters_per_epoch + 1
            f.write(json.dumps(dict(loss=loss, loss_cls=loss / 2, loss_bbox=loss / 2, epoch=epoch, iter=i,
                                    step=i)) + '\n')
            if i % iters_per_epoch == 0:
                f.write(json.dumps({'coco/bbox_mAP': maps[epoch - 1], 'coco/bbox_mAP_50': 0.9, 'step': epoch})
                        + '\n')


def test_curves_are_loaded_by_iteration_and_plotted(tmp_path):
    from mmloss_ext.viz import find_scalars, plot_run, plot_runs
    old = tmp_path / 'a' / '20240101_000000' / 'vis_data' / 'scalars.json'
    write_log(old, [9.0], [0.0], 1)
    new = tmp_path / 'a' / '20240102_000000' / 'vis_data' / 'scalars.json'
    write_log(new, [4.0, 3.0, 2.0, 1.5, 1.2, 1.0], [0.2, 0.4, 0.6], 2)
    os.utime(old, (1, 1))
    assert find_scalars(str(tmp_path / 'a')) == str(new)  # the newest run of a work dir
    assert find_scalars(str(new.parent.parent)) == str(new)  # a log dir
    train_log, val_log = load_scalars(str(tmp_path / 'a'))
    assert [r['iter'] for r in train_log] == [1, 2, 3, 4, 5, 6]
    assert [(r['iter'], r['coco/bbox_mAP']) for r in val_log] == [(2, 0.2), (4, 0.4), (6, 0.6)]  # epoch -> iter
    with pytest.raises(FileNotFoundError):
        find_scalars(str(tmp_path / 'nothing'))

    write_log(tmp_path / 'b' / 'vis_data' / 'scalars.json', [5.0, 2.5], [0.5], 2)
    png = plot_run(str(tmp_path / 'a'), str(tmp_path / 'out' / 'one.png'), title='one')
    assert png == str(tmp_path / 'out' / 'one.png') and Path(png).read_bytes()[:4] == b'\x89PNG'
    both = plot_runs([str(tmp_path / 'a'), str(tmp_path / 'b')], str(tmp_path / 'two.png'), labels=['a', 'b'])
    assert Path(both).stat().st_size > 10_000
    empty = tmp_path / 'empty' / 'vis_data' / 'scalars.json'
    write_log(empty, [], [], 1)
    assert plot_run(str(tmp_path / 'empty'), str(tmp_path / 'none.png')) is None
    assert not (tmp_path / 'none.png').exists()

    proc = subprocess.run([sys.executable, osp.join(TOOLS, 'plot_curves.py'), str(tmp_path / 'a'),
                           str(tmp_path / 'b'), '--labels', 'a', 'b', '--out', str(tmp_path / 'cli.png')],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(tmp_path / 'cli.png') and (tmp_path / 'cli.png').stat().st_size > 10_000


def test_viz_needs_matplotlib_only_to_plot(tmp_path):
    """mmloss_ext/viz.py loads and reads logs with matplotlib blocked (the rest of the stack imports it,
    so the module is loaded on its own here); plotting then says what is missing."""
    write_log(tmp_path / 'vis_data' / 'scalars.json', [2.0, 1.0], [0.5], 2)
    code = textwrap.dedent(f'''
        import importlib.util, sys
        sys.modules['matplotlib'] = None  # any import of it fails
        spec = importlib.util.spec_from_file_location('viz', {osp.join(ROOT, 'mmloss_ext', 'viz.py')!r})
        viz = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(viz)
        print(len(viz.load_scalars({str(tmp_path)!r})[0]))
        try:
            viz.plot_run({str(tmp_path)!r}, {str(tmp_path / 'x.png')!r})
        except ImportError as exc:
            print('ImportError', exc.name)
    ''')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ['2', 'ImportError', 'matplotlib']


@pytest.mark.slow
@pytest.mark.needs_mmcv_ops  # tools/train.py builds and evaluates whole detectors
def test_shapes_retinanet_trains_evaluates_and_tests(tmp_path, data_root):
    out = train(RETINANET, tmp_path, data_root, '--cfg-options', *tiny(epochs=2))
    train_log, val_log = scalars(tmp_path)
    losses = [r['loss'] for r in train_log]
    assert len(losses) == 8  # 2 epochs x 16 images / batch 4, logged every iteration
    assert all(map(lambda v: v == v and v < 1e3, losses))
    assert sum(losses[-2:]) < sum(losses[:2])  # it learns: the last iterations beat the first
    assert {'loss_cls', 'loss_bbox'} <= set(train_log[-1])
    assert [r['iter'] for r in val_log] == [4, 8]  # validated after each epoch, placed at its iteration
    assert all(0.0 <= r['coco/bbox_mAP'] <= 1.0 for r in val_log)
    assert 'coco/bbox_mAP' in out
    assert osp.isfile(tmp_path / 'epoch_2.pth')
    assert osp.getsize(tmp_path / 'curves.png') > 10_000

    # the fixture's dataset as it is (without the shapes_data sizes, the config's 2000 + 300 images
    # would be generated over it) and the test loader's settings
    test_opts = [o for o in tiny(epochs=1) if o.startswith(('shapes_data.', 'test_dataloader.'))]
    test_out = run([sys.executable, osp.join(TOOLS, 'test.py'), RETINANET, str(tmp_path / 'epoch_2.pth'),
                    '--work-dir', str(tmp_path / 'test'), '--data-root', data_root, '--cfg-options', *test_opts])
    test_map = float(re.findall(r'coco/bbox_mAP: ([-0-9.]+)', test_out)[-1])  # the line test.py prints last
    assert 0.0 <= test_map <= 1.0
    assert 'Load checkpoint from' in test_out and 'epoch_2.pth' in test_out
    assert re.search(r'Epoch\(test\) \[2/2\]', test_out)  # the 8 val images of the fixture, 4 a batch


@pytest.mark.slow
@pytest.mark.needs_mmcv_ops  # tools/train.py builds and evaluates whole detectors
def test_a_shapes_config_trains_the_same_twice(tmp_path, data_root):
    """The shapes configs fix the seed (without one mmengine draws a new seed every run): two runs of
    the same command, on the same thread count, log the same losses."""
    opts = [o for o in tiny(epochs=1) if not o.startswith('randomness.seed')]
    logs = []
    for name in ('a', 'b'):
        train(RETINANET, tmp_path / name, data_root, '--no-plot', '--no-validate', '--cfg-options', *opts)
        logs.append([(r['loss_cls'], r['loss_bbox']) for r in scalars(tmp_path / name)[0]])
    assert len(logs[0]) == 4 and logs[0] == logs[1], logs


@pytest.mark.slow
@pytest.mark.needs_mmcv_ops  # tools/train.py builds and evaluates whole detectors
def test_shapes_cascade_rpn_trains_and_evaluates(tmp_path, data_root):
    train(CASCADE_RPN, tmp_path, data_root, '--no-plot', '--cfg-options', *tiny(epochs=1))
    train_log, val_log = scalars(tmp_path)
    assert len(train_log) == 4
    keys = {k for k in train_log[-1] if k.startswith(('s0.', 's1.', 'loss'))}
    # both RPN stages (s0: GIoU only, s1: objectness + GIoU) and the RoI head report their losses
    assert {'s0.loss_rpn_reg', 's1.loss_rpn_cls', 's1.loss_rpn_reg', 'loss_cls', 'loss_bbox'} <= keys, keys
    assert all(train_log[-1][k] == train_log[-1][k] for k in keys)  # finite, not NaN
    assert len(val_log) == 1 and 0.0 <= val_log[0]['coco/bbox_mAP'] <= 1.0
    # the stage weights are set for 336 anchors per image: stage 0's regression no longer makes most of
    # the starting loss (with weights 7 and 7 and 128 samples it made 0.76 of it here, and full runs
    # scattered)
    first = train_log[0]
    assert first['s0.loss_rpn_reg'] < 0.5 * first['loss'], first


@pytest.mark.slow
@pytest.mark.needs_mmcv_ops  # tools/train.py builds and evaluates whole detectors
def test_shapes_solov2_trains_and_evaluates_masks_and_their_boxes(tmp_path, data_root):
    """The instance-segmentation demo end to end: the masks load, the SOLOv2 head trains with
    mmloss_ext DiceLoss, and the validation logs the segm metrics and the bbox ones of the masks'
    boxes, which tools/compare.py summarises."""
    from mmloss_ext.experiment import Run, run_summary
    train(SOLOV2, tmp_path, data_root, '--no-plot', '--cfg-options', *tiny(epochs=2))
    train_log, val_log = scalars(tmp_path)
    assert len(train_log) == 8 and {'loss_mask', 'loss_cls'} <= set(train_log[-1])
    assert all(r['loss_mask'] == r['loss_mask'] and r['loss_mask'] < 3.0 for r in train_log)  # Dice <= 1, weight 3
    assert len(val_log) == 2
    for key in ('coco/segm_mAP', 'coco/segm_mAP_75', 'coco/bbox_mAP'):
        assert all(0.0 <= r[key] <= 1.0 for r in val_log), key
    run = run_summary(Run('dice', 0, str(tmp_path)))
    assert run.ok and {'coco/segm_mAP', 'coco/segm_mAP_75', 'coco/bbox_mAP'} <= set(run.metrics)


@pytest.mark.slow
@pytest.mark.needs_mmcv_ops  # tools/train.py builds and evaluates whole detectors
def test_resume_restores_the_wiou_running_mean(tmp_path, data_root):
    first = train(RETINANET_WIOU, tmp_path, data_root, '--no-plot', '--cfg-options', *tiny(epochs=1))
    ckpt = torch.load(tmp_path / 'epoch_1.pth', map_location='cpu', weights_only=False)
    saved = ckpt['state_dict'][WIOU_BUFFER]
    assert ckpt['meta']['iter'] == 4
    assert not torch.equal(saved, torch.tensor(1.0)), 'the running mean never moved from its initial value'
    assert 'coco/bbox_mAP' in first

    train_tool = runpy.run_path(osp.join(TOOLS, 'train.py'))  # its functions, without running main()
    from mmengine.hooks import Hook

    seen = {}

    class Probe(Hook):
        """What the resumed run starts from: its first training iteration runs right after this."""

        def before_train(self, runner):
            seen.update(iter=runner.iter, epoch=runner.epoch,
                        buffer=runner.model.bbox_head.loss_bbox.iou_mean.clone(),
                        conv=runner.model.bbox_head.retina_reg.weight.detach().clone())

    # the command line `tools/train.py CONFIG --resume`, in this process so that the probe can watch
    args = train_tool['parse_args']([RETINANET_WIOU, '--work-dir', str(tmp_path), '--data-root', data_root,
                                     '--resume', '--no-plot', '--cfg-options', *tiny(epochs=2)])
    runner = train_tool['build_runner'](args)
    assert torch.equal(runner.model.bbox_head.loss_bbox.iou_mean, torch.tensor(1.0))  # fresh, before loading
    runner.register_hook(Probe(), priority='LOWEST')
    runner.train()
    assert (seen['iter'], seen['epoch']) == (4, 1)  # continued after epoch 1, not from scratch
    assert torch.equal(seen['buffer'], saved)  # the loss state, restored from epoch_1.pth
    assert torch.equal(seen['conv'], ckpt['state_dict']['bbox_head.retina_reg.weight'])
    assert runner.iter == 8
    final = runner.model.bbox_head.loss_bbox.iou_mean
    assert not torch.equal(final, saved)  # and the resumed run kept updating it
    resumed = torch.load(tmp_path / 'epoch_2.pth', map_location='cpu', weights_only=False)
    assert torch.equal(resumed['state_dict'][WIOU_BUFFER], final)


DUMP_HOOK = '''
import os

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DumpWIoUMean(Hook):
    """Record every rank's Wise-IoU running mean after each training iteration."""

    def __init__(self, out_dir):
        self.out_dir, self.history = out_dir, []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        model = getattr(runner.model, 'module', runner.model)
        self.history.append(model.bbox_head.loss_bbox.iou_mean.detach().clone())

    def after_train(self, runner):
        torch.save(dict(history=self.history, world_size=runner.world_size),
                   os.path.join(self.out_dir, f'rank{runner.rank}.pt'))
'''


@pytest.mark.slow
@pytest.mark.needs_mmcv_ops  # tools/train.py builds and evaluates whole detectors
def test_two_process_gloo_training_keeps_the_wiou_mean_in_sync(tmp_path, data_root):
    (tmp_path / 'dump_wiou_mean.py').write_text(DUMP_HOOK)
    config = tmp_path / 'wiou_dist.py'
    config.write_text(textwrap.dedent(f'''
        _base_ = {RETINANET_WIOU!r}
        custom_imports = dict(imports=['mmloss_ext', 'dump_wiou_mean'], allow_failed_imports=False)
        custom_hooks = [dict(type='DumpWIoUMean', out_dir={str(tmp_path)!r})]
    '''))
    env = dict(os.environ, PORT=str(free_port()), OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get('PYTHONPATH')])),
               PYTHON=sys.executable)
    run(['bash', osp.join(TOOLS, 'dist_train.sh'), str(config), '2', '--work-dir', str(tmp_path / 'work'),
         '--data-root', data_root, '--no-plot', '--no-validate', '--cfg-options', *tiny(epochs=1, batch_size=2)],
        env=env, timeout=180)
    ranks = [torch.load(tmp_path / f'rank{r}.pt', weights_only=False) for r in (0, 1)]
    assert [r['world_size'] for r in ranks] == [2, 2]
    h0, h1 = ranks[0]['history'], ranks[1]['history']
    assert len(h0) == len(h1) == 4  # 16 images / 2 ranks / batch 2
    assert all(torch.equal(a, b) for a, b in zip(h0, h1)), (h0, h1)
    assert not torch.equal(h0[-1], torch.tensor(1.0))  # it did move
    ckpt = torch.load(tmp_path / 'work' / 'epoch_1.pth', map_location='cpu', weights_only=False)
    assert torch.equal(ckpt['state_dict'][WIOU_BUFFER], h0[-1])


@pytest.mark.slow
@pytest.mark.needs_mmcv_ops  # tools/train.py builds and evaluates whole detectors
def test_compare_against_mmdet_trains_both_arms_on_the_same_batches(tmp_path, data_root):
    """tools/compare.py --against-mmdet: one seed per arm; the same seed gives both arms the same
    initial weights and batches, so their first-iteration losses agree (the losses are equal). The two
    runs train side by side (--jobs 2), one core each."""
    opts = [o for o in tiny(1) if not o.startswith('randomness.seed')]
    run([sys.executable, osp.join(TOOLS, 'compare.py'), '--against-mmdet', RETINANET, '--seeds', '1', '--jobs', '2',
         '--work-dir', str(tmp_path), '--data-root', data_root, '--cfg-options', *opts])
    report = json.load(open(tmp_path / 'compare.json'))
    assert [(r['arm'], r['seed'], r['ok']) for r in report['runs']] == [('mmloss_ext', 0, True), ('mmdet', 0, True)]
    first = {arm: scalars(tmp_path / arm / 'seed0')[0][0] for arm in ('mmloss_ext', 'mmdet')}
    for key in ('loss_cls', 'loss_bbox'):
        assert first['mmloss_ext'][key] == pytest.approx(first['mmdet'][key], rel=1e-4), key
    assert '| bbox mAP |' in open(tmp_path / 'compare.md').read()


def train_patched(patch, tmp_path, *args):
    """tools/train.py in a process that first runs ``patch`` (a workaround in mmengine's code)."""
    script = tmp_path / 'patched_train.py'
    script.write_text(patch + "\nimport runpy, sys\nsys.argv = sys.argv[1:]\n"
                      "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    return run([sys.executable, str(script), osp.join(TOOLS, 'train.py'), *args])


# mmengine compiles the whole train_step, the optimizer's update included, and dynamo fails inside
# torch's AdamW on mmengine's param groups (torch 2.13, mmengine 0.10.7; with mmdet's losses too):
# the update is left out of the compiled code, the model's forward and its losses are compiled
EAGER_UPDATE = """
import torch
from mmengine.optim import OptimWrapper
OptimWrapper.update_params = torch._dynamo.disable(OptimWrapper.update_params)
"""


@pytest.mark.slow
@pytest.mark.needs_mmcv_ops  # tools/train.py builds and evaluates whole detectors
def test_shapes_retinanet_trains_under_mmengines_compile(tmp_path, data_root):
    """mmengine's ``compile`` (torch.compile of the model's train_step; AOT autograd without code
    generation, to keep the test short) with the fused focal loss inside."""
    train_patched(EAGER_UPDATE, tmp_path, RETINANET, '--work-dir', str(tmp_path / 'w'), '--data-root', data_root,
                  '--no-plot', '--no-validate', '--cfg-options', *tiny(epochs=1), 'compile.backend=aot_eager')
    train_log, _ = scalars(tmp_path / 'w')
    assert len(train_log) == 4 and all(np.isfinite(r['loss']) for r in train_log)
    log = open(next(Path(tmp_path / 'w').rglob('*.log'))).read()
    assert 'Model has been "compiled"' in log


# mmengine asserts a GPU for AmpOptimWrapper; its autocast (bfloat16) and the rest work on the CPU
AMP_ON_CPU = """
from mmengine.optim.optimizer import amp_optimizer_wrapper
amp_optimizer_wrapper.is_cuda_available = lambda: True
"""


@pytest.mark.slow
@pytest.mark.needs_mmcv_ops  # tools/train.py builds and evaluates whole detectors
def test_shapes_retinanet_trains_with_mmengines_amp_wrapper_in_bfloat16(tmp_path, data_root):
    train_patched(AMP_ON_CPU, tmp_path, RETINANET, '--work-dir', str(tmp_path / 'w'), '--data-root', data_root,
                  '--no-plot', '--no-validate', '--cfg-options', *tiny(epochs=1),
                  'optim_wrapper.type=AmpOptimWrapper', 'optim_wrapper.dtype=bfloat16')
    train_log, _ = scalars(tmp_path / 'w')
    assert len(train_log) == 4
    for row in train_log:
        assert all(np.isfinite(row[k]) for k in ('loss', 'loss_cls', 'loss_bbox')), row
