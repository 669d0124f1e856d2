# mmdet's Cascade RPN (RPN only) R50-caffe-FPN 1x COCO with the stages' losses from mmloss_ext:
# the same linear IoU loss (mmloss_ext.IoULoss, mode='linear') and sigmoid cross-entropy. Equivalent
# to mmdet's config; the base of the other variants in this folder.
_base_ = 'mmdet::cascade_rpn/cascade-rpn_r50-caffe_fpn_1x_coco.py'
custom_imports = dict(imports=['mmloss_ext'], allow_failed_imports=False)

# `stages` is a list, which config inheritance replaces as a whole: edit the inherited entries in place
_base_.model.rpn_head.stages[0].loss_bbox = dict(type='mmloss_ext.IoULoss', mode='linear', loss_weight=10.0)
_base_.model.rpn_head.stages[1].loss_bbox = dict(type='mmloss_ext.IoULoss', mode='linear', loss_weight=10.0)
_base_.model.rpn_head.stages[1].loss_cls = dict(type='mmloss_ext.CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)

# mmdet 3.3.0's RPN-only Cascade RPN config does not build as shipped (with or without these losses):
# CascadeRPNHead requires `num_classes`, which the RPN detector only fills in when it is not 1, and
# StageCascadeRPNHead no longer takes the 2.x `sampling` flag (a stage samples when its train_cfg
# has a `sampler`, exactly what the flag meant).
_base_.model.rpn_head.num_classes = 1
for _stage in _base_.model.rpn_head.stages:
    _stage.pop('sampling', None)
del _stage
