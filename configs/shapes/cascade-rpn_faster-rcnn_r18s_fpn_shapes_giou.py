# Cascade-RPN Faster R-CNN scaled to the bundled shapes dataset, trained from scratch on CPU, with
# mmloss_ext losses: GIoU in both RPN stages (mmcv's DeformConv2d adapts the second stage, on CPU),
# sigmoid CE for objectness, softmax CE + smooth L1 in the RoI head.
#
# Same small backbone, data and schedule as ./retinanet_r18s_fpn_shapes_giou.py (the data block is
# repeated here because mmengine does not merge two bases that both define the dataloaders).
_base_ = 'mmdet::cascade_rpn/cascade-rpn_faster-rcnn_r50-caffe_fpn_1x_coco.py'
custom_imports = dict(imports=['mmloss_ext'], allow_failed_imports=False)

data_root = 'data/shapes/'
classes = ('rectangle', 'ellipse', 'triangle')
metainfo = dict(classes=classes, palette=[(220, 20, 60), (0, 160, 255), (255, 200, 0)])
shapes_data = dict(root=data_root, num_train=2000, num_val=300, img_size=128, seed=0)
img_size = 128
max_epochs = 6
batch_size = 16
strides = [8, 16, 32]

# Loss weights for 128 px images. The two RPN stages normalise their regression sums differently:
# stage 0 (every anchor in a gt's centre region is positive) divides by the number of anchors / 200, a
# constant of mmdet's sized for COCO (~89k anchors per 1333x800 image), stage 1 by the sampled anchors.
# Here an image has 336 anchors: a batch of 16 divides stage 0 by 26.9 for ~106 positives, so its mean
# GIoU per positive is weighted ~4x the loss weight, and stage 1 by the 16 x samples for ~42 positives at
# the start (~320 once stage 0 has learned). With weights 7 and 7 and 128 samples, stage 0 made 14 of the
# starting total loss of 15.6 and, through gradient clipping, every update; stage 1 hardly learned and
# the runs scattered (bbox mAP 0.42-0.61). 0.5 and 20 with 64 samples weight the mean per positive by
# ~2 in stage 0 and ~0.8 -> ~6 in stage 1 (measured at the start and after training).
stage0_reg_weight = 0.5
stage1_reg_weight = 20.0
stage1_samples = 64  # sampled anchors per image in stage 1 (mmdet's COCO config: 256)

# the RPN stages are a list, which inheritance replaces as a whole: edit the inherited ones in place
for _stage, _weight in zip(_base_.model.rpn_head.stages, (stage0_reg_weight, stage1_reg_weight)):
    _stage.in_channels = 64
    _stage.feat_channels = 64
    _stage.loss_bbox = dict(type='mmloss_ext.GIoULoss', loss_weight=_weight)
del _stage, _weight
_base_.model.rpn_head.stages[0].anchor_generator.strides = strides
_base_.model.rpn_head.stages[0].anchor_generator.scales = [3]
_base_.model.rpn_head.stages[1].loss_cls = dict(type='mmloss_ext.CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)
_base_.model.train_cfg.rpn[1].sampler.num = stage1_samples

model = dict(
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(
        depth=18,
        base_channels=16,
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        style='pytorch',
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 128], out_channels=64, num_outs=3),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64, featmap_strides=strides),
        bbox_head=dict(
            in_channels=64,
            fc_out_channels=256,
            num_classes=len(classes),
            loss_cls=dict(type='mmloss_ext.CrossEntropyLoss', use_sigmoid=False, loss_weight=1.5),
            loss_bbox=dict(type='mmloss_ext.SmoothL1Loss', beta=1.0, loss_weight=1.0))),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=100),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(
        rpn=dict(nms_pre=1000, max_per_img=100),
        rcnn=dict(score_thr=0.05, max_per_img=50)))

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
