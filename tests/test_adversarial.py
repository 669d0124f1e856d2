"""Adversarial inputs and numerics over every registered loss.

* Build time: every numeric hyper-parameter has a range declared on its functional, which the class
  (at build) and the functional (at every call) both enforce; mistyped values (``gamma='2'``), NaN and
  out-of-range values (``alpha=-1``) fail through mmdet's ``MODELS.build`` with a message naming
  the loss, the argument, what was expected and what was given; values used by mmdet configs build.
* Call time: integer/bool/complex tensors, rank mismatches, labels out of range, wrong-shaped or
  misplaced weights, tensors on two devices, bad ``avg_factor`` -- a ``TypeError``/``ValueError``
  that names the loss, never a raw ``IndexError``/``RuntimeError`` from deep inside torch.
* Numerics: logits of +-1e4, residuals of +-1e6, boxes from 1e-9 to 1e5 px, degenerate boxes,
  all-background batches, 1x1 images, CPU autocast: finite values and gradients in the input dtype.
  NaN propagates (never masked), and so does +-inf except where the loss is bounded in the logit.
* State: WIoULoss's running mean round-trips through an mmengine checkpoint.

Inputs come from the ``tests/loss_cases`` factories, so a new loss joins these tests for free.
"""
import math
import re

import pytest
import torch

from helpers import BOX_NAMES, NAMES, build_case as build, family_names, required_cfg
from loss_cases import CASES
from loss_cases.bbox import boxes
from mmdet.registry import MODELS as MMDET_MODELS
from mmloss_ext.registry import MODELS

REGRESSION_NAMES = family_names('regression')
IMAGE_NAMES = family_names('image')
LOGIT_NAMES = [n for n in NAMES if n not in BOX_NAMES + REGRESSION_NAMES + IMAGE_NAMES and not CASES[n].probabilities]


def make(name, n=4, dtype=torch.float32, seed=0):
    return CASES[name].make(n, dtype, torch.Generator().manual_seed(seed))


def raises(exc, *parts):
    """``pytest.raises`` whose message must contain every one of ``parts`` (literally)."""
    return pytest.raises(exc, match='(?s)' + '.*'.join(re.escape(p) for p in parts))


def map_target(args, fn):
    """Apply ``fn`` to the target tensor (each tensor of a ``(labels, scores)`` target)."""
    target = args[1]
    target = tuple(fn(t) for t in target) if isinstance(target, tuple) else fn(target)
    return (args[0], target, *args[2:])


def label_tensor(args):
    """The integer class labels of a case, or None (float targets, losses of pred alone)."""
    if len(args) < 2:
        return None
    target = args[1][0] if isinstance(args[1], tuple) else args[1]
    return None if target.is_floating_point() else target


def backward_finite(name, args, *, reduction='mean', **kw):
    """Loss and gradient w.r.t. pred; both must be finite and in pred's dtype."""
    pred = args[0].detach().requires_grad_(CASES[name].differentiable)
    out = build(name, reduction=reduction, **kw)(pred, *args[1:])
    assert out.dtype == pred.dtype, (out.dtype, pred.dtype)
    assert torch.isfinite(out).all(), out
    if pred.requires_grad:
        out.sum().backward()
        assert pred.grad.dtype == pred.dtype and torch.isfinite(pred.grad).all()
    return out


# --- build-time hyper-parameter validation ---------------------------------------------------------

def _numeric_hparams():
    for name in NAMES:
        for key, default in MODELS.get(name).spec().defaults.items():
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                yield name, key, default


NUMERIC = list(_numeric_hparams())
RANGED = [(n, k, r) for n in NAMES for k, r in MODELS.get(n).spec().ranges().items()]
CHOICES = [(n, k, c) for n in NAMES for k, c in MODELS.get(n).choices().items()
           if all(isinstance(v, str) for v in c)]  # string choices (a bool one is a type check first)


@pytest.mark.parametrize('name, key, default', NUMERIC, ids=[f'{n}-{k}' for n, k, _ in NUMERIC])
def test_every_numeric_hparam_has_a_declared_range(name, key, default):
    ranges = MODELS.get(name).spec().ranges()
    assert key in ranges or key in CASES[name].unbounded, f'{name}.{key} declares no range'
    if key in ranges:  # the default is valid by its own declaration
        ranges[key].check(name, key, default)


