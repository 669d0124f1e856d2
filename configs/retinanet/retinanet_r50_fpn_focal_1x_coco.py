# mmdet's RetinaNet R50-FPN 1x COCO with its losses taken from mmloss_ext, same hyper-parameters:
# sigmoid focal loss, L1 on the box deltas. The base of the IoU-loss variants in this folder.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmloss_ext'], allow_failed_imports=False)

model = dict(
    bbox_head=dict(
        loss_cls=dict(type='mmloss_ext.FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='mmloss_ext.L1Loss', loss_weight=1.0)))
