# RetinaNet scaled to the bundled shapes dataset: trained from scratch on 2 CPU cores (what
# `make demo` runs). mmloss_ext FocalLoss for classification and mmloss_ext GIoULoss on decoded boxes.
#
# Scaled from mmdet's RetinaNet R50-FPN 1x: a ResNet-18 with a quarter of the channels
# (16-32-64-128) and no pretrained weights, BN in train mode, three FPN levels (strides 8/16/32)
# with 64 channels, a two-conv GN head, anchors sized for 16-64 px objects in 128 px images,
# AdamW with warm-up and cosine decay. The dataset is generated on first use by tools/train.py
# (mmloss_ext.datasets.shapes), from the `shapes_data` entry below.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmloss_ext'], allow_failed_imports=False)

data_root = 'data/shapes/'
classes = ('rectangle', 'ellipse', 'triangle')
metainfo = dict(classes=classes, palette=[(220, 20, 60), (0, 160, 255), (255, 200, 0)])
# read by tools/train.py, tools/test.py, tools/compare.py: generate the dataset if missing
shapes_data = dict(root=data_root, num_train=2000, num_val=300, img_size=128, seed=0)
img_size = 128
max_epochs = 6
batch_size = 16

model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        depth=18,
        base_channels=16,
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 128], out_channels=64, start_level=0, add_extra_convs=False, num_outs=3),
    bbox_head=dict(
        num_classes=len(classes),
        in_channels=64,
        feat_channels=64,
        stacked_convs=2,
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
        anchor_generator=dict(octave_base_scale=3, strides=[8, 16, 32]),
        reg_decoded_bbox=True,
        loss_cls=dict(type='mmloss_ext.FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(_delete_=True, type='mmloss_ext.GIoULoss', loss_weight=2.0)),
    test_cfg=dict(nms_pre=500, score_thr=0.05, max_per_img=50))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=batch_size,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=max_epochs, val_interval=2)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
    clip_grad=dict(max_norm=10.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=150),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min_ratio=0.02, by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True),
]
default_hooks = dict(
    logger=dict(interval=25, log_metric_by_epoch=False),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
log_processor = dict(window_size=25)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
auto_scale_lr = dict(enable=False, base_batch_size=batch_size)
# a fixed seed (initial weights, data order, augmentation, samplers): without one mmengine draws a new
# seed for every run. tools/compare.py trains seeds 0, 1, ... with --cfg-options randomness.seed=k.
randomness = dict(seed=0)
