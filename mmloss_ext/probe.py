"""What a head's ``loss_bbox`` receives, found by running the head: regression deltas or boxes.

An IoU-family loss needs decoded ``(x1, y1, x2, y2)`` boxes. Whether a head gives its ``loss_bbox``
boxes, deltas or something else (DETR's normalised ``(cx, cy, w, h)``) depends on the head's code
and, for most heads, on its ``reg_decoded_bbox`` switch. Reading the code for markers misses
cases (a decode that happens only when the switch is on looks like a decode); running it does not.

:func:`probe_model` builds a detector from its config, wraps every ``loss_bbox`` module in a
:class:`RecordingLoss` (which records its inputs and returns what the wrapped loss returns), runs
the detector's training loss once on a synthetic batch (a random image with known ground-truth
boxes, and proposals, masks and a semantic map for the detectors that need them) and classifies
the target boxes the loss received (:func:`classify_targets`):

* ``'boxes'``: every positive target row is a box ``(x1, y1, x2, y2)``, most with the shape of a
  ground-truth box up to a positive scale (heads that regress in units of the stride, or of the
  image size, about a point or the origin);
* ``'cxcywh'``: every positive row is a ground-truth box as ``(cx, cy, w, h)``, scaled likewise;
* ``'encoded'``: neither (deltas, log-space offsets, distances);
* ``'unused'``: the head never calls it (or builds none).

``tools/probe_heads.py`` runs it over mmdet's registered heads, each with the switch absent, off
and on, and writes the table :mod:`mmloss_ext.head_inputs` that ``python -m mmloss_ext check``
reads; ``tests/test_probe.py`` runs it again and compares.
"""
from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = ['BOXES', 'CXCYWH', 'ENCODED', 'GT_BOXES', 'RecordingLoss', 'Probe', 'classify_targets',
           'no_checkpoint_loading', 'probe_model', 'synthetic_batch']

#: the kinds of input a loss_bbox can receive (see the module docstring); UNUSED: never called
BOXES, CXCYWH, ENCODED, UNUSED = 'boxes', 'cxcywh', 'encoded', 'unused'

#: the synthetic batch: one 320 x 320 image and its ground-truth boxes (x1, y1, x2, y2) of sizes from
#: 62 to 238 px: every coordinate non-zero, no box (nor its (cx, cy, w, h) form) proportional to another
IMAGE_SIZE = 320
GT_BOXES = [[33., 41., 161., 122.], [151., 98., 299., 287.], [61., 179., 127., 301.], [19., 23., 139., 263.],
            [201., 29., 263., 113.]]


