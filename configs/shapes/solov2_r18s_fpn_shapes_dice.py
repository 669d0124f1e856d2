# SOLOv2 instance segmentation scaled to the bundled shapes dataset, trained from scratch on 2 CPU
# cores: mmdet's own SOLOv2 detector and head (as in mmdet's solov2/solov2_r50_fpn_1x_coco.py), with
# mmloss_ext DiceLoss as the mask loss and mmloss_ext FocalLoss for the grid classification.
#
# The data, optimiser, hooks and runtime are those of the shapes RetinaNet (its config is the base;
# here the annotations' instance masks are loaded too), and so is the backbone: a ResNet-18 with a
# quarter of the channels (16-32-64-128), no pretrained weights, BN in train mode, 64 FPN channels,
# here with the stride-4 level, which SOLOv2's mask features start from.
_base_ = './retinanet_r18s_fpn_shapes_giou.py'

max_epochs = 12
img_size = {{_base_.img_size}}

model = dict(
    _delete_=True,
    type='SOLOv2',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, pad_mask=True, pad_size_divisor=32),
    backbone=dict(type='ResNet', depth=18, base_channels=16, num_stages=4, out_indices=(0, 1, 2, 3),
                  frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
                  style='pytorch', init_cfg=None),
    neck=dict(type='FPN', in_channels=[16, 32, 64, 128], out_channels=64, start_level=0, num_outs=4),
    mask_head=dict(
        type='SOLOV2Head',
        num_classes=3,  # rectangle, ellipse, triangle
        in_channels=64,
        feat_channels=64,
        stacked_convs=2,
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
        # four levels for the P2-P5 features (the head resizes P2 to P3's size and P5 to P4's).
        # scale_ranges: by sqrt(box area), 8-64 px here; each level overlaps its neighbours.
        # num_grids: the grid cells (128 px / grid) span 1-4 cells of an object of the level's sizes.
        # strides: SOLOv2 reads them only to drop a predicted mask of at most that many pixels at
        # the mask features' 1/4 resolution; these keep objects of 8 px.
        strides=[1, 2, 4, 8],
        scale_ranges=((1, 24), (16, 40), (28, 64), (48, 128)),
        pos_scale=0.2,
        num_grids=[16, 12, 8, 6],
        cls_down_index=0,
        mask_feature_head=dict(
            feat_channels=32,
            start_level=0,
            end_level=3,
            out_channels=64,
            mask_stride=4,
            norm_cfg=dict(type='GN', num_groups=8, requires_grad=True)),
        loss_mask=dict(type='mmloss_ext.DiceLoss', use_sigmoid=True, loss_weight=3.0),
        loss_cls=dict(type='mmloss_ext.FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0)),
    test_cfg=dict(nms_pre=500, score_thr=0.1, mask_thr=0.5, filter_thr=0.05, kernel='gaussian', sigma=2.0,
                  max_per_img=50))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
# mmdet's COCO metric; SOLOv2 predicts no boxes (zeros), so the bbox metric takes those of the masks
val_evaluator = dict(type='mmloss_ext.MaskBoxCocoMetric', metric=['segm', 'bbox'])
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=max_epochs, val_interval=4)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=150),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min_ratio=0.02, by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True),
]
default_hooks = dict(checkpoint=dict(interval=max_epochs))
