"""mmdet 3.3's loss registry next to ours: the loss types mmdet registers, its class for each, ours.

Shared by the drop-in tests (signatures, mmdet's own loss behaviours, the model-zoo walk).
"""
import mmdet.models.losses as mmdet_losses
from mmdet.registry import MODELS as MMDET_MODELS

import mmloss_ext  # noqa: F401  (registers our losses)
from mmloss_ext.registry import MODELS

MMDET_MODELS.import_from_location()

#: every loss type mmdet registers: the classes of ``mmdet.models.losses`` in its ``MODELS``
MMDET_LOSS_TYPES = tuple(n for n in mmdet_losses.__all__
                         if MMDET_MODELS.module_dict.get(n) is getattr(mmdet_losses, n))

#: the same list written out for mmdet 3.3 (a test holds the two equal)
MMDET_33_LOSS_TYPES = (
    'CrossEntropyLoss', 'FocalLoss', 'SmoothL1Loss', 'BalancedL1Loss', 'MSELoss', 'IoULoss', 'BoundedIoULoss',
    'GIoULoss', 'DIoULoss', 'CIoULoss', 'EIoULoss', 'SIoULoss', 'GHMC', 'GHMR', 'L1Loss',
    'AssociativeEmbeddingLoss', 'GaussianFocalLoss', 'QualityFocalLoss', 'DistributionFocalLoss',
    'VarifocalLoss', 'KnowledgeDistillationKLDivLoss', 'SeesawLoss', 'DiceLoss', 'EQLV2Loss', 'MarginL2Loss',
    'MultiPosCrossEntropyLoss', 'L2Loss', 'TripletLoss', 'CrossEntropyCustomLoss', 'FocalCustomLoss')

#: mmdet's loss types that mmloss_ext registers too (all of them once every drop-in is in)
SHARED = tuple(n for n in MMDET_LOSS_TYPES if n in MODELS.module_dict)


def mmdet_class(name):
    """mmdet's own class for the loss type ``name``."""
    return getattr(mmdet_losses, name)


def our_class(name):
    """mmloss_ext's class registered as ``name`` (a ``KeyError`` naming the closest ones if none)."""
    return MODELS.get_own(name)


def build_mmdet(name, **cfg):
    """mmdet's ``name`` built from a config dict through mmdet's registry (``type='name'``)."""
    return MMDET_MODELS.build(dict(type=name, **cfg))


def build_ours(name, **cfg):
    """Ours built through mmdet's registry as ``type='mmloss_ext.name'``."""
    return MMDET_MODELS.build(dict(type=f'mmloss_ext.{name}', **cfg))


#: how each implementation builds a loss type from a config; tests parametrize over these
BUILDERS = {'mmdet': build_mmdet, 'mmloss_ext': build_ours}
