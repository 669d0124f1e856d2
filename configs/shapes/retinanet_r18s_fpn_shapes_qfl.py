# The shapes RetinaNet of ./retinanet_r18s_fpn_shapes_giou.py (same data, model, box loss and
# schedule) with the quality focal loss of GFL for classification. RetinaHead passes class labels,
# which QualityFocalLoss takes as hard targets (a score of 1 for the labelled class).
_base_ = './retinanet_r18s_fpn_shapes_giou.py'

model = dict(
    bbox_head=dict(
        loss_cls=dict(_delete_=True, type='mmloss_ext.QualityFocalLoss', use_sigmoid=True, beta=2.0,
                      loss_weight=1.0)))
