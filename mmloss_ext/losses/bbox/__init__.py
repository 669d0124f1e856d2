"""Bounding-box regression losses (the IoU family).

Every loss takes decoded boxes ``pred``, ``target`` of shape ``(..., 4)`` as ``(x1, y1, x2, y2)``
and an optional weight of shape ``(...)`` or ``(..., 4)`` (averaged over the coordinates);
``'none'`` gives ``(...)`` (:func:`bounded_iou_loss`: ``(..., 4)``). The shared geometry lives in
:mod:`mmloss_ext.losses._boxes`; each loss here adds only its own term.

* :mod:`.classic`: the losses mmdet ships, with mmdet's parameters and values;
* :mod:`.modern`: newer IoU variants (Efficient/Alpha/Wise/MPD/Inner/Focaler/Shape-IoU, NWD).
"""
from . import classic, modern
from .classic import *  # noqa: F401,F403
from .modern import *  # noqa: F401,F403

__all__ = [*classic.__all__, *modern.__all__]
