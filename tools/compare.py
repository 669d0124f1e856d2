"""Train several shapes variants with a short schedule and compare them (GIoU vs Wise-IoU vs ...).

    python tools/compare.py [CONFIG ...] [--epochs 4] [--work-dir work_dirs/compare] [--cfg-options ...]

Each config (default: every ``configs/shapes/retinanet_*.py``) is trained by ``tools/train.py`` in
its own process with the same short schedule (``--epochs``: the cosine schedule and validation are
shortened to match), on the same data. Prints a table (final training loss, bbox mAP, mAP@0.75,
wall time) and writes one overlaid curve plot, ``compare.png``, in the work dir.
"""
from __future__ import annotations

import argparse
import glob
import os
import os.path as osp
import subprocess
import sys
import time
from typing import List, Optional, Sequence

from mmloss_ext.viz import load_scalars, plot_runs

TOOLS_DIR = osp.dirname(osp.abspath(__file__))  # each variant runs tools/train.py in its own process
ROOT = osp.dirname(TOOLS_DIR)


def short_schedule(epochs: int) -> List[str]:
    """cfg-options that shorten the shapes configs' schedule to ``epochs`` (validating at the end)."""
    return [f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
            f'param_scheduler.1.T_max={epochs}', f'param_scheduler.1.end={epochs}',
            f'default_hooks.checkpoint.interval={epochs}']


def train_command(config: str, work_dir: str, epochs: int, data_root: Optional[str] = None,
                  cfg_options: Sequence[str] = ()) -> List[str]:
    """The tools/train.py command line of one variant (no plot: compare.png overlays them all)."""
    return [sys.executable, osp.join(TOOLS_DIR, 'train.py'), config, '--work-dir', work_dir, '--no-plot',
            *(['--data-root', data_root] if data_root else []),
            '--cfg-options', *short_schedule(epochs), *cfg_options]


def variant_name(config: str) -> str:
    return osp.splitext(osp.basename(config))[0]


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    parser = argparse.ArgumentParser(description='Compare shapes variants on a short schedule')
    parser.add_argument('configs', nargs='*', help='configs (default: configs/shapes/retinanet_*.py)')
    parser.add_argument('--epochs', type=int, default=4)
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'compare'))
    parser.add_argument('--data-root', help='passed on to tools/train.py')
    parser.add_argument('--cfg-options', nargs='+', default=[], help='passed on to tools/train.py for every run')
    args = parser.parse_args(argv)
    configs = args.configs or sorted(glob.glob(osp.join(ROOT, 'configs', 'shapes', 'retinanet_*.py')))
    if not configs:
        parser.error('no configs to compare')

    rows, run_dirs = [], []
    for i, config in enumerate(configs):
        name = variant_name(config)
        work_dir = osp.join(args.work_dir, name)
        cmd = train_command(config, work_dir, args.epochs, args.data_root, args.cfg_options)
        print(f'[compare] ({i + 1}/{len(configs)}) {name}: {args.epochs} epochs', flush=True)
        t0 = time.time()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        elapsed = time.time() - t0
        row = dict(name=name, time=elapsed, loss=float('nan'), mAP=float('nan'), mAP_75=float('nan'),
                   ok=proc.returncode == 0)
        if proc.returncode != 0:
            print(proc.stdout[-3000:], flush=True)
            print(f'[compare] {name} failed (exit {proc.returncode})', flush=True)
        else:
            train, val = load_scalars(work_dir)
            if train:
                row['loss'] = train[-1].get('loss', float('nan'))
            if val:
                row['mAP'] = val[-1].get('coco/bbox_mAP', float('nan'))
                row['mAP_75'] = val[-1].get('coco/bbox_mAP_75', float('nan'))
            run_dirs.append((work_dir, name))
            print(f'[compare] {name}: loss {row["loss"]:.4f}  bbox_mAP {row["mAP"]:.3f}  '
                  f'mAP_75 {row["mAP_75"]:.3f}  {elapsed:.0f}s', flush=True)
        rows.append(row)

    width = max(len(r['name']) for r in rows)
    print(f'\n{"variant":{width}s}  final loss  bbox_mAP  mAP@0.75  time (s)')
    for r in sorted(rows, key=lambda r: -r['mAP'] if r['mAP'] == r['mAP'] else 1):
        print(f'{r["name"]:{width}s}  {r["loss"]:10.4f}  {r["mAP"]:8.3f}  {r["mAP_75"]:8.3f}  {r["time"]:8.0f}'
              + ('' if r['ok'] else '  FAILED'))
    if run_dirs:
        os.makedirs(args.work_dir, exist_ok=True)
        png = plot_runs([d for d, _ in run_dirs], osp.join(args.work_dir, 'compare.png'),
                        labels=[n for _, n in run_dirs], title=f'shapes variants, {args.epochs} epochs')
        if png:
            print(f'\n[compare] curves: {png}')
    return rows


if __name__ == '__main__':
    rows = main()
    sys.exit(0 if all(r['ok'] for r in rows) else 1)
