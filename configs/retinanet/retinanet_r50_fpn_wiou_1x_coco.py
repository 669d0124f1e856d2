# RetinaNet R50-FPN 1x COCO: mmloss_ext FocalLoss + Wise-IoU v3 (Tong et al. 2023; its running mean is a buffer, all-reduced across ranks) on decoded boxes (reg_decoded_bbox=True).
_base_ = './retinanet_r50_fpn_focal_1x_coco.py'

model = dict(
    bbox_head=dict(
        reg_decoded_bbox=True,
        loss_bbox=dict(_delete_=True, type='mmloss_ext.WIoULoss', version='v3', loss_weight=2.0)))
