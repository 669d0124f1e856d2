# RetinaNet R50-FPN 1x COCO: mmloss_ext FocalLoss + alpha-IoU, alpha=3 (He et al. 2021) on decoded boxes (reg_decoded_bbox=True).
_base_ = './retinanet_r50_fpn_focal_1x_coco.py'

model = dict(
    bbox_head=dict(
        reg_decoded_bbox=True,
        loss_bbox=dict(_delete_=True, type='mmloss_ext.AlphaIoULoss', alpha=3.0, mode='iou', loss_weight=2.0)))
