# mmdet's Cascade-RPN Faster R-CNN R50-caffe-FPN 1x COCO with every loss from mmloss_ext and the same
# settings: linear IoU loss and sigmoid CE in the RPN stages, softmax CE and smooth L1 in the RoI head.
_base_ = 'mmdet::cascade_rpn/cascade-rpn_faster-rcnn_r50-caffe_fpn_1x_coco.py'
custom_imports = dict(imports=['mmloss_ext'], allow_failed_imports=False)

rpn_weight = 0.7
# `stages` is a list, which config inheritance replaces as a whole: edit the inherited entries in place
_base_.model.rpn_head.stages[0].loss_bbox = dict(type='mmloss_ext.IoULoss', mode='linear', loss_weight=10.0 * rpn_weight)
_base_.model.rpn_head.stages[1].loss_bbox = dict(type='mmloss_ext.IoULoss', mode='linear', loss_weight=10.0 * rpn_weight)
_base_.model.rpn_head.stages[1].loss_cls = dict(
    type='mmloss_ext.CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0 * rpn_weight)
model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(type='mmloss_ext.CrossEntropyLoss', use_sigmoid=False, loss_weight=1.5),
            loss_bbox=dict(type='mmloss_ext.SmoothL1Loss', beta=1.0, loss_weight=1.0))))
