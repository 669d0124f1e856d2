"""Plot the catalogue: loss curves and their gradients, headless (matplotlib Agg).

    python tools/plot_losses.py --out docs/img

Writes regression.png, focal.png, iou_family.png and segmentation.png. Every curve is computed by
the package's own functionals (gradients by autograd), so the figures cannot drift from the code.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from mmloss_ext import losses as L  # noqa: E402


def curve_and_grad(fn, x: torch.Tensor):
    x = x.detach().clone().requires_grad_()
    y = fn(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    return y.detach().numpy(), g.numpy()


def plot_regression(out: Path) -> Path:
    d = torch.linspace(-3, 3, 601, dtype=torch.float64)
    zero = torch.zeros_like(d)
    curves = {
        'L1': lambda p: L.l1_loss(p, zero, reduction='none'),
        'MSE': lambda p: L.mse_loss(p, zero, reduction='none'),
        'SmoothL1 (β=1)': lambda p: L.smooth_l1_loss(p, zero, beta=1.0, reduction='none'),
        'Huber (δ=0.5)': lambda p: L.huber_loss(p, zero, delta=0.5, reduction='none'),
        'LogCosh': lambda p: L.log_cosh_loss(p, zero, reduction='none'),
        'Quantile (q=0.25)': lambda p: L.quantile_loss(p, zero, quantile=0.25, reduction='none'),
        'Quantile (q=0.75)': lambda p: L.quantile_loss(p, zero, quantile=0.75, reduction='none'),
        'Charbonnier (ε=0.1)': lambda p: L.charbonnier_loss(p, zero, eps=0.1, reduction='none'),
    }
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    for label, fn in curves.items():
        y, g = curve_and_grad(fn, d)
        ax1.plot(d, y, label=label)
        ax2.plot(d, g, label=label)
    ax1.set(title='Regression losses', xlabel='residual d = pred − target', ylabel='loss', ylim=(-0.1, 3.5))
    ax2.set(title='Their gradients: how hard each pulls', xlabel='residual d = pred − target', ylabel='∂loss/∂pred',
            ylim=(-3.2, 3.2))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.axvline(0, color='k', lw=0.5)
    ax1.legend(fontsize=8)
    return _save(fig, out / 'regression.png')


def plot_focal(out: Path) -> Path:
    # one positive sample, one class: p_t = sigmoid(logit); alpha=0.5 weighs both terms equally, so
    # 2 * FL is the unweighted focal loss and gamma=0 is plain binary cross-entropy
    logit = torch.linspace(-6, 6, 601, dtype=torch.float64)
    p_t = torch.sigmoid(logit).numpy()
    target = torch.ones(601, 1, dtype=torch.float64)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    for gamma in (0.0, 0.5, 1.0, 2.0, 5.0):
        fn = lambda x, g=gamma: 2 * L.focal_loss(x[:, None], target, gamma=g, alpha=0.5, reduction='none')[:, 0]
        y, grad = curve_and_grad(fn, logit)
        label = 'cross-entropy (γ=0)' if gamma == 0 else f'focal γ={gamma:g}'
        ax1.plot(p_t, y, label=label, lw=2.2 if gamma == 0 else 1.5)
        ax2.plot(p_t, -grad, label=label, lw=2.2 if gamma == 0 else 1.5)
    ax1.set(title='Focal loss vs cross-entropy: well-classified examples are down-weighted',
            xlabel='probability of the true class p_t', ylabel='loss', ylim=(0, 5))
    ax2.set(title='Gradient magnitude w.r.t. the logit', xlabel='probability of the true class p_t',
            ylabel='−∂loss/∂logit')
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out / 'focal.png')


def _iou_losses():
    return {
        'IoU (linear)': lambda p, t: L.iou_loss(p, t, mode='linear', reduction='none'),
        'GIoU': lambda p, t: L.giou_loss(p, t, reduction='none'),
        'DIoU': lambda p, t: L.diou_loss(p, t, reduction='none'),
        'CIoU': lambda p, t: L.ciou_loss(p, t, reduction='none'),
        'SIoU (neg_gamma=True, the paper form)': lambda p, t: L.siou_loss(p, t, neg_gamma=True, reduction='none'),
        'Efficient-IoU': lambda p, t: L.efficient_iou_loss(p, t, reduction='none'),
        'Wise-IoU v1': lambda p, t: L.wiou_loss(p, t, version='v1', reduction='none'),
        'NWD (C=12.8)': lambda p, t: L.nwd_loss(p, t, reduction='none'),
    }


def plot_iou_family(out: Path) -> Path:
    target = torch.tensor([40.0, 40.0, 60.0, 60.0], dtype=torch.float64)  # a 20x20 box centred at (50, 50)
    cx, cy, w, h = 50.0, 50.0, 20.0, 20.0

    def boxes(cxs, cys, ws, hs):
        return torch.stack([cxs - ws / 2, cys - hs / 2, cxs + ws / 2, cys + hs / 2], dim=-1)

    n = 301
    offset = torch.linspace(0, 40, n, dtype=torch.float64)
    scale = torch.logspace(-1.0, 1.0, n, base=3.0, dtype=torch.float64)
    aspect = torch.logspace(-1.0, 1.0, n, base=4.0, dtype=torch.float64)
    one = torch.ones(n, dtype=torch.float64)
    sweeps = [
        ('centre offset along x (px)', offset, boxes(cx + offset, cy * one, w * one, h * one)),
        ('scale of the predicted box (same centre)', scale, boxes(cx * one, cy * one, w * scale, h * scale)),
        ('aspect ratio w/h (same area and centre)', aspect, boxes(cx * one, cy * one, w * aspect.sqrt(), h / aspect.sqrt())),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    tgt = target.expand(n, 4)
    styles = ['-', '--', '-.', ':']
    for ax, (xlabel, xs, pred) in zip(axes, sweeps):
        for i, (label, fn) in enumerate(_iou_losses().items()):
            ax.plot(xs, fn(pred, tgt).numpy(), label=label, ls=styles[i % 4], lw=1.8)
        ax.set(xlabel=xlabel, ylabel='loss')
        ax.grid(alpha=0.3)
    for ax, ticks in ((axes[1], [1 / 3, 1 / 2, 1, 2, 3]), (axes[2], [1 / 4, 1 / 2, 1, 2, 4])):
        ax.set_xscale('log')
        ax.set_xticks(ticks, [f'{t:.2g}' for t in ticks])
        ax.minorticks_off()
    axes[0].set_title('Shifted box: past x=20 (disjoint) IoU is flat at 1;\nthe distance terms keep a gradient')
    axes[1].set_title('Scaled box (same centre)')
    axes[2].set_title('Reshaped box (same area and centre)')
    axes[0].legend(fontsize=8)
    fig.suptitle('The IoU family around a fixed 20×20 target box')
    return _save(fig, out / 'iou_family.png')


def plot_segmentation(out: Path) -> Path:
    # a 64x64 square mask and a prediction of the same square shifted right: overlap goes 1 -> 0
    size, side = 64, 32
    target = torch.zeros(1, 1, size, size, dtype=torch.float64)
    target[..., 16:48, 16:48] = 1
    shifts = list(range(0, side + 1))
    overlap, curves = [], {k: [] for k in ('Dice', 'Jaccard', 'Tversky α=0.7 β=0.3', 'Lovász hinge')}
    for s in shifts:
        mask = torch.zeros_like(target)
        mask[..., 16:48, 16 + s:min(48 + s, size)] = 1
        logits = (mask * 2 - 1) * 6.0  # confident predictions: sigmoid(±6)
        overlap.append((side - s) / side)
        curves['Dice'].append(float(L.dice_loss(logits, target)))
        curves['Jaccard'].append(float(L.jaccard_loss(logits, target)))
        curves['Tversky α=0.7 β=0.3'].append(float(L.tversky_loss(logits, target, alpha=0.7, beta=0.3)))
        curves['Lovász hinge'].append(float(L.lovasz_loss(logits, target)))
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    lovasz = curves.pop('Lovász hinge')
    for (label, ys), ls in zip(curves.items(), ('-', '--', ':')):
        ax.plot(overlap, ys, ls=ls, lw=2, label=label)
    right = ax.twinx()  # the hinge is in logit-margin units, not in [0, 1]
    right.plot(overlap, lovasz, color='tab:red', lw=1.5, label='Lovász hinge (right axis)')
    right.set_ylabel('Lovász hinge (logit margin units)')
    ax.set(title='Segmentation losses against the overlap of two equal squares\n'
                 '(confident logits ±6; Tversky with FP = FN coincides with Dice)',
           xlabel='overlap (fraction of the target covered)', ylabel='soft-overlap loss')
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc='upper left')
    return _save(fig, out / 'segmentation.png')


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='docs/img', help='output folder')
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for plot in (plot_regression, plot_focal, plot_iou_family, plot_segmentation):
        print(f'wrote {plot(out)}')


if __name__ == '__main__':
    main()
