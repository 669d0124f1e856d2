"""Evaluation for the bundled demos: mmdet's COCO metric for models that predict masks only.

SOLO and SOLOv2 predict masks and fill their boxes with zeros, so mmdet's ``CocoMetric`` rates their
``bbox`` at 0. :class:`MaskBoxCocoMetric` evaluates the tight box of each predicted mask instead; the
``segm`` evaluation is mmdet's as it is. In a config (the class is found in the ``mmloss_ext``
scope once the package is imported)::

    val_evaluator = dict(type='mmloss_ext.MaskBoxCocoMetric', ann_file=..., metric=['segm', 'bbox'])
"""
from __future__ import annotations

from typing import Sequence

from mmdet.evaluation import CocoMetric
from mmdet.structures.mask import mask2bbox

from .registry import METRICS

__all__ = ['MaskBoxCocoMetric']


@METRICS.register_module()
class MaskBoxCocoMetric(CocoMetric):
    """mmdet's ``CocoMetric`` with every predicted box replaced by the tight box of its predicted
    mask (``x1, y1`` the first pixel set, ``x2, y2`` one past the last, as the annotations' boxes).

    Takes ``CocoMetric``'s arguments. A mask with no pixel set gets the empty box ``(0, 0, 0, 0)``.
    """

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            pred = sample['pred_instances']
            pred['bboxes'] = mask2bbox(pred['masks']).to(pred['scores'].device)
        super().process(data_batch, data_samples)
