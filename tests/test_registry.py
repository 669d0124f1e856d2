"""The registry scope: 'mmloss_ext.X' from mmdet's registries, plain names, custom_imports."""
import subprocess
import sys
import textwrap

import pytest
import torch
from mmdet.registry import MODELS as MMDET_MODELS


def run_python(code):
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.needs_mmcv_ops  # a fresh process imports mmdet's models
def test_scoped_name_resolves_in_a_process_that_never_imported_the_package():
    out = run_python("""
        import sys
        from mmdet.registry import MODELS
        assert 'mmloss_ext' not in sys.modules
        loss = MODELS.build(dict(type='mmloss_ext.CharbonnierLoss', eps=1e-3, loss_weight=2.0))
        print(type(loss).__module__, loss.eps, loss.loss_weight)
    """)
    assert out.split() == ['mmloss_ext.losses.regression', '0.001', '2.0']


@pytest.mark.needs_mmcv_ops  # a fresh process imports mmdet's models
def test_custom_imports_config_makes_plain_names_resolve(tmp_path):
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text("custom_imports = dict(imports=['mmloss_ext'], allow_failed_imports=False)\n"
                        "loss = dict(type='CharbonnierLoss', eps=0.5)\n"
                        "loss_scoped = dict(type='mmloss_ext.HuberLoss', delta=2.0)\n")
    out = run_python(f"""
        from mmengine.config import Config
        from mmengine.utils import import_modules_from_strings
        from mmdet.registry import MODELS
        cfg = Config.fromfile({str(cfg_file)!r})
        import_modules_from_strings(**cfg.custom_imports)
        a, b = MODELS.build(cfg.loss), MODELS.build(cfg.loss_scoped)
        print(type(a).__module__, a.eps, type(b).__name__, b.delta)
    """)
    assert out.split() == ['mmloss_ext.losses.regression', '0.5', 'HuberLoss', '2.0']


def test_mmdet_names_are_not_overridden():
    import mmloss_ext  # noqa: F401
    from mmdet.models.losses import L1Loss as MMDetL1Loss
    from mmloss_ext.losses.regression import L1Loss
    assert MMDET_MODELS.get('L1Loss') is MMDetL1Loss
    assert MMDET_MODELS.get('mmloss_ext.L1Loss') is L1Loss
    assert MMDET_MODELS.get('CharbonnierLoss') is mmloss_ext.losses.regression.CharbonnierLoss


def test_a_loss_is_registered_under_the_name_its_functional_declares():
    """The name is written once, in ``@declare``: every registered class bears it, its errors use
    it, and a class named otherwise is refused before anything is registered."""
    import mmloss_ext  # noqa: F401
    from mmloss_ext.registry import LOSSES, register_loss
    from mmloss_ext.losses.regression import RegressionLoss, charbonnier_loss
    assert all(cls.loss_fn.spec.loss == name for name, cls in LOSSES.items())
    with pytest.raises(ValueError, match='^CharbonnierLoss: `eps` expected'):
        charbonnier_loss(torch.zeros(2), torch.zeros(2), eps=-1.0)
    before = dict(LOSSES)
    with pytest.raises(TypeError, match="class Charbonnier registers .* expected the name 'CharbonnierLoss'"):
        register_loss(type('Charbonnier', (RegressionLoss,), {'loss_fn': staticmethod(charbonnier_loss)}))
    with pytest.raises(TypeError, match="class Undeclared .* expected the name None"):
        register_loss(type('Undeclared', (RegressionLoss,), {}))
    assert LOSSES == before and 'Charbonnier' not in MMDET_MODELS.module_dict


