# The shapes RetinaNet of ./retinanet_r18s_fpn_shapes_giou.py (same data, model, box loss and
# schedule) with the varifocal loss of VarifocalNet for classification. RetinaHead passes class
# labels, which VarifocalLoss takes as one-hot targets (an IoU-aware head would pass IoU scores).
_base_ = './retinanet_r18s_fpn_shapes_giou.py'

model = dict(
    bbox_head=dict(
        loss_cls=dict(_delete_=True, type='mmloss_ext.VarifocalLoss', use_sigmoid=True, alpha=0.75, gamma=2.0,
                      iou_weighted=True, loss_weight=1.0)))