@pytest.mark.parametrize('name, key, default', NUMERIC, ids=[f'{n}-{k}' for n, k, _ in NUMERIC])
def test_mistyped_numeric_hparam_fails_at_build(name, key, default):
    want = 'an int' if isinstance(default, int) else 'a number'
    with raises(TypeError, f'{name}: `{key}` expected {want}', "got str '2'"):
        build(name, **{key: '2'})
    with raises(TypeError, f'{name}: `{key}`', 'got bool True'):
        build(name, **{key: True})


def _outside(r):
    """A value just outside a range (below the bound, or above when only bounded above)."""
    if r.low is not None:
        return r.low if r.low_open else r.low - 1
    return r.high if r.high_open else r.high + 1


def _inside(r):
    """The closed bound itself when there is one (mmdet allows it), else a value just inside."""
    if r.low is not None and not r.low_open:
        return r.low
    if r.high is not None and not r.high_open:
        return r.high
    return 3 if r.odd else (r.low or 0) + 0.5


@pytest.mark.parametrize('name, key, spec', RANGED, ids=[f'{n}-{k}' for n, k, _ in RANGED])
def test_out_of_range_hparam_fails_at_build_and_in_the_functional(name, key, spec):
    bad = _outside(spec)
    for value in (bad, float('nan'), float('inf')):
        if (spec.odd or spec.integer) and isinstance(value, float):
            continue  # an int hparam: a float is a type error, covered above
        with raises(ValueError, f'{name}: `{key}` expected ', f'got {value!r}'):
            build(name, **{key: value})
    inside = CASES[name].inside.get(key, _inside(spec))
    loss = MMDET_MODELS.build(dict(type=f'mmloss_ext.{name}', **{**required_cfg(name), key: inside}))  # allowed
    assert getattr(loss, key) == inside
    loss = build(name)
    args = make(name)
    with raises(ValueError, f'{name}: `{key}` expected ', f'got {bad!r}'):
        type(loss).loss_fn(*args, **{**loss.hparams(), key: bad})


def test_window_size_must_be_odd_at_build():
    with raises(ValueError, 'SSIMLoss: `window_size` expected an odd int in [1, inf), got 4'):
        build('SSIMLoss', window_size=4)
    with raises(ValueError, 'SSIMLoss: `window_size` expected an odd int', 'got -1'):
        build('SSIMLoss', window_size=-1)


STRINGS = [(n, k) for n in NAMES for k, d in MODELS.get(n).spec().defaults.items() if isinstance(d, str)]


@pytest.mark.parametrize('name, key', STRINGS, ids=[f'{n}-{k}' for n, k in STRINGS])
def test_every_string_hparam_has_declared_choices(name, key):
    choices = MODELS.get(name).choices()
    assert key in choices and MODELS.get(name).spec().defaults[key] in choices[key]


@pytest.mark.parametrize('name, key, choices', CHOICES, ids=[f'{n}-{k}' for n, k, _ in CHOICES])
def test_unknown_choice_fails_at_build(name, key, choices):
    with raises(ValueError, f'{name}: `{key}` expected one of {", ".join(map(repr, choices))}', "got 'nope'"):
        build(name, **{key: 'nope'})


@pytest.mark.parametrize('name', [n for n in NAMES if MODELS.get(n).spec().defaults])
def test_misspelt_config_key_names_the_real_ones(name):
    key = next(iter(MODELS.get(name).spec().defaults))
    with raises(TypeError, f'{name}: unexpected hyper-parameter `{key}x`', key):
        build(name, **{f'{key}x': 1})


@pytest.mark.parametrize('name, cfg', [
    # values from mmdet 3.x configs, and mmdet's own accepted bounds
    ('FocalLoss', dict(gamma=2.0, alpha=0.25)), ('FocalLoss', dict(gamma=0.0, alpha=1.0)),
    ('VarifocalLoss', dict(alpha=0.75, gamma=2.0)), ('QualityFocalLoss', dict(beta=2.0)),
    ('SmoothL1Loss', dict(beta=1.0 / 9.0)), ('SmoothL1Loss', dict(beta=0.11)),
    ('BalancedL1Loss', dict(alpha=0.5, gamma=1.5, beta=1.0)), ('KLDivLoss', dict(temperature=10.0)),
    ('DiceLoss', dict(eps=1.0, naive_dice=True)), ('GIoULoss', dict(eps=1e-6)), ('CIoULoss', dict(eps=1e-7)),
    ('IoULoss', dict(mode='linear', eps=1e-6)), ('BoundedIoULoss', dict(beta=0.2, eps=1e-3)),
    ('CrossEntropyLoss', dict(ignore_index=255, avg_non_ignore=True)),
])
def test_mmdet_config_values_build(name, cfg):
    loss = build(name, **cfg)
    assert all(getattr(loss, k) == v for k, v in cfg.items())


