"""Train a detector with mmengine's Runner (a thin wrapper that also works on CPU).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--cfg-options k=v ...]
                                 [--data-root DIR] [--launcher none|pytorch] [--no-validate] [--no-plot]
                                 [--no-check]

On top of mmdet's own tools/train.py: checks the config's losses first and stops on an error
(``python -m mmloss_ext check``: e.g. an IoU-family loss on a head that feeds it deltas; ``--no-check``
skips it), imports mmloss_ext, generates the bundled shapes dataset
when the config asks for it (``shapes_data``), runs multi-process training on CPU through the gloo
backend (``tools/dist_train.sh``), and at the end writes ``curves.png`` (loss components and val
mAP against iteration, from mmengine's scalar log) into the work dir. The shared pieces live in
:mod:`mmloss_ext.runner` and :mod:`mmloss_ext.viz`.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

import os
import sys

from mmengine.runner import Runner

from mmloss_ext.check import check_config
from mmloss_ext.quiet import quiet_pkg_resources
from mmloss_ext.runner import add_runner_args, build_config, parse_runner_args, write_curves


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector (mmdet 3.x config) with mmloss_ext losses')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from the given checkpoint, or from the latest one in the work dir '
                             'when no path is given (model, optimizer, scheduler and loss buffers)')
    parser.add_argument('--no-plot', action='store_true', help='do not write curves.png')
    parser.add_argument('--no-validate', action='store_true', help='skip validation during training')
    parser.add_argument('--no-check', action='store_true', help="do not check the config's losses first")
    add_runner_args(parser)
    return parse_runner_args(parser, argv)


def build_runner(args: argparse.Namespace) -> Runner:
    """The (not yet started) Runner for parsed command-line ``args``."""
    cfg = build_config(args.config, work_dir=args.work_dir, cfg_options=args.cfg_options, launcher=args.launcher,
                       data_root=args.data_root, resume=args.resume, validate=not args.no_validate)
    return Runner.from_cfg(cfg)


@quiet_pkg_resources()
def main(argv: Optional[Sequence[str]] = None) -> Runner:
    """Train; return the Runner (its ``message_hub`` holds the last val metrics)."""
    args = parse_args(argv)
    if not args.no_check:
        findings = check_config(args.config, args.cfg_options)
        if os.environ.get('LOCAL_RANK', '0') == '0':
            for finding in findings:
                print(finding, file=sys.stderr)
        if any(f.level == 'error' for f in findings):
            raise SystemExit(f'{args.config}: the loss check found errors (see above; --no-check skips the check)')
    runner = build_runner(args)
    runner.train()
    if not args.no_plot:
        write_curves(runner)
    return runner


if __name__ == '__main__':
    main()
