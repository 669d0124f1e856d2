"""Walk mmdet's model zoo (the configs mmdet ships in ``.mim/configs``) and collect its loss configs.

:func:`walk` parses every config with ``mmengine.Config.fromfile`` and collects every dict whose
``type`` is one of mmdet's loss types, wherever it sits in the merged config (heads, RoI heads,
cascade stages, RPN stages, trackers' detectors, ...). Match costs in assigners have their own
types (``FocalLossCost``, ...) and are not collected: only loss modules are.

Parsing some 870 configs takes half a minute (mostly their shared ``_base_`` files), so the walk
parses each base file once and keeps its result, and the whole walk is cached in a JSON file in the
temporary directory, keyed by everything it depends on: the mmdet and mmengine versions, this
file's source and every config file's path, size and modification time.
"""
from __future__ import annotations

import contextlib
import copy
import glob
import hashlib
import json
import os
import os.path as osp
import tempfile
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Tuple

import mmdet
import mmengine
from mmengine.config import Config

from mmdet_losses import MMDET_LOSS_TYPES
from mmloss_ext.probe import mmdet_root

CONFIG_ROOT = osp.join(mmdet_root(), 'configs')


@dataclass(frozen=True)
class LossUse:
    """One loss dict in one config."""
    config: str  # relative to CONFIG_ROOT
    path: Tuple[object, ...]  # keys from the config's root to the loss dict
    owner: str  # the ``type`` of the module dict holding the loss (the head), '' if none
    owner_num_classes: object  # that module's ``num_classes``, None if it has none
    cfg: dict  # the loss dict as the config writes it (without mmengine's ``_scope_`` marker)

    @property
    def type(self) -> str:
        return self.cfg['type'].split('.', 1)[-1]

    @property
    def key(self) -> str:
        return str(self.path[-1])


@dataclass
class Walk:
    configs: List[str]  # every config file, relative to CONFIG_ROOT
    failed: Dict[str, str]  # config -> why it does not parse
    uses: List[LossUse]
    foreign: List[LossUse] = field(default_factory=list)  # losses of other packages ('mmpretrain.X')


def _loss_type(value) -> str:
    """The mmdet loss type a ``type`` value names ('' if none): 'X' or 'mmdet.X'."""
    if not isinstance(value, str):
        return ''
    scope, _, name = value.rpartition('.')
    return name if scope in ('', 'mmdet') and name in MMDET_LOSS_TYPES else ''


def _collect(node, path, owner, rel, walk: Walk) -> None:
    if isinstance(node, dict):
        t = node.get('type')
        if _loss_type(t):
            cfg = {k: v for k, v in node.items() if k != '_scope_'}
            walk.uses.append(LossUse(rel, path, owner.get('type', ''), owner.get('num_classes'), cfg))
            return
        if isinstance(t, str) and '.' in t and t.rpartition('.')[2] in MMDET_LOSS_TYPES:
            walk.foreign.append(LossUse(rel, path, owner.get('type', ''), owner.get('num_classes'), dict(node)))
        inner = node if isinstance(t, str) else owner
        for k, v in node.items():
            _collect(v, path + (k,), inner, rel, walk)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _collect(v, path + (i,), owner, rel, walk)


@contextlib.contextmanager
def _base_files_parsed_once():
    """``Config._file2dict`` remembering each file's result (a deep copy per use): a base file is
    parsed once however many configs inherit it. Restored on exit."""
    original = Config.__dict__['_file2dict']
    parse = original.__func__
    done = {}

    def remembered(filename, *args, **kwargs):
        key = (osp.abspath(filename), args, tuple(sorted(kwargs.items())))
        if key not in done:
            try:
                done[key] = (True, parse(filename, *args, **kwargs))
            except Exception as err:  # noqa: BLE001  (re-raised for every config that inherits it)
                done[key] = (False, err)
        ok, value = done[key]
        if not ok:
            raise value
        return copy.deepcopy(value)

    Config._file2dict = staticmethod(remembered)
    try:
        yield
    finally:
        Config._file2dict = original


def config_files() -> List[str]:
    return sorted(osp.relpath(p, CONFIG_ROOT)
                  for p in glob.glob(osp.join(CONFIG_ROOT, '**', '*.py'), recursive=True))


def _fresh_walk(files: List[str]) -> Walk:
    walk = Walk(configs=files, failed={}, uses=[])
    with _base_files_parsed_once(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for rel in files:
            try:
                cfg = Config.fromfile(osp.join(CONFIG_ROOT, rel), import_custom_modules=False)
            except Exception as err:  # noqa: BLE001  (recorded: the walk reports why)
                walk.failed[rel] = f'{type(err).__name__}: {str(err).splitlines()[0][:300]}'
                continue
            _collect(cfg.to_dict(), (), {}, rel, walk)
    return walk


def _fingerprint(files: List[str]) -> str:
    h = hashlib.sha256()
    h.update(f'{mmdet.__version__} {mmengine.__version__}\n'.encode())
    with open(__file__, 'rb') as f:
        h.update(f.read())
    for rel in files:
        st = os.stat(osp.join(CONFIG_ROOT, rel))
        h.update(f'{rel} {st.st_size} {st.st_mtime_ns}\n'.encode())
    return h.hexdigest()[:20]


def _to_json(walk: Walk) -> dict:
    uses = lambda us: [[u.config, list(u.path), u.owner, u.owner_num_classes, u.cfg] for u in us]  # noqa: E731
    return dict(configs=walk.configs, failed=walk.failed, uses=uses(walk.uses), foreign=uses(walk.foreign))


def _from_json(data: dict) -> Walk:
    uses = lambda us: [LossUse(c, tuple(p), o, n, cfg) for c, p, o, n, cfg in us]  # noqa: E731
    return Walk(data['configs'], data['failed'], uses(data['uses']), uses(data['foreign']))


@lru_cache(maxsize=None)
def walk() -> Walk:
    """The walk of mmdet's model zoo: from the cache file when it matches, else parsed (and cached
    when the JSON round trip is exact, e.g. no tuples in a loss dict)."""
    files = config_files()
    cache = osp.join(tempfile.gettempdir(), f'mmloss_ext-model-zoo-{_fingerprint(files)}.json')
    try:
        with open(cache) as f:
            return _from_json(json.load(f))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    result = _fresh_walk(files)
    data = _to_json(result)
    if json.loads(json.dumps(data)) == data:
        tmp = f'{cache}.{os.getpid()}.tmp'
        with contextlib.suppress(OSError):
            with open(tmp, 'w') as f:
                json.dump(data, f)
            os.replace(tmp, cache)
    return result


@lru_cache(maxsize=None)
def models() -> Tuple[Tuple[str, object], ...]:
    """``(config, its model config)`` for every config of the zoo that parses and has a model (not
    cached on disk: a model config holds what JSON cannot; half a minute)."""
    found = []
    with _base_files_parsed_once(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for rel in config_files():
            try:
                cfg = Config.fromfile(osp.join(CONFIG_ROOT, rel), import_custom_modules=False)
            except Exception:  # noqa: BLE001  (walk() records why)
                continue
            if isinstance(cfg.get('model'), dict):
                found.append((rel, cfg.model))
    return tuple(found)