def test_focal_rejects_the_mmdet_issue_examples():
    with raises(TypeError, "FocalLoss: `gamma` expected a number, got str '2'"):
        MMDET_MODELS.build(dict(type='mmloss_ext.FocalLoss', gamma='2'))
    with raises(ValueError, 'FocalLoss: `alpha` expected a value in [0.0, 1.0], got -1'):
        MMDET_MODELS.build(dict(type='mmloss_ext.FocalLoss', alpha=-1))


def test_every_bad_hyper_parameter_is_reported_at_once():
    """Two bad values give one error naming both; its kind is theirs, a mix is both kinds."""
    from mmloss_ext.core.errors import HyperParameterError, LossValueError
    from mmloss_ext.losses import FocalLoss, focal_loss
    with pytest.raises(TypeError) as err:  # a wrong type and a wrong value
        FocalLoss(gamma='2', alpha=-1)
    assert type(err.value) is HyperParameterError
    assert isinstance(err.value, ValueError) and isinstance(err.value, AssertionError)
    assert str(err.value) == ("FocalLoss: 2 bad arguments: `gamma` expected a number, got str '2'; "
                              "`alpha` expected a value in [0.0, 1.0], got -1")
    assert [(p.arg, p.fix) for p in err.value.problems] == [
        ('gamma', '`gamma` takes a value in [0.0, inf)'), ('alpha', '`alpha` takes a value in [0.0, 1.0]')]
    with pytest.raises(ValueError) as err:  # two wrong values: a ValueError, not a TypeError
        FocalLoss(gamma=-2.0, alpha=3.0, reduction='avg')
    assert type(err.value) is LossValueError and len(err.value.problems) == 3
    with pytest.raises(TypeError) as err:  # two wrong types (an unknown name is one): a TypeError only
        FocalLoss(gama=2.0, use_sigmoid=1)
    assert type(err.value) is TypeError and [p.arg for p in err.value.problems] == ['gama', 'use_sigmoid']
    # through mmdet's registry (which re-raises the error's type with its own prefix), and in the functional
    with raises(HyperParameterError, 'FocalLoss: 2 bad arguments', '`gamma`', '`alpha`'):
        MMDET_MODELS.build(dict(type='mmloss_ext.FocalLoss', gamma='2', alpha=-1))
    x, y = torch.randn(3, 4), torch.tensor([0, 1, 4])
    with raises(LossValueError, 'FocalLoss: 2 bad arguments: `gamma` expected a value in [0.0, inf), got -1.0; '
                '`alpha` expected a value in [0.0, 1.0], got 2.0'):
        focal_loss(x, y, gamma=-1.0, alpha=2.0)


@pytest.mark.parametrize('name', [n for n in NAMES if MODELS.get(n).spec().defaults])
def test_misspelt_functional_keyword_names_the_real_ones(name):
    """The functional says what the constructor says (one implementation): the closest names."""
    fn = MODELS.get(name).loss_fn
    key = next(iter(MODELS.get(name).spec().defaults))
    with raises(TypeError, f'{name}: unexpected keyword argument `{key}x` to {fn.__name__}(); did you mean ', f'`{key}`'):
        fn(*make(name)[:2], **required_cfg(name), **{f'{key}x': 1})
    with raises(TypeError, f'{name}: unexpected hyper-parameter `{key}x`; did you mean ', f'`{key}`'):
        build(name, **{f'{key}x': 1})


def test_focal_loss_misspelt_gamma():
    from mmloss_ext.losses import focal_loss
    with raises(TypeError, 'FocalLoss: unexpected keyword argument `gama` to focal_loss(); did you mean `gamma`? '
                '(expected one of use_sigmoid, gamma, alpha, activated, pos_weight, impl, weight, reduction, '
                'avg_factor)'):
        focal_loss(torch.randn(3, 4), torch.tensor([0, 1, 4]), gama=2.0)


@pytest.mark.parametrize('name', NAMES)
def test_reduction_in_a_call_points_to_reduction_override(name):
    """Regression: Python's own "got multiple values for keyword argument 'reduction'"."""
    with raises(TypeError, f"{name}: `reduction` is set when the loss is built", "reduction_override='none'"):
        build(name)(*make(name), reduction='none')


