"""The training demo: RetinaNet with mmloss_ext losses on the bundled shapes dataset, on the CPU.

    python tools/train_demo.py [--config CONFIG] [--work-dir DIR] [--target 0.5] [--cfg-options k=v ...]

Creates the shapes dataset (data/shapes, a few seconds, once), trains the shapes RetinaNet from
scratch (mmloss_ext FocalLoss + GIoULoss on decoded boxes) with mmengine's Runner, evaluates on the
val split with COCO's metric (mmengine logs the ``coco/bbox_mAP`` line), writes ``curves.png``
(losses and val mAP against iteration) into the work dir, and prints a summary. Exits 1 when the
final bbox mAP is below ``--target``.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
import time
from typing import Optional, Sequence

import torch
from mmengine.config import DictAction
from mmengine.runner import Runner

from mmloss_ext.quiet import quiet_pkg_resources
from mmloss_ext.runner import build_config, write_curves
from mmloss_ext.viz import load_scalars

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'shapes', 'retinanet_r18s_fpn_shapes_giou.py')


@quiet_pkg_resources()
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG)
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'shapes_demo'))
    parser.add_argument('--target', type=float, default=0.5, help='bbox mAP the demo must reach')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config, key=value (as for tools/train.py)')
    args = parser.parse_args(argv)

    t0 = time.time()
    print(f'[demo] training {osp.relpath(args.config, ROOT)} on the CPU ({torch.get_num_threads()} threads); '
          f'work dir {args.work_dir}', flush=True)
    runner = Runner.from_cfg(build_config(args.config, work_dir=args.work_dir, cfg_options=args.cfg_options))
    runner.train()
    write_curves(runner)
    elapsed = time.time() - t0

    _, val = load_scalars(runner.log_dir)
    if not val:
        print('[demo] no validation result was logged', flush=True)
        return 1
    last = val[-1]
    bbox_map = last['coco/bbox_mAP']
    loss_cfg = runner.cfg.model.bbox_head
    print(f'\n[demo] {runner.cfg.model.type} with {loss_cfg.loss_cls.type} + {loss_cfg.loss_bbox.type}, '
          f'{last["iter"]} iterations, {elapsed / 60:.1f} min wall time (data, training and evaluation)')
    print('[demo] val ' + '  '.join(f'{k.split("/")[-1]}: {last[k]:.3f}' for k in
                                    ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75',
                                     'coco/bbox_mAP_s', 'coco/bbox_mAP_m', 'coco/bbox_mAP_l') if k in last))
    png = osp.join(runner.work_dir, 'curves.png')
    if osp.isfile(png):
        print(f'[demo] curves: {png}')
    ok = bbox_map >= args.target
    print(f'[demo] bbox_mAP {bbox_map:.3f} {"reaches" if ok else "is BELOW"} the target {args.target}', flush=True)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
