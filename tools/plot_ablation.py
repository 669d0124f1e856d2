"""Draw the ablation chart (``docs/img/ablation.png``) from the table of ``docs/ablation.md``.

    python tools/plot_ablation.py [--doc docs/ablation.md] [--out docs/img/ablation.png]

The table is the record of the runs (their work dirs are not kept): one row per variant, with
the bbox mAP of every seed in its ``per seed`` column. The chart (:func:`mmloss_ext.viz.plot_arms`)
has a row per variant labelled as in the table, sorted by mean bbox mAP, each seed a dot and the
mean ± std a bar, on an axis broken where a variant lies far from the others.
"""
from __future__ import annotations

import argparse
import os.path as osp
import statistics
import sys
from typing import Dict, Optional, Sequence

from mmloss_ext.viz import plot_arms

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PER_SEED = 'per seed (bbox mAP)'


def read_table(doc: str) -> Dict[str, Dict[str, dict]]:
    """``{variant: {'coco/bbox_mAP': {mean, std, n, values}}}`` from the first table of ``doc`` that has
    a ``variant`` and a ``per seed (bbox mAP)`` column (the summary :func:`plot_arms` takes)."""
    with open(doc, encoding='utf-8') as f:
        lines = [line.strip() for line in f]
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip('|').split('|')] if line.startswith('|') else []
        if 'variant' in cells and PER_SEED in cells:
            name, seeds = cells.index('variant'), cells.index(PER_SEED)
            summary = {}
            for row in lines[i + 2:]:
                if not row.startswith('|'):
                    break
                row_cells = [c.strip() for c in row.strip('|').split('|')]
                values = [float(v) for v in row_cells[seeds].split(',')]
                summary[row_cells[name]] = {'coco/bbox_mAP': dict(
                    mean=statistics.fmean(values), std=statistics.stdev(values) if len(values) > 1 else 0.0,
                    n=len(values), values=values)}
            return summary
    raise ValueError(f'{doc}: no table with a "variant" and a "{PER_SEED}" column')


def main(argv: Optional[Sequence[str]] = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--doc', default=osp.join(ROOT, 'docs', 'ablation.md'))
    parser.add_argument('--out', default=osp.join(ROOT, 'docs', 'img', 'ablation.png'))
    args = parser.parse_args(argv)
    summary = read_table(args.doc)
    seeds = sorted({cell['coco/bbox_mAP']['n'] for cell in summary.values()})
    out = plot_arms(summary, args.out, metrics=('coco/bbox_mAP',),
                    title=f'shapes RetinaNet, {len(summary)} variants, {"/".join(map(str, seeds))} seeds each')
    print(out)
    return out


if __name__ == '__main__':
    main()
    sys.exit(0)
