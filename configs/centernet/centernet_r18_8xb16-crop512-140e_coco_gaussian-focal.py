# mmdet's CenterNet R-18 (no DCN) 140e COCO with its losses taken from mmloss_ext, same
# hyper-parameters: the Gaussian focal loss on the centre heatmap (fused kernel), L1 on the box sizes and
# the centre offsets.
_base_ = 'mmdet::centernet/centernet_r18_8xb16-crop512-140e_coco.py'
custom_imports = dict(imports=['mmloss_ext'], allow_failed_imports=False)

model = dict(
    bbox_head=dict(
        loss_center_heatmap=dict(type='mmloss_ext.GaussianFocalLoss', loss_weight=1.0),
        loss_wh=dict(type='mmloss_ext.L1Loss', loss_weight=0.1),
        loss_offset=dict(type='mmloss_ext.L1Loss', loss_weight=1.0)))
