"""The config checker (``python -m mmloss_ext check``) and the runtime hint for delta-like targets."""
import glob
import json
import os.path as osp
import subprocess
import sys
import warnings

import pytest
import torch

from mmloss_ext.check import check_config, check_model, main
from mmloss_ext.losses import GIoULoss
from mmloss_ext.losses._boxes import warn_if_deltas

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True))


def errors(findings):
    return [f for f in findings if f.level == 'error']


def retinanet(**head):
    return dict(type='RetinaNet', bbox_head=dict(type='RetinaHead', num_classes=3, in_channels=8, **head))


GIOU = dict(type='mmloss_ext.GIoULoss', loss_weight=2.0)


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: osp.relpath(c, ROOT))
def test_every_config_of_ours_is_clean(config):
    assert check_config(config) == []


# --- decoded boxes --------------------------------------------------------------------------------

def test_box_loss_on_a_head_that_feeds_deltas_is_an_error():
    for head in (dict(loss_bbox=GIOU), dict(loss_bbox=GIOU, reg_decoded_bbox=False)):
        (finding,) = check_model(retinanet(**head))
        assert finding.level == 'error' and finding.path == 'model.bbox_head.loss_bbox'
        assert 'deltas' in finding.message and 'RetinaHead' in finding.message
        assert finding.fix == 'set reg_decoded_bbox=True in model.bbox_head'
    assert check_model(retinanet(loss_bbox=GIOU, reg_decoded_bbox=True)) == []
    # a loss of deltas needs nothing
    assert check_model(retinanet(loss_bbox=dict(type='mmloss_ext.SmoothL1Loss'))) == []


def test_the_switch_default_of_the_head_counts():
    """ATSSHead (and VFNet, DII, ...) default to reg_decoded_bbox=True: an absent switch is fine there."""
    atss = dict(type='ATSS', bbox_head=dict(type='ATSSHead', num_classes=3, in_channels=8, loss_bbox=GIOU))
    assert check_model(atss) == []


def test_roi_heads_and_cascade_stages_are_found():
    model = dict(type='CascadeRCNN', roi_head=dict(type='CascadeRoIHead', bbox_head=[
        dict(type='Shared2FCBBoxHead', reg_decoded_bbox=True, loss_bbox=GIOU),
        dict(type='Shared2FCBBoxHead', loss_bbox=GIOU)]))
    (finding,) = check_model(model)
    assert finding.path == 'model.roi_head.bbox_head[1].loss_bbox'
    rpn = dict(type='RPN', rpn_head=dict(type='CascadeRPNHead', stages=[
        dict(type='StageCascadeRPNHead', in_channels=8, reg_decoded_bbox=True, loss_bbox=dict(type='mmloss_ext.IoULoss',
                                                                                          linear=True)),
        dict(type='StageCascadeRPNHead', in_channels=8, loss_bbox=dict(type='mmloss_ext.IoULoss', mode='linear'))]))
    (finding,) = check_model(rpn)
    assert finding.path == 'model.rpn_head.stages[1].loss_bbox' and finding.level == 'error'


def test_heads_without_the_switch_are_judged_by_what_they_feed_their_loss():
    """FCOS and YOLOX decode before loss_bbox; FoveaBox regresses log-space offsets; DETR's loss_bbox is
    an L1 on normalised (cx, cy, w, h) (its IoU loss is loss_iou): the table says so, from running them."""
    from mmloss_ext.head_inputs import HEAD_INPUTS
    assert HEAD_INPUTS['FCOSHead'][0] == HEAD_INPUTS['YOLOXHead'][0] == 'boxes'
    assert HEAD_INPUTS['FoveaHead'][0] == 'encoded' and HEAD_INPUTS['DETRHead'][0] == 'cxcywh'
    fcos = dict(type='FCOS', bbox_head=dict(type='FCOSHead', num_classes=3, in_channels=8, loss_bbox=GIOU))
    assert check_model(fcos) == []
    for switch in ({}, dict(reg_decoded_bbox=True)):  # a switch FoveaHead does not take changes nothing
        fovea = dict(type='FOVEA', bbox_head=dict(type='FoveaHead', num_classes=3, in_channels=8, loss_bbox=GIOU,
                                                  **switch))
        (finding,) = check_model(fovea)
        assert finding.level == 'error' and 'FoveaHead feeds its loss_bbox the regression deltas' in finding.message
        assert 'SmoothL1Loss' in finding.fix and 'reg_decoded_bbox=True' not in finding.fix
    detr = dict(type='DETR', bbox_head=dict(type='DETRHead', num_classes=3, embed_dims=8, loss_bbox=GIOU))
    (finding,) = check_model(detr)
    assert finding.level == 'error' and '(cx, cy, w, h)' in finding.message
    assert finding.fix.endswith('DETRHead takes an IoU loss as its loss_iou')
    assert check_model(dict(detr, bbox_head=dict(detr['bbox_head'], loss_bbox=dict(type='mmloss_ext.L1Loss'),
                                                 loss_iou=GIOU))) == []


