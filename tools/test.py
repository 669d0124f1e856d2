"""Evaluate a checkpoint with mmengine's Runner (a thin wrapper that also works on CPU).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...] [--launcher ...]

Imports mmloss_ext, generates the bundled shapes dataset when the config asks for it, runs the
config's test loop and prints the metrics (the COCO ``bbox_mAP`` line for detection configs).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from typing import Dict, Optional, Sequence

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

TOOLS_DIR = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, TOOLS_DIR)
if osp.dirname(TOOLS_DIR) not in sys.path:  # a source checkout works without an install
    sys.path.insert(1, osp.dirname(TOOLS_DIR))

import mmloss_ext  # noqa: E402,F401  (registers the losses)
from mmloss_ext.datasets.shapes import prepare_shapes_config  # noqa: E402
from train import allow_mmengine_checkpoints, setup_cpu_distributed  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and eval) a detector checkpoint')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation logs')
    parser.add_argument('--data-root', help='create/use the shapes dataset here instead of the config\'s root')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config, key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """Run the test loop; return its metrics dict."""
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    cfg.resume = False
    prepare_shapes_config(cfg, args.data_root)
    setup_cpu_distributed(cfg, args.launcher)
    allow_mmengine_checkpoints()
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    if runner.rank == 0:
        print(' '.join(f'{k}: {v:.4f}' if isinstance(v, float) else f'{k}: {v}' for k, v in metrics.items()))
    return metrics


if __name__ == '__main__':
    main()
