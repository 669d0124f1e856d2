# mmdet's LD (localization distillation, Zheng et al. 2022) 1x COCO: a GFL R18 student distilled from
# a GFL R101 teacher, with the student's losses taken from mmloss_ext, same hyper-parameters:
# KnowledgeDistillationKLDivLoss (LD), QualityFocalLoss, DistributionFocalLoss and GIoULoss.
# The teacher is mmdet's own, its weights downloaded from mmdet's URL (model.teacher_ckpt, inherited).
# mmdet names the teacher's config by a path relative to an mmdet source checkout
# ('configs/gfl/gfl_r101_fpn_ms-2x_coco.py'); this config points at the copy mmdet installs with its
# package (mmdet/.mim/configs/...), so that it builds from any directory.
_base_ = 'mmdet::ld/ld_r18-gflv1-r101_fpn_1x_coco.py'
import importlib.util  # noqa: E402  (after _base_: mmengine reads an import before it as a lazy-import config)
import os.path as osp  # noqa: E402
custom_imports = dict(imports=['mmloss_ext'], allow_failed_imports=False)

model = dict(
    teacher_config=osp.join(osp.dirname(importlib.util.find_spec('mmdet').origin), '.mim', 'configs', 'gfl',
                            'gfl_r101_fpn_ms-2x_coco.py'),
    bbox_head=dict(
        loss_cls=dict(type='mmloss_ext.QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
        loss_dfl=dict(type='mmloss_ext.DistributionFocalLoss', loss_weight=0.25),
        loss_ld=dict(type='mmloss_ext.KnowledgeDistillationKLDivLoss', loss_weight=0.25, T=10),
        loss_bbox=dict(type='mmloss_ext.GIoULoss', loss_weight=2.0)))
