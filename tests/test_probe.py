"""The probe of what a head's loss_bbox receives (mmloss_ext.probe), and the committed table
(mmloss_ext.head_inputs) it wrote: probing mmdet's heads again gives the same table.

The last test builds some 150 detectors from mmdet's configs and runs their loss once each: a few
minutes on 2 CPU cores (run it under the shared lock, as the training tests)."""
import pytest
import torch
from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder

from mmloss_ext import head_inputs
from mmloss_ext.losses import GIoULoss
from mmloss_ext.probe import (BOXES, CXCYWH, ENCODED, GT_BOXES, IMAGE_SIZE, UNUSED, RecordingLoss, classify_targets,
                              probe_heads, registered_box_heads)

GT = torch.tensor(GT_BOXES)


def cxcywh(boxes):
    return torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], -1)


def test_decoded_boxes_at_any_scale_and_place_are_boxes():
    assert classify_targets(GT[[3, 0, 0, 2]], None, GT) == BOXES
    assert classify_targets(GT / 8, torch.ones(5), GT) == BOXES  # GFL: in units of the stride
    assert classify_targets(GT / IMAGE_SIZE, None, GT) == BOXES  # DII: of the (square) image
    # FCOS with norm_on_bbox, CenterNet: the distances to a point in units of the stride, decoded at the point
    point = torch.tensor([100., 150., 100., 150.])
    assert classify_targets(point + (GT - point) / 16, None, GT) == BOXES


def test_deltas_and_normalised_centre_forms_are_told_apart():
    anchors = GT + torch.tensor([[-6., 4., 5., -3.]])
    deltas = DeltaXYWHBBoxCoder(target_stds=(0.1, 0.1, 0.2, 0.2)).encode(anchors, GT)
    assert classify_targets(deltas, None, GT) == ENCODED
    centres = cxcywh(GT)[:, :2].repeat(1, 2)
    ltrb = (GT - centres).abs() / 8  # distances to the box's sides (FCOS, FSAF before decoding)
    assert classify_targets(ltrb, None, GT) == ENCODED
    # the proposal that is the box itself regresses to zero deltas: a zero row of positive weight is encoded
    assert classify_targets(torch.zeros(3, 4), torch.ones(3, 4), GT) == ENCODED
    assert classify_targets(cxcywh(GT) / 320, None, GT) == CXCYWH  # DETR's L1 target
    assert classify_targets(torch.cat([GT[:2], deltas[:2]]), None, GT) == 'mixed'


def test_only_rows_of_positive_weight_count():
    target = torch.cat([GT, torch.zeros(4, 4)])  # decoded targets, zeros at the negatives
    weight = torch.cat([torch.ones(5, 4), torch.zeros(4, 4)])
    assert classify_targets(target, weight, GT) == BOXES
    assert classify_targets(target, None, GT) == 'mixed'
    assert classify_targets(target, torch.zeros(9), GT) is None


def test_the_synthetic_boxes_are_unambiguous():
    """No box has another's shape, nor is it a multiple of another's (cx, cy, w, h) (and the other way
    round): a target row names one box in one form."""
    from mmloss_ext.probe import _proportional, _same_shape
    for i in range(len(GT)):
        others = torch.cat([GT[:i], GT[i + 1:]])
        assert not _same_shape(GT[i:i + 1], others, 1e-3).any()
        assert not _proportional(GT[i:i + 1], cxcywh(GT), 1e-3).any()
        assert not _same_shape(cxcywh(GT)[i:i + 1], GT, 1e-3).any()


def test_recording_loss_records_and_returns_the_wrapped_loss():
    inner = GIoULoss(loss_weight=2.0)
    rec = RecordingLoss(inner)
    pred, target = GT + 3, GT.clone()
    out = rec(pred, target, torch.ones(5), avg_factor=5.0)
    assert torch.equal(out, inner(pred, target, torch.ones(5), avg_factor=5.0))
    assert rec.loss_weight == 2.0  # heads read the wrapped loss's attributes
    ((t, w),) = rec.calls
    assert torch.equal(t, target) and torch.equal(w, torch.ones(5))


def test_the_table_covers_every_registered_head_with_a_loss_bbox():
    heads = registered_box_heads()
    assert {'RetinaHead', 'RPNHead', 'Shared2FCBBoxHead', 'DETRHead', 'StageCascadeRPNHead'} <= set(heads)
    assert set(head_inputs.HEAD_INPUTS) | set(head_inputs.NOT_PROBED) == set(heads)
    assert not set(head_inputs.HEAD_INPUTS) & set(head_inputs.NOT_PROBED)
    kinds = {k for row in head_inputs.HEAD_INPUTS.values() for k in row}
    assert kinds <= {BOXES, ENCODED, CXCYWH, UNUSED, None}
    assert set(head_inputs.PROBED_IN) == set(head_inputs.HEAD_INPUTS)


@pytest.mark.needs_mmcv_ops  # runs every head, RoI heads (RoIAlign) among them
def test_probing_again_gives_the_committed_table():
    found = probe_heads()
    assert found.inputs == head_inputs.HEAD_INPUTS
    assert found.hosts == head_inputs.PROBED_IN
    assert set(found.not_probed) == set(head_inputs.NOT_PROBED)
