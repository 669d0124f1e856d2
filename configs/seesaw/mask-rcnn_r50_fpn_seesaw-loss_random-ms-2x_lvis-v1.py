# mmdet's Seesaw Mask R-CNN R50-FPN on LVIS v1 (random sampling, multi-scale, 2x) with its losses taken
# from mmloss_ext, same hyper-parameters: SeesawLoss (C + 2 classifier outputs through the head protocol)
# for the RoI classifier, CrossEntropyLoss for the RPN objectness and the masks, L1Loss for the boxes.
_base_ = 'mmdet::seesaw_loss/mask-rcnn_r50_fpn_seesaw-loss_random-ms-2x_lvis-v1.py'
custom_imports = dict(imports=['mmloss_ext'], allow_failed_imports=False)

model = dict(
    rpn_head=dict(
        loss_cls=dict(type='mmloss_ext.CrossEntropyLoss'),
        loss_bbox=dict(type='mmloss_ext.L1Loss')),
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(type='mmloss_ext.SeesawLoss'),
            loss_bbox=dict(type='mmloss_ext.L1Loss')),
        mask_head=dict(loss_mask=dict(type='mmloss_ext.CrossEntropyLoss'))))
