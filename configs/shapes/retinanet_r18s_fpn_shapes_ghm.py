# The shapes RetinaNet of ./retinanet_r18s_fpn_shapes_giou.py (same data, model and schedule) with
# the gradient harmonizing losses of mmdet's GHM config: mmloss_ext.GHMC for classification and
# mmloss_ext.GHMR on the box deltas (reg_decoded_bbox=False), their running histograms in buffers.
_base_ = './retinanet_r18s_fpn_shapes_giou.py'

model = dict(
    bbox_head=dict(
        reg_decoded_bbox=False,
        loss_cls=dict(_delete_=True, type='mmloss_ext.GHMC', bins=30, momentum=0.75, use_sigmoid=True,
                      loss_weight=1.0),
        loss_bbox=dict(_delete_=True, type='mmloss_ext.GHMR', mu=0.02, bins=10, momentum=0.7, loss_weight=10.0)))
