"""Train a detector with mmengine's Runner (a thin wrapper that also works on CPU).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--cfg-options k=v ...]
                                 [--launcher none|pytorch] [--no-plot]

On top of mmdet's own tools/train.py: imports mmloss_ext, generates the bundled shapes dataset
when the config asks for it (``shapes_data``), runs multi-process training on CPU through the gloo
backend (``tools/dist_train.sh``), and at the end writes ``curves.png`` (loss components and val
mAP against iteration, from mmengine's scalar log) into the work dir.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from typing import Optional, Sequence

import torch
from mmengine.config import Config, DictAction
from mmengine.runner import Runner

TOOLS_DIR = osp.dirname(osp.abspath(__file__))
if osp.dirname(TOOLS_DIR) not in sys.path:  # a source checkout works without an install
    sys.path.insert(1, osp.dirname(TOOLS_DIR))

import mmloss_ext  # noqa: E402,F401  (registers the losses)
from mmloss_ext.datasets.shapes import prepare_shapes_config  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector (mmdet 3.x config) with mmloss_ext losses')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from the given checkpoint, or from the latest one in the work dir '
                             'when no path is given (model, optimizer, scheduler and loss buffers)')
    parser.add_argument('--data-root', help='create/use the shapes dataset here instead of the config\'s root')
    parser.add_argument('--no-plot', action='store_true', help='do not write curves.png')
    parser.add_argument('--no-validate', action='store_true', help='skip validation during training')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config, key=value (e.g. train_cfg.max_epochs=2)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def setup_cpu_distributed(cfg: Config, launcher: str) -> None:
    """Start a gloo process group ourselves when there is no GPU.

    mmengine's ``init_dist`` calls ``torch.cuda.set_device`` unconditionally, which a CPU build of
    torch refuses; with the group already initialised, the Runner skips it. The DDP wrapper is told
    to use no device ids (a CPU module).
    """
    if launcher == 'none' or torch.cuda.is_available():
        return
    import torch.distributed as dist
    if launcher != 'pytorch':
        raise ValueError(f'train.py: on CPU only --launcher pytorch is supported, got {launcher!r}')
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper['device_ids'] = None
    wrapper.setdefault('broadcast_buffers', False)
    cfg.model_wrapper_cfg = wrapper


def allow_mmengine_checkpoints() -> None:
    """Let mmengine load the checkpoints it writes (``--resume``, ``load_from``, tools/test.py).

    mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; since torch 2.6 that defaults to the
    weights-only unpickler, which rejects what mmengine stores beside the weights (the message hub's
    ``HistoryBuffer`` of numpy arrays). ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` restores the full unpickler
    for calls that do not choose: as before torch 2.6, load only checkpoints you trust. An explicit
    setting of the variable (or of ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``) in the environment wins.
    """
    if 'TORCH_FORCE_WEIGHTS_ONLY_LOAD' not in os.environ:
        os.environ.setdefault('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')


def build_config(args: argparse.Namespace) -> Config:
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    prepare_shapes_config(cfg, args.data_root)
    setup_cpu_distributed(cfg, args.launcher)
    if cfg.get('resume') or cfg.get('load_from'):
        allow_mmengine_checkpoints()
    return cfg


def build_runner(argv: Optional[Sequence[str]] = None) -> Runner:
    """Parse ``argv`` like the command line and return the (not yet started) Runner."""
    args = parse_args(argv)
    cfg = build_config(args)
    runner = Runner.from_cfg(cfg)
    runner._mmloss_ext_plot = not args.no_plot  # read by main()
    return runner


def main(argv: Optional[Sequence[str]] = None):
    """Train; return the Runner (its ``message_hub`` holds the last val metrics)."""
    runner = build_runner(argv)
    runner.train()
    if runner._mmloss_ext_plot and runner.rank == 0:
        try:
            from mmloss_ext.viz import plot_run
            png = plot_run(runner.log_dir, osp.join(runner.work_dir, 'curves.png'),
                           title=osp.splitext(osp.basename(runner.cfg.filename or 'run'))[0])
            if png:
                runner.logger.info(f'curves written to {png}')
        except Exception as exc:  # a plotting failure must not lose a finished training run
            runner.logger.warning(f'could not plot the curves: {exc!r}')
    return runner


if __name__ == '__main__':
    main()
