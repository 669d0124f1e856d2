"""Classification losses: the cross-entropy family, the focal family
and the margin losses. Class scores are on dim 1; integer labels have ``pred``'s shape without it.
"""
from . import cross_entropy, focal, margin
from .cross_entropy import *  # noqa: F401,F403
from .focal import *  # noqa: F401,F403
from .margin import *  # noqa: F401,F403

__all__ = [*cross_entropy.__all__, *focal.__all__, *margin.__all__]
from .distill import *  # noqa: E402,F401,F403
__all__ += distill.__all__  # noqa: F405  (the import above binds the submodule)

from .heatmap import *  # noqa: E402,F401,F403  (the Gaussian focal loss of CornerNet/CenterNet heatmaps)
__all__ += heatmap.__all__  # noqa: F405,F821

from . import long_tail  # noqa: E402
from .long_tail import *  # noqa: E402,F401,F403
__all__ += long_tail.__all__
