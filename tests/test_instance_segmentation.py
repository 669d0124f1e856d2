"""Instance segmentation on the bundled shapes data: the masks of the dataset (the visible part of each
drawn shape), loaded and evaluated by mmdet; the overlap losses as the mask loss of mmdet's SOLOv2
head (the calls the head makes, a training step of the shapes SOLOv2 with each loss, batches without
objects). The configs' check and their mmdet arm: tests/test_check.py, tests/test_experiment.py."""
import json
import math
import os.path as osp

import numpy as np
import pytest
import torch

from mmloss_ext.datasets.shapes import generate_shapes, make_image, mask_to_rle

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def box_of(mask):
    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


# --- the masks --------------------------------------------------------------------------------------

def test_masks_are_the_visible_part_of_each_drawn_shape():
    """On noise-free images each mask is exactly the region painted in its shape's colour and seen in
    the image: one colour inside, no pixel of that colour left out in the box; masks never overlap."""
    occluded = 0
    for i in range(60):
        img, objects, masks = make_image(0, 'train', i, noise_std=0.0, return_masks=True)
        assert masks.shape == (len(objects), 128, 128) and masks.dtype == bool
        assert masks.sum(0).max() <= 1  # a pixel shows one object at most
        colours = []
        for k, ((label, box), mask) in enumerate(zip(objects, masks)):
            x, y, w, h = map(int, box)
            inside = np.zeros((128, 128), bool)
            inside[y:y + h, x:x + w] = True
            assert mask.any() and not (mask & ~inside).any()  # in the object's box
            seen = np.unique(img[mask], axis=0)
            assert len(seen) == 1, (i, label)  # one fill colour: no background, no other shape
            colours.append(tuple(seen[0]))
            occluded += bool((masks[k + 1:].any(0) & inside).any())
        for k, ((label, box), mask) in enumerate(zip(objects, masks)):
            if colours.count(colours[k]) > 1:
                continue  # two shapes of one colour: the colour does not tell them apart
            x, y, w, h = map(int, box)
            same = (img[y:y + h, x:x + w] == colours[k]).all(-1)
            assert (same == mask[y:y + h, x:x + w]).all(), (i, k)  # every visible pixel of the shape
    assert occluded > 0  # later shapes do cover parts of earlier ones in these images


def test_boxes_from_masks_equal_the_annotated_boxes_once_hidden_parts_count():
    """The annotated box is the whole shape's (detection unchanged); the mask is its visible part.
    A shape's pixels are its mask plus the pixels later shapes drew over it, so the box of the mask
    together with the later masks inside the annotated box is that box; and an object that no later
    shape overlaps has a mask whose box is the annotated box itself. Areas: a rectangle's mask fills
    its box; an ellipse's covers about pi/4 of it and a triangle's about 1/2."""
    seen = dict(unoccluded=0, occluded=0, rectangle=0, ellipse=0, triangle=0)
    for i in range(150):
        _, objects, masks = make_image(0, 'val', i, return_masks=True)
        for k, ((label, box), mask) in enumerate(zip(objects, masks)):
            x, y, w, h = map(int, box)
            later = masks[k + 1:].any(0) if k + 1 < len(masks) else np.zeros_like(mask)
            inside = np.zeros_like(mask)
            inside[y:y + h, x:x + w] = True
            assert box_of(mask | (later & inside)) == (x, y, x + w, y + h)
            if (later & inside).any():
                seen['occluded'] += 1
                mx1, my1, mx2, my2 = box_of(mask)
                assert x <= mx1 and y <= my1 and mx2 <= x + w and my2 <= y + h
                continue
            seen['unoccluded'] += 1
            assert box_of(mask) == (x, y, x + w, y + h)
            area = int(mask.sum())
            name = ('rectangle', 'ellipse', 'triangle')[label]
            seen[name] += 1
            if name == 'rectangle':
                assert area == w * h
            elif name == 'ellipse':
                # a filled ellipse with semi-axes a = (w-1)/2, b = (h-1)/2 drawn on whole pixels covers
                # pi (a + 1/2)(b + 1/2) = pi w h / 4, give or take part of its boundary pixels (about
                # its perimeter, < w + h, of which up to half)
                assert abs(area - math.pi * w * h / 4) <= (w + h) / 2, (i, k, area, w, h)
            else:
                # half the box, plus part of the pixels along its sides, drawn inclusive (up to half of
                # the half-perimeter w + h)
                assert 0 <= area - w * h / 2 <= (w + h) / 2, (i, k, area, w, h)
    assert min(seen.values()) > 0, seen


