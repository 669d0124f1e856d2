"""Every loss configuration in mmdet's model zoo computes the same with ``type='mmloss_ext.X'``.

The walk (``tests/model_zoo.py``) collects every loss dict of every config mmdet ships; the
distinct ``(type, keywords)`` configurations are each built twice through mmdet's registry, as
mmdet's ``X`` and as ``mmloss_ext.X`` with the same keywords, and called on the same random inputs
of the kind that loss type takes (one input maker per type, in :data:`MAKERS`). Values and the
gradient w.r.t. the prediction must agree: in float64 where mmdet's loss computes in float64, else
in float32 with float32 tolerances (:func:`compute_dtype`). One documented difference is
allowed for, and only it (:func:`as_documented`).

Keywords a head removes before it builds its loss are removed here too (:func:`built_kwargs`):
``DETRHead`` pops ``bg_cls_weight`` from ``loss_cls`` and folds it into a per-class
``class_weight``. Reading mmdet's heads, that is the one head that changes a loss config (and
``FusedSemanticHead``, which adds its deprecated ``ignore_label``/``loss_weight`` arguments, set by
no shipped config).

``impl='mmdet'`` compares mmdet's class with itself: it shows each input maker drives mmdet's loss
(finite, with a gradient) and deterministically; ``impl='mmloss_ext'`` is the drop-in check.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter, OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmdet_losses import BUILDERS, MMDET_LOSS_TYPES, build_mmdet
from model_zoo import walk

N = 6  # rows of every input: small, so that the whole walk compares in seconds
TOL = {torch.float64: dict(rtol=1e-7, atol=1e-9), torch.float32: dict(rtol=1e-5, atol=1e-6)}

def as_documented(kwargs, outputs):
    """The documented difference from mmdet (README, "Differences from mmdet") the comparison allows
    for: mmdet's ``use_mask`` cross-entropy returns shape ``(1,)``, ours a 0-d tensor."""
    if kwargs.get('use_mask'):
        return [(k, v.reshape(())) for k, v in outputs]
    return outputs


# --- one input maker per loss type --------------------------------------------------------------
# maker(cfg, gen, dtype) -> (positional args, keyword args); args[0] is the prediction (the tensor
# whose gradient is compared). Each makes what mmdet's heads pass that loss.

def _randn(gen, *shape, dtype, scale=1.0):
    return torch.randn(*shape, generator=gen, dtype=dtype) * scale


def _rand(gen, *shape, dtype):
    return torch.rand(*shape, generator=gen, dtype=dtype)


def _labels(gen, high, n=N):
    return torch.randint(0, high, (n,), generator=gen)


def _boxes(gen, dtype, n=N):
    xy = _rand(gen, n, 2, dtype=dtype) * 10
    return torch.cat([xy, xy + _rand(gen, n, 2, dtype=dtype) * 6 + 2.0], dim=1)


def _box_pair(cfg, gen, dtype):
    """Decoded (x1, y1, x2, y2) boxes, the targets a jitter away, per-box weights (IoU family)."""
    target = _boxes(gen, dtype)
    pred = target + _randn(gen, N, 4, dtype=dtype)
    pred[:, 2:] = torch.maximum(pred[:, 2:], pred[:, :2] + 0.5)
    return (pred, target, _rand(gen, N, dtype=dtype) + 0.1), dict(avg_factor=3.0)


def _bounded_box_pair(cfg, gen, dtype):
    """As :func:`_box_pair` with the R-CNN heads' per-coordinate weights (mmdet's BoundedIoULoss
    reduces a loss per coordinate and takes no per-box weight)."""
    (pred, target, _), call = _box_pair(cfg, gen, dtype)
    return (pred, target, _rand(gen, N, 4, dtype=dtype) + 0.1), call


def _deltas(cfg, gen, dtype):
    """Encoded box deltas and their targets, per-coordinate weights (the L1 family, GHM-R)."""
    return (_randn(gen, N, 4, dtype=dtype), _randn(gen, N, 4, dtype=dtype, scale=0.5),
            _rand(gen, N, 4, dtype=dtype)), dict(avg_factor=4.0)


