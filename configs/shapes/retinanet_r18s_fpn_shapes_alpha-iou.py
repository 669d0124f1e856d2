# The shapes RetinaNet of ./retinanet_r18s_fpn_shapes_giou.py with mmloss_ext.AlphaIoULoss (alpha=3) as the box loss.
_base_ = './retinanet_r18s_fpn_shapes_giou.py'

model = dict(bbox_head=dict(loss_bbox=dict(_delete_=True, type='mmloss_ext.AlphaIoULoss', alpha=3.0, mode='iou', loss_weight=2.0)))
