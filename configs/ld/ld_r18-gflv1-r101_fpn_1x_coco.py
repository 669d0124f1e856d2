# mmdet's LD (localization distillation, Zheng et al. 2022) 1x COCO: a GFL R18 student distilled from
# a GFL R101 teacher, with the student's losses taken from mmloss_ext, same hyper-parameters:
# KnowledgeDistillationKLDivLoss (LD), QualityFocalLoss, DistributionFocalLoss and GIoULoss.
# The teacher is mmdet's own: model.teacher_config is mmdet's path relative to an mmdet source
# checkout and model.teacher_ckpt its download URL. Elsewhere, point it at the installed config, e.g.
#   --cfg-options model.teacher_config=<site-packages>/mmdet/.mim/configs/gfl/gfl_r101_fpn_ms-2x_coco.py
# (model.teacher_ckpt=None builds the teacher without loading weights: for tests only).
_base_ = 'mmdet::ld/ld_r18-gflv1-r101_fpn_1x_coco.py'
custom_imports = dict(imports=['mmloss_ext'], allow_failed_imports=False)

model = dict(
    bbox_head=dict(
        loss_cls=dict(type='mmloss_ext.QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
        loss_dfl=dict(type='mmloss_ext.DistributionFocalLoss', loss_weight=0.25),
        loss_ld=dict(type='mmloss_ext.KnowledgeDistillationKLDivLoss', loss_weight=0.25, T=10),
        loss_bbox=dict(type='mmloss_ext.GIoULoss', loss_weight=2.0)))
