# Cascade RPN (RPN only) R50-caffe-FPN 1x COCO: both stages regress with mmloss_ext.GIoULoss (GIoU).
_base_ = './cascade-rpn_r50-caffe_fpn_iou_1x_coco.py'

_base_.model.rpn_head.stages[0].loss_bbox = dict(type='mmloss_ext.GIoULoss', loss_weight=10.0)
_base_.model.rpn_head.stages[1].loss_bbox = dict(type='mmloss_ext.GIoULoss', loss_weight=10.0)
