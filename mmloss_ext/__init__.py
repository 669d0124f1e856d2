"""mmloss_ext: loss functions for the OpenMMLab detection stack.

Importing the package registers every loss in the ``mmloss_ext`` registry scope (and, for names
mmdet does not define, in mmdet's ``MODELS`` under the plain name). In an mmdet config::

    custom_imports = dict(imports=['mmloss_ext'], allow_failed_imports=False)
    loss_bbox = dict(type='mmloss_ext.CIoULoss', loss_weight=2.0)
"""
__version__ = '0.1.0'

from .registry import MODELS  # noqa: E402
from .losses import *  # noqa: E402,F401,F403
from .core.errors import LossValueError  # noqa: E402,F401
from .losses import BaseLoss, StatefulLoss, weight_reduce_loss  # noqa: E402,F401
