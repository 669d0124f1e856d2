"""``type='mmloss_ext.X'`` is mmloss_ext's X or a KeyError, never a parent registry's X.

mmengine's child registries fall back to their parents for a name they lack; for a name written
with the ``mmloss_ext.`` prefix that would silently build mmdet's class. Every other lookup keeps
mmengine's rules: plain names, ``mmdet.X``, default scopes, ``_scope_`` and dotted import paths.
``RetinaHead`` stands for a name mmdet registers and mmloss_ext never will.
"""
import subprocess
import sys
import textwrap
from contextlib import contextmanager

import pytest
from mmdet.models.dense_heads import RetinaHead
from mmdet.models.losses import FocalLoss as MMDetFocalLoss
from mmdet.models.losses import GIoULoss as MMDetGIoULoss
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry.utils import traverse_registry_tree

import mmloss_ext
from mmloss_ext.losses import GIoULoss, L1Loss
from mmloss_ext.registry import MODELS

#: no default scope, mmdet's (as mmdet's configs set it) and ours
SCOPES = (None, 'mmdet', 'mmloss_ext')


@contextmanager
def default_scope(scope):
    with DefaultScope.overwrite_default_scope(scope):
        yield


def retina_head_cfg(**losses):
    return dict(type='RetinaHead', num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1,
                anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=1,
                                      ratios=[1.0], strides=[8]),
                bbox_coder=dict(type='DeltaXYWHBBoxCoder'), reg_decoded_bbox=True, **losses)


@pytest.mark.parametrize('scope', SCOPES)
@pytest.mark.parametrize('registry', [MMDET_MODELS, MODELS], ids=['mmdet-registry', 'our-registry'])
def test_a_prefixed_name_mmloss_ext_lacks_is_a_key_error_not_mmdets_class(registry, scope):
    with default_scope(scope), pytest.raises(KeyError) as err:
        registry.build(dict(type='mmloss_ext.RetinaHead', num_classes=3, in_channels=8))
    msg = str(err.value)
    assert "mmloss_ext registers no loss named 'RetinaHead'" in msg
    assert "mmdet's own RetinaHead is type='RetinaHead'" in msg


def test_the_error_names_the_closest_registered_losses():
    with pytest.raises(KeyError) as err:
        MMDET_MODELS.build(dict(type='mmloss_ext.GIoULos'))
    closest = str(err.value).split('(closest: ', 1)[1].split(')', 1)[0].split(', ')
    assert closest[0] == 'GIoULoss' and len(closest) == 3
    assert all(name in MODELS.module_dict for name in closest)
    assert "mmdet's own" not in str(err.value)  # mmdet has no GIoULos either


@pytest.mark.parametrize('scope', SCOPES)
def test_prefixed_plain_and_mmdet_names_resolve_as_before(scope):
    with default_scope(scope):
        assert type(MMDET_MODELS.build(dict(type='mmloss_ext.GIoULoss'))) is GIoULoss
        assert type(MMDET_MODELS.build(dict(type='mmdet.GIoULoss'))) is MMDetGIoULoss
        assert type(MMDET_MODELS.build(dict(type='CharbonnierLoss'))) is mmloss_ext.CharbonnierLoss
        assert MMDET_MODELS.get('RetinaHead') is RetinaHead
        assert MODELS.get('RetinaHead') is RetinaHead  # a plain name: our registry's parent chain
        # mmengine's rule for a plain name: the current scope's registry first
        plain = MMDET_MODELS.build(dict(type='GIoULoss'))
        assert type(plain) is (GIoULoss if scope == 'mmloss_ext' else MMDetGIoULoss)


@pytest.mark.parametrize('scope', SCOPES)
def test_scope_markers_and_import_paths_still_resolve(scope):
    with default_scope(scope):
        # what mmengine writes into dicts that came in through 'mmdet::' bases
        assert type(MMDET_MODELS.build(dict(type='mmloss_ext.L1Loss', _scope_='mmdet'))) is L1Loss
        assert type(MMDET_MODELS.build(dict(type='GIoULoss', _scope_='mmdet'))) is MMDetGIoULoss
        assert type(MMDET_MODELS.build(dict(type='L1Loss', _scope_='mmloss_ext'))) is L1Loss
        assert type(MMDET_MODELS.build(dict(retina_head_cfg(), _scope_='mmloss_ext'))) is RetinaHead
        # a dotted import path (lazy-import configs dump these) is not a registered name
        assert MMDET_MODELS.get('mmloss_ext.losses.regression.L1Loss') is L1Loss


def test_mmdet_builds_its_own_modules_while_our_scope_is_current():
    with default_scope('mmloss_ext'):
        head = MMDET_MODELS.build(retina_head_cfg(loss_cls=dict(type='mmdet.FocalLoss', use_sigmoid=True),
                                                  loss_bbox=dict(type='mmloss_ext.GIoULoss', loss_weight=2.0)))
    assert type(head) is RetinaHead
    assert type(head.loss_cls) is MMDetFocalLoss and type(head.loss_bbox) is GIoULoss
    assert head.loss_bbox.loss_weight == 2.0


def test_a_config_with_mmdets_default_scope_builds_scoped_losses(tmp_path):
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text("default_scope = 'mmdet'\n"
                        f"model = {retina_head_cfg(loss_cls=dict(type='FocalLoss', use_sigmoid=True), loss_bbox=dict(type='mmloss_ext.GIoULoss'))!r}\n"
                        "bad = dict(type='mmloss_ext.FocalLos')\n")
    cfg = Config.fromfile(str(cfg_file))
    with default_scope(cfg.default_scope):
        head = MMDET_MODELS.build(cfg.model)
        assert type(head.loss_cls) is MMDetFocalLoss and type(head.loss_bbox) is GIoULoss
        with pytest.raises(KeyError, match='closest: FocalLoss'):
            MMDET_MODELS.build(cfg.bad)


def test_membership_tests_answer_without_raising_on_our_registry():
    assert 'mmloss_ext.L1Loss' in MODELS and 'L1Loss' in MODELS
    assert 'mmloss_ext.RetinaHead' not in MODELS
    assert 'RetinaHead' in MODELS  # the parent chain, as for any mmengine child registry


def test_the_registry_tree_lists_our_losses_once_under_our_scope():
    tree = traverse_registry_tree(ROOT_MODELS, verbose=False)
    ours = [node for node in tree if node['scope'] == 'mmloss_ext']
    assert len(ours) == 1 and ours[0]['num_modules'] == len(MODELS.module_dict) > 0
    assert MMDET_MODELS.children['mmloss_ext'].module_dict is MODELS.module_dict


@pytest.mark.needs_mmcv_ops  # a fresh process imports mmdet's models
def test_in_a_fresh_process_the_prefixed_unknown_name_fails_too():
    code = textwrap.dedent("""
        import sys
        from mmdet.registry import MODELS
        assert 'mmloss_ext' not in sys.modules
        print(type(MODELS.build(dict(type='mmloss_ext.GIoULoss'))).__module__)
        try:
            MODELS.build(dict(type='mmloss_ext.RetinaHead'))
        except KeyError as err:
            print('KeyError', 'registers no loss named' in str(err))
    """)
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ['mmloss_ext.losses.bbox.classic', 'KeyError', 'True']
