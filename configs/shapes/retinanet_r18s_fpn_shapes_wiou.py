# The shapes RetinaNet of ./retinanet_r18s_fpn_shapes_giou.py with mmloss_ext.WIoULoss (Wise-IoU v3; its running mean is the buffer `iou_mean`, saved in checkpoints and all-reduced across ranks) as the box loss.
_base_ = './retinanet_r18s_fpn_shapes_giou.py'

model = dict(bbox_head=dict(loss_bbox=dict(_delete_=True, type='mmloss_ext.WIoULoss', version='v3', loss_weight=2.0)))
