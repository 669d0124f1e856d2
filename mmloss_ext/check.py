"""Catch the classic loss mistakes in an mmdet config before the first iteration.

``python -m mmloss_ext check CONFIG [--cfg-options k=v ...] [--json]`` loads the config, finds every
loss of the model (dense heads, RoI heads, cascade stages, RPN stages: every ``loss*`` key that
holds a dict with a ``type``), builds each one and reports:

* **error** -- a loss that takes decoded ``(x1, y1, x2, y2)`` boxes (the IoU family, NWD, ...)
  as the ``loss_bbox`` of a head that feeds it something else (regression deltas, DETR's
  normalised ``(cx, cy, w, h)``) with the config's ``reg_decoded_bbox``: what each of mmdet's heads
  feeds its ``loss_bbox`` with the switch absent, off and on was found by running it
  (:mod:`mmloss_ext.head_inputs`, :mod:`mmloss_ext.probe`); a head not in that table is run here,
  on this config's model (a **note** when that cannot run);
* **note** -- a plain name that resolves to mmdet's class while mmloss_ext has a class of that
  name (``type='GIoULoss'`` is mmdet's; ``mmloss_ext.GIoULoss`` is ours);
* **error** -- a segmentation loss whose ``reduction='none'`` output is not one value per sample
  (``LovaszLoss`` with ``per_image=False``: one value for the whole batch) as the loss of a head
  that calls it with ``reduction_override='none'`` to sum one loss per instance (SOLO, SOLOv2,
  CondInst, BoxInst);
* **error** -- an unknown type, with the closest registered names;
* **error** -- each hyper-parameter the build rejects (the loss's own message, and what the
  parameter takes).

It ends with a summary: how many losses it examined, the errors and the notes. Exit status: 0
when no loss has an error, 1 when one has, 2 when nothing was checked: the config (or one of its
``_base_`` files) cannot be read, it has no ``model``, or the model configures no loss (every
head keeps its built-in default). ``tools/train.py`` runs the check first.
"""
from __future__ import annotations

import argparse
import functools
import inspect
import json
import re
import sys
from dataclasses import asdict, dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

from .core.errors import Problem, closest
from .quiet import quiet_pkg_resources

__all__ = ['Finding', 'check_config', 'check_model', 'load_config', 'loss_dicts', 'main']

PROG = 'python -m mmloss_ext check'
#: the exit status when nothing was checked (no config, no model, no loss)
NOTHING_CHECKED = 2
SCOPE = 'mmloss_ext.'
#: the key a head's ``reg_decoded_bbox`` switch governs
SWITCHED_KEY = 'loss_bbox'


@dataclass(frozen=True)
class Finding:
    """One problem (``level='error'``) or remark (``'note'``) about one loss of a config."""
    level: str
    path: str
    loss: str
    message: str
    fix: str = ''

    def __str__(self) -> str:
        text = f'[{self.level}] {self.path} ({self.loss}): {self.message}'
        return text + (f'\n        fix: {self.fix}' if self.fix else '')


def _registries():
    import mmloss_ext  # noqa: F401  (registers the losses)
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmdet.utils import register_all_modules
    from mmloss_ext.registry import MODELS
    register_all_modules(init_default_scope=False)
    return MODELS, MMDET_MODELS


def loss_dicts(node, path: str, parent=None) -> Iterator[Tuple[str, dict, Optional[dict], str]]:
    """``(path, loss dict, the dict that holds it, its key)`` for every ``loss*`` entry below ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            where = f'{path}.{key}'
            if isinstance(key, str) and key.startswith('loss') and isinstance(value, dict) and 'type' in value:
                yield where, value, node, key
            else:
                yield from loss_dicts(value, where, node)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from loss_dicts(value, f'{path}[{i}]', parent)


def _resolve(type_, ours, mmdet) -> Tuple[Optional[type], List[Finding], str]:
    """The class a loss ``type`` builds, the findings about the name, and its display name."""
    if inspect.isclass(type_):
        return type_, [], type_.__name__
    name = str(type_)
    if name.startswith(SCOPE):
        short = name[len(SCOPE):]
        if short in ours.module_dict:
            return ours.module_dict[short], [], name
        hint = closest(short, ours.module_dict)
        return None, [('error', f'unknown type {name!r}: mmloss_ext registers no {short!r}',
                       f'did you mean {", ".join(SCOPE + h for h in hint)}?' if hint else
                       'see `python -m mmloss_ext list` for the catalogue')], name
    scope, _, short = name.rpartition('.')
    if scope and scope not in ('mmdet', SCOPE[:-1]) and not _scope_available(scope):
        return None, [('note', f'{name!r} is in the registry of {scope!r}, which is not installed here: not checked',
                       '')], name
    cls = mmdet.get(name)
    if cls is None:
        known = [SCOPE + n for n in ours.module_dict] + [n for n in mmdet.module_dict if 'Loss' in n or n[:3] == 'GHM']
        hint = closest(name, known)
        return None, [('error', f'unknown type {name!r}: no registry has it',
                       f'did you mean {", ".join(hint)}?' if hint else 'check the spelling')], name
    findings = []
    if not cls.__module__.startswith('mmloss_ext') and name in ours.module_dict:
        findings.append(('note', f"type='{name}' is mmdet's {name}; mmloss_ext has its own",
                         f"write type='{SCOPE}{name}' for mmloss_ext's"))
    return cls, findings, name


def _scope_available(scope: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(scope) is not None


def takes_decoded_boxes(cls: type, ours) -> bool:
    """Whether a loss class takes decoded boxes: mmloss_ext's box family, or a class of another
    registry whose name is one of that family's."""
    if getattr(cls, 'family', None) == 'bbox' and cls.__module__.startswith('mmloss_ext'):
        return True
    other = ours.module_dict.get(cls.__name__)
    return other is not None and getattr(other, 'family', None) == 'bbox'


