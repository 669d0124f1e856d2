"""Compare detectors trained with different losses, averaged over seeds.

    python tools/compare.py [CONFIG ...] [--seeds 3] [--epochs E] [--jobs J] [--work-dir DIR] [--out NAME] [--retrain]
    python tools/compare.py --against-mmdet CONFIG [--seeds 3] [--epochs E] [--jobs J] [--work-dir DIR] [--out NAME]

Variants (the first form): each config (default: every ``configs/shapes/retinanet_*.py``) is an arm.
Against mmdet (the second form): the config as written (mmloss_ext losses) is one arm, and the same
config with every ``mmloss_ext.X`` loss replaced by mmdet's own ``X`` (same keywords) the other; a
loss mmdet lacks, or a keyword its class does not take, is refused before anything trains.

Every arm trains once per seed (``randomness.seed`` = 0, 1, ...; the seed also fixes the data order,
so seed k of every arm sees the same batches) in its own ``tools/train.py`` process, on the same data;
``--jobs J`` trains J runs at a time, each with 1/J of the CPU cores, seed k of every arm side by side
(the time per iteration is then that of a run sharing the machine, alike for every arm).
A run that finished before with the same command line (its work dir holds ``compare_run.json``) is
summarised again instead of retrained, unless ``--retrain``: an interrupted comparison resumes.
The summary gives, per arm, the mean ± std over seeds of the last validation's bbox mAP, mAP@0.5 and
mAP@0.75 (for instance segmentation: segm mAP, mAP@0.5, mAP@0.75 and those of bbox), the time per
iteration and the final training losses; against mmdet it adds the difference
of the arms' means with Welch's 95% confidence interval. Written into the work dir: ``NAME.md``,
``NAME.json`` (every run), ``NAME.png`` (the curves of every run, one colour per arm) and, for
variants, ``NAME_arms.png`` (a dot-and-error-bar chart of the arms, each named by its losses, sorted
by bbox mAP). ``--epochs`` shortens the shapes configs' schedule (cosine decay and validation
follow); without it each config's own schedule runs.
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

from mmloss_ext.check import load_config
from mmloss_ext.experiment import (METRICS, Run, difference, markdown_table, mmdet_arm_options, run_summary, summarise,
                                   variant_labels)
from mmloss_ext.quiet import quiet_pkg_resources
from mmloss_ext.runner import add_runner_args
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


def train_arms(arms: Sequence[tuple], seeds: Sequence[int], work_dir: str, *, epochs: Optional[int] = None,
               data_root: Optional[str] = None, reuse: bool = True, jobs: int = 1) -> List[Run]:
    """Train each arm, ``(name, config, cfg_options)``, once per seed (work dirs ``<work_dir>/<arm>/seed<k>``)
    and summarise each run, arm by arm. With ``reuse``, a run that finished before with the same
    command line is summarised, not retrained. ``jobs`` runs train at a time, each on an equal share of
    the CPU cores (``OMP_NUM_THREADS``); they start seed by seed, so that seed k of every arm trains
    alongside the others and shares the machine with them alike."""
    pending, runs = [], {}
    for seed in seeds:
        for arm, config, cfg_options in arms:
            run_dir = osp.join(work_dir, arm, f'seed{seed}')
            cmd = train_command(config, run_dir, epochs, data_root, cfg_options, seed)
            done = osp.join(run_dir, DONE)
            if reuse and osp.exists(done) and json.load(open(done))['command'] == cmd[1:]:
                wall = json.load(open(done))['wall']
                runs[arm, seed] = run_summary(Run(arm=arm, seed=seed, work_dir=run_dir, wall=wall))
                print(f'[compare] {arm}, seed {seed}: reusing the finished run in {run_dir}', flush=True)
            else:
                pending.append((Run(arm=arm, seed=seed, work_dir=run_dir), cmd))
    env = dict(os.environ)
    if jobs > 1:
        env['OMP_NUM_THREADS'] = str(max(1, (os.cpu_count() or 1) // jobs))
    running = []
    while pending or running:
        while pending and len(running) < jobs:
            run, cmd = pending.pop(0)
            print(f'[compare] {run.arm}, seed {run.seed}: {run.work_dir}', flush=True)
            os.makedirs(run.work_dir, exist_ok=True)
            log = open(osp.join(run.work_dir, 'compare_stdout.log'), 'w')
            running.append((run, cmd, log, time.time(),
                            subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)))
        time.sleep(0.2)
        for item in [r for r in running if r[-1].poll() is not None]:
            running.remove(item)
            run, cmd, log, t0, proc = item
            log.close()
            run.wall, run.ok = time.time() - t0, proc.returncode == 0
            runs[run.arm, run.seed] = run
            if run.ok:
                run_summary(run)
            if not run.ok:
                print(open(log.name).read()[-3000:], flush=True)
                print(f'[compare] {run.arm}, seed {run.seed} failed (exit {proc.returncode})', flush=True)
            else:
                with open(osp.join(run.work_dir, DONE), 'w') as f:  # complete: a later comparison may reuse it
                    json.dump(dict(command=cmd[1:], wall=run.wall), f)
                print(f'[compare] {run.arm}, seed {run.seed}: ' + '  '.join(
                    f'{METRICS[k]} {v:.3f}' for k, v in run.metrics.items()) + f'  {run.wall:.0f}s', flush=True)
    return [runs[arm, seed] for arm, _, _ in arms for seed in seeds]


def report(runs: List[Run], arms: Sequence[str], out: str, title: str, against: Optional[Sequence[str]] = None,
           command: str = '', labels: Optional[dict] = None) -> dict:
    """Write ``out``.md / .json / .png (and ``out``_arms.png for more than two arms, its rows labelled by
    ``labels[arm]``); return the summary."""
    summary = summarise(runs)
    arms = [a for a in arms if a in summary]
    lines = [f'# {title}', '', f'Command: `{command}`' if command else '', '', markdown_table(summary, arms), '']
    diffs = {}
    if against is not None and all(a in summary for a in against):
        ours, theirs = against
        lines += ['| quantity | ' + f'{ours} − {theirs}' + ' | 95% CI (Welch) |', '|---|---|---|']
        for key, name in METRICS.items():
            if key not in summary[ours] or key not in summary[theirs]:
                continue
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
        plot_arms({a: summary[a] for a in arms}, out + '_arms.png', title=title, labels=labels)
    print('\n'.join(lines), flush=True)
    return dict(summary=summary, differences=diffs)


def model_config(config: str, cfg_options: Sequence[str] = ()):
    """``config``'s model as every run trains it: the ``--cfg-options`` strings (``key=value``)
    parsed by tools/train.py's own option (:func:`~mmloss_ext.runner.add_runner_args`) and applied."""
    parser = add_runner_args(argparse.ArgumentParser())
    options = parser.parse_args(['--cfg-options', *cfg_options] if cfg_options else []).cfg_options
    return load_config(config, options).model


