"""A deterministic, COCO-format toy detection and instance-segmentation dataset: coloured shapes on
noisy backgrounds.

Used by ``configs/shapes/*`` through mmdet's own ``CocoDataset`` and ``CocoMetric``; nothing here is
registered anywhere. Three classes (``rectangle``, ``ellipse``, ``triangle``), each object with a
random colour, size, aspect ratio and position, objects allowed to overlap a little (a later shape
may hide up to ``max_overlap`` of an earlier one's box), on a random dark background with a brightness gradient and
Gaussian pixel noise.

Each annotation holds two views of its object:

* ``bbox`` (and ``area``, its ``w * h``): the tight box of the whole shape as drawn, hidden parts
  included (an amodal box). The detection configs train and evaluate on these.
* ``segmentation``: the pixels of the object that are visible in the image, i.e. the shape minus
  what later shapes drew over it, as an uncompressed COCO RLE (``{'size': [h, w], 'counts': [...]}``,
  column-major runs starting with background), exact to the pixel. The instance-segmentation configs
  load it with ``LoadAnnotations(with_mask=True)``.

So the box of an object's mask equals its ``bbox`` when no later shape covers one of the shape's
outermost pixels, and lies inside it otherwise. ``area`` stays the box area so that the size ranges
of COCO's small/medium/large metrics (which read it for both ``bbox`` and ``segm``) are those of the
detection results.

Every image is drawn from its own generator seeded by ``(seed, split, index)``, so a split's images
do not depend on how many images the split has, and the same arguments always give byte-identical
files. Creating the default train/val splits (2000 + 300 images of 128x128) takes a few seconds.

Layout under ``root``::

    root/
      train/000000.png ...          val/000000.png ...
      annotations/train.json        annotations/val.json      (COCO format: xywh boxes, RLE masks)
      meta.json                     the generator's arguments; a mismatch regenerates

Command line::

    python -m mmloss_ext.datasets.shapes --root data/shapes --num-train 2000 --num-val 300
"""
from __future__ import annotations

import argparse
import json
import math
import os
import os.path as osp
import shutil
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

CLASSES: Tuple[str, ...] = ('rectangle', 'ellipse', 'triangle')
PALETTE: List[Tuple[int, int, int]] = [(220, 20, 60), (0, 160, 255), (255, 200, 0)]
METAINFO: Dict[str, Any] = dict(classes=CLASSES, palette=PALETTE)

_SPLIT_IDS = {'train': 1, 'val': 2, 'test': 3}
_FORMAT_VERSION = 2  # 2: instance masks (``segmentation``) added; images and boxes as in 1

DEFAULTS: Dict[str, Any] = dict(
    num_train=2000, num_val=300, img_size=128, min_objects=1, max_objects=4, min_size=16,
    max_size=64, max_overlap=0.2, noise_std=8.0, seed=0)