def test_masks_leave_the_images_and_boxes_unchanged():
    """Asking for masks draws nothing else: the same image and objects, byte for byte."""
    for i in range(20):
        img, objects = make_image(1, 'train', i)
        img_m, objects_m, _ = make_image(1, 'train', i, return_masks=True)
        assert np.array_equal(img, img_m) and objects == objects_m


def test_rle_is_what_pycocotools_decodes():
    from pycocotools import mask as mask_utils
    rng = np.random.default_rng(0)
    cases = [np.zeros((5, 7), bool), np.ones((5, 7), bool), rng.random((6, 9)) > 0.5, rng.random((4, 3)) > 0.8]
    cases[3][0, 0] = True  # the first pixel set: a leading run of zero 0s
    for mask in cases:
        rle = mask_to_rle(mask)
        assert sum(rle['counts']) == mask.size and rle['size'] == list(mask.shape)
        decoded = mask_utils.decode(mask_utils.frPyObjects(rle, *mask.shape))
        assert np.array_equal(decoded.astype(bool), mask)


@pytest.fixture(scope='module')
def tiny_shapes(tmp_path_factory):
    return generate_shapes(str(tmp_path_factory.mktemp('shapes')), num_train=8, num_val=6, verbose=False)


def test_mmdet_loads_the_masks_and_scores_them_perfect(tiny_shapes):
    """The shapes SOLOv2 config's validation data and metric, built as tools/train.py builds them:
    mmdet's CocoDataset with LoadAnnotations(with_mask=True) reads back the masks make_image drew, and
    the ground truth given as the prediction scores segm mAP 1, with its boxes (mmdet's CocoMetric)
    and with zero boxes as SOLOv2 predicts them (the config's metric boxes the masks)."""
    from mmdet.evaluation import CocoMetric
    from mmdet.registry import DATASETS, METRICS
    from mmengine.registry import init_default_scope
    from mmloss_ext.runner import build_config
    cfg = build_config(config_of('dice'), data_root=tiny_shapes,
                       cfg_options={'shapes_data.num_train': 8, 'shapes_data.num_val': 6})
    init_default_scope('mmdet')
    dataset = DATASETS.build(cfg.val_dataloader.dataset)
    assert type(dataset).__name__ == 'CocoDataset' and len(dataset) == 6
    assert dict(type='LoadAnnotations', with_bbox=True, with_mask=True) in cfg.val_dataloader.dataset.pipeline
    with open(osp.join(tiny_shapes, 'annotations', 'val.json')) as f:
        assert json.load(f)['info']['version'] == '2'
    metrics = [CocoMetric(ann_file=cfg.val_evaluator.ann_file, metric=['bbox', 'segm']), METRICS.build(cfg.val_evaluator)]
    assert type(metrics[1]).__name__ == 'MaskBoxCocoMetric'
    for metric in metrics:
        metric.dataset_meta = dataset.metainfo
    for index in range(len(dataset)):
        sample = dataset[index]['data_samples']
        gt = sample.gt_instances
        _, objects, masks = make_image(0, 'val', index, return_masks=True)
        assert np.array_equal(gt.masks.masks.astype(bool), masks)
        assert np.allclose(gt.bboxes.tensor.numpy(), [[x, y, x + w, y + h] for _, (x, y, w, h) in objects])
        n = len(objects)
        for metric, boxes in zip(metrics, (gt.bboxes.tensor, torch.zeros(n, 4))):
            metric.process({}, [dict(img_id=sample.img_id, ori_shape=(128, 128), pred_instances=dict(
                bboxes=boxes, scores=torch.ones(n), labels=gt.labels, masks=torch.as_tensor(masks)))])
    exact, of_masks = (metric.evaluate(len(dataset)) for metric in metrics)
    assert exact['coco/segm_mAP'] == pytest.approx(1.0) and exact['coco/bbox_mAP'] == pytest.approx(1.0)
    assert of_masks['coco/segm_mAP'] == pytest.approx(1.0)
    # the box of a partly hidden object's mask is smaller than its annotated box (the whole shape's),
    # so even perfect masks do not make every box of the masks match at IoU 0.95
    assert 0.9 < of_masks['coco/bbox_mAP'] < 1.0