def _cross_entropy(cfg, gen, dtype):
    """The three modes of mmdet's CrossEntropyLoss, as its heads call them."""
    if cfg.get('use_mask'):  # mask heads: (N, C, h, w) logits, (N, h, w) masks, the RoIs' labels
        c = 3
        return (_randn(gen, N, c, 7, 7, dtype=dtype), (_rand(gen, N, 7, 7, dtype=dtype) > 0.5).to(dtype),
                _labels(gen, c)), {}
    custom = cfg.get('num_classes', -1)
    weights = cfg.get('class_weight')
    if cfg.get('use_sigmoid'):  # labels in [0, C], C is the background
        c = custom if custom > 0 else 4
        return (_randn(gen, N, c, dtype=dtype), _labels(gen, c + 1), _rand(gen, N, dtype=dtype)), dict(avg_factor=5.0)
    c = custom + 1 if custom > 0 else len(weights) if isinstance(weights, (list, tuple)) else 5
    if cfg.get('ignore_index') is not None:  # semantic heads: (N, C, h, w) logits, label maps
        labels = torch.randint(0, c, (2, 6, 6), generator=gen)
        labels[:, :2] = cfg['ignore_index']
        return (_randn(gen, 2, c, 6, 6, dtype=dtype), labels), {}
    return (_randn(gen, N, c, dtype=dtype, scale=2.0), _labels(gen, c), _rand(gen, N, dtype=dtype)), dict(avg_factor=5.0)


def _focal(cfg, gen, dtype):
    """(N, C) logits (probabilities when ``activated``), labels in [0, C], per-sample weights."""
    c = cfg.get('num_classes', 4)
    pred = _randn(gen, N, c, dtype=dtype, scale=2.0)
    if cfg.get('activated'):
        pred = pred.sigmoid()
    return (pred, _labels(gen, c + 1), _rand(gen, N, dtype=dtype)), dict(avg_factor=5.0)


def _ghmc(cfg, gen, dtype):
    """RetinaHead's call: logits, labels in [0, C], label weights (0 = ignored)."""
    c = 4
    return (_randn(gen, N, c, dtype=dtype, scale=2.0), _labels(gen, c + 1),
            (_rand(gen, N, dtype=dtype) > 0.2).to(dtype)), dict(avg_factor=5.0)


def _associative_embedding(cfg, gen, dtype):
    """CornerNet's corner embeddings (B, 1, H, W) and per image the matched corner pairs."""
    match = [[[[1, 2], [5, 6]], [[0, 4], [3, 7]], [[2, 0], [6, 3]]], [[[4, 4], [7, 7]]]]
    return (_randn(gen, 2, 1, 8, 8, dtype=dtype), _randn(gen, 2, 1, 8, 8, dtype=dtype), match), {}


def _gaussian_focal(cfg, gen, dtype):
    """Sigmoid heatmaps and Gaussian target heatmaps with exact 1s at the object centres."""
    ys, xs = torch.meshgrid(torch.arange(8, dtype=dtype), torch.arange(8, dtype=dtype), indexing='ij')
    target = torch.zeros(2, 3, 8, 8, dtype=dtype)
    for b, c, y, x in [(0, 0, 2, 3), (0, 2, 6, 5), (1, 1, 4, 4), (1, 1, 1, 7)]:
        blob = torch.exp(-((ys - y) ** 2 + (xs - x) ** 2) / 4.0)
        target[b, c] = torch.maximum(target[b, c], blob)
    pred = _randn(gen, 2, 3, 8, 8, dtype=dtype).sigmoid().clamp(1e-4, 1 - 1e-4)
    return (pred, target), dict(avg_factor=4.0)


def _quality_focal(cfg, gen, dtype):
    """Logits (probabilities when ``activated``) and the (labels, IoU scores) pair."""
    c = 4
    pred = _randn(gen, N, c, dtype=dtype, scale=2.0)
    if cfg.get('activated'):
        pred = pred.sigmoid()
    target = (_labels(gen, c + 1), _rand(gen, N, dtype=dtype))
    return (pred, target, _rand(gen, N, dtype=dtype)), dict(avg_factor=5.0)


def _distribution_focal(cfg, gen, dtype):
    """GFL's 17-bin distance logits and float distances in [0, 16)."""
    return (_randn(gen, N, 17, dtype=dtype), _rand(gen, N, dtype=dtype) * 15.99,
            _rand(gen, N, dtype=dtype)), dict(avg_factor=4.0)


def _varifocal(cfg, gen, dtype):
    """Logits and IoU-aware targets: the IoU at each positive's class, 0 elsewhere."""
    c = 4
    labels = _labels(gen, c + 1)
    target = F.one_hot(labels, c + 1)[:, :c].to(dtype) * _rand(gen, N, 1, dtype=dtype)
    return (_randn(gen, N, c, dtype=dtype, scale=2.0), target), dict(avg_factor=5.0)


def _distillation(cfg, gen, dtype):
    """LD's student and teacher corner logits, per-row weights."""
    return (_randn(gen, N, 17, dtype=dtype), _randn(gen, N, 17, dtype=dtype), _rand(gen, N, dtype=dtype)), \
        dict(avg_factor=4.0)