def _random_colour(rng: np.random.Generator, background: np.ndarray) -> Tuple[int, int, int]:
    """A saturated, bright colour (BGR) that stands out from the local background."""
    for _ in range(20):
        hsv = np.array([[[rng.integers(0, 180), rng.integers(120, 256), rng.integers(140, 256)]]],
                       dtype=np.uint8)
        bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.int32)
        if np.abs(bgr - background).sum() > 150:
            break
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def _covered_fraction(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """For one (4,) x1y1x2y2 box against (K, 4) boxes: intersection over the smaller of the two areas
    (how much of the smaller box the pair's overlap can hide)."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=1)
    area = (box[2:] - box[:2]).prod()
    areas = (boxes[:, 2:] - boxes[:, :2]).prod(axis=1)
    return inter / np.minimum(area, areas)


def _draw_shape(canvases: Sequence[Tuple[np.ndarray, Any]], label: int, x1: int, y1: int, w: int, h: int,
                rng: np.random.Generator) -> None:
    """Draw one filled shape whose tight box is ``[x1, y1, x1 + w, y1 + h)`` (pixel extents) into each
    ``(canvas, value)`` pair: the same pixels everywhere (the shape's random geometry is drawn once)."""
    x2, y2 = x1 + w - 1, y1 + h - 1  # last pixel covered, inclusive
    if label == 0:  # rectangle
        for canvas, value in canvases:
            cv2.rectangle(canvas, (x1, y1), (x2, y2), value, thickness=-1)
    elif label == 1:  # ellipse: integer centre and semi-axes, so odd w/h keep the box exact
        for canvas, value in canvases:
            cv2.ellipse(canvas, (x1 + (w - 1) // 2, y1 + (h - 1) // 2), ((w - 1) // 2, (h - 1) // 2), 0, 0, 360,
                        value, thickness=-1, lineType=cv2.LINE_8)
    else:  # triangle: a base along one side of the box, the apex anywhere on the opposite side
        t = rng.uniform(0.0, 1.0)
        side = int(rng.integers(0, 4))
        if side == 0:  # base at the bottom
            pts = [(x1, y2), (x2, y2), (int(round(x1 + t * (w - 1))), y1)]
        elif side == 1:  # base at the top
            pts = [(x1, y1), (x2, y1), (int(round(x1 + t * (w - 1))), y2)]
        elif side == 2:  # base at the left
            pts = [(x1, y1), (x1, y2), (x2, int(round(y1 + t * (h - 1))))]
        else:  # base at the right
            pts = [(x2, y1), (x2, y2), (x1, int(round(y1 + t * (h - 1))))]
        for canvas, value in canvases:
            cv2.fillPoly(canvas, [np.array(pts, dtype=np.int32)], value, lineType=cv2.LINE_8)


def _ellipse_dims(w: int, h: int) -> Tuple[int, int]:
    """Ellipses are drawn with integer semi-axes: their tight extent is odd."""
    return w - (1 - w % 2), h - (1 - h % 2)


def make_image(seed: int, split: str, index: int, *, img_size: int = 128, min_objects: int = 1,
               max_objects: int = 4, min_size: int = 16, max_size: int = 64, max_overlap: float = 0.2,
               noise_std: float = 8.0, return_masks: bool = False):
    """Draw one image (BGR uint8, ``img_size`` square) and its objects ``[(label, [x, y, w, h])]``.

    Deterministic in ``(seed, split, index)`` and the drawing arguments; ``return_masks`` changes
    nothing in the image or the objects.

    Returns:
        ``(img, objects)``, or ``(img, objects, masks)`` with ``return_masks``: ``masks`` a bool array
        ``(len(objects), img_size, img_size)``, each object's visible pixels (its shape minus what
        the objects drawn after it cover). The boxes are those of the whole shapes.
    """
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    s = img_size
    # background: a dark random colour, a linear brightness gradient, Gaussian noise
    base = rng.integers(0, 90, size=3)
    gx, gy = rng.uniform(-30, 30, size=2)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / max(s - 1, 1)
    bg = base[None, None, :] + (gx * xx + gy * yy)[..., None]
    img = np.clip(bg, 0, 255).astype(np.uint8)
    owner = np.zeros((s, s), dtype=np.uint16)  # 1 + the index of the object seen at each pixel, 0: background

    boxes: List[np.ndarray] = []
    objects: List[Tuple[int, List[float]]] = []
    n = int(rng.integers(min_objects, max_objects + 1))
    for _ in range(n):
        for _attempt in range(30):
            label = int(rng.integers(0, len(CLASSES)))
            size = rng.uniform(min_size, max_size)
            aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
            w = int(np.clip(round(size * math.sqrt(aspect)), min_size // 2, s - 2))
            h = int(np.clip(round(size / math.sqrt(aspect)), min_size // 2, s - 2))
            if label == 1:
                w, h = _ellipse_dims(w, h)
            x1 = int(rng.integers(0, s - w + 1))
            y1 = int(rng.integers(0, s - h + 1))
            box = np.array([x1, y1, x1 + w, y1 + h], dtype=np.float64)
            if len(boxes) and _covered_fraction(box, np.stack(boxes)).max() > max_overlap:
                continue
            local_bg = img[y1 + h // 2, x1 + w // 2].astype(np.int32)
            _draw_shape([(img, _random_colour(rng, local_bg)), (owner, len(objects) + 1)], label, x1, y1, w, h, rng)
            boxes.append(box)
            objects.append((label, [float(x1), float(y1), float(w), float(h)]))
            break
    if noise_std > 0:
        noise = rng.normal(0.0, noise_std, size=img.shape)
        img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if return_masks:
        return img, objects, owner[None] == np.arange(1, len(objects) + 1, dtype=np.uint16)[:, None, None]
    return img, objects


def mask_to_rle(mask: np.ndarray) -> Dict[str, Any]:
    """A binary mask ``(h, w)`` as an uncompressed COCO RLE: ``{'size': [h, w], 'counts': [...]}``,
    the lengths of the alternating runs of 0s and 1s in column-major order, starting with a run of 0s
    (of length 0 when the first pixel is set). ``pycocotools.mask.frPyObjects`` reads it.

    >>> mask_to_rle(np.array([[0, 1], [1, 1]], dtype=bool))  # column-major: 0, 1, 1, 1
    {'size': [2, 2], 'counts': [1, 3]}
    """
    flat = np.asarray(mask, dtype=bool).ravel(order='F')
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return dict(size=[int(mask.shape[0]), int(mask.shape[1])], counts=counts)


def _write_split(root: str, split: str, num: int, params: Dict[str, Any]) -> Dict[str, Any]:
    img_dir = osp.join(root, split)
    os.makedirs(img_dir, exist_ok=True)
    draw_args = {k: params[k] for k in ('img_size', 'min_objects', 'max_objects', 'min_size', 'max_size',
                                        'max_overlap', 'noise_std')}
    images, annotations = [], []
    for i in range(num):
        img, objects, masks = make_image(params['seed'], split, i, return_masks=True, **draw_args)
        file_name = f'{i:06d}.png'
        cv2.imwrite(osp.join(img_dir, file_name), img)
        images.append(dict(id=i + 1, file_name=file_name, width=img.shape[1], height=img.shape[0]))
        for (label, (x, y, w, h)), mask in zip(objects, masks):
            annotations.append(dict(id=len(annotations) + 1, image_id=i + 1, category_id=label + 1,
                                    bbox=[x, y, w, h], area=w * h, iscrowd=0, segmentation=mask_to_rle(mask)))
    coco = dict(info=dict(description=f'mmloss_ext shapes, {split} split', version=str(_FORMAT_VERSION)),
                images=images, annotations=annotations,
                categories=[dict(id=i + 1, name=name, supercategory='shape') for i, name in enumerate(CLASSES)])
    return coco


def generate_shapes(root: str = 'data/shapes', *, overwrite: bool = False, verbose: bool = True,
                    **kwargs: Any) -> str:
    """Create the dataset under ``root`` unless an identical one is already there; return ``root``.

    Keyword arguments override :data:`DEFAULTS` (``num_train``, ``num_val``, ``img_size``,
    ``min_objects``, ``max_objects``, ``min_size``, ``max_size``, ``max_overlap``, ``noise_std``,
    ``seed``). A dataset made with other arguments is replaced.

    >>> import tempfile, json, os
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = generate_shapes(tmp, num_train=3, num_val=2, verbose=False)
    ...     with open(os.path.join(root, 'annotations', 'val.json')) as f:
    ...         coco = json.load(f)
    >>> [c['name'] for c in coco['categories']], len(coco['images'])
    (['rectangle', 'ellipse', 'triangle'], 2)
    """
    unknown = set(kwargs) - set(DEFAULTS)
    if unknown:
        raise TypeError(f'generate_shapes: unknown arguments {sorted(unknown)}; expected some of {sorted(DEFAULTS)}')
    params = dict(DEFAULTS, **kwargs)
    if not 1 <= params['min_objects'] <= params['max_objects']:
        raise ValueError(f'generate_shapes: expected 1 <= min_objects <= max_objects, got '
                         f'{params["min_objects"]} and {params["max_objects"]}')
    if not 4 <= params['min_size'] <= params['max_size'] <= params['img_size'] - 2:
        raise ValueError(f'generate_shapes: expected 4 <= min_size <= max_size <= img_size - 2, got '
                         f'{params["min_size"]}, {params["max_size"]}, {params["img_size"]}')
    meta = dict(params, format_version=_FORMAT_VERSION)
    meta_file = osp.join(root, 'meta.json')
    if not overwrite and osp.isfile(meta_file):
        with open(meta_file) as f:
            if json.load(f) == meta:
                return root
    if osp.isdir(root):
        for sub in ('train', 'val', 'annotations', 'meta.json'):
            path = osp.join(root, sub)
            if osp.isdir(path):
                shutil.rmtree(path)
            elif osp.isfile(path):
                os.remove(path)
    t0 = time.time()
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    for split, num in (('train', params['num_train']), ('val', params['num_val'])):
        coco = _write_split(root, split, num, params)
        with open(osp.join(root, 'annotations', f'{split}.json'), 'w') as f:
            json.dump(coco, f)
    with open(meta_file, 'w') as f:  # written last: its presence means the dataset is complete
        json.dump(meta, f, indent=1)
    if verbose:
        print(f'[shapes] wrote {params["num_train"]} train + {params["num_val"]} val images '
              f'({params["img_size"]}px, seed {params["seed"]}) to {root} in {time.time() - t0:.1f}s', flush=True)
    return root


def prepare_shapes_config(cfg, root: Optional[str] = None) -> Optional[str]:
    """Generate the dataset a config asks for; optionally move it to another ``root``.

    A shapes config carries ``shapes_data = dict(root='data/shapes/', num_train=..., ...)``. This
    creates that dataset if needed and returns its root; configs without ``shapes_data`` are left alone
    (returns None). With ``root``, the config's dataloaders and evaluators are repointed at it first
    (their ``data_root`` / ``ann_file`` entries that start with the configured root).
    """
    spec = cfg.get('shapes_data', None)
    if spec is None:
        return None
    spec = dict(spec)
    old_root = spec.pop('root')
    if root is not None and osp.normpath(root) != osp.normpath(old_root):
        _repoint(cfg, osp.normpath(old_root), osp.normpath(root))
        cfg.shapes_data.root = root
    else:
        root = old_root
    generate_shapes(root, **spec)
    return root


def _repoint(cfg, old: str, new: str) -> None:
    """Replace the ``old`` root prefix with ``new`` in data_root/ann_file entries of a config."""
    def visit(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ('data_root', 'ann_file') and isinstance(value, str) and \
                        osp.normpath(value).startswith(old):
                    node[key] = new + osp.normpath(value)[len(old):] + ('/' if value.endswith('/') else '')
                else:
                    visit(value)
        elif isinstance(node, (list, tuple)):
            for item in node:
                visit(item)

    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader', 'val_evaluator', 'test_evaluator'):
        if key in cfg:
            visit(cfg[key])


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description='Create the mmloss_ext shapes dataset (boxes and instance masks).')
    parser.add_argument('--root', default='data/shapes')
    parser.add_argument('--overwrite', action='store_true')
    for key, value in DEFAULTS.items():
        parser.add_argument('--' + key.replace('_', '-'), type=type(value), default=value)
    args = vars(parser.parse_args(argv))
    root, overwrite = args.pop('root'), args.pop('overwrite')
    generate_shapes(root, overwrite=overwrite, **args)


if __name__ == '__main__':
    main()
