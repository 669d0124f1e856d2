"""Compare detectors trained with different losses, averaged over seeds.

    python tools/compare.py [CONFIG ...] [--seeds 3] [--epochs E] [--work-dir DIR] [--out NAME] [--retrain]
    python tools/compare.py --against-mmdet CONFIG [--seeds 3] [--epochs E] [--work-dir DIR] [--out NAME]

Variants (the first form): each config (default: every ``configs/shapes/retinanet_*.py``) is an arm.
Against mmdet (the second form): the config as written (mmloss_ext losses) is one arm, and the same
config with every ``mmloss_ext.X`` loss replaced by mmdet's own ``X`` (same keywords) the other; a
loss mmdet lacks, or a keyword its class does not take, is refused before anything trains.

Every arm trains once per seed (``randomness.seed`` = 0, 1, ...; the seed also fixes the data order,
so seed k of every arm sees the same batches) in its own ``tools/train.py`` process, on the same data.
A run that finished before with the same command line (its work dir holds ``compare_run.json``) is
summarised again instead of retrained, unless ``--retrain``: an interrupted comparison resumes.
The summary gives, per arm, the mean ± std over seeds of the last validation's bbox mAP, mAP@0.5 and
mAP@0.75, the time per iteration and the final training losses; against mmdet it adds the difference
of the arms' means with Welch's 95% confidence interval. Written into the work dir: ``NAME.md``,
``NAME.json`` (every run), ``NAME.png`` (the curves of every run, one colour per arm) and, for
variants, ``NAME_arms.png`` (a dot-and-error-bar chart of the arms). ``--epochs`` shortens the
shapes configs' schedule (cosine decay and validation follow); without it each config's own
schedule runs.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import List, Optional, Sequence

from mmengine.config import Config

from mmloss_ext.experiment import METRICS, Run, difference, markdown_table, mmdet_arm_options, run_summary, summarise
from mmloss_ext.viz import plot_arms, plot_runs

TOOLS_DIR = osp.dirname(osp.abspath(__file__))  # each run is tools/train.py in its own process
ROOT = osp.dirname(TOOLS_DIR)


def short_schedule(epochs: int) -> List[str]:
    """cfg-options that shorten the shapes configs' schedule to ``epochs`` (validating at the end)."""
    return [f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
            f'param_scheduler.1.T_max={epochs}', f'param_scheduler.1.end={epochs}',
            f'default_hooks.checkpoint.interval={epochs}']


def train_command(config: str, work_dir: str, epochs: Optional[int] = None, data_root: Optional[str] = None,
                  cfg_options: Sequence[str] = (), seed: Optional[int] = None) -> List[str]:
    """The tools/train.py command line of one run (no plot: the comparison draws them together)."""
    options = [*(short_schedule(epochs) if epochs else []), *([f'randomness.seed={seed}'] if seed is not None else []),
               *cfg_options]
    return [sys.executable, osp.join(TOOLS_DIR, 'train.py'), config, '--work-dir', work_dir, '--no-plot',
            *(['--data-root', data_root] if data_root else []),
            *(['--cfg-options', *options] if options else [])]


def variant_name(config: str) -> str:
    return osp.splitext(osp.basename(config))[0]


#: written into a run's work dir when it finished: its command line and wall time
DONE = 'compare_run.json'


def train_arm(arm: str, config: str, seeds: Sequence[int], work_dir: str, *, epochs: Optional[int] = None,
              data_root: Optional[str] = None, cfg_options: Sequence[str] = (), reuse: bool = True) -> List[Run]:
    """Train ``config`` once per seed (work dirs ``<work_dir>/<arm>/seed<k>``) and summarise each run.
    With ``reuse``, a run that finished before with the same command line is summarised, not retrained."""
    runs = []
    for seed in seeds:
        run_dir = osp.join(work_dir, arm, f'seed{seed}')
        cmd = train_command(config, run_dir, epochs, data_root, cfg_options, seed)
        done = osp.join(run_dir, DONE)
        if reuse and osp.exists(done) and json.load(open(done))['command'] == cmd[1:]:
            run = run_summary(Run(arm=arm, seed=seed, work_dir=run_dir, wall=json.load(open(done))['wall']))
            print(f'[compare] {arm}, seed {seed}: reusing the finished run in {run_dir}', flush=True)
            runs.append(run)
            continue
        print(f'[compare] {arm}, seed {seed}: {run_dir}', flush=True)
        t0 = time.time()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        run = Run(arm=arm, seed=seed, work_dir=run_dir, wall=time.time() - t0, ok=proc.returncode == 0)
        if run.ok:
            run_summary(run)
        if not run.ok:
            print(proc.stdout[-3000:], flush=True)
            print(f'[compare] {arm}, seed {seed} failed (exit {proc.returncode})', flush=True)
        else:
            with open(done, 'w') as f:  # the run is complete: a later comparison may reuse it
                json.dump(dict(command=cmd[1:], wall=run.wall), f)
            print(f'[compare] {arm}, seed {seed}: ' + '  '.join(
                f'{METRICS[k]} {v:.3f}' for k, v in run.metrics.items()) + f'  {run.wall:.0f}s', flush=True)
        runs.append(run)
    return runs