def test_mask_box_metric_evaluates_the_boxes_of_the_masks(tiny_shapes):
    """SOLOv2 predicts masks and zero boxes: the metric of the shapes SOLOv2 configs scores the tight
    box of each predicted mask instead (x2, y2 one past the last pixel, as the annotations)."""
    from mmloss_ext.registry import METRICS
    from mmdet.registry import METRICS as MMDET_METRICS
    from mmdet.utils import register_all_modules
    register_all_modules()
    metric = MMDET_METRICS.build(dict(type='mmloss_ext.MaskBoxCocoMetric', metric=['bbox', 'segm'],
                                      ann_file=osp.join(tiny_shapes, 'annotations', 'val.json')))
    assert type(metric) is METRICS.get('MaskBoxCocoMetric')
    _, objects, masks = make_image(0, 'val', 0, return_masks=True)
    n = len(objects)
    metric.process({}, [dict(img_id=1, ori_shape=(128, 128), pred_instances=dict(
        bboxes=torch.zeros(n, 4), scores=torch.ones(n), labels=torch.tensor([label for label, _ in objects]),
        masks=torch.as_tensor(masks)))])
    boxes = metric.results[0][1]['bboxes']
    assert boxes.tolist() == [list(box_of(mask)) for mask in masks]


# --- the overlap losses as SOLOv2's mask loss -------------------------------------------------------

VARIANTS = {'dice': 'DiceLoss', 'jaccard': 'JaccardLoss', 'tversky': 'TverskyLoss',
            'focal-tversky': 'FocalTverskyLoss', 'lovasz': 'LovaszLoss'}


def config_of(variant):
    return osp.join(ROOT, 'configs', 'shapes', f'solov2_r18s_fpn_shapes_{variant}.py')


def build_solov2(variant, seed=0):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    cfg = Config.fromfile(config_of(variant))
    init_default_scope('mmdet')
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.train()


def shapes_batch(model, indices, empty=()):
    """Images ``indices`` of the shapes train split with their boxes and instance masks, through the
    model's data preprocessor; the images in ``empty`` are given no objects."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    inputs, samples = [], []
    for i in indices:
        img, objects, masks = make_image(0, 'train', i, return_masks=True)
        if i in empty:
            objects, masks = [], masks[:0]
        gt = InstanceData()
        gt.bboxes = torch.tensor([[x, y, x + w, y + h] for _, (x, y, w, h) in objects], dtype=torch.float32).view(-1, 4)
        gt.labels = torch.tensor([label for label, _ in objects], dtype=torch.long)
        gt.masks = BitmapMasks(masks.astype(np.uint8), 128, 128)
        sample = DetDataSample(metainfo=dict(img_shape=(128, 128), ori_shape=(128, 128), scale_factor=(1.0, 1.0)))
        sample.gt_instances = gt
        inputs.append(torch.from_numpy(img).permute(2, 0, 1).contiguous())
        samples.append(sample)
    return model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)


def record_calls(module):
    """The (args, kwargs, output) of every call of ``module``."""
    calls = []
    module.register_forward_hook(lambda m, args, kwargs, out: calls.append((args, kwargs, out)), with_kwargs=True)
    return calls


@pytest.mark.parametrize('variant', VARIANTS)
def test_the_head_calls_the_mask_loss_with_instance_masks_and_reduction_none(variant):
    """What SOLOv2's head passes its loss_mask, per FPN level with positives: float logits (P, h, w)
    of the mask features' size, uint8 0/1 targets of the same shape, ``reduction_override='none'``
    and nothing else; it concatenates the (P,) results and divides their sum by the positives."""
    model = build_solov2(variant)
    loss = model.mask_head.loss_mask
    assert type(loss).__name__ == VARIANTS[variant] and type(loss).__module__.startswith('mmloss_ext.')
    calls = record_calls(loss)
    data = shapes_batch(model, range(4))
    losses = model(**data, mode='loss')
    assert calls
    total, count = 0.0, 0
    for args, kwargs, out in calls:
        pred, target = args
        assert kwargs == {'reduction_override': 'none'}
        assert pred.dtype == torch.float32 and pred.dim() == 3 and pred.shape[1:] == (32, 32)  # 128 px / 4
        assert target.dtype == torch.uint8 and target.shape == pred.shape and set(target.unique().tolist()) <= {0, 1}
        assert out.shape == pred.shape[:1] and torch.isfinite(out).all() and (out >= 0).all()
        total, count = total + float(out.sum()), count + len(out)
    assert float(losses['loss_mask']) == pytest.approx(total / count, rel=1e-5)


@pytest.mark.parametrize('variant', VARIANTS)
def test_the_mask_loss_gives_each_instance_its_own_loss(variant):
    """reduction 'none' in the head is one loss per instance, that of the instance alone: on the masks
    the head really passes, each entry equals the loss of its instance called by itself, and changing
    one instance's logits changes its entry and no other (a loss over the whole call, such as a
    Lovasz hinge sorting the errors of all the masks together, would fail both)."""
    model = build_solov2(variant)
    loss = model.mask_head.loss_mask
    calls = record_calls(loss)
    with torch.no_grad():
        model(**shapes_batch(model, range(4)), mode='loss')
    pred, target = max((args for args, _, _ in calls), key=lambda args: len(args[0]))
    assert len(pred) >= 3
    with torch.no_grad():
        out = loss(pred, target, reduction_override='none')
        alone = torch.cat([loss(pred[i:i + 1], target[i:i + 1], reduction_override='none') for i in range(len(pred))])
        torch.testing.assert_close(out, alone)
        changed = pred.clone()
        changed[1] = -changed[1]
        moved = loss(changed, target, reduction_override='none')
    assert moved[1] != out[1]
    torch.testing.assert_close(moved[[0, *range(2, len(pred))]], out[[0, *range(2, len(pred))]])


def test_dice_in_the_head_equals_mmdet_dice():
    """The same SOLOv2 step with mmdet's DiceLoss as loss_mask gives the same mask loss and gradients."""
    from mmdet.models.losses import DiceLoss as MmdetDice
    model = build_solov2('dice')
    data = shapes_batch(model, range(4))
    ours = model(**data, mode='loss')['loss_mask']
    grads = torch.autograd.grad(ours, model.mask_head.conv_kernel.weight)
    model.mask_head.loss_mask = MmdetDice(use_sigmoid=True, loss_weight=3.0)
    theirs = model(**data, mode='loss')['loss_mask']
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(grads, torch.autograd.grad(theirs, model.mask_head.conv_kernel.weight))