def test_a_value_in_the_wrong_positional_slot_names_the_parameter_and_the_order():
    """DiceLoss and GHMC take mmdet's order: their 4th positional argument is reduction_override."""
    from mmloss_ext.losses import DiceLoss, GHMC, L1Loss
    pred, target = torch.randn(2, 5, 5), torch.rand(2, 5, 5)
    with raises(ValueError, "DiceLoss: `reduction_override` expected one of 'none', 'mean', 'sum', got 4.0 "
                '(DiceLoss.forward takes (pred, target, weight, reduction_override, avg_factor) positionally, unlike '
                "most losses' (pred, target, weight, avg_factor, reduction_override)"):
        DiceLoss()(pred, target, None, 4.0)
    logits, labels = torch.randn(3, 4), torch.tensor([0, 1, 4])
    with raises(ValueError, 'GHMC: `reduction_override` expected', 'got 4.0',
                'GHMC.forward takes (pred, target, label_weight, reduction_override) positionally'):
        GHMC()(logits, labels, None, 4.0)
    # the order the note gives is the order they take
    torch.testing.assert_close(DiceLoss()(pred, target, None, 'sum'), DiceLoss(reduction='sum')(pred, target))
    torch.testing.assert_close(GHMC()(logits, labels, None, 'sum'), GHMC(reduction='sum')(logits, labels))
    # a loss of the usual order names the parameter, with no note
    with pytest.raises(TypeError, match=r"^L1Loss: `avg_factor` expected a number or a tensor, got str 'sum'$"):
        L1Loss()(pred, target, None, 'sum')
    assert {n for n in NAMES if MODELS.get(n).call_order_note()} == {'GaussianFocalLoss', 'GHMC', 'DiceLoss'}


def test_cross_entropy_ignore_index_is_type_checked_at_build():
    """Regression: ``ignore_index`` (default None) took any object until the first forward."""
    with raises(TypeError, "CrossEntropyLoss: `ignore_index` expected an int or None, got str '255'"):
        build('CrossEntropyLoss', ignore_index='255')


# --- bad inputs at call time -----------------------------------------------------------------------

# a loss that takes integer scores as mmdet does (computed in float: tests/test_mmdet_compat.py) still
# refuses bool ones
@pytest.mark.parametrize('name, dtype', [(n, d) for n in NAMES for d in (torch.int64, torch.int32, torch.bool)
                                         if d == torch.bool or not CASES[n].mmdet_dtypes])
def test_integer_or_bool_pred_is_a_type_error(name, dtype):
    args = make(name)
    bad = (args[0] > 0).to(dtype)
    with raises(TypeError, f'{name}: `pred` expected a floating-point tensor', f'got dtype {dtype}'):
        build(name)(bad, *args[1:])


@pytest.mark.parametrize('name', [n for n in NAMES if not CASES[n].mmdet_dtypes])
def test_integer_pred_with_zero_weight_is_still_a_type_error(name):
    """Regression: the zero-weight shortcut used to answer before the dtype check (int pred -> 0)."""
    args = make(name)
    weight = torch.zeros_like(CASES[name].make_weight(args, torch.Generator().manual_seed(1)))
    with raises(TypeError, f'{name}: `pred` expected a floating-point tensor'):
        build(name)(args[0].long(), *args[1:], weight=weight)


@pytest.mark.parametrize('name', [n for n in NAMES if len(make(n)) > 1])
def test_complex_target_is_a_type_error(name):
    """Regression: losses with a generic numeric target cast complex to real, dropping the imaginary part."""
    args = map_target(make(name), lambda t: t.to(torch.complex64))
    with raises(TypeError, f'{name}: `', 'expected a real tensor, got dtype torch.complex64'):
        build(name)(*args)


@pytest.mark.parametrize('name', NAMES)
def test_extra_leading_dim_on_pred_is_a_value_error(name):
    args = make(name)
    bad = args[0][None]
    with raises(ValueError, f'{name}: `', 'expected', str(tuple(bad.shape))):
        build(name)(bad, *args[1:])


@pytest.mark.parametrize('name', [n for n in NAMES if len(make(n)) > 1])
def test_extra_leading_dim_on_target_is_a_value_error(name):
    args = map_target(make(name), lambda t: t[None])
    with raises(ValueError, f'{name}: `', 'expected', '(1, 4'):
        build(name)(*args)


LABEL_NAMES = [n for n in NAMES if label_tensor(make(n)) is not None and CASES[n].label_range]


