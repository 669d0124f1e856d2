"""What the training and evaluation tools share: their common command-line options, the Config
they build from them, and what it takes to run mmengine's Runner on a CPU-only machine.

``tools/train.py``, ``tools/test.py`` and ``tools/train_demo.py`` are thin command lines over this
module (and :mod:`mmloss_ext.viz` for the curve plot). Importing it imports :mod:`mmloss_ext`, which
registers the losses.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
from typing import Optional, Sequence

import torch
from mmengine.config import Config, DictAction

from .datasets.shapes import prepare_shapes_config

__all__ = ['add_runner_args', 'allow_mmengine_checkpoints', 'build_config', 'parse_runner_args',
           'setup_cpu_distributed', 'write_curves']

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def add_runner_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options every Runner tool takes: ``--work-dir``, ``--data-root``, ``--cfg-options``,
    ``--launcher`` and ``--local-rank`` (see :func:`build_config` for what they do)."""
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--data-root', help="create/use the shapes dataset here instead of the config's root")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config, key=value (e.g. train_cfg.max_epochs=2)')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser


def parse_runner_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``argv`` (default: the command line); ``LOCAL_RANK`` is set from ``--local-rank`` unless a
    launcher already set it."""
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
        raise ValueError(f'on CPU only the pytorch launcher is supported, got {launcher!r}')
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


def build_config(config: str, *, work_dir: Optional[str] = None, cfg_options: Optional[dict] = None,
                 launcher: str = 'none', data_root: Optional[str] = None, resume: Optional[str] = None,
                 load_from: Optional[str] = None, validate: bool = True) -> Config:
    """Load ``config`` and apply the tools' options, in this order:

    * ``cfg_options`` merged into it (``--cfg-options``);
    * ``work_dir``, else the config's, else ``./work_dirs/<config name>``;
    * ``resume``: ``'auto'`` resumes from the latest checkpoint in the work dir, a path from that
      checkpoint (model, optimizer, scheduler and loss buffers); ``load_from``: load only the weights
      of that checkpoint (no resume; what tools/test.py does). At most one of the two;
    * ``validate=False`` drops the validation loop;
    * the bundled shapes dataset generated when the config asks for it (``shapes_data``), at
      ``data_root`` when given (the config's dataloaders and evaluators repointed there);
    * on a CPU-only machine with a launcher, a gloo process group (:func:`setup_cpu_distributed`);
    * with a checkpoint to load, :func:`allow_mmengine_checkpoints`.
    """
    if resume is not None and load_from is not None:
        raise ValueError('build_config: give resume or load_from, not both')
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    if resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif resume is not None:
        cfg.resume = True
        cfg.load_from = resume
    elif load_from is not None:
        cfg.resume = False
        cfg.load_from = load_from
    if not validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    prepare_shapes_config(cfg, data_root)
    setup_cpu_distributed(cfg, launcher)
    if cfg.get('resume') or cfg.get('load_from'):
        allow_mmengine_checkpoints()
    return cfg


def write_curves(runner, out: Optional[str] = None) -> Optional[str]:
    """Plot a finished run's curves (:func:`mmloss_ext.viz.plot_run`) into ``out`` (default:
    ``curves.png`` in its work dir), on rank 0 only. Returns the PNG's path, or None when nothing
    was written; a plotting failure is logged as a warning, never raised (it must not lose a
    finished training run)."""
    if runner.rank != 0:
        return None
    from .viz import plot_run
    out = out or osp.join(runner.work_dir, 'curves.png')
    try:
        png = plot_run(runner.log_dir, out, title=osp.splitext(osp.basename(runner.cfg.filename or 'run'))[0])
    except Exception as exc:  # noqa: BLE001 - see the docstring
        runner.logger.warning(f'could not plot the curves: {exc!r}')
        return None
    if png:
        runner.logger.info(f'curves written to {png}')
    return png
