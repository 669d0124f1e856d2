# The shapes SOLOv2 of ./solov2_r18s_fpn_shapes_dice.py (same data, model and schedule) with
# mmloss_ext TverskyLoss as the mask loss, at Dice's weight: false negatives weighted 0.7 and false
# positives 0.3 (Salehi et al. 2017; alpha = beta = 0.5 would be the Dice loss).
_base_ = './solov2_r18s_fpn_shapes_dice.py'

model = dict(mask_head=dict(
    loss_mask=dict(_delete_=True, type='mmloss_ext.TverskyLoss', alpha=0.3, beta=0.7, loss_weight=3.0)))