def test_a_mmdet_head_trains_with_a_scoped_loss_exactly_like_mmdets_own():
    """RetinaHead's box loss swapped for mmloss_ext.L1Loss gives mmdet's L1Loss numbers."""
    import mmloss_ext  # noqa: F401
    from mmengine.structures import InstanceData

    def head(loss_type):
        torch.manual_seed(0)
        return MMDET_MODELS.build(dict(
            type='RetinaHead', num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1,
            anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=1,
                                  ratios=[1.0], strides=[8]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[1.0] * 4),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type=loss_type, loss_weight=1.0),
            train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0),
                           sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1, debug=False)))

    feats = [torch.randn(1, 8, 8, 8, generator=torch.Generator().manual_seed(1))]
    gt = InstanceData(bboxes=torch.tensor([[8.0, 8.0, 40.0, 36.0], [30.0, 2.0, 60.0, 30.0]]),
                      labels=torch.tensor([0, 2]))
    metas = [dict(img_shape=(64, 64), pad_shape=(64, 64), scale_factor=(1.0, 1.0))]
    losses = {}
    for loss_type in ('L1Loss', 'mmloss_ext.L1Loss'):
        h = head(loss_type)
        out = h.loss_by_feat(*h(feats), [gt], metas)
        losses[loss_type] = torch.stack([sum(out['loss_cls']), sum(out['loss_bbox'])])
    assert float(losses['L1Loss'][1]) > 0
    torch.testing.assert_close(losses['mmloss_ext.L1Loss'], losses['L1Loss'])


@pytest.mark.needs_mmcv_ops  # a fresh process imports mmdet's models
def test_the_import_loads_mmdets_registry_not_its_models():
    # registering needs only the registries: mmdet.models (and through it mmcv.ops) stays unloaded
    # until something builds from mmdet's registry, which then sees the plain names too
    out = run_python("""
        import sys
        import mmloss_ext
        print('mmdet.registry' in sys.modules, 'mmdet.models' in sys.modules, 'mmcv.ops' in sys.modules)
        from mmdet.registry import MODELS
        print(MODELS.get('CharbonnierLoss') is mmloss_ext.CharbonnierLoss, MODELS.get('GIoULoss').__module__)
        print('mmdet.models' in sys.modules)
    """).splitlines()
    assert out == ['True False False', 'True mmdet.models.losses.iou_loss', 'True']


@pytest.mark.needs_mmcv_ops  # a fresh process imports mmdet's models
def test_plain_names_when_mmdets_models_were_imported_first():
    out = run_python("""
        import mmdet.models
        from mmdet.registry import MODELS
        import mmloss_ext
        print(MODELS.get('CharbonnierLoss') is mmloss_ext.CharbonnierLoss, MODELS.get('FocalLoss').__module__)
    """)
    assert out.split() == ['True', 'mmdet.models.losses.focal_loss']


HIDE_MMDET = """
    import importlib.abc, sys
    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split('.')[0] == 'mmdet':
                raise ImportError('mmdet is hidden')
    sys.meta_path.insert(0, Hide())
"""


def test_with_mmengine_alone_the_losses_hang_under_its_root_registry():
    # what an mmseg/mmyolo/mmpose process sees: a downstream scope resolves 'mmloss_ext.X' through
    # mmengine's root, strictly (a name mmloss_ext lacks is a KeyError, not a fallback)
    out = run_python(HIDE_MMDET + """
    from mmengine.registry import MODELS as ROOT, Registry
    import mmloss_ext
    from mmloss_ext.registry import MODELS
    assert 'mmdet' not in sys.modules
    downstream = Registry('model', parent=ROOT, scope='mmseg_like')
    loss = downstream.build(dict(type='mmloss_ext.CIoULoss', loss_weight=2.0))
    print(MODELS.parent is ROOT, type(loss) is mmloss_ext.CIoULoss, loss.loss_weight)
    try:
        downstream.build(dict(type='mmloss_ext.ResNet'))
    except KeyError as err:
        print('KeyError', 'mmloss_ext registers no loss named' in str(err))
    """)
    assert out.split() == ['True', 'True', '2.0', 'KeyError', 'True']
