"""Evaluate a checkpoint with mmengine's Runner (a thin wrapper that also works on CPU).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...] [--data-root DIR]
                                           [--launcher ...]

Imports mmloss_ext, generates the bundled shapes dataset when the config asks for it, runs the
config's test loop and prints the metrics (the COCO ``bbox_mAP`` line for detection configs).
"""
from __future__ import annotations

import argparse
from typing import Dict, Optional, Sequence

from mmengine.runner import Runner

from mmloss_ext.quiet import quiet_pkg_resources
from mmloss_ext.runner import add_runner_args, build_config, parse_runner_args


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and eval) a detector checkpoint')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    add_runner_args(parser)
    return parse_runner_args(parser, argv)


@quiet_pkg_resources()
def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """Run the test loop; return its metrics dict."""
    args = parse_args(argv)
    cfg = build_config(args.config, work_dir=args.work_dir, cfg_options=args.cfg_options, launcher=args.launcher,
                       data_root=args.data_root, load_from=args.checkpoint)
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    if runner.rank == 0:
        print(' '.join(f'{k}: {v:.4f}' if isinstance(v, float) else f'{k}: {v}' for k, v in metrics.items()))
    return metrics


if __name__ == '__main__':
    main()
