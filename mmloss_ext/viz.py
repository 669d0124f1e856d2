"""Training curves from mmengine's scalar log (``<work_dir>/<timestamp>/vis_data/scalars.json``).

:func:`load_scalars` reads a run's log into training and validation records placed at their
training iteration; :func:`plot_run` / :func:`plot_runs` draw the loss components and the val mAP
(segm mAP for instance segmentation, else bbox mAP) against the iteration into a PNG (what
``tools/train.py`` writes as ``curves.png`` and ``tools/compare.py`` as ``compare.png``;
``tools/plot_curves.py`` is the command line).

matplotlib is imported by the plotting functions only, and they draw on their own figure (the Agg
canvas, no pyplot state): importing this module, or plotting from a session with another backend,
changes nothing else.
"""
from __future__ import annotations

import glob
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ['MAP_KEYS', 'SEGM_MAP_KEYS', 'find_scalars', 'load_scalars', 'map_keys', 'plot_arms', 'plot_run',
           'plot_runs']

#: the COCO metrics drawn in the right-hand panel (one run: all three; several runs: the first)
MAP_KEYS = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75')
#: the same for instance segmentation, drawn instead when the runs logged them
SEGM_MAP_KEYS = ('coco/segm_mAP', 'coco/segm_mAP_50', 'coco/segm_mAP_75')


def map_keys(records: Sequence[dict]) -> Tuple[str, ...]:
    """:data:`SEGM_MAP_KEYS` if any of the validation ``records`` (or summaries) has the segm mAP,
    else :data:`MAP_KEYS`."""
    return SEGM_MAP_KEYS if any(SEGM_MAP_KEYS[0] in r for r in records) else MAP_KEYS


def find_scalars(path: str) -> str:
    """``path`` itself if it is a file, else the newest ``*/vis_data/scalars.json`` below it."""
    if osp.isfile(path):
        return path
    for pattern in ('vis_data/scalars.json', '*/vis_data/scalars.json'):
        found = sorted(glob.glob(osp.join(path, pattern)), key=os.path.getmtime)
        if found:
            return found[-1]
    raise FileNotFoundError(f'no vis_data/scalars.json under {path}')


def load_scalars(path: str) -> Tuple[List[dict], List[dict]]:
    """Return (train records, val records) of a run, each record with an ``iter`` key (the training
    iteration). Validation records logged by epoch (mmengine's ``log_metric_by_epoch=True``, the
    default) are placed at the last iteration of their epoch.

    Example:
        >>> import json, os, tempfile
        >>> log = os.path.join(tempfile.mkdtemp(), 'scalars.json')
        >>> with open(log, 'w') as f:
        ...     for rec in ({'loss': 2.0, 'epoch': 1, 'iter': 1, 'step': 1},
        ...                 {'loss': 1.0, 'epoch': 1, 'iter': 2, 'step': 2},
        ...                 {'coco/bbox_mAP': 0.5, 'step': 1}):
        ...         _ = f.write(json.dumps(rec) + '\\n')
        >>> train, val = load_scalars(log)
        >>> [r['loss'] for r in train], [(r['iter'], r['coco/bbox_mAP']) for r in val]
        ([2.0, 1.0], [(2, 0.5)])
    """
    train, val = [], []
    with open(find_scalars(path)) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            (val if any(k.startswith(('coco/', 'pascal_voc/')) for k in rec) else train).append(rec)
    for rec in train:
        rec.setdefault('iter', rec.get('step'))
    last_iter_of_epoch: Dict[int, int] = {}
    for rec in train:
        if 'epoch' in rec:
            last_iter_of_epoch[int(rec['epoch'])] = max(last_iter_of_epoch.get(int(rec['epoch']), 0), rec['iter'])
    max_epoch = max(last_iter_of_epoch) if last_iter_of_epoch else 0
    max_iter = max((r['iter'] for r in train), default=0)
    by_epoch = bool(val) and max_epoch > 0 and max_iter > max_epoch and all(r['step'] <= max_epoch for r in val)
    for rec in val:
        rec['iter'] = last_iter_of_epoch.get(rec['step'], rec['step']) if by_epoch else rec['step']
    return train, val