def report(runs: List[Run], arms: Sequence[str], out: str, title: str, against: Optional[Sequence[str]] = None,
           command: str = '') -> dict:
    """Write ``out``.md / .json / .png (and ``out``_arms.png for more than two arms); return the summary."""
    summary = summarise(runs)
    arms = [a for a in arms if a in summary]
    lines = [f'# {title}', '', f'Command: `{command}`' if command else '', '', markdown_table(summary, arms), '']
    diffs = {}
    if against is not None and all(a in summary for a in against):
        ours, theirs = against
        lines += ['| quantity | ' + f'{ours} − {theirs}' + ' | 95% CI (Welch) |', '|---|---|---|']
        for key, name in METRICS.items():
            d = difference(summary[ours][key]['values'], summary[theirs][key]['values'])
            diffs[key] = d
            lines.append(f'| {name} | {d["diff"]:+.4f} | [{d["low"]:+.4f}, {d["high"]:+.4f}] |')
        lines.append('')
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    with open(out + '.md', 'w') as f:
        f.write('\n'.join(lines))
    with open(out + '.json', 'w') as f:
        json.dump(dict(title=title, command=command, arms=arms, runs=[r.as_dict() for r in runs],
                       summary=summary, differences=diffs), f, indent=1)
    ok = [r for r in runs if r.ok]
    if ok:
        plot_runs([r.work_dir for r in ok], out + '.png', groups=[r.arm for r in ok], title=title)
    if len(arms) > 2:
        plot_arms({a: summary[a] for a in arms}, out + '_arms.png', title=title)
    print('\n'.join(lines), flush=True)
    return dict(summary=summary, differences=diffs)


def main(argv: Optional[Sequence[str]] = None) -> List[Run]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('configs', nargs='*', help='configs to compare (default: configs/shapes/retinanet_*.py)')
    parser.add_argument('--against-mmdet', metavar='CONFIG',
                        help='compare CONFIG as written with the same CONFIG on mmdet\'s own losses')
    parser.add_argument('--seeds', type=int, default=3, help='runs per arm, seeds 0..N-1 (default 3)')
    parser.add_argument('--epochs', type=int, default=None, help="shorten the schedule (default: the config's)")
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'compare'))
    parser.add_argument('--out', default='compare', help='name of the report files in the work dir')
    parser.add_argument('--data-root', help='passed on to tools/train.py')
    parser.add_argument('--cfg-options', nargs='+', default=[], help='passed on to tools/train.py for every run')
    parser.add_argument('--retrain', action='store_true',
                        help='train every run again (default: reuse a run that finished with the same command)')
    args = parser.parse_args(argv)
    seeds = list(range(args.seeds))
    command = 'python tools/compare.py ' + ' '.join(argv if argv is not None else sys.argv[1:])
    out = osp.join(args.work_dir, args.out)
    common = dict(epochs=args.epochs, data_root=args.data_root, reuse=not args.retrain)
    runs: List[Run] = []
    if args.against_mmdet:
        if args.configs:
            parser.error('--against-mmdet takes one config, not a list')
        config = args.against_mmdet
        cfg = Config.fromfile(config)
        try:
            mmdet_options = mmdet_arm_options(cfg.model)
        except ValueError as err:
            parser.exit(2, f'compare.py: {err}\n')
        arms = ('mmloss_ext', 'mmdet')
        runs += train_arm('mmloss_ext', config, seeds, args.work_dir, cfg_options=args.cfg_options, **common)
        runs += train_arm('mmdet', config, seeds, args.work_dir, cfg_options=[*mmdet_options, *args.cfg_options],
                          **common)
        report(runs, arms, out, f'{variant_name(config)}: mmloss_ext losses vs mmdet losses, {len(seeds)} seeds',
               against=arms, command=command)
    else:
        configs = args.configs or sorted(glob.glob(osp.join(ROOT, 'configs', 'shapes', 'retinanet_*.py')))
        if not configs:
            parser.error('no configs to compare')
        arms = [variant_name(c) for c in configs]
        for arm, config in zip(arms, configs):
            runs += train_arm(arm, config, seeds, args.work_dir, cfg_options=args.cfg_options, **common)
        report(runs, arms, out, f'{len(arms)} variants, {len(seeds)} seeds each', command=command)
    return runs


if __name__ == '__main__':
    sys.exit(0 if all(r.ok for r in main()) else 1)