@pytest.mark.needs_mmcv_ops  # a fresh process imports mmdet's models
def test_rpn_head_of_faster_rcnn_with_an_iou_loss_and_no_switch(tmp_path):
    """RPNHead's loss code never names the switch, and AnchorHead decodes only when it is on: running
    it shows it feeds deltas, and the command line says which head and what to set."""
    bad = tmp_path / 'rpn.py'
    bad.write_text("_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'\n"
                   "model = dict(rpn_head=dict(loss_bbox=dict(type='mmloss_ext.CIoULoss', loss_weight=2.0)))\n")
    proc = subprocess.run([sys.executable, '-m', 'mmloss_ext', 'check', str(bad)], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-2000:]
    assert '[error] model.rpn_head.loss_bbox (mmloss_ext.CIoULoss)' in proc.stdout
    assert 'fix: set reg_decoded_bbox=True in model.rpn_head' in proc.stdout
    fixed = tmp_path / 'rpn_fixed.py'
    fixed.write_text(bad.read_text() + "model['rpn_head']['reg_decoded_bbox'] = True\n")
    assert errors(check_config(str(fixed))) == []


def test_a_head_the_table_lacks_is_probed_on_the_config_itself():
    """A head of the user's own (here a RetinaHead subclass registered by the test) is not in the
    table: the checker runs the config's model once and judges from what its loss_bbox received."""
    from mmdet.models.dense_heads import RetinaHead
    from mmdet.registry import MODELS
    from mmengine.config import Config

    class MyRetinaHead(RetinaHead):
        pass

    MODELS.register_module(module=MyRetinaHead, force=True)
    try:
        model = Config.fromfile(osp.join(ROOT, 'configs/shapes/retinanet_r18s_fpn_shapes_giou.py')).model
        model.bbox_head.type = 'MyRetinaHead'
        assert check_model(model) == []  # the shapes config sets reg_decoded_bbox=True
        model.bbox_head.reg_decoded_bbox = False
        (finding,) = check_model(model)
        assert finding.level == 'error' and 'MyRetinaHead feeds its loss_bbox the regression deltas' in finding.message
        assert 'SmoothL1Loss' in finding.fix  # no table row to say the switch would help
        # a model that cannot be built (no backbone): a note, not a verdict
        (finding,) = check_model(retinanet(loss_bbox=GIOU) | dict(bbox_head=dict(model.bbox_head)))
        assert finding.level == 'note' and 'could not tell whether MyRetinaHead' in finding.message
    finally:
        MODELS.module_dict.pop('MyRetinaHead', None)


def test_mmdet_own_box_loss_names_are_held_to_the_same_rule():
    (finding, *rest) = check_model(retinanet(loss_bbox=dict(type='GIoULoss')))
    assert [f.level for f in [finding, *rest]] == ['note', 'error']


# --- mask losses summed per instance by the head ----------------------------------------------------

def solov2(**head):
    return dict(type='SOLOv2', mask_head=dict(type='SOLOV2Head', num_classes=3, in_channels=8,
                                              mask_feature_head=dict(feat_channels=8, start_level=0, end_level=3,
                                                                     out_channels=8), **head))