def plot_runs(paths: Sequence[str], out: str, labels: Optional[Sequence[str]] = None,
              title: Optional[str] = None, groups: Optional[Sequence[str]] = None) -> Optional[str]:
    """Plot several runs (work dirs, log dirs or scalars.json files) into the PNG ``out``, one colour
    per run: the total training loss on the left, the val mAP on the right (segm mAP for runs that
    logged it, else bbox mAP). A single run gets every ``loss*`` component and mAP@0.5/0.75 as well. ``groups`` (one name per run, e.g. the arm of a
    seed-averaged comparison) gives the runs of a group one colour and one legend entry. Returns
    ``out``, or None when no run logged a training record (nothing is written then)."""
    import matplotlib
    from matplotlib.figure import Figure

    labels = list(labels) if labels else [osp.basename(osp.normpath(p)) for p in paths]
    if groups is not None:
        order = list(dict.fromkeys(groups))
        labels = [g if groups.index(g) == i else '_nolegend_' for i, g in enumerate(groups)]
        colour_of = [order.index(g) for g in groups]
    else:
        colour_of = list(range(len(paths)))
    runs = [load_scalars(p) for p in paths]
    if not any(train for train, _ in runs):
        return None
    fig = Figure(figsize=(12, 4.5))
    ax_loss, ax_map = fig.subplots(1, 2)
    colours = matplotlib.rcParams['axes.prop_cycle'].by_key()['color']
    single = len(runs) == 1
    keys = map_keys([r for _, val in runs for r in val])
    kind = keys[0].split('/')[-1].split('_')[0]  # 'segm' or 'bbox'
    styles = ['-', '--', ':', '-.']
    for i, ((train, val), label) in enumerate(zip(runs, labels)):
        colour = colours[colour_of[i] % len(colours)]
        loss_keys = sorted({k for r in train for k in r if k.startswith('loss')}, key=lambda k: (k != 'loss', k))
        if not single:
            loss_keys = ['loss'] if any('loss' in r for r in train) else loss_keys[:1]
        for j, key in enumerate(loss_keys):
            pts = [(r['iter'], r[key]) for r in train if key in r]
            if pts:
                xs, ys = zip(*pts)
                ax_loss.plot(xs, ys, color=colours[j % len(colours)] if single else colour,
                             label=key if single else label, linewidth=1.5 if key == 'loss' else 1.0)
        for j, key in enumerate(keys if single else keys[:1]):
            pts = [(r['iter'], r[key]) for r in val if key in r and r[key] is not None and r[key] >= 0]
            if pts:
                xs, ys = zip(*pts)
                ax_map.plot(xs, ys, marker='o', linestyle=styles[j % len(styles)],
                            color=colours[j % len(colours)] if single else colour,
                            label=key.split('/')[-1] if single else label)
    ax_loss.set_xlabel('iteration')
    ax_loss.set_ylabel('training loss')
    ax_loss.set_yscale('log')
    ax_loss.grid(True, alpha=0.3)
    ax_loss.legend(fontsize=8)
    ax_map.set_xlabel('iteration')
    ax_map.set_ylabel(f'val {kind} mAP' if not single else f'val COCO {kind} metric')
    ax_map.set_ylim(0, 1)
    ax_map.grid(True, alpha=0.3)
    if ax_map.lines:
        ax_map.legend(fontsize=8)
    return _save(fig, out, title, dpi=100)


def _save(fig, out: str, title: Optional[str], dpi: int) -> str:
    """Title, lay out and write ``fig`` to the PNG ``out`` (its folder made); return ``out``."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out


def plot_arms(summary: Dict[str, Dict[str, dict]], out: str, metrics: Optional[Sequence[str]] = None,
              title: Optional[str] = None) -> str:
    """A dot-and-error-bar chart of seed-averaged results (:func:`mmloss_ext.experiment.summarise`):
    one row per arm and one panel per metric, each seed a dot, the mean ± std a bar. Arms are drawn
    in the order of ``summary``; the chart is written to the PNG ``out``. ``metrics`` default: the
    mAP and mAP@0.75 of bbox, preceded by those of segm when the summary has them."""
    from matplotlib.figure import Figure

    arms = list(summary)
    if metrics is None:
        metrics = [*(SEGM_MAP_KEYS[::2] if map_keys(summary.values()) == SEGM_MAP_KEYS else ()), *MAP_KEYS[::2]]
    fig = Figure(figsize=(4.5 * len(metrics), 0.45 * len(arms) + 1.4))
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    for ax, key in zip(axes, metrics):
        for row, arm in enumerate(arms):
            cell = summary[arm].get(key)
            if not cell or not cell['n']:
                continue
            y = len(arms) - 1 - row
            values = [v for v in cell['values'] if v == v]
            ax.plot(values, [y] * len(values), 'o', color='0.6', markersize=4, zorder=1)
            ax.errorbar(cell['mean'], y, xerr=cell['std'], fmt='D', color='C0', capsize=3, markersize=5, zorder=2)
        ax.set_xlabel(key.split('/')[-1].replace('bbox_', 'bbox ').replace('segm_', 'segm ').replace('_', '@0.')
                      if key.startswith('coco/') else key)
        ax.grid(True, axis='x', alpha=0.3)
    axes[0].set_yticks(range(len(arms)))
    axes[0].set_yticklabels(arms[::-1])
    return _save(fig, out, title, dpi=110)


def plot_run(path: str, out: str, title: Optional[str] = None) -> Optional[str]:
    """Plot one run (a work dir, a log dir or a scalars.json) into ``out``; None if nothing logged."""
    return plot_runs([path], out, title=title)
