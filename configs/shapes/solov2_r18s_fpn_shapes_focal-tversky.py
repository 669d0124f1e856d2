# The shapes SOLOv2 of ./solov2_r18s_fpn_shapes_dice.py (same data, model and schedule) with
# mmloss_ext FocalTverskyLoss as the mask loss, at Dice's weight: the Tversky index of
# ./solov2_r18s_fpn_shapes_tversky.py raised as (1 - TI)^0.75 (Abraham & Khan 2019).
_base_ = './solov2_r18s_fpn_shapes_dice.py'

model = dict(mask_head=dict(
    loss_mask=dict(_delete_=True, type='mmloss_ext.FocalTverskyLoss', alpha=0.3, beta=0.7, gamma=0.75,
                   loss_weight=3.0)))