def _seesaw(cfg, gen, dtype):
    """(N, C + 2) scores (classes and objectness), labels in [0, C] (C: background)."""
    c = cfg.get('num_classes', 1203)
    labels = _labels(gen, c + 1)
    labels[:2] = c
    return (_randn(gen, N, c + 2, dtype=dtype), labels, _rand(gen, N, dtype=dtype)), dict(avg_factor=5.0)


def _dice(cfg, gen, dtype):
    """(N, h, w) mask logits (probabilities when ``activate=False``) and binary masks."""
    pred = _randn(gen, N, 7, 7, dtype=dtype, scale=2.0)
    if not cfg.get('activate', True):
        pred = pred.sigmoid()
    return (pred, (_rand(gen, N, 7, 7, dtype=dtype) > 0.6).to(dtype)), dict(avg_factor=3.0)


def _eqlv2(cfg, gen, dtype):
    """(N, C + 1) logits (the last column: background), labels in [0, C]."""
    c = cfg.get('num_classes', 1203)
    return (_randn(gen, N, c + 1, dtype=dtype), _labels(gen, c + 1)), {}


def _similarity_pairs(cfg, gen, dtype):
    """QDTrack's cosine similarities (N, M) in [-1, 1] and 0/1 match targets (a positive per row), as
    integers like QuasiDenseEmbedHead.get_targets makes them."""
    target = (_rand(gen, N, 8, dtype=dtype) > 0.8).int()
    target[torch.arange(N), _labels(gen, 8)] = 1
    return (_rand(gen, N, 8, dtype=dtype) * 2 - 1, target), {}


def _multi_positive(cfg, gen, dtype):
    """QDTrack's embedding similarity logits (N, M), 0/1 matches, per-row weights."""
    (sim, target), _ = _similarity_pairs(cfg, gen, dtype)
    return (sim * 4, target, _rand(gen, N, dtype=dtype)), dict(avg_factor=4.0)


def _triplet(cfg, gen, dtype):
    """Re-ID features (B, D) and identities, two samples each."""
    return (_randn(gen, 8, 16, dtype=dtype), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])), {}


MAKERS = {
    'CrossEntropyLoss': _cross_entropy,
    'CrossEntropyCustomLoss': _cross_entropy,
    'FocalLoss': _focal,
    'FocalCustomLoss': _focal,
    'SmoothL1Loss': _deltas,
    'L1Loss': _deltas,
    'MSELoss': _deltas,
    'BalancedL1Loss': _deltas,
    'GHMR': _deltas,
    'IoULoss': _box_pair,
    'BoundedIoULoss': _bounded_box_pair,
    'GIoULoss': _box_pair,
    'DIoULoss': _box_pair,
    'CIoULoss': _box_pair,
    'EIoULoss': _box_pair,
    'SIoULoss': _box_pair,
    'GHMC': _ghmc,
    'AssociativeEmbeddingLoss': _associative_embedding,
    'GaussianFocalLoss': _gaussian_focal,
    'QualityFocalLoss': _quality_focal,
    'DistributionFocalLoss': _distribution_focal,
    'VarifocalLoss': _varifocal,
    'KnowledgeDistillationKLDivLoss': _distillation,
    'SeesawLoss': _seesaw,
    'DiceLoss': _dice,
    'EQLV2Loss': _eqlv2,
    'MarginL2Loss': _similarity_pairs,
    'L2Loss': _similarity_pairs,
    'MultiPosCrossEntropyLoss': _multi_positive,
    'TripletLoss': _triplet,
}


# --- the configurations ---------------------------------------------------------------------------

def built_kwargs(use):
    """The keywords the loss is built with: the config's, as the owning head passes them on."""
    kwargs = {k: v for k, v in use.cfg.items() if k != 'type'}
    if use.owner == 'DETRHead' and use.key == 'loss_cls' and kwargs.get('class_weight') is not None:
        # DETRHead.__init__: class_weight for the classes, bg_cls_weight for the no-object class
        class_weight = kwargs['class_weight']
        bg = kwargs.pop('bg_cls_weight', class_weight)
        kwargs['class_weight'] = [class_weight] * use.owner_num_classes + [bg]
    return kwargs


def _freeze(value):
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def distinct_configurations():
    """``OrderedDict`` ``(type, frozen kwargs) -> (type, kwargs, [uses])`` in order of appearance."""
    found = OrderedDict()
    for use in walk().uses:
        kwargs = built_kwargs(use)
        key = (use.type, _freeze(kwargs))
        found.setdefault(key, (use.type, kwargs, []))[2].append(use)
    return found