def test_a_mask_loss_the_head_sums_per_instance_must_give_one_loss_per_instance():
    """SOLOv2 calls loss_mask(..., reduction_override='none') and concatenates the results: a
    LovaszLoss over the whole call (per_image=False) returns a 0-d tensor there, which torch.cat
    refuses in the middle of the first iteration."""
    (finding,) = check_model(solov2(loss_mask=dict(type='mmloss_ext.LovaszLoss')))
    assert finding.level == 'error' and finding.path == 'model.mask_head.loss_mask'
    assert 'returns shape ()' in finding.message and 'SOLOV2Head' in finding.message
    assert 'per_image=True' in finding.fix
    for loss in ('DiceLoss', 'JaccardLoss', 'TverskyLoss', 'FocalTverskyLoss'):
        assert check_model(solov2(loss_mask=dict(type=f'mmloss_ext.{loss}'))) == []
    assert check_model(solov2(loss_mask=dict(type='mmloss_ext.LovaszLoss', per_image=True))) == []
    # a head that reduces through the loss (weight and avg_factor) takes the batch loss as it is
    rtmdet = dict(type='RTMDet', bbox_head=dict(type='RTMDetInsSepBNHead', num_classes=3, in_channels=8,
                                                loss_mask=dict(type='mmloss_ext.LovaszLoss')))
    assert check_model(rtmdet) == []


# --- names and hyper-parameters -------------------------------------------------------------------

def test_plain_name_resolving_to_mmdet_is_a_note():
    (finding,) = check_model(retinanet(reg_decoded_bbox=True, loss_bbox=dict(type='GIoULoss')))
    assert finding.level == 'note'
    assert "type='GIoULoss' is mmdet's" in finding.message and finding.fix == "write type='mmloss_ext.GIoULoss' for mmloss_ext's"
    # a name only we have resolves to ours: nothing to say
    assert check_model(retinanet(reg_decoded_bbox=True, loss_bbox=dict(type='WIoULoss'))) == []


def test_unknown_types_name_the_closest():
    (finding,) = check_model(retinanet(reg_decoded_bbox=True, loss_bbox=dict(type='mmloss_ext.GIoULos')))
    assert finding.level == 'error' and 'unknown type' in finding.message
    assert 'mmloss_ext.GIoULoss' in finding.fix
    (finding,) = check_model(retinanet(loss_cls=dict(type='FocalLos')))
    assert finding.level == 'error' and 'FocalLoss' in finding.fix


def test_rejected_hyper_parameter_is_an_error_with_the_loss_message():
    (finding,) = check_model(retinanet(loss_cls=dict(type='mmloss_ext.FocalLoss', alpha=-1)))
    assert finding.level == 'error'
    assert 'FocalLoss: `alpha` expected a value in [0.0, 1.0], got -1' in finding.message
    assert finding.fix == '`alpha` takes a value in [0.0, 1.0]'
    (finding,) = check_model(retinanet(loss_cls=dict(type='mmloss_ext.FocalLoss', gama=2.0)))
    assert 'unexpected hyper-parameter `gama`; did you mean `gamma`?' in finding.message
    assert finding.fix == 'rename `gama` to `gamma`'


def test_every_rejected_hyper_parameter_is_reported_with_what_it_takes():
    findings = check_model(retinanet(loss_cls=dict(type='mmloss_ext.FocalLoss', gamma='2', alpha=-1)))
    assert [(f.level, f.path) for f in findings] == [('error', 'model.bbox_head.loss_cls')] * 2
    assert "FocalLoss: `gamma` expected a number, got str '2'" in findings[0].message
    assert findings[0].fix == '`gamma` takes a value in [0.0, inf)'
    assert 'FocalLoss: `alpha` expected a value in [0.0, 1.0], got -1' in findings[1].message
    assert findings[1].fix == '`alpha` takes a value in [0.0, 1.0]'
    (finding,) = check_model(retinanet(loss_cls=dict(type='mmloss_ext.CrossEntropyLoss', use_sigmoid=True,
                                                     use_mask=True)))
    assert 'expected at most one True' in finding.message and finding.fix == ''  # the message says it


# --- mmdet's own model zoo: its configs are right, so the checker must find no error there ----------

def test_no_config_of_mmdet_is_flagged():
    from model_zoo import models
    zoo = models()
    assert len(zoo) > 800
    flagged = {rel: [str(f) for f in errors(check_model(model))] for rel, model in zoo}
    assert {rel: found for rel, found in flagged.items() if found} == {}


#: what some of mmdet's detectors need beyond mmdet's own requirements (GLIP's and Grounding DINO's
#: language model, PAA's Gaussian mixtures, CrowdDet's ops)
OPTIONAL_PACKAGES = ('transformers', 'fairscale', 'sklearn', 'torchvision')