#: keywords a head removes from its loss config before building it (DETR's ``bg_cls_weight``)
HEAD_POPPED_KEYS = ('bg_cls_weight',)
#: what each kind of ``loss_bbox`` input is called in a finding (see :mod:`mmloss_ext.probe`)
_INPUT_NAMES = {'encoded': 'the regression deltas', 'cxcywh': 'normalised (cx, cy, w, h) boxes'}


def _model_probe(model: dict):
    """What every ``loss_bbox`` of ``model`` receives (:func:`mmloss_ext.probe.probe_model`), or the
    reason it could not be run."""
    from .probe import error_line, probe_model
    try:
        return probe_model(model), ''
    except Exception as err:  # noqa: BLE001  (reported as a note: the probe is the checker's own)
        return None, error_line(err)


def _head_class(head: dict, mmdet) -> Optional[type]:
    """The class of the head config ``head`` (its ``type``: a class, or a name in mmdet's registry)."""
    head_type = head.get('type')
    return head_type if inspect.isclass(head_type) else mmdet.get(head_type) if head_type else None


def _decoded_box_findings(path: str, key: str, name: str, cls: type, head: Optional[dict], head_path: str,
                          ours, mmdet, probe_config) -> List[Finding]:
    """An error when ``loss_bbox`` takes decoded boxes and its head feeds it something else, from
    the table of what mmdet's heads feed their ``loss_bbox`` (:mod:`mmloss_ext.head_inputs`, found by
    running each head); for a head the table lacks, from running this config's model
    (``probe_config()``), else a note that it could not be told."""
    from .head_inputs import HEAD_INPUTS
    from .probe import SETTINGS
    if key != SWITCHED_KEY or head is None or not takes_decoded_boxes(cls, ours):
        return []
    head_cls = _head_class(head, mmdet)
    if head_cls is None:
        return []
    head_name = head_cls.__name__
    setting = head.get('reg_decoded_bbox', 'absent')
    how = f'with reg_decoded_bbox={setting}' if setting != 'absent' else 'with reg_decoded_bbox absent'
    inputs = HEAD_INPUTS.get(head_name)
    if inputs is not None:
        kind = inputs[SETTINGS.index(setting)] if setting in SETTINGS else None
        if inputs[1:] == (None, None):
            kind, how = inputs[0], '(it has no reg_decoded_bbox switch)'
        elif kind is None:  # its build refuses this value: what it does without one
            kind, how = inputs[0], f'(it refuses reg_decoded_bbox={setting})'
        switch_fixes = setting is not True and inputs[SETTINGS.index(True)] == 'boxes'
    else:
        probe, why = probe_config()
        kind = probe.kinds.get(path.rsplit('.', 1)[0]) if probe is not None else None
        if kind is None:
            return [Finding('note', path, name,
                            f'could not tell whether {head_name} feeds its {key} decoded boxes: it is not one of '
                            f"the mmdet heads mmloss_ext has probed, and running this model's loss "
                            + (f'failed ({why})' if why else 'never called it with a positive box'), '')]
        switch_fixes = False
    if kind not in _INPUT_NAMES:  # decoded boxes, or a loss the head never calls
        return []
    if switch_fixes:
        fix = f'set reg_decoded_bbox=True in {head_path}'
    else:
        fix = f'use a regression loss on {"deltas" if kind == "encoded" else "those"} (e.g. {SCOPE}SmoothL1Loss, ' \
              f'{SCOPE}L1Loss) in {head_path}'
        from .probe import constructor_params
        if 'loss_iou' in constructor_params(head_cls)[0]:
            fix += f'; {head_name} takes an IoU loss as its loss_iou'
    return [Finding('error', path, name,
                    f'{name} takes decoded (x1, y1, x2, y2) boxes, but {head_name} feeds its {key} '
                    f'{_INPUT_NAMES[kind]} {how}: the loss sees them as boxes (AP collapses, or NaN)', fix)]


#: the methods in which mmdet's heads call their losses
_LOSS_METHODS = ('loss_by_feat', 'loss_by_feat_single', 'loss_and_target')


def _source(fn) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return ''