def _id(value):
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return f'[{len(value)} values]'
    return repr(value)


def configuration_id(loss_type, kwargs):
    """A readable id, unique per configuration (a digest of the values where long lists are cut)."""
    ident = loss_type + '(' + ','.join(f'{k}={_id(v)}' for k, v in sorted(kwargs.items())) + ')'
    if 'values]' in ident:
        ident += '#' + hashlib.sha1(repr(_freeze(kwargs)).encode()).hexdigest()[:6]
    return ident


CONFIGURATIONS = list(distinct_configurations().values())
IDS = [configuration_id(t, kw) for t, kw, _ in CONFIGURATIONS]


# --- the comparison -------------------------------------------------------------------------------

def _clone(x):
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, (list, tuple)):
        return type(x)(_clone(v) for v in x)
    return x


def _flatten(out):
    """A loss's output as a list of (name, tensor): a tensor, a dict of them or a tuple of them."""
    if isinstance(out, torch.Tensor):
        return [('loss', out)]
    if isinstance(out, dict):
        return [(k, out[k]) for k in sorted(out)]
    if isinstance(out, (tuple, list)):
        return [(str(i), v) for i, v in enumerate(out)]
    raise TypeError(f'unexpected loss output {type(out).__name__}')


def value_and_grad(loss, args, kwargs):
    """Outputs and the gradient of their sum w.r.t. the prediction, on fresh copies of the inputs
    (some losses write into their inputs) with the random generators seeded alike."""
    args = _clone(args)
    pred = args[0].detach().requires_grad_()
    torch.manual_seed(0)
    np.random.seed(0)
    out = _flatten(loss(pred.clone(), *args[1:], **kwargs))
    total = sum(v.sum() for _, v in out if v.requires_grad)
    grad = torch.autograd.grad(total, pred)[0] if torch.is_tensor(total) else torch.zeros_like(pred)
    return [(k, v.detach()) for k, v in out], grad


def make_inputs(loss_type, kwargs, dtype):
    gen = torch.Generator().manual_seed(sum(map(ord, configuration_id(loss_type, kwargs))))
    args, call = MAKERS[loss_type](kwargs, gen, dtype)
    if kwargs.get('reduction') == 'sum':
        call.pop('avg_factor', None)  # refused with 'sum' (by mmdet too)
    return args, call


_REFERENCES = {}


def reference(loss_type, kwargs):
    """``(dtype, outputs, gradient)`` of mmdet's loss on the configuration's inputs: in float64 where
    mmdet's loss computes in float64, else in float32 (e.g. its sigmoid cross-entropy casts the
    labels and returns float32). Computed once per configuration."""
    ident = configuration_id(loss_type, kwargs)
    if ident not in _REFERENCES:
        result = None
        try:
            out, grad = value_and_grad(build_mmdet(loss_type, **kwargs), *make_inputs(loss_type, kwargs, torch.float64))
            if all(v.dtype == torch.float64 for _, v in out):
                result = (torch.float64, out, grad)
        except Exception:  # noqa: BLE001  (then float32, where mmdet must run)
            pass
        if result is None:
            out, grad = value_and_grad(build_mmdet(loss_type, **kwargs), *make_inputs(loss_type, kwargs, torch.float32))
            result = (torch.float32, out, grad)
        _REFERENCES[ident] = result
    return _REFERENCES[ident]


def compare(impl, loss_type, kwargs):
    """Build ``impl``'s loss from the configuration's keywords; assert its values and gradient equal
    mmdet's (:func:`reference`, from a loss built separately)."""
    dtype, want, want_grad = reference(loss_type, kwargs)
    candidate = BUILDERS[impl](loss_type, **kwargs)
    expected_module = 'mmdet.' if impl == 'mmdet' else 'mmloss_ext.'
    assert type(candidate).__module__.startswith(expected_module), type(candidate)
    got, got_grad = value_and_grad(candidate, *make_inputs(loss_type, kwargs, dtype))
    tol = TOL[dtype]
    if impl == 'mmloss_ext':
        want = as_documented(kwargs, want)
    assert [k for k, _ in got] == [k for k, _ in want], 'the loss returns other parts than mmdet\'s'
    for (k, g), (_, w) in zip(got, want):
        torch.testing.assert_close(g, w, **tol, msg=lambda m: f'{k}: {m}')
    torch.testing.assert_close(got_grad, want_grad, **tol, msg=lambda m: f'gradient: {m}')
    return want, want_grad


