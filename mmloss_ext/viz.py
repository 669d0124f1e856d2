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

__all__ = ['MAP_KEYS', 'SEGM_MAP_KEYS', 'axis_ranges', 'find_scalars', 'load_scalars', 'map_keys', 'plot_arms',
           'plot_run', 'plot_runs']

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


def axis_ranges(intervals: Sequence[Tuple[float, float]], margin: float = 0.15) -> List[Tuple[float, float]]:
    """The x ranges of a chart of ``intervals`` (each arm's ``(lowest, highest)`` value): one range,
    or one per group when a gap between groups is wider than half the whole span (an outlier would
    squeeze the others into a blob): the axis is then broken at each such gap. Each range is padded
    by ``margin`` of its width (at least 0.005).

    Example:
        >>> [tuple(round(v, 3) for v in r) for r in axis_ranges([(0.74, 0.76), (0.69, 0.71), (0.22, 0.23)])]
        [(0.215, 0.235), (0.679, 0.77)]
        >>> len(axis_ranges([(0.74, 0.76), (0.69, 0.71)]))
        1
    """
    spans = sorted(intervals)
    whole = max(hi for _, hi in spans) - spans[0][0]
    groups = [[spans[0]]]
    for lo, hi in spans[1:]:
        top = max(h for _, h in groups[-1])
        if lo - top > 0.5 * whole:
            groups.append([])
        groups[-1].append((lo, hi))
    ranges = []
    for group in groups:
        lo, hi = min(l for l, _ in group), max(h for _, h in group)
        pad = max(margin * (hi - lo), 0.005)
        ranges.append((lo - pad, hi + pad))
    return ranges


def plot_arms(summary: Dict[str, Dict[str, dict]], out: str, metrics: Optional[Sequence[str]] = None,
              title: Optional[str] = None, labels: Optional[Dict[str, str]] = None) -> str:
    """A dot-and-error-bar chart of seed-averaged results (:func:`mmloss_ext.experiment.summarise`):
    one row per arm, labelled ``labels[arm]`` (default: the arm), sorted by the mean of the first
    metric (best on top); one panel per metric, each seed a dot, the mean ± std a bar. A metric whose
    arms fall into groups far apart gets a broken axis (:func:`axis_ranges`), so that the spread
    within a group stays visible. Written to the PNG ``out``. ``metrics`` default: the mAP and
    mAP@0.75 of bbox, preceded by those of segm when the summary has them."""
    from matplotlib.figure import Figure

    from .experiment import METRICS

    def cell(arm, key):
        c = summary[arm].get(key)
        return c if c and c['n'] else None

    if metrics is None:
        metrics = [*(SEGM_MAP_KEYS[::2] if map_keys(summary.values()) == SEGM_MAP_KEYS else ()), *MAP_KEYS[::2]]
    first = metrics[0]
    arms = sorted(summary, key=lambda a: -(cell(a, first)['mean'] if cell(a, first) else float('-inf')))
    names = [(labels or {}).get(a, a) for a in arms]
    panels = []  # (metric, x range) per axis, left to right
    for key in metrics:
        intervals = []
        for arm in arms:
            c = cell(arm, key)
            if c:
                values = [v for v in c['values'] if v == v] + [c['mean'] - c['std'], c['mean'] + c['std']]
                intervals.append((min(values), max(values)))
        panels += [(key, r) for r in (axis_ranges(intervals) if intervals else [(0.0, 1.0)])]
    widths = [max(hi - lo, 1e-9) for _, (lo, hi) in panels]
    # a broken axis: each part as wide as its range (every part at least a fifth of its metric's width)
    ratios = []
    for key in metrics:
        mine = [w for (k, _), w in zip(panels, widths) if k == key]
        ratios += [max(w / sum(mine), 0.2) for w in mine]
    fig = Figure(figsize=(4.8 * len(metrics) + 0.12 * max(len(n) for n in names), 0.42 * len(arms) + 1.5))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False, gridspec_kw=dict(width_ratios=ratios))[0]
    for i, (ax, (key, (lo, hi))) in enumerate(zip(axes, panels)):
        for row, arm in enumerate(arms):
            c = cell(arm, key)
            if not c:
                continue
            y = len(arms) - 1 - row
            values = [v for v in c['values'] if v == v]
            ax.plot(values, [y] * len(values), 'o', color='0.55', markersize=4, zorder=1)
            ax.errorbar(c['mean'], y, xerr=c['std'], fmt='D', color='C0', capsize=3, markersize=5, zorder=2)
        ax.set_xlim(lo, hi)
        ax.grid(True, axis='x', alpha=0.3)
        ax.tick_params(axis='x', labelsize=8)
        same = [j for j, (k, _) in enumerate(panels) if k == key]
        if len(same) > 1:  # the break: no spine between the parts, a pair of slashes on it
            kw = dict(transform=ax.transAxes, color='k', clip_on=False, linewidth=1)
            for y in (0, 1):
                if i != same[-1]:
                    ax.plot([1 - 0.02, 1 + 0.02], [y - 0.01, y + 0.01], **kw)
                if i != same[0]:
                    ax.plot([-0.02, 0.02], [y - 0.01, y + 0.01], **kw)
            if i != same[-1]:
                ax.spines['right'].set_visible(False)
            if i != same[0]:
                ax.spines['left'].set_visible(False)
                ax.tick_params(axis='y', left=False)
        if i == same[len(same) // 2]:
            ax.set_xlabel(METRICS.get(key, key))
    axes[0].set_yticks(range(len(arms)))
    axes[0].set_yticklabels(names[::-1])
    return _save(fig, out, title, dpi=110)


def plot_run(path: str, out: str, title: Optional[str] = None) -> Optional[str]:
    """Plot one run (a work dir, a log dir or a scalars.json) into ``out``; None if nothing logged."""
    return plot_runs([path], out, title=title)
