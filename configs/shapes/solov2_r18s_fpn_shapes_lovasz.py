# The shapes SOLOv2 of ./solov2_r18s_fpn_shapes_dice.py (same data, model and schedule) with
# mmloss_ext LovaszLoss, the binary Lovasz hinge on the mask logits, as the mask loss, at Dice's
# weight. per_image=True: one loss per instance mask, which the head sums and divides by the number
# of positives (per_image=False would give one loss for all the masks of a call).
_base_ = './solov2_r18s_fpn_shapes_dice.py'

model = dict(mask_head=dict(
    loss_mask=dict(_delete_=True, type='mmloss_ext.LovaszLoss', mode='binary', per_image=True, loss_weight=3.0)))
