"""Instance segmentation on the bundled shapes data: the masks of the dataset (the visible part of each
drawn shape), loaded and evaluated by mmdet, and the COCO metric that scores the boxes of the masks."""
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
    """mmdet's CocoDataset + LoadAnnotations(with_mask=True) read back the masks make_image drew, and
    CocoMetric rates the ground truth as a prediction at segm mAP 1 (bbox mAP 1 for the boxes)."""
    from mmdet.datasets import CocoDataset
    from mmdet.evaluation import CocoMetric
    from mmdet.utils import register_all_modules
    register_all_modules()
    dataset = CocoDataset(data_root=tiny_shapes, ann_file='annotations/val.json', data_prefix=dict(img='val/'),
                          metainfo=dict(classes=('rectangle', 'ellipse', 'triangle')), test_mode=True,
                          pipeline=[dict(type='LoadImageFromFile'),
                                    dict(type='LoadAnnotations', with_bbox=True, with_mask=True)])
    metric = CocoMetric(ann_file=osp.join(tiny_shapes, 'annotations', 'val.json'), metric=['bbox', 'segm'])
    metric.dataset_meta = dataset.metainfo
    with open(osp.join(tiny_shapes, 'annotations', 'val.json')) as f:
        assert json.load(f)['info']['version'] == '2'
    for index in range(len(dataset)):
        item = dataset[index]
        _, objects, masks = make_image(0, 'val', index, return_masks=True)
        assert np.array_equal(item['gt_masks'].masks.astype(bool), masks)
        assert np.allclose(item['gt_bboxes'].tensor.numpy(), [[x, y, x + w, y + h] for _, (x, y, w, h) in objects])
        n = len(objects)
        metric.process({}, [dict(img_id=item['img_id'], ori_shape=(128, 128), pred_instances=dict(
            bboxes=item['gt_bboxes'].tensor, scores=torch.ones(n), labels=torch.as_tensor(item['gt_bboxes_labels']),
            masks=torch.as_tensor(masks)))])
    results = metric.evaluate(len(dataset))
    assert results['coco/segm_mAP'] == pytest.approx(1.0) and results['coco/bbox_mAP'] == pytest.approx(1.0)


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
