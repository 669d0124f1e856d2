# RetinaNet R50-FPN 1x COCO: mmloss_ext FocalLoss + SIoU (Gevorgyan 2022) on decoded boxes (reg_decoded_bbox=True).
_base_ = './retinanet_r50_fpn_focal_1x_coco.py'

model = dict(
    bbox_head=dict(
        reg_decoded_bbox=True,
        loss_bbox=dict(_delete_=True, type='mmloss_ext.SIoULoss', loss_weight=2.0)))