@pytest.mark.parametrize('bad', [-7, 99])
@pytest.mark.parametrize('name', LABEL_NAMES)
def test_labels_out_of_range_are_a_value_error(name, bad):
    args = make(name)

    def corrupt(t):
        if t.is_floating_point():
            return t
        t = t.clone()
        t.view(-1)[0] = bad
        return t

    arg = 'labels' if isinstance(args[1], tuple) else 'target'
    with raises(ValueError, f'{name}: `{arg}` expected values in [0, ', f'got values in [{bad}, {bad}]'):
        build(name)(*map_target(args, corrupt))


@pytest.mark.parametrize('name', [n for n in LABEL_NAMES if not CASES[n].mmdet_dtypes])
def test_float_labels_are_a_type_error(name):
    args = make(name)
    if isinstance(args[1], tuple):
        bad = (args[1][0].float(), args[1][1])
    else:
        bad = args[1].float()
    with raises(TypeError, f'{name}: `', 'expected an integer tensor', 'got dtype torch.float32'):
        build(name)(args[0], bad, *args[2:])


@pytest.mark.parametrize('name, cfg', [
    ('CrossEntropyLoss', dict(ignore_index=255)), ('NLLLoss', dict(ignore_index=255)),
    ('CrossEntropyLoss', dict(ignore_index=255, use_sigmoid=True, class_weight=None)),
    ('DiceLoss', dict(mode='multiclass', ignore_index=255)), ('JaccardLoss', dict(ignore_index=255)),
    ('TverskyLoss', dict(mode='multiclass', ignore_index=255)), ('FocalTverskyLoss', dict(ignore_index=255)),
    ('LovaszLoss', dict(ignore_index=255)),
])
def test_ignore_index_is_exempt_from_the_label_range(name, cfg):
    from loss_cases.segmentation import multiclass
    gen = torch.Generator().manual_seed(0)
    pred, target = multiclass(3, torch.float32, gen) if MODELS.get(name).family == 'segmentation' else make(name, 3)
    target = target.clone()
    target.view(-1)[:2] = 255
    out = build(name, **cfg)(pred, target)
    assert torch.isfinite(out)
    target.view(-1)[0] = 254  # one past the classes but not ignore_index: still refused
    with raises(ValueError, f'{name}: `target` expected values in [0, ', '(or ignore_index=255)', 'got values in [254'):
        build(name, **cfg)(pred, target)


def test_out_of_range_float_targets_are_a_value_error():
    pred, target = make('DistributionFocalLoss')
    with raises(ValueError, 'DistributionFocalLoss: `target` expected values in [0, 7)', 'got 1 value(s) outside'):
        build('DistributionFocalLoss')(pred, torch.cat([target[:-1], target.new_tensor([7.0])]))
    scores = torch.randn(4)
    with raises(ValueError, 'HingeLoss: `target` expected binary labels in {-1, 0, 1}', 'got 1 value(s)'):
        build('HingeLoss')(scores, torch.tensor([0, 1, 2, 1]))


@pytest.mark.parametrize('name', NAMES)
def test_weight_of_the_wrong_shape_is_a_value_error(name):
    args = make(name)
    for bad in (torch.ones(7), torch.ones(4, 7, 2)):
        with raises(ValueError, f'{name}: `weight` expected shape', f'got {tuple(bad.shape)}'):
            build(name)(*args, weight=bad)


@pytest.mark.parametrize('name', NAMES)
def test_weight_on_another_device_is_a_value_error(name):
    """Regression: a weight on another device raised torch's RuntimeError from the multiply."""
    args = make(name)
    weight = CASES[name].make_weight(args, torch.Generator().manual_seed(1)).to('meta')
    with raises(ValueError, f'{name}: `pred` and `weight` expected to be on the same device', 'cpu and meta'):
        build(name)(*args, weight=weight)


