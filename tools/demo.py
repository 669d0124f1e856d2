"""A short, real usage example of mmloss_ext (what `make demo` runs).

1. Builds losses from mmdet-style config dicts through mmdet's registry (the way a config uses them)
   and prints their values on a small batch.
2. Uses them as plain torch modules in a hand-written training loop: a line is fitted to data with
   10% gross outliers under MSE and under robust losses; the robust ones recover the true slope.
"""
import torch

import mmloss_ext
from mmdet.registry import MODELS
from mmloss_ext.registry import MODELS as SCOPED


def show_config_built_losses() -> None:
    print(f'mmloss_ext {mmloss_ext.__version__}: {len(SCOPED.module_dict)} losses registered in scope "mmloss_ext"\n')
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(8, 4, generator=gen), torch.randn(8, 4, generator=gen)
    configs = [
        dict(type='mmloss_ext.L1Loss', loss_weight=1.0),
        dict(type='mmloss_ext.SmoothL1Loss', beta=1.0 / 9.0),
        dict(type='mmloss_ext.BalancedL1Loss', alpha=0.5, gamma=1.5, beta=1.0),
        dict(type='mmloss_ext.HuberLoss', delta=0.5, loss_weight=2.0),
        dict(type='CharbonnierLoss', eps=1e-6),  # plain name: mmdet has no such loss
        dict(type='mmloss_ext.LogCoshLoss', reduction='sum'),
    ]
    print(f'{"config":70s} value')
    for cfg in configs:
        loss = MODELS.build(cfg)
        print(f'{str(cfg):70s} {float(loss(pred, target)):.4f}')


def fit_line_with_outliers() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.linspace(-1, 1, 200)
    y = 3.0 * x + 0.5 + 0.05 * torch.randn(200, generator=gen)
    outliers = torch.randperm(200, generator=gen)[:20]
    y[outliers] += 8.0 + 4 * torch.rand(20, generator=gen)  # 10% gross outliers, all upwards
    print('\nfitting y = 3x + 0.5 with 10% outliers (a hand-written loop, losses as nn.Modules):')
    for cfg in (dict(type='mmloss_ext.MSELoss'), dict(type='mmloss_ext.HuberLoss', delta=0.2),
                dict(type='mmloss_ext.CharbonnierLoss', eps=1e-4), dict(type='mmloss_ext.QuantileLoss', quantile=0.5)):
        loss_fn = MODELS.build(cfg)
        w = torch.zeros(2, requires_grad=True)
        opt = torch.optim.Adam([w], lr=0.05)
        for _ in range(600):
            opt.zero_grad()
            loss = loss_fn(w[0] * x + w[1], y)
            loss.backward()
            opt.step()
        print(f'  {cfg["type"]:28s} slope {w[0].item():6.3f}  intercept {w[1].item():6.3f}  final loss {loss.item():.4f}')


if __name__ == '__main__':
    show_config_built_losses()
    fit_line_with_outliers()
