# The shapes SOLOv2 of ./solov2_r18s_fpn_shapes_dice.py (same data, model and schedule) with
# mmloss_ext JaccardLoss (soft IoU, 1 - I/U per instance mask) as the mask loss, at Dice's weight.
_base_ = './solov2_r18s_fpn_shapes_dice.py'

model = dict(mask_head=dict(loss_mask=dict(_delete_=True, type='mmloss_ext.JaccardLoss', loss_weight=3.0)))