@pytest.mark.parametrize('name', [n for n in NAMES if len(make(n)) > 1])
def test_target_on_another_device_is_a_value_error(name):
    """The 'meta' device stands in for a second accelerator: the check runs before any computation."""
    args = map_target(make(name), lambda t: t.to('meta'))
    with raises(ValueError, f'{name}: `', 'expected to be on the same device', 'meta'):
        build(name)(*args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('name', [n for n in NAMES if len(make(n)) > 1])
def test_target_on_cpu_with_cuda_pred_is_a_value_error(name):
    args = make(name)
    with raises(ValueError, f'{name}: `', 'expected to be on the same device', 'cuda'):
        build(name)(args[0].cuda(), *args[1:])


@pytest.mark.parametrize('name', [n for n in NAMES if len(make(n)) > 1 and not isinstance(make(n)[1], tuple)
                                  and make(n)[1].is_floating_point()])
def test_promotable_float_dtypes_mix(name):
    """A float64 or float32 target with a float32 or bfloat16 pred (autocast heads): pred's dtype out."""
    pred, target, *rest = make(name, n=8)
    loss = build(name).eval()
    ref = loss(pred, target, *rest)
    mixed = loss(pred, target.double(), *rest)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, ref)
    half = loss(pred.bfloat16(), target, *rest)
    assert half.dtype == torch.bfloat16 and torch.isfinite(half)
    torch.testing.assert_close(half.float(), ref, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize('name', NAMES)
def test_bad_avg_factor_and_reduction(name):
    """Regression: a str avg_factor raised Python's own TypeError, a negative one flipped the sign."""
    args = make(name)
    loss = build(name, reduction='mean')
    with raises(TypeError, f'{name}: `avg_factor` expected a number or a tensor', "got str '3'"):
        loss(*args, avg_factor='3')
    for bad in (-1.0, float('nan'), float('inf')):
        with raises(ValueError, f'{name}: `avg_factor` expected a finite value >= 0', f'got {bad!r}'):
            loss(*args, avg_factor=bad)
    with raises(ValueError, f'{name}: `avg_factor` expected a number or a one-element real tensor', '(2,)'):
        loss(*args, avg_factor=torch.ones(2))
    if CASES[name].additive:
        torch.testing.assert_close(loss(*args, avg_factor=torch.tensor(3.0)), loss(*args, avg_factor=3.0))
    for bad in ('Mean', 1):
        with raises(ValueError, f'{name}: `reduction_override` expected one of', f'got {bad!r}'):
            loss(*args, reduction_override=bad)
    with raises(ValueError, f'{name}: `reduction` expected one of', 'got None'):
        build(name, reduction=None)


# --- numerics --------------------------------------------------------------------------------------

LOGIT_DTYPES = [(n, d) for n in LOGIT_NAMES for d in (torch.float32, torch.bfloat16, torch.float16)
                if CASES[n].float16_at_1e4 or d != torch.float16]


@pytest.mark.parametrize('name, dtype', LOGIT_DTYPES, ids=[f'{n}-{str(d)[6:]}' for n, d in LOGIT_DTYPES])
def test_logits_of_1e4_give_finite_values_and_gradients(name, dtype):
    pred, *rest = make(name, n=6)
    sign = torch.where(torch.randn(pred.shape, generator=torch.Generator().manual_seed(3)) > 0, 1.0, -1.0)
    backward_finite(name, ((sign * 1e4).to(dtype), *rest))


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('name', REGRESSION_NAMES)
def test_residuals_of_1e6_give_finite_values_and_gradients(name, dtype):
    pred, target = make(name, n=6)
    sign = torch.where(pred > 0, 1.0, -1.0)
    out = backward_finite(name, ((target + sign * 1e6).to(dtype), target.to(dtype)))
    assert float(out.detach()) > 1e5  # the residual is really seen, not clamped away


def _box_pairs(kind, dtype):
    gen = torch.Generator().manual_seed(5)
    if kind == 'tiny':  # 1e-9 px boxes near the origin (float32 resolves them there)
        return boxes(6, torch.float64, gen, 1.0, 3.0).mul(1e-9).to(dtype), \
            boxes(6, torch.float64, gen, 1.0, 3.0).mul(1e-9).to(dtype)
    if kind == 'huge':  # 1e5 px boxes
        return boxes(6, torch.float64, gen, 0.5, 1.0).mul(1e5).to(dtype), \
            boxes(6, torch.float64, gen, 0.5, 1.0).mul(1e5).to(dtype)
    if kind == 'mixed':  # a 1e-9 px prediction for a 1e5 px target, and the reverse
        small = boxes(3, torch.float64, gen, 1.0, 3.0) * 1e-9
        large = boxes(3, torch.float64, gen, 0.5, 1.0) * 1e5
        return torch.cat([small, large]).to(dtype), torch.cat([large, small]).to(dtype)
    target = boxes(6, dtype, gen)
    if kind == 'zero-area':
        return torch.cat([target[:, :2], target[:, :2]], 1), target
    if kind == 'inverted':  # x2 < x1 and y2 < y1, as from an untrained head
        return target[:, [2, 3, 0, 1]], target
    if kind == 'both-degenerate':  # zero-area prediction on a zero-area target at the same point
        point = torch.cat([target[:, :2], target[:, :2]], 1)
        return point, point.clone()
    assert kind == 'all-zero'
    return torch.zeros(6, 4, dtype=dtype), torch.zeros(6, 4, dtype=dtype)


BOX_KINDS = ['tiny', 'huge', 'mixed', 'zero-area', 'inverted', 'both-degenerate', 'all-zero']
# 1e5 px is past float16's range (max 65504): there the input itself is inf, so float16 runs the rest
BOX_DTYPES = [(k, d) for k in BOX_KINDS for d in (torch.float32, torch.bfloat16, torch.float16)
              if not (d == torch.float16 and k in ('huge', 'mixed'))]


@pytest.mark.parametrize('kind, dtype', BOX_DTYPES, ids=[f'{k}-{str(d)[6:]}' for k, d in BOX_DTYPES])
@pytest.mark.parametrize('name', BOX_NAMES)
def test_extreme_and_degenerate_boxes_give_finite_values_and_gradients(name, kind, dtype):
    pred, target = _box_pairs(kind, dtype)
    cfg = {'img_shape': None} if 'img_shape' in CASES[name].cfg and kind in ('huge', 'mixed') else {}
    backward_finite(name, (pred, target), **cfg)


ALL_BACKGROUND = [
    ('FocalLoss', {}, lambda p: torch.full((p.shape[0],), p.shape[1])),
    ('CrossEntropyLoss', dict(use_sigmoid=True, class_weight=None), lambda p: torch.full((p.shape[0],), p.shape[1])),
    ('QualityFocalLoss', {}, lambda p: (torch.full((p.shape[0],), p.shape[1]), torch.zeros(p.shape[0]))),
    ('VarifocalLoss', {}, torch.zeros_like),
    ('BCELoss', {}, torch.zeros_like),
    ('BalancedCrossEntropyLoss', {}, torch.zeros_like),
    ('DiceLoss', {}, torch.zeros_like), ('DiceLoss', dict(naive_dice=True, eps=0.0), torch.zeros_like),
    ('JaccardLoss', dict(mode='binary'), torch.zeros_like), ('TverskyLoss', {}, torch.zeros_like),
    ('FocalTverskyLoss', dict(mode='binary', smooth=0.0), torch.zeros_like),
    ('LovaszLoss', dict(mode='binary', per_image=False), torch.zeros_like),
    ('JaccardLoss', {}, lambda p: torch.zeros(p.shape[0], *p.shape[2:], dtype=torch.long)),
    ('LovaszLoss', dict(classes='present'), lambda p: torch.zeros(p.shape[0], *p.shape[2:], dtype=torch.long)),
]


@pytest.mark.parametrize('name, cfg, target_fn', ALL_BACKGROUND, ids=[f'{n}-{i}' for i, (n, _, _) in
                                                                       enumerate(ALL_BACKGROUND)])
def test_all_background_batches_give_finite_values_and_gradients(name, cfg, target_fn):
    pred = make(name, n=5)[0]
    if cfg.get('mode') == 'binary' and pred.dim() == 4:  # a multiclass case run in binary mode
        pred = pred[:, 0]
    for scale in (1.0, 1e4):
        backward_finite(name, (pred * scale, target_fn(pred)), **cfg)


@pytest.mark.parametrize('size', [(1, 1), (1, 7), (7, 1)])
@pytest.mark.parametrize('name', IMAGE_NAMES)
def test_single_pixel_images_give_finite_values_and_gradients(name, size):
    args = tuple(a[..., :size[0], :size[1]].contiguous() for a in make(name, n=3))
    cfg = {'padding': 'same'} if name == 'SSIMLoss' else {}
    for dtype in (torch.float32, torch.bfloat16):
        out = backward_finite(name, tuple(a.to(dtype) for a in args), **cfg)
        if name in ('TVLoss', 'WeightedTVLoss') and size == (1, 1):
            assert float(out) == 0.0  # no neighbours, no variation


@pytest.mark.parametrize('name', NAMES)
def test_cpu_autocast_bfloat16(name):
    """Under ``torch.autocast('cpu', bfloat16)`` a float32 input gives a float32 loss close to eager, and
    a bfloat16 head output (with float32 targets) a finite bfloat16 loss and gradient."""
    args = make(name, n=8)
    loss = build(name, reduction='mean').eval()
    ref = loss(*args)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = loss(*args)
        half = backward_finite(name, (args[0].bfloat16(), *args[1:]))
    assert out.dtype == torch.float32 and half.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref, rtol=5e-2, atol=5e-2)
    torch.testing.assert_close(half.float(), ref, rtol=5e-2, atol=5e-2)