class RecordingLoss(nn.Module):
    """Wraps a built loss: records ``(target, weight)`` of every call in ``calls`` (detached
    copies; the verdict reads the targets alone) and returns the wrapped loss's result. Attributes
    it does not have are the wrapped loss's (heads read ``loss_weight``, ``beta``, ...)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.calls: List[Tuple[Tensor, Optional[Tensor]]] = []

    def forward(self, pred, target, weight=None, *args, **kwargs):
        self.calls.append((target.detach().clone(),
                           None if not isinstance(weight, Tensor) else weight.detach().clone()))
        return self.inner(pred, target, weight, *args, **kwargs)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules['inner'], name)


def _proportional(rows: Tensor, refs: Tensor, rtol: float) -> Tensor:
    """Whether each of ``rows`` (R, 4) equals one of ``refs`` (G, 4) times ``(sx, sy, sx, sy)`` for
    some ``sx, sy > 0``."""
    r, g = rows[:, None, :].double(), refs[None, :, :].double()
    sx = (r[..., 0] + r[..., 2]) / (g[..., 0] + g[..., 2])
    sy = (r[..., 1] + r[..., 3]) / (g[..., 1] + g[..., 3])
    scale = torch.stack([sx, sy, sx, sy], -1)
    close = ((r - g * scale).abs() <= rtol * r.abs().clamp(min=1e-6)).all(-1)
    return (close & (sx > 0) & (sy > 0)).any(-1)


def _same_shape(rows: Tensor, refs: Tensor, rtol: float) -> Tensor:
    """Whether each of ``rows`` (R, 4) is a box ``(x1, y1, x2, y2)`` with the shape of one of ``refs``:
    width and height a positive multiple ``s`` of that box's (placed anywhere). FCOS and
    CenterNet decode targets in units of the stride about each point: the same box, scaled about
    the point, which is as good a box for an IoU loss (IoU does not change)."""
    r, g = rows[:, None, :].double(), refs[None, :, :].double()
    w, h = r[..., 2] - r[..., 0], r[..., 3] - r[..., 1]
    gw, gh = g[..., 2] - g[..., 0], g[..., 3] - g[..., 1]
    s = (w + h) / (gw + gh)
    close = ((w - s * gw).abs() <= rtol * w.abs()) & ((h - s * gh).abs() <= rtol * h.abs())
    return (close & (w > 0) & (h > 0)).any(-1)


def _cxcywh(boxes: Tensor) -> Tensor:
    return torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], -1)


#: at most this fraction of encoded rows may match a box by chance (FSAF's normalised distances to the
#: box edges lie on a grid of sixteenths)
CHANCE_MATCHES = 0.1


def classify_targets(target: Tensor, weight: Optional[Tensor], gt_boxes: Tensor, rtol: float = 1e-3) -> Optional[str]:
    """The kind of the target a loss received, judged on the rows that count (all, or those of
    positive weight; None if none does): :data:`BOXES` when every row is a box ``x1 < x2, y1 < y2``
    and most have a ground-truth box's shape (CenterNet's targets for points near an edge are the
    part of the box the point sees), :data:`CXCYWH` when every row is a ground-truth box in that form,
    :data:`ENCODED` when at most :data:`CHANCE_MATCHES` of them match either, else ``'mixed'``.
    (A zero row of positive weight is a delta: the box a perfect proposal regresses to.)

    Example:
        >>> gt = torch.tensor([[10., 20., 50., 80.], [30., 30., 90., 40.]])
        >>> classify_targets(gt[[1, 0]] / 8, None, gt), classify_targets(torch.randn(2, 4), None, gt)
        ('boxes', 'encoded')
    """
    if target.shape[-1] != 4:
        return ENCODED
    rows = target.reshape(-1, 4)
    if weight is not None and rows.shape[0] and weight.numel() % rows.shape[0] == 0:
        rows = rows[(weight.reshape(rows.shape[0], -1) > 0).any(-1)]
    if not len(rows):
        return None
    gt = gt_boxes.to(rows.device)
    xyxy, cxcywh = _same_shape(rows, gt, rtol), _proportional(rows, _cxcywh(gt), rtol)
    is_box = (rows[:, 2] > rows[:, 0]) & (rows[:, 3] > rows[:, 1])
    if is_box.all() and xyxy.float().mean() >= 0.5:
        return BOXES
    if cxcywh.all():
        return CXCYWH
    if (xyxy | cxcywh).float().mean() <= CHANCE_MATCHES:
        return ENCODED
    return 'mixed'


def synthetic_batch(segmentation: bool = False) -> dict:
    """What a detector's ``data_preprocessor`` takes: one random image with the boxes :data:`GT_BOXES`
    (label 0) and proposals (each box jittered, for detectors trained on precomputed proposals);
    with ``segmentation``, also the boxes' masks and an all-background semantic map (instance and
    semantic heads need them; some detection assigners change their ways when masks are present)."""
    import numpy as np
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData, PixelData

    gen = torch.Generator().manual_seed(0)
    size = IMAGE_SIZE
    boxes = torch.tensor(GT_BOXES)
    sample = DetDataSample(metainfo=dict(img_id=0, img_path='probe.jpg', ori_shape=(size, size), img_shape=(size, size),
                                         pad_shape=(size, size), scale_factor=(1.0, 1.0), flip=False,
                                         flip_direction=None))
    sample.gt_instances = InstanceData(bboxes=boxes, labels=torch.zeros(len(boxes), dtype=torch.long))
    sample.ignored_instances = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
    if segmentation:
        masks = np.zeros((len(boxes), size, size), dtype=np.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
            masks[k, y1:y2, x1:x2] = 1
        sample.gt_instances.masks = BitmapMasks(masks, size, size)
        sample.gt_sem_seg = PixelData(sem_seg=torch.zeros(1, size, size, dtype=torch.long))
    jitter = boxes.repeat(8, 1) + torch.randn(8 * len(boxes), 4, generator=gen) * 6
    sample.proposals = InstanceData(bboxes=jitter.clamp(0, size - 1), scores=torch.rand(len(jitter), generator=gen))
    image = torch.randint(0, 256, (3, size, size), generator=gen, dtype=torch.uint8)
    return dict(inputs=[image], data_samples=[sample])


@contextlib.contextmanager
def _inside(path: str) -> Iterator[None]:
    """The working directory ``path`` for the block (``contextlib.chdir`` is Python 3.11's)."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def no_checkpoint_loading(loaded: Optional[List[str]] = None) -> Iterator[None]:
    """Building a model loads no checkpoint inside the block (LD's and LAD's detectors load their
    teacher's weights in their constructor, from a download URL): mmengine's checkpoint loader
    records the file or URL in ``loaded`` and returns an empty state dict."""
    from mmengine.runner.checkpoint import CheckpointLoader
    original = CheckpointLoader.__dict__['load_checkpoint']

    def record(cls, filename, map_location=None, logger='current'):
        if loaded is not None:
            loaded.append(filename)
        return {}

    CheckpointLoader.load_checkpoint = classmethod(record)
    try:
        yield
    finally:
        CheckpointLoader.load_checkpoint = original


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """No INFO or WARNING records and no printing inside the block (mmengine's report of every
    parameter's initialisation, and of the keys an empty checkpoint lacks, which it prints when no
    logger is given)."""
    import logging
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with open(os.devnull, 'w') as sink, contextlib.redirect_stdout(sink):
            yield
    finally:
        logging.disable(previous)


@dataclass
class Probe:
    """What each ``loss_bbox`` of one built detector received: ``{module path: kind}`` (None: the
    loss was never called with a positive row), ``{module path: head class name}``, and the class
    names of every module of the detector (a head may take a ``loss_bbox`` and build none)."""
    kinds: Dict[str, Optional[str]] = field(default_factory=dict)
    heads: Dict[str, str] = field(default_factory=dict)
    classes: set = field(default_factory=set)


def _config_path(module_path: str) -> str:
    """``roi_head.bbox_head.1`` -> ``model.roi_head.bbox_head[1]`` (the checker's paths)."""
    out = 'model'
    for part in module_path.split('.'):
        out += f'[{part}]' if part.isdigit() else f'.{part}'
    return out


def _wrap_box_losses(model: nn.Module) -> Dict[str, Tuple[str, RecordingLoss]]:
    """Wrap every module's ``loss_bbox`` in a :class:`RecordingLoss`: ``{module path: (its class, recorder)}``."""
    recorders = {}
    for name, module in list(model.named_modules()):
        loss = getattr(module, 'loss_bbox', None)
        if isinstance(loss, nn.Module) and not isinstance(loss, RecordingLoss):
            recorders[name] = (type(module).__name__, RecordingLoss(loss))
            module.loss_bbox = recorders[name][1]
    return recorders


def _run_loss(model: nn.Module, recorders: Dict[str, Tuple[str, RecordingLoss]]) -> None:
    """The training loss of ``model`` on :func:`synthetic_batch`: without masks, else (an instance or
    panoptic segmenter) with them."""
    preprocessor = model.data_preprocessor
    if getattr(preprocessor, 'batch_augments', None):
        preprocessor.batch_augments = None  # random resizing: the boxes stay as given
    model.train()
    from mmengine.logging import MessageHub
    hub = MessageHub.get_current_instance()
    previous = {key: hub.get_info(key) for key in ('epoch', 'iter')}
    hub.update_info_dict(dict(epoch=0, iter=0))  # what a runner sets: TOOD's head reads the epoch
    try:
        with torch.no_grad():
            try:
                model(**preprocessor(synthetic_batch(), True), mode='loss')
            except Exception:  # noqa: BLE001  (tried again with masks; a second failure is raised)
                for _, recorder in recorders.values():
                    recorder.calls.clear()
                model(**preprocessor(synthetic_batch(segmentation=True), True), mode='loss')
    finally:
        hub.update_info_dict(previous)


def probe_model(model_cfg, *, workdir: Optional[str] = None) -> Probe:
    """Build the detector of ``model_cfg`` (no checkpoint loaded), run its training loss once on
    :func:`synthetic_batch` and classify what each ``loss_bbox`` received (:func:`classify_targets`).

    ``workdir``: the directory to build in (mmdet's LD config names its teacher's config by a path
    relative to mmdet's source tree, whose ``configs/`` mmdet ships in ``mmdet/.mim``).
    """
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = copy.deepcopy(model_cfg)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    with contextlib.ExitStack() as stack:
        stack.callback(torch.random.set_rng_state, gen_state)
        stack.enter_context(no_checkpoint_loading())
        stack.enter_context(_quiet_logging())
        if workdir:
            stack.enter_context(_inside(workdir))
        model = MODELS.build(cfg)
        try:  # the heads' own initialisation (a pretrained backbone's file is not read)
            model.init_weights()
        except (TypeError, ValueError, KeyError):
            pass  # GuidedAnchorHead's default init_cfg misspells an argument: torch's initialisation stays
        _run_loss(model, recorders := _wrap_box_losses(model))
    gt = torch.tensor(GT_BOXES)
    probe = Probe(classes={type(module).__name__ for module in model.modules()})
    for name, (head, recorder) in recorders.items():
        kinds = {classify_targets(target, weight, gt) for target, weight in recorder.calls} - {None}
        path = _config_path(name)
        probe.heads[path] = head
        probe.kinds[path] = (kinds.pop() if len(kinds) == 1 else 'mixed' if kinds else
                             None if recorder.calls else UNUSED)
    return probe


# --- mmdet's heads, each probed in one of mmdet's own configs ---------------------------------------

#: the settings of ``reg_decoded_bbox`` a head is probed with, in the table's order
SETTINGS = ('absent', False, True)
#: mmdet's modules of dense heads (DETR's included) and RoI box heads
HEAD_MODULES = ('mmdet.models.dense_heads.', 'mmdet.models.roi_heads.bbox_heads.')


def mmdet_root() -> str:
    """mmdet's installed package data root: ``configs/`` lies below it (``mmdet/.mim``)."""
    import mmdet
    return os.path.join(os.path.dirname(mmdet.__file__), '.mim')


def constructor_params(cls: type) -> Tuple[set, set, bool]:
    """The keyword names the constructors along ``cls``'s MRO take, those of them without a default
    (of the first constructor), and whether the last one takes ``**kwargs`` (then the names are not
    all it accepts)."""
    import inspect
    names, required, first = set(), set(), True
    for klass in cls.__mro__:
        init = klass.__dict__.get('__init__')
        if init is None or klass is object:
            continue
        try:
            params = list(inspect.signature(init).parameters.values())[1:]
        except (TypeError, ValueError):
            continue
        named = [p for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        names |= {p.name for p in named}
        if first:
            required = {p.name for p in named if p.default is p.empty}
            first = False
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names, required, False
    return names, required, True


def registered_box_heads() -> Dict[str, type]:
    """mmdet's registered dense heads and RoI box heads whose constructor takes a ``loss_bbox``."""
    import inspect
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    return {name: cls for name, cls in sorted(MODELS.module_dict.items())
            if inspect.isclass(cls) and cls.__module__.startswith(HEAD_MODULES) and 'loss_bbox' in constructor_params(cls)[0]}


def _mentions(root: str) -> Dict[str, List[str]]:
    """``{quoted word: [config files that contain it]}`` over mmdet's shipped configs."""
    import glob
    import re
    found: Dict[str, List[str]] = {}
    for path in sorted(glob.glob(os.path.join(root, 'configs', '**', '*.py'), recursive=True)):
        with open(path, encoding='utf-8') as f:
            for word in set(re.findall(r"""['"]([A-Za-z0-9_]+)['"]""", f.read())):
                found.setdefault(word, []).append(os.path.relpath(path, os.path.join(root, 'configs')))
    return found


def _host_order(rel: str) -> tuple:
    """Preferred hosts first: mmdet's model-only base files, then the shortest config names."""
    return (not rel.startswith('_base_/models/'), len(rel), rel)


def _head_dicts(node, types: Sequence[str]) -> List[dict]:
    """Every dict below ``node`` whose ``type`` is one of ``types``."""
    found = []
    if isinstance(node, dict):
        if node.get('type') in types:
            found.append(node)
        for value in node.values():
            found += _head_dicts(value, types)
    elif isinstance(node, (list, tuple)):
        for value in node:
            found += _head_dicts(value, types)
    return found


def _settled_arguments(head: dict, accepted: set) -> dict:
    """What the stand-in ``head`` settles itself among the keywords ``accepted`` (Shared2FCBBoxHead
    passes ``num_shared_fcs=2`` to ConvFCBBoxHead): its built instance's attributes of those names that
    the config does not give, plain values only."""
    from mmdet.registry import MODELS
    try:
        with _quiet_logging():
            built = MODELS.build(copy.deepcopy(head))
    except Exception:  # noqa: BLE001  (nothing to learn from a head that does not build alone)
        return {}
    plain = (bool, int, float, str)
    return {key: getattr(built, key) for key in sorted(accepted - set(head) - {'init_cfg', 'type'})
            if isinstance(getattr(built, key, None), plain)}


def error_line(err: BaseException) -> str:
    """``'Type: message'``, its whitespace collapsed, at most 200 characters of it."""
    text = ' '.join(str(err).split())
    return f'{type(err).__name__}: {text[:200]}' if text else type(err).__name__


def probe_head(name: str, host: str, stand_in: Optional[str] = None, root: Optional[str] = None) -> dict:
    """Probe the head class ``name`` in mmdet's config ``host`` (relative to ``configs/``) with each of
    :data:`SETTINGS`; ``stand_in``: the type in ``host`` that ``name`` replaces (keys ``name`` does not
    take dropped). Returns ``{'host': host, 'absent': kind, 'False': kind, 'True': kind}`` with kind
    None where the head cannot be built with that setting (no such switch, or it refuses the value),
    or ``{'host': host, 'error': why}`` when the host does not give a verdict."""
    from mmengine.config import Config
    from mmdet.registry import MODELS
    root = root or mmdet_root()
    model = Config.fromfile(os.path.join(root, 'configs', host), import_custom_modules=False).model
    heads = _head_dicts(model, [stand_in or name])
    if not heads:
        return dict(host=host, error=f'no {stand_in or name} in its model', unsuitable=True)
    if stand_in:
        accepted, required, open_ended = constructor_params(MODELS.get(name))
        missing = required - set(heads[0])
        if missing:
            return dict(host=host, error=f'{stand_in} there lacks what {name} requires: {sorted(missing)}',
                        unsuitable=True)
        settled = _settled_arguments(heads[0], accepted)
        for head in heads:
            head.update(settled)
            head['type'] = name
            head.pop('init_cfg', None)  # it names the stand-in's layers
            for key in [k for k in head if k != 'type' and not open_ended and k not in accepted]:
                del head[key]
    result = dict(host=host)
    for setting in SETTINGS:
        for head in heads:
            head.pop('reg_decoded_bbox', None)
            if setting != 'absent':
                head['reg_decoded_bbox'] = setting
        try:
            probe = probe_model(model, workdir=root)
        except Exception as err:  # noqa: BLE001  (a build or a loss that fails is the finding)
            why = error_line(err)
        else:
            kinds = {k for path, k in probe.kinds.items() if probe.heads[path] == name}
            if not kinds and name in probe.classes:
                kinds = {UNUSED}  # it takes a loss_bbox and builds none (MaskFormer's)
            if len(kinds) == 1 and not kinds & {None, 'mixed'}:
                result[str(setting)] = kinds.pop()
                continue
            why = 'no loss_bbox of it was called with a positive row' if kinds <= {None} else f'mixed inputs {kinds}'
        if setting == 'absent':
            return dict(host=host, error=why)
        result[str(setting)] = None
        result.setdefault('refused', {})[str(setting)] = why
    return result


@dataclass
class HeadTable:
    """What :func:`probe_heads` found: ``inputs`` ``{head: (kind with reg_decoded_bbox absent, False,
    True)}`` (None where the head cannot be built with that setting), ``hosts`` ``{head: the mmdet
    config it was probed in}``, ``not_probed`` ``{head: why no config gave a verdict}``."""
    inputs: Dict[str, Tuple[Optional[str], ...]] = field(default_factory=dict)
    hosts: Dict[str, str] = field(default_factory=dict)
    not_probed: Dict[str, str] = field(default_factory=dict)


def probe_heads(names: Optional[Sequence[str]] = None, attempts: int = 3, log=None) -> HeadTable:
    """Probe mmdet's heads (:func:`registered_box_heads`, or ``names``), each in the first of its host
    configs that gives a verdict (at most ``attempts`` that fail tried): the configs that name it,
    preferred by :func:`_host_order`, then those naming one of its subclasses, then one of its bases,
    nearest first (the head standing in for that one)."""
    root = mmdet_root()
    heads = registered_box_heads()
    mentions = _mentions(root)
    found = HeadTable()
    for name in names or sorted(heads):
        cls = heads[name]
        direct = [(rel, None) for rel in sorted(mentions.get(name, []), key=_host_order)]
        subs = sorted(((rel, sub) for sub, sub_cls in heads.items() if sub != name and issubclass(sub_cls, cls)
                       for rel in mentions.get(sub, [])), key=lambda item: _host_order(item[0]))
        ancestors = [(rel, base.__name__) for base in cls.__mro__[1:] if heads.get(base.__name__) is base
                     for rel in sorted(mentions.get(base.__name__, []), key=_host_order)]
        errors = []
        for host, stand_in in direct + subs + ancestors:
            if len(errors) == attempts:
                break
            result = probe_head(name, host, stand_in, root)
            if log:
                log(f'{name} in {host}' + (f' (for {stand_in})' if stand_in else '') + f': {result}')
            if 'error' not in result:
                found.inputs[name] = tuple(result[str(setting)] for setting in SETTINGS)
                found.hosts[name] = host
                break
            if not result.get('unsuitable'):
                errors.append(f'{host}: {result["error"]}')
        if name not in found.inputs:
            found.not_probed[name] = '; '.join(errors) or 'no mmdet config has it or a head it can stand in for'
    return found
