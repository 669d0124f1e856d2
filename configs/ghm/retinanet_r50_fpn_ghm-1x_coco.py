# mmdet's GHM RetinaNet R50-FPN 1x COCO (Li et al. 2019, "Gradient Harmonized Single-stage
# Detector") with its losses taken from mmloss_ext, same hyper-parameters: GHM-C (30 bins,
# momentum 0.75) and GHM-R (mu 0.02, 10 bins, momentum 0.7, weight 10) on the box deltas. Their
# running histograms are buffers (saved in checkpoints, all-reduced across ranks).
_base_ = 'mmdet::ghm/retinanet_r50_fpn_ghm-1x_coco.py'
custom_imports = dict(imports=['mmloss_ext'], allow_failed_imports=False)

model = dict(
    bbox_head=dict(
        loss_cls=dict(type='mmloss_ext.GHMC'),
        loss_bbox=dict(type='mmloss_ext.GHMR')))