def _poison(args, value, which):
    if which == 'pred':
        pred = args[0].clone()
        pred[0] = value
        return (pred, *args[1:])

    def fn(t):
        if not t.is_floating_point():
            return t
        t = t.clone()
        t[0] = value
        return t
    return map_target(args, fn)


# a float target the loss range-checks (DFL's distances) makes NaN an input error
FLOAT_TARGET_NAMES = [n for n in NAMES if len(make(n)) > 1 and label_tensor(make(n)) is None
                      and not CASES[n].target_range]


# integer labels cannot hold NaN: the target side runs on the losses with float targets
NAN_CASES = [(n, 'pred') for n in NAMES] + [(n, 'target') for n in FLOAT_TARGET_NAMES]


@pytest.mark.parametrize('name, which', NAN_CASES, ids=[f'{n}-{w}' for n, w in NAN_CASES])
def test_nan_input_propagates(name, which):
    """Regression (ZeroOneLoss): a NaN score counted as a right/wrong prediction instead of propagating."""
    args = _poison(make(name), float('nan'), which)
    assert torch.isnan(build(name, reduction='sum')(*args))
    assert torch.isnan(build(name, reduction='none')(*args)).any()


@pytest.mark.parametrize('value', [math.inf, -math.inf])
@pytest.mark.parametrize('name', NAMES)
def test_inf_in_pred_propagates_unless_the_loss_saturates(name, value):
    args = make(name)
    out = build(name, reduction='sum')(*_poison(args, value, 'pred'))
    if not CASES[name].saturates:
        assert not torch.isfinite(out)
        return
    # bounded in the logit: +-inf is the limit of ever larger logits (here the cases' modes)
    assert torch.isfinite(out)
    torch.testing.assert_close(out, build(name, reduction='sum')(*_poison(args, math.copysign(1e4, value), 'pred')))