@functools.lru_cache(maxsize=None)
def head_calls_per_instance(head_cls: type, key: str) -> bool:
    """Whether a head's loss code calls ``self.<key>(..., reduction_override='none')`` (and so
    reduces the per-sample losses itself)."""
    call = re.compile(r'self\.' + re.escape(key) + r'\((?:[^()]|\([^()]*\))*?reduction_override\s*=\s*[\'"]none[\'"]')
    for method in _LOSS_METHODS:
        fn = getattr(head_cls, method, None)
        if fn is not None and call.search(_source(fn)):
            return True
    return False


def _per_instance_findings(path: str, key: str, name: str, loss, head: Optional[dict], mmdet) -> List[Finding]:
    if getattr(loss, 'family', None) != 'segmentation' or head is None:
        return []
    head_cls = _head_class(head, mmdet)
    if head_cls is None or not head_calls_per_instance(head_cls, key):
        return []
    import torch
    pred = torch.linspace(-2.0, 2.0, 2 * 3 * 3).view(2, 3, 3)
    out = loss(pred, (pred > 0).float(), reduction_override='none')  # two instance masks
    if out.dim() >= 1 and out.shape[0] == 2:
        return []
    return [Finding('error', path, name,
                    f"{name} returns shape {tuple(out.shape)} for two instance masks with reduction 'none', "
                    f"but {head_cls.__name__} calls its {key} with reduction_override='none' and sums one loss "
                    f'per instance',
                    f'configure {name} for one loss per sample (LovaszLoss: per_image=True) in {path}')]


def check_model(model: dict, *, path: str = 'model') -> List[Finding]:
    """The findings for every loss of an mmdet model config (a dict or ``ConfigDict``)."""
    ours, mmdet = _registries()
    findings: List[Finding] = []
    # the model's probe, run once and only for a head the table lacks
    probe_config = functools.lru_cache(maxsize=None)(functools.partial(_model_probe, model))

    for where, loss_cfg, head, key in loss_dicts(model, path):
        cls, named, name = _resolve(loss_cfg['type'], ours, mmdet)
        findings += [Finding(level, where, name, msg, fix) for level, msg, fix in named]
        if cls is None:
            continue
        try:
            kwargs = {k: v for k, v in dict(loss_cfg).items() if k != 'type' and k not in HEAD_POPPED_KEYS}
            loss = cls(**kwargs)
        except (TypeError, ValueError, KeyError, NotImplementedError) as err:
            # mmloss_ext's losses report every bad hyper-parameter at once, each with what it takes
            problems = getattr(err, 'problems', None) or [Problem(None, err)]
            findings += [Finding('error', where, name, f'the build rejects this config: {p.error}', p.fix)
                         for p in problems]
            continue
        head_path = where.rsplit('.', 1)[0]
        findings += _decoded_box_findings(where, key, name, cls, head, head_path, ours, mmdet, probe_config)
        findings += _per_instance_findings(where, key, name, loss, head, mmdet)
    return findings


def load_config(config: str, cfg_options: Optional[dict] = None):
    """An mmdet config, loaded (``custom_imports`` honoured) with its overrides, its default scope
    made the current one. ``OSError`` (``FileNotFoundError``, ...) when it or a base cannot be read."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    return cfg


def check_config(config: str, cfg_options: Optional[dict] = None) -> List[Finding]:
    """Load an mmdet config (:func:`load_config`) and check its model's losses."""
    return check_model(load_config(config, cfg_options).get('model', {}))


@quiet_pkg_resources()
def main(argv: Optional[Sequence[str]] = None) -> int:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        prog=PROG, description='Check the losses of an mmdet config before training.',
        epilog='exit status: 0 no error, 1 an error, 2 nothing checked (no readable config, no model, no loss)')
    parser.add_argument('config')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override settings, key=value')
    parser.add_argument('--json', action='store_true', help='print the findings as JSON')
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.cfg_options)
    except OSError as err:
        what = f'{err.strerror}: {err.filename!r}' if err.strerror and err.filename else str(err)
        print(f'{PROG}: cannot read the config: {what}', file=sys.stderr)
        return NOTHING_CHECKED
    model = cfg.get('model')
    examined = len(list(loss_dicts(model, 'model'))) if isinstance(model, dict) else 0
    if not examined:
        why = ('the model configures no loss (no `loss*` key with a `type`: its heads keep their built-in ones)'
               if isinstance(model, dict) else 'the config has no `model`')
        if args.json:
            print('[]')
        print(f'{args.config}: {why}: nothing checked', file=sys.stderr if args.json else sys.stdout)
        return NOTHING_CHECKED
    findings = check_model(model)
    errors = [f for f in findings if f.level == 'error']
    if args.json:
        print(json.dumps([asdict(f) for f in findings], indent=1))
    else:
        for f in findings:
            print(f)
        losses = f'{examined} loss{"es" if examined > 1 else ""}'
        print(f'{args.config}: {losses} examined, {len(errors)} error(s), {len(findings) - len(errors)} note(s)')
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main())