@quiet_pkg_resources()
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
    parser.add_argument('--jobs', type=int, default=1,
                        help='runs that train at a time, sharing the CPU cores equally (default 1)')
    parser.add_argument('--retrain', action='store_true',
                        help='train every run again (default: reuse a run that finished with the same command)')
    args = parser.parse_args(argv)
    seeds = list(range(args.seeds))
    command = 'python tools/compare.py ' + ' '.join(argv if argv is not None else sys.argv[1:])
    out = osp.join(args.work_dir, args.out)
    if args.jobs < 1:
        parser.error(f'--jobs must be at least 1, got {args.jobs}')
    common = dict(epochs=args.epochs, data_root=args.data_root, reuse=not args.retrain, jobs=args.jobs)
    runs: List[Run] = []
    if args.against_mmdet:
        if args.configs:
            parser.error('--against-mmdet takes one config, not a list')
        config = args.against_mmdet
        try:
            mmdet_options = mmdet_arm_options(model_config(config, args.cfg_options))
        except ValueError as err:
            parser.exit(2, f'compare.py: {err}\n')
        arms = ('mmloss_ext', 'mmdet')
        # the swap comes last: it also applies to a loss the --cfg-options set
        runs += train_arms([('mmloss_ext', config, args.cfg_options),
                            ('mmdet', config, [*args.cfg_options, *mmdet_options])], seeds, args.work_dir, **common)
        report(runs, arms, out, f'{variant_name(config)}: mmloss_ext losses vs mmdet losses, {len(seeds)} seeds',
               against=arms, command=command)
    else:
        configs = args.configs or sorted(glob.glob(osp.join(ROOT, 'configs', 'shapes', 'retinanet_*.py')))
        if not configs:
            parser.error('no configs to compare')
        arms = [variant_name(c) for c in configs]
        runs += train_arms([(arm, config, args.cfg_options) for arm, config in zip(arms, configs)], seeds,
                           args.work_dir, **common)
        labels = variant_labels({arm: model_config(config, args.cfg_options) for arm, config in zip(arms, configs)})
        report(runs, arms, out, f'{len(arms)} variants, {len(seeds)} seeds each', command=command, labels=labels)
    return runs


if __name__ == '__main__':
    sys.exit(0 if all(r.ok for r in main()) else 1)
