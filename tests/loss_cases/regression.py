"""Contract cases for the regression losses: pred and target of shape (n, 3)."""
from . import case, randn


def pair(n, dtype, gen):
    return randn(gen, n, 3, dtype=dtype, scale=2.0), randn(gen, n, 3, dtype=dtype, scale=2.0)


for _name, _cfg in [('L1Loss', {}), ('MSELoss', {}), ('SSELoss', {}), ('SmoothL1Loss', {'beta': 0.5}),
                    ('HuberLoss', {'delta': 0.7}), ('LogCoshLoss', {}), ('QuantileLoss', {'quantile': 0.8}),
                    ('CharbonnierLoss', {'eps': 1e-3}),
                    ('BalancedL1Loss', {'alpha': 0.4, 'gamma': 1.2, 'beta': 0.9})]:
    case(_name, pair, cfg=_cfg)

# the root is taken after the reduction: 'sum' is not the sum of 'none'
case('RMSELoss', pair, cfg={'eps': 1e-6}, additive=False)