#: configuration id -> None (equal) or why ours differs; filled by the per-configuration tests,
#: completed and tallied by the summary
_OUTCOMES = {}


def compare_ours(loss_type, kwargs, ident):
    try:
        compare('mmloss_ext', loss_type, kwargs)
    except Exception as err:
        _OUTCOMES[ident] = f'{type(err).__name__}: {str(err).strip().splitlines()[0][:160]}'
        raise
    _OUTCOMES[ident] = None


# --- the tests ------------------------------------------------------------------------------------

#: why a shipped config does not parse, for the reasons that have nothing to do with losses
UNRELATED = {
    'needs mmpretrain (not installed)': re.compile(r'mmpretrain'),
    'its _base_ file is not shipped': re.compile(r'(No such file or directory|does not exist)'),
}


def test_the_walk_reads_every_loss_config_of_mmdets_model_zoo(record_property):
    w = walk()
    reasons = Counter()
    for config, err in w.failed.items():
        reason = next((r for r, pattern in UNRELATED.items() if pattern.search(err)), None)
        assert reason is not None, f'{config} fails to parse: {err}'
        reasons[reason] += 1
    types = Counter(u.type for u in w.uses)
    summary = (f'{len(w.configs)} configs walked, {len(w.configs) - len(w.failed)} parsed ({dict(reasons)}); '
               f'{len(w.uses)} loss dicts of {len(types)} loss types; {len(CONFIGURATIONS)} distinct '
               f'configurations; {len(w.foreign)} loss dicts of other packages')
    print(f'\nmodel zoo: {summary}')
    record_property('model_zoo_walk', summary)
    assert len(w.configs) > 800 and len(w.failed) < 20
    assert len(w.uses) > 3000 and len(CONFIGURATIONS) > 80 and len(types) > 20
    assert len(set(IDS)) == len(IDS)  # the per-configuration caches are keyed by id
    assert all('loss' in u.key for u in w.uses), {u.key for u in w.uses}  # loss modules, not match costs
    assert {'loss_cls', 'loss_bbox', 'loss_mask'} <= {u.key for u in w.uses}
    # every place a loss sits: heads, RoI heads' cascade stages, RPN stages, trackers' detectors
    paths = {u.path[:-1] for u in w.uses}
    assert ('model', 'roi_head', 'bbox_head', 2) in paths and ('model', 'rpn_head', 'stages', 1) in paths
    assert any(p[:2] == ('model', 'detector') for p in paths)


def test_every_mmdet_loss_type_has_an_input_maker():
    assert set(MAKERS) == set(MMDET_LOSS_TYPES)
    assert {t for t, _, _ in CONFIGURATIONS} <= set(MAKERS)


@pytest.mark.parametrize('impl', sorted(BUILDERS))
@pytest.mark.parametrize('loss_type, kwargs, uses', CONFIGURATIONS, ids=IDS)
def test_zoo_configuration_computes_as_mmdets(impl, loss_type, kwargs, uses):
    print(f'{len(uses)} loss dicts, e.g. {uses[0].config}: {".".join(map(str, uses[0].path))}')
    if impl == 'mmloss_ext':
        compare_ours(loss_type, kwargs, configuration_id(loss_type, kwargs))
        return
    # mmdet against itself: the input maker drives mmdet's loss deterministically, finite, with a gradient
    want, grad = compare(impl, loss_type, kwargs)
    assert all(torch.isfinite(v).all() for _, v in want)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0, 'the inputs give no gradient'


def test_every_distinct_configuration_is_equal(record_property):
    """The summary: how many distinct configurations compute as mmdet's (those the tests above
    did not compare yet are compared here)."""
    for (loss_type, kwargs, _), ident in zip(CONFIGURATIONS, IDS):
        if ident not in _OUTCOMES:
            try:
                compare_ours(loss_type, kwargs, ident)
            except Exception:  # noqa: BLE001  (recorded in _OUTCOMES)
                pass
    differing = {i: why for i, why in _OUTCOMES.items() if why is not None}
    equal = len(CONFIGURATIONS) - len(differing)
    by_type = Counter(i.split('(', 1)[0] for i in differing)
    in_float32 = sorted({t for t, kw, _ in CONFIGURATIONS if reference(t, kw)[0] == torch.float32})
    summary = (f'{len(walk().uses)} loss dicts, {len(CONFIGURATIONS)} distinct configurations, {equal} equal; '
               f'differing by type: {dict(by_type)}; compared in float32: {in_float32}')
    print(f'\nmodel zoo: {summary}')
    record_property('model_zoo_equal', summary)
    assert not differing, '\n'.join(f'{k}: {v}' for k, v in differing.items())
