"""Seed-averaged training experiments: run a config over several seeds, summarise, compare two arms.

The pieces ``tools/compare.py`` is made of:

* :func:`mmdet_arm_options` -- the ``--cfg-options`` that turn every ``mmloss_ext.X`` loss of a config
  into mmdet's own ``X`` with the same keywords (a clear refusal for losses mmdet lacks, or for
  keywords mmdet's class does not take);
* :func:`run_summary` -- what one finished run logged: the COCO metrics of the last validation
  (segm and bbox mAP, mAP@0.5, mAP@0.75, those it has), the final training losses and the mean
  time per iteration;
* :func:`summarise` -- mean ± std per arm and metric;
* :func:`difference` -- the difference of two arms' means with Welch's 95% confidence interval;
* :func:`markdown_table` -- the published table.
"""
from __future__ import annotations

import inspect
import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

from .check import SCOPE, loss_dicts
from .viz import MAP_KEYS, SEGM_MAP_KEYS, load_scalars

__all__ = ['Run', 'mmdet_arm_options', 'run_summary', 'logged_metrics', 'summarise', 'difference', 'markdown_table',
           'variant_labels', 'METRICS']

#: the validation metrics reported (mmdet's COCO metric keys) and their short names, in table order;
#: a comparison reports those its runs logged (detectors: bbox; instance segmentation: segm and bbox)
METRICS = dict(zip(SEGM_MAP_KEYS + MAP_KEYS, ('segm mAP', 'segm mAP@0.5', 'segm mAP@0.75', 'bbox mAP', 'mAP@0.5',
                                               'mAP@0.75')))


@dataclass
class Run:
    """One training run: its arm, seed, work dir and what it logged."""
    arm: str
    seed: int
    work_dir: str
    ok: bool = True
    metrics: Dict[str, float] = field(default_factory=dict)
    losses: Dict[str, float] = field(default_factory=dict)
    time_per_iter: float = float('nan')
    iters: int = 0
    wall: float = float('nan')

    def as_dict(self) -> dict:
        return asdict(self)


def mmdet_arm_options(model_cfg, path: str = 'model') -> List[str]:
    """``--cfg-options`` (``key=value`` strings) that replace every ``mmloss_ext.X`` loss type of a
    model config by mmdet's ``X``, keywords unchanged.

    Raises:
        ValueError: for a loss mmdet does not register, or a keyword mmdet's class does not take
            (the comparison would not be of the same loss), naming each.
    """
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    options, refused = [], []
    for where, loss_cfg, _, _ in loss_dicts(model_cfg, path):
        type_ = loss_cfg['type']
        if not (isinstance(type_, str) and type_.startswith(SCOPE)):
            continue
        name = type_[len(SCOPE):]
        cls = MMDET_MODELS.module_dict.get(name)
        if cls is None or not cls.__module__.startswith('mmdet.'):  # (mmloss_ext adds names mmdet lacks)
            refused.append(f'{where}: mmdet has no {name}')
            continue
        accepted = set(inspect.signature(cls).parameters)
        extra = sorted(k for k in loss_cfg if k != 'type' and k not in accepted)
        if extra:
            refused.append(f'{where}: mmdet\'s {name} takes no {", ".join(extra)}')
            continue
        options.append(f'{_option_key(where)}.type={name}')
    if refused:
        raise ValueError('cannot build the mmdet arm: ' + '; '.join(refused))
    return options


def _option_key(path: str) -> str:
    """``model.roi_head.bbox_head[1].loss_bbox`` -> ``model.roi_head.bbox_head.1.loss_bbox`` (mmengine's form)."""
    return path.replace('[', '.').replace(']', '')


def variant_labels(model_cfgs: Dict[str, dict]) -> Dict[str, str]:
    """``{arm: label}`` naming each arm by its model's losses, in config order, each type without its
    scope and a trailing ``Loss`` (``'Focal + GIoU'``); the arm's name follows where two arms would
    share a label.

    Example:
        >>> retina = lambda cls, box: dict(bbox_head=dict(loss_cls=dict(type=cls), loss_bbox=dict(type=box)))
        >>> variant_labels({'a': retina('mmloss_ext.FocalLoss', 'mmloss_ext.GIoULoss'),
        ...                 'b': retina('mmloss_ext.GHMC', 'GIoULoss'), 'c': retina('mmloss_ext.GHMC', 'GIoULoss')})
        {'a': 'Focal + GIoU', 'b': 'GHMC + GIoU (b)', 'c': 'GHMC + GIoU (c)'}
    """
    labels = {}
    for arm, model_cfg in model_cfgs.items():
        names = []
        for _, loss_cfg, _, _ in loss_dicts(model_cfg, 'model'):
            type_ = loss_cfg['type']
            name = type_.__name__ if inspect.isclass(type_) else str(type_).rpartition('.')[2]
            names.append(name[:-len('Loss')] if name.endswith('Loss') and name != 'Loss' else name)
        labels[arm] = ' + '.join(dict.fromkeys(names)) or arm
    counts = {label: list(labels.values()).count(label) for label in labels.values()}
    return {arm: label if counts[label] == 1 else f'{label} ({arm})' for arm, label in labels.items()}