@pytest.mark.parametrize('variant', VARIANTS)
def test_each_overlap_loss_takes_a_training_step_in_the_shapes_solov2(variant):
    """One AdamW step of the shapes SOLOv2 with each mask loss: finite losses, finite gradients, the
    mask branch (kernel predictor and mask features) reached by the mask loss, the parameters moved."""
    model = build_solov2(variant)
    data = shapes_batch(model, range(4))
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss_mask', 'loss_cls'} and all(torch.isfinite(v) for v in losses.values())
    assert float(losses['loss_mask']) > 0
    head = model.mask_head
    mask_params = [head.conv_kernel.weight, head.mask_feature_head.conv_pred.conv.weight]
    for param, grad in zip(mask_params, torch.autograd.grad(losses['loss_mask'], mask_params, retain_graph=True)):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = head.conv_kernel.weight.detach().clone()
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    optimizer.step()
    assert not torch.equal(before, head.conv_kernel.weight)
    after = model(**data, mode='loss')
    assert all(torch.isfinite(v) for v in after.values())


@pytest.mark.parametrize('variant', VARIANTS)
def test_images_without_objects_and_empty_batches(variant):
    """An image without objects among others, and a batch without any: finite losses that backpropagate
    (with no positive the head makes its mask loss a zero of the mask features); the loss itself
    called as the head calls it on no instance gives an empty (0,) result that sums to a zero with a
    gradient."""
    model = build_solov2(variant)
    some = model(**shapes_batch(model, range(3), empty=(1,)), mode='loss')
    assert all(torch.isfinite(v) for v in some.values()) and float(some['loss_mask']) > 0
    sum(some.values()).backward()
    model.zero_grad()
    none = model(**shapes_batch(model, range(2), empty=(0, 1)), mode='loss')
    assert float(none['loss_mask']) == 0 and torch.isfinite(none['loss_cls'])
    sum(none.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    pred = torch.zeros(0, 32, 32, requires_grad=True)
    out = model.mask_head.loss_mask(pred, torch.zeros(0, 32, 32, dtype=torch.uint8), reduction_override='none')
    assert out.shape == (0,)
    torch.cat([out]).sum().backward()
    assert pred.grad is not None and pred.grad.shape == pred.shape
