"""All mmloss_ext losses; importing this module registers every one of them.

One module per family; each exports its functionals (snake case) and registered classes.
"""
from .base import BaseLoss, StatefulLoss
from ..core.reduction import REDUCTIONS, weight_reduce_loss
from .regression import *  # noqa: F401,F403
from .classification import *  # noqa: F401,F403
from .segmentation import *  # noqa: F401,F403
from .bbox import *  # noqa: F401,F403
from .image import *  # noqa: F401,F403
from .embedding import *  # noqa: F401,F403
from .ghm import *  # noqa: F401,F403