def is_loss_key(key: str) -> bool:
    """Whether a logged scalar is a loss term: ``loss``, ``loss_cls``, ... and the per-stage terms that
    cascades log with a stage prefix (``s0.loss_rpn_reg``, ``s1.loss_cls``)."""
    return key.split('.')[-1].startswith('loss')


def run_summary(run: Run) -> Run:
    """Fill ``run`` from its work dir's scalar log (``ok=False`` when nothing was logged)."""
    try:
        train, val = load_scalars(run.work_dir)
    except FileNotFoundError:
        run.ok = False
        return run
    if not train or not val:
        run.ok = False
        return run
    run.metrics = {k: float(val[-1][k]) for k in METRICS if k in val[-1]}
    run.losses = {k: float(v) for k, v in train[-1].items() if is_loss_key(k)}
    times = [r['time'] for r in train if 'time' in r]
    run.time_per_iter = statistics.fmean(times[1:] if len(times) > 1 else times) if times else float('nan')
    run.iters = int(train[-1].get('iter', 0))
    return run


def _mean_std(values: Sequence[float]):
    values = [v for v in values if v == v]
    if not values:
        return float('nan'), float('nan'), 0
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def logged_metrics(runs: Iterable[Run]) -> List[str]:
    """The :data:`METRICS` that at least one of ``runs`` logged, in :data:`METRICS` order."""
    runs = list(runs)
    return [k for k in METRICS if any(k in r.metrics for r in runs)]


def summarise(runs: Iterable[Run]) -> Dict[str, Dict[str, dict]]:
    """``{arm: {quantity: {mean, std, n, values}}}`` over the successful runs of each arm; the
    quantities are the :data:`METRICS` the runs logged, ``time_per_iter`` and each final loss."""
    arms: Dict[str, List[Run]] = {}
    for run in runs:
        if run.ok:
            arms.setdefault(run.arm, []).append(run)
    metrics = logged_metrics(r for rs in arms.values() for r in rs)
    out = {}
    for arm, rs in arms.items():
        quantities = {k: [r.metrics.get(k, float('nan')) for r in rs] for k in metrics}
        quantities['time_per_iter'] = [r.time_per_iter for r in rs]
        for key in sorted({k for r in rs for k in r.losses}):
            quantities[key] = [r.losses.get(key, float('nan')) for r in rs]
        out[arm] = {}
        for key, values in quantities.items():
            mean, std, n = _mean_std(values)
            out[arm][key] = dict(mean=mean, std=std, n=n, values=values)
    return out


def difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict:
    """``mean(a) - mean(b)`` with Welch's ``confidence`` interval (unequal variances).

    Example:
        >>> d = difference([0.60, 0.62, 0.61], [0.59, 0.60, 0.61])
        >>> round(d['diff'], 3), round(d['low'], 3), round(d['high'], 3)
        (0.01, -0.013, 0.033)
    """
    from scipy import stats
    a = [v for v in a if v == v]
    b = [v for v in b if v == v]
    ma, sa, na = _mean_std(a)
    mb, sb, nb = _mean_std(b)
    diff = ma - mb
    if na < 2 or nb < 2:
        return dict(diff=diff, low=float('nan'), high=float('nan'), df=float('nan'), confidence=confidence)
    va, vb = sa * sa / na, sb * sb / nb
    se = math.sqrt(va + vb)
    if se == 0:
        return dict(diff=diff, low=diff, high=diff, df=float(na + nb - 2), confidence=confidence)
    df = (va + vb) ** 2 / (va * va / (na - 1) + vb * vb / (nb - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    return dict(diff=diff, low=diff - half, high=diff + half, df=df, confidence=confidence)


def _fmt(cell: dict, digits: int = 3, scale: float = 1.0) -> str:
    if cell['n'] == 0:
        return '—'
    return f'{cell["mean"] * scale:.{digits}f} ± {cell["std"] * scale:.{digits}f}'


def markdown_table(summary: Dict[str, Dict[str, dict]], arms: Optional[Sequence[str]] = None,
                   losses: bool = True) -> str:
    """One row per arm: n, the metrics (mean ± std), time per iteration (ms) and the final losses."""
    arms = list(arms or summary)
    loss_keys = sorted({k for a in arms for k in summary[a] if is_loss_key(k)}) if losses else []
    metrics = [k for k in METRICS if any(k in summary[a] for a in arms)]
    head = ['arm', 'runs', *(METRICS[k] for k in metrics), 'ms / iter', *(f'final {k}' for k in loss_keys)]
    rows = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for arm in arms:
        s = summary[arm]
        n = s[metrics[0]]['n'] if metrics and metrics[0] in s else s['time_per_iter']['n']
        cells = [arm, str(n), *(_fmt(s[k]) if k in s else '—' for k in metrics), _fmt(s['time_per_iter'], 0, 1e3),
                 *(_fmt(s[k], 4) if k in s else '—' for k in loss_keys)]
        rows.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(rows)
