"""Plot training runs' curves from mmengine's scalar log (``<work_dir>/<timestamp>/vis_data/scalars.json``).

    python tools/plot_curves.py WORK_DIR_OR_SCALARS_JSON [...] [--out curves.png] [--labels a b ...]

One run: loss components (every ``loss*`` key) on the left, val bbox mAP (and mAP@0.5/0.75) on the
right, both against the training iteration. Several runs: the same two panels with one colour per
run (what tools/compare.py writes). Validation records are placed at their iteration; runs logged
with ``log_metric_by_epoch=True`` (mmengine's default) are mapped from epoch to the last iteration
of that epoch. The loading and plotting live in :mod:`mmloss_ext.viz`.
"""
from __future__ import annotations

import argparse
import os.path as osp
from typing import Optional, Sequence

from mmloss_ext.viz import plot_runs


def main(argv: Optional[Sequence[str]] = None) -> Optional[str]:
    parser = argparse.ArgumentParser(description='Plot loss and val mAP curves of mmengine runs')
    parser.add_argument('paths', nargs='+', help='work dirs, log dirs or scalars.json files')
    parser.add_argument('--out', default=None, help='PNG path (default: curves.png in the first path)')
    parser.add_argument('--labels', nargs='+', help='one legend label per path')
    parser.add_argument('--title')
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.paths):
        parser.error(f'--labels: {len(args.labels)} labels for {len(args.paths)} paths')
    out = args.out or osp.join(args.paths[0] if osp.isdir(args.paths[0]) else osp.dirname(args.paths[0]),
                               'curves.png')
    png = plot_runs(args.paths, out, args.labels, args.title)
    print(png or 'nothing to plot')
    return png


if __name__ == '__main__':
    main()
