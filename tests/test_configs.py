"""Every config under configs/ parses and builds its model with mmloss_ext losses; the COCO configs
differ from mmdet's own only in the loss lines and custom_imports (and LD's teacher config, which
points at mmdet's installed copy)."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmloss_ext  # noqa: F401
from mmdet.registry import MODELS
from mmloss_ext.probe import mmdet_root, no_checkpoint_loading

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True))
#: configs that re-use one of mmdet's and differ from it only in the losses (COCO, and LVIS for Seesaw)
COCO_CONFIGS = [c for c in CONFIGS if osp.basename(osp.dirname(c)) in ('retinanet', 'cascade_rpn', 'ld', 'centernet', 'seesaw', 'ghm')]
#: mmdet's installed package data: its configs are in configs/ below it, as in its source tree
ZOO_ROOT = mmdet_root()
SHAPES_CONFIGS = [c for c in CONFIGS if osp.basename(osp.dirname(c)) == 'shapes']


def _id(path):
    return osp.relpath(path, osp.join(ROOT, 'configs'))


def _mmdet_counterpart(path):
    """The mmdet config a COCO config of ours re-uses (only the losses differ)."""
    name = osp.basename(path)
    if osp.basename(osp.dirname(path)) == 'ghm':  # named as mmdet's: configs/ghm/<name>
        rel = f'ghm/{name}'
    elif name.startswith('retinanet_r50_fpn_'):
        rel = 'retinanet/retinanet_r50_fpn_1x_coco.py'
    elif name.startswith('cascade-rpn_faster-rcnn_r50-caffe_fpn_'):
        rel = 'cascade_rpn/cascade-rpn_faster-rcnn_r50-caffe_fpn_1x_coco.py'
    elif name.startswith('cascade-rpn_r50-caffe_fpn_'):
        rel = 'cascade_rpn/cascade-rpn_r50-caffe_fpn_1x_coco.py'
    elif name.startswith('ld_r18-gflv1-r101_fpn_'):
        rel = 'ld/ld_r18-gflv1-r101_fpn_1x_coco.py'
    elif name.startswith('centernet_r18_8xb16-crop512-140e_coco_'):
        rel = 'centernet/centernet_r18_8xb16-crop512-140e_coco.py'
    elif osp.basename(osp.dirname(path)) == 'seesaw':  # the same name in mmdet's seesaw_loss/
        rel = f'seesaw_loss/{name}'
    else:
        raise AssertionError(f'no mmdet counterpart known for {name}')
    return osp.join(ZOO_ROOT, 'configs', rel)


# mmdet 3.3.0's RPN-only Cascade RPN config does not build as shipped; ours repairs exactly this
RPN_ONLY_REPAIRS = {'model.rpn_head.num_classes', 'model.rpn_head.stages.0.sampling',
                    'model.rpn_head.stages.1.sampling'}


def _flatten(node, prefix=''):
    """{'a.b.0.c': leaf} for nested dicts and lists."""
    if isinstance(node, dict):
        items = {}
        for k, v in node.items():
            items.update(_flatten(v, f'{prefix}{k}.'))
        return items
    if isinstance(node, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in node):
        items = {}
        for i, v in enumerate(node):
            items.update(_flatten(v, f'{prefix}{i}.'))
        return items
    return {prefix[:-1]: list(node) if isinstance(node, tuple) else node}


def _losses(model):
    return {name: mod for name, mod in model.named_modules() if name.split('.')[-1].startswith('loss_')}


def test_the_config_folders_are_populated():
    names = {_id(c) for c in CONFIGS}
    for loss in ('giou', 'diou', 'ciou', 'siou', 'efficient-iou', 'wiou', 'alpha-iou'):
        assert f'retinanet/retinanet_r50_fpn_{loss}_1x_coco.py' in names
    assert any(n.startswith('cascade_rpn/cascade-rpn_r50-caffe') for n in names)
    assert any(n.startswith('cascade_rpn/cascade-rpn_faster-rcnn') for n in names)
    assert any(n.startswith('shapes/retinanet') for n in names)
    assert any(n.startswith('shapes/cascade-rpn') for n in names)
    assert 'ld/ld_r18-gflv1-r101_fpn_1x_coco.py' in names
    assert 'centernet/centernet_r18_8xb16-crop512-140e_coco_gaussian-focal.py' in names
    assert 'seesaw/mask-rcnn_r50_fpn_seesaw-loss_random-ms-2x_lvis-v1.py' in names


@pytest.mark.parametrize('path', CONFIGS, ids=_id)
def test_config_builds_its_model_as_written_with_mmloss_ext_losses(path, tmp_path, monkeypatch):
    """From any directory, with no option: only the loading of checkpoints is intercepted (LD's detector
    loads its teacher's weights from a URL in its constructor), and what would be loaded is recorded."""
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(path)
    assert 'mmloss_ext' in cfg.custom_imports['imports']
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    loaded = []
    with no_checkpoint_loading(loaded):
        model = MODELS.build(cfg.model)
    # the only checkpoint a build loads is LD's teacher, from mmdet's own URL
    teacher_ckpt = Config.fromfile(_mmdet_counterpart(path)).model.teacher_ckpt if 'teacher_config' in cfg.model else None
    assert loaded == ([teacher_ckpt] if teacher_ckpt else [])
    assert not teacher_ckpt or teacher_ckpt.startswith('https://download.openmmlab.com/')
    losses = _losses(model)
    assert losses, f'{_id(path)} builds no loss modules'
    # every loss the config names with the mmloss_ext prefix is an mmloss_ext class
    flat = _flatten(cfg.model.to_dict())
    wanted = {v.split('.', 1)[1] for k, v in flat.items() if k.endswith('.type') and str(v).startswith('mmloss_ext.')}
    built = {type(m).__name__ for m in losses.values() if type(m).__module__.startswith('mmloss_ext.')}
    assert wanted and wanted <= built, (wanted, built)


@pytest.mark.parametrize('path', COCO_CONFIGS, ids=_id)
def test_coco_config_differs_from_mmdet_only_in_the_losses(path):
    ours = _flatten(Config.fromfile(path).to_dict())
    theirs = _flatten(Config.fromfile(_mmdet_counterpart(path)).to_dict())
    differing = {k for k in ours.keys() | theirs.keys() if ours.get(k, '<absent>') != theirs.get(k, '<absent>')
                 and k.split('.')[-1] != '_scope_'}  # mmengine marks what came in through 'mmdet::'

    allowed = {k for k in differing
               if k.startswith('custom_imports') or any(p.startswith('loss_') for p in k.split('.'))
               or k.endswith('reg_decoded_bbox') or k in RPN_ONLY_REPAIRS}
    if 'model.teacher_config' in differing:  # LD: the installed copy of the teacher config mmdet names
        assert ours['model.teacher_config'] == osp.join(ZOO_ROOT, theirs['model.teacher_config'])
        allowed.add('model.teacher_config')
    assert differing - allowed == set()
    # and the losses did change: every loss entry names an mmloss_ext class
    loss_types = [v for k, v in ours.items() if k.endswith('.type') and '.loss_' in k]
    assert loss_types and all(str(t).startswith('mmloss_ext.') for t in loss_types), loss_types


@pytest.mark.parametrize('path', SHAPES_CONFIGS, ids=_id)
def test_shapes_config_trains_from_scratch_on_the_bundled_data(path):
    cfg = Config.fromfile(path)
    assert cfg.shapes_data.root == cfg.train_dataloader.dataset.data_root
    assert cfg.val_evaluator.ann_file.startswith(cfg.shapes_data.root)
    assert cfg.model.backbone.get('init_cfg') is None  # no pretrained weights exist here
    assert cfg.model.backbone.norm_eval is False
    assert cfg.train_dataloader.dataset.metainfo['classes'] == mmloss_ext_classes()


def mmloss_ext_classes():
    from mmloss_ext.datasets.shapes import CLASSES
    return CLASSES
