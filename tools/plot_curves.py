"""Plot a training run's curves from mmengine's scalar log (``<work_dir>/<timestamp>/vis_data/scalars.json``).

    python tools/plot_curves.py WORK_DIR_OR_SCALARS_JSON [...] [--out curves.png] [--labels a b ...]

One run: loss components (every ``loss*`` key) on the left, val bbox mAP (and mAP@0.5/0.75) on the
right, both against the training iteration. Several runs: the same two panels with one colour per
run (what tools/compare.py writes). Validation records are placed at their iteration; runs logged
with ``log_metric_by_epoch=True`` (mmengine's default) are mapped from epoch to the last iteration
of that epoch.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

MAP_KEYS = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75')


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
    """Return (train records, val records), each with an ``iter`` key (the training iteration)."""
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
              title: Optional[str] = None) -> Optional[str]:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    labels = list(labels) if labels else [osp.basename(osp.normpath(p)) for p in paths]
    runs = [load_scalars(p) for p in paths]
    if not any(train for train, _ in runs):
        return None
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
    single = len(runs) == 1
    styles = ['-', '--', ':', '-.']
    for i, ((train, val), label) in enumerate(zip(runs, labels)):
        colour = colours[i % len(colours)]
        loss_keys = sorted({k for r in train for k in r if k.startswith('loss')}, key=lambda k: (k != 'loss', k))
        if not single:
            loss_keys = ['loss'] if any('loss' in r for r in train) else loss_keys[:1]
        for j, key in enumerate(loss_keys):
            pts = [(r['iter'], r[key]) for r in train if key in r]
            if pts:
                xs, ys = zip(*pts)
                ax_loss.plot(xs, ys, color=colours[j % len(colours)] if single else colour,
                             label=key if single else label, linewidth=1.5 if key == 'loss' else 1.0)
        map_keys = MAP_KEYS if single else MAP_KEYS[:1]
        for j, key in enumerate(map_keys):
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
    ax_map.set_ylabel('val bbox mAP' if not single else 'val COCO bbox metric')
    ax_map.set_ylim(0, 1)
    ax_map.grid(True, alpha=0.3)
    if ax_map.lines:
        ax_map.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_run(path: str, out: str, title: Optional[str] = None) -> Optional[str]:
    """Plot one run (a work dir, a log dir or a scalars.json) into ``out``; None if nothing logged."""
    return plot_runs([path], out, title=title)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description='Plot loss and val mAP curves of mmengine runs')
    parser.add_argument('paths', nargs='+', help='work dirs, log dirs or scalars.json files')
    parser.add_argument('--out', default=None, help='PNG path (default: curves.png in the first path)')
    parser.add_argument('--labels', nargs='+', help='one legend label per path')
    parser.add_argument('--title')
    args = parser.parse_args(argv)
    out = args.out or osp.join(args.paths[0] if osp.isdir(args.paths[0]) else osp.dirname(args.paths[0]),
                               'curves.png')
    png = plot_runs(args.paths, out, args.labels, args.title)
    print(png or 'nothing to plot')


if __name__ == '__main__':
    main()