@pytest.mark.parametrize('name', ['DiceLoss', 'JaccardLoss', 'TverskyLoss', 'FocalTverskyLoss'])
def test_inf_logits_in_binary_overlap_losses_are_their_limit(name):
    from loss_cases.segmentation import binary
    pred, target = binary(3, torch.float32, torch.Generator().manual_seed(0))
    loss = build(name, mode='binary')
    pred_inf = pred.clone()
    pred_inf[0, 0] = math.inf
    pred_big = pred.clone()
    pred_big[0, 0] = 1e4
    torch.testing.assert_close(loss(pred_inf, target), loss(pred_big, target))


# --- state -----------------------------------------------------------------------------------------

def test_wiou_running_mean_survives_an_mmengine_checkpoint(tmp_path):
    """The running mean is a buffer: mmengine's save_checkpoint/load_checkpoint carry it, and a
    resumed model continues from it (state_dict/deepcopy/pickle: tests/test_bbox.py)."""
    from mmengine.runner.checkpoint import load_checkpoint, save_checkpoint

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)
            self.loss_bbox = build('WIoULoss', version='v3')

    gen = torch.Generator().manual_seed(0)
    pred, target = boxes(8, torch.float32, gen), boxes(8, torch.float32, gen)
    head = Head()
    for _ in range(3):
        head.loss_bbox(pred, target)  # training mode: moves the running mean
    assert float(head.loss_bbox.iou_mean) != 1.0
    path = str(tmp_path / 'epoch_1.pth')
    save_checkpoint({'state_dict': head.state_dict()}, path)
    resumed = Head()
    assert float(resumed.loss_bbox.iou_mean) == 1.0
    load_checkpoint(resumed, path, map_location='cpu', strict=True)
    assert float(resumed.loss_bbox.iou_mean) == float(head.loss_bbox.iou_mean)
    for model in (head, resumed):  # resuming continues the same trajectory
        model.loss_bbox(pred[:5], target[:5])
    assert float(resumed.loss_bbox.iou_mean) == float(head.loss_bbox.iou_mean)
    torch.testing.assert_close(resumed.loss_bbox.eval()(pred, target), head.loss_bbox.eval()(pred, target))