def test_every_head_of_mmdet_configs_has_a_verdict():
    """Each head class mmdet's configs use that takes a loss_bbox was probed, except where its model
    cannot run here for want of a package."""
    import importlib.util
    from model_zoo import models
    from mmloss_ext.head_inputs import HEAD_INPUTS, NOT_PROBED
    from mmloss_ext.probe import registered_box_heads
    heads = registered_box_heads()

    def types(node):
        if isinstance(node, dict):
            yield node.get('type')
            for v in node.values():
                yield from types(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                yield from types(v)

    used = {t for _, model in models() for t in types(model) if t in heads}
    assert {'RPNHead', 'RetinaHead', 'Shared2FCBBoxHead', 'DETRHead', 'DIIHead', 'StageCascadeRPNHead'} <= used
    missing = {h: NOT_PROBED.get(h, 'not in the table') for h in used - set(HEAD_INPUTS)}
    for head, why in missing.items():  # each for want of a package that is indeed absent here
        wanted = [p for p in OPTIONAL_PACKAGES if p in why]
        assert wanted and all(importlib.util.find_spec(p) is None for p in wanted), (head, why)


# --- the command line -----------------------------------------------------------------------------

@pytest.mark.needs_mmcv_ops  # a fresh process imports mmdet's models
def test_cli_exit_status_and_json(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text(f"_base_ = {osp.join(ROOT, 'configs/shapes/retinanet_r18s_fpn_shapes_giou.py')!r}\n"
                   "model = dict(bbox_head=dict(reg_decoded_bbox=False))\n")
    proc = subprocess.run([sys.executable, '-m', 'mmloss_ext', 'check', str(bad), '--json'], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr[-2000:]
    (finding,) = json.loads(proc.stdout)
    assert finding['level'] == 'error' and finding['path'] == 'model.bbox_head.loss_bbox'
    # the same config repaired from the command line
    proc = subprocess.run([sys.executable, '-m', 'mmloss_ext', 'check', str(bad), '--cfg-options',
                           'model.bbox_head.reg_decoded_bbox=True'], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == f'{bad}: 2 losses examined, 0 error(s), 0 note(s)'


def test_cli_summary_counts_the_losses_examined(tmp_path, capsys):
    cfg = tmp_path / 'one.py'
    cfg.write_text(f'model = {retinanet(loss_cls=dict(type="mmloss_ext.FocalLoss", gamma="2", alpha=-1))!r}\n')
    assert main([str(cfg)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f'{cfg}: 1 loss examined, 2 error(s), 0 note(s)'
    assert out.count('        fix: `alpha` takes a value in [0.0, 1.0]') == 1


def test_cli_finds_each_shapes_solov2_config_clean_and_a_batch_lovasz_wrong(capsys):
    """`python -m mmloss_ext check` on each instance-segmentation demo: both losses examined (the
    head's focal classification and its overlap mask loss), nothing to report; the Lovasz one with a
    loss over the whole call instead of one per instance is an error there."""
    configs = sorted(glob.glob(osp.join(ROOT, 'configs', 'shapes', 'solov2_*.py')))
    assert [osp.basename(c) for c in configs] == [f'solov2_r18s_fpn_shapes_{v}.py' for v in (
        'dice', 'focal-tversky', 'jaccard', 'lovasz', 'tversky')]
    for config in configs:
        assert main([config]) == 0
        assert capsys.readouterr().out == f'{config}: 2 losses examined, 0 error(s), 0 note(s)\n'
    lovasz = configs[3]
    assert main([lovasz, '--cfg-options', 'model.mask_head.loss_mask.per_image=False']) == 1
    out = capsys.readouterr().out
    assert out.startswith('[error] model.mask_head.loss_mask (mmloss_ext.LovaszLoss)') and 'per_image=True' in out


def test_cli_missing_config_is_one_line_and_exit_2(tmp_path, capsys):
    missing = tmp_path / 'nope.py'
    assert main([str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out == '' and err == f"python -m mmloss_ext check: cannot read the config: No such file or directory: '{missing}'\n"
    base = tmp_path / 'child.py'
    base.write_text("_base_ = './gone.py'\n")
    assert main([str(base)]) == 2
    assert capsys.readouterr().err.count('\n') == 1
    # and no traceback from the module itself
    proc = subprocess.run([sys.executable, '-m', 'mmloss_ext', 'check', str(missing)], capture_output=True, text=True)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr and 'cannot read the config' in proc.stderr


def test_cli_says_when_nothing_was_checked(tmp_path, capsys):
    no_model = tmp_path / 'no_model.py'
    no_model.write_text('train_cfg = dict(max_epochs=1)\n')
    assert main([str(no_model)]) == 2
    assert capsys.readouterr().out == f'{no_model}: the config has no `model`: nothing checked\n'
    no_loss = tmp_path / 'no_loss.py'
    no_loss.write_text(f'model = {retinanet()!r}\n')  # the heads keep their built-in losses
    assert main([str(no_loss), '--json']) == 2
    out, err = capsys.readouterr()
    assert json.loads(out) == [] and 'the model configures no loss' in err and 'nothing checked' in err


@pytest.mark.needs_mmcv_ops  # a fresh process imports mmdet's models
def test_cli_prints_no_pkg_resources_warning():
    """mmengine imports (and reloads) setuptools' deprecated pkg_resources to resolve 'mmdet::' paths;
    the package's entry points silence that warning, and only that one."""
    config = osp.join(ROOT, 'configs/shapes/retinanet_r18s_fpn_shapes_giou.py')
    # without the entry point, parsing the same config shows it (so the assertions below can fail)
    proc = subprocess.run([sys.executable, '-c', f'from mmengine.config import Config; Config.fromfile({config!r})'],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and 'pkg_resources is deprecated' in proc.stderr
    for args in (['check', config], ['list'], ['show', 'GIoULoss']):
        proc = subprocess.run([sys.executable, '-m', 'mmloss_ext', *args], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout and 'pkg_resources' not in proc.stderr, (args, proc.stderr)


# --- the runtime hint -----------------------------------------------------------------------------

def deltas(n, gen):
    """What RetinaHead feeds its loss without reg_decoded_bbox: small signed offsets."""
    return torch.randn(n, 4, generator=gen) * 0.2


def boxes(n, gen):
    xy = torch.rand(n, 2, generator=gen) * 50
    return torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=gen) * 20], 1)


def test_first_training_call_warns_on_delta_like_targets_and_never_looks_again(gen, monkeypatch):
    loss = GIoULoss()
    looked = []
    import mmloss_ext.losses._boxes as boxes_module
    monkeypatch.setattr(boxes_module, 'warn_if_deltas', lambda *a: looked.append(a) or warn_if_deltas(*a))
    pred, target = deltas(64, gen), deltas(64, gen)
    with pytest.warns(UserWarning, match='reg_decoded_bbox=True'):
        loss(pred, target)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        loss(pred, target)  # once only: no second look, no second warning
    assert len(looked) == 1


def test_decoded_boxes_and_eval_mode_give_no_hint(gen):
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        GIoULoss()(boxes(64, gen), boxes(64, gen))
        GIoULoss().eval()(deltas(64, gen), deltas(64, gen))


def test_hint_counts_only_positive_weights(gen):
    target = boxes(40, gen)
    target[:30] = deltas(30, gen)  # the deltas sit where the weight is zero (negatives)
    weight = torch.zeros(40)
    weight[30:] = 1.0
    assert warn_if_deltas('GIoULoss', target, weight) is False
    with pytest.warns(UserWarning, match='GIoULoss: .* of the target boxes'):
        assert warn_if_deltas('GIoULoss', target) is True


@pytest.mark.needs_mmcv_ops  # a fresh process imports mmdet's models
def test_train_py_stops_on_errors_before_building_anything(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text(f"_base_ = {osp.join(ROOT, 'configs/shapes/retinanet_r18s_fpn_shapes_giou.py')!r}\n"
                   "model = dict(bbox_head=dict(reg_decoded_bbox=False))\n")
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), str(bad), '--work-dir',
                           str(tmp_path / 'wd')], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode != 0
    assert 'reg_decoded_bbox=True' in proc.stderr and 'the loss check found errors' in proc.stderr
    assert 'pkg_resources' not in proc.stderr
    assert not (tmp_path / 'wd').exists()  # stopped before the Runner made its work dir
