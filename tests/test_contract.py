"""The contract every registered loss honours (the common contract of the catalogue).

Parametrized over every name in ``mmloss_ext.registry.MODELS``: a new loss gets these tests by
adding its input factory to ``tests/loss_cases``.
"""
import copy
import inspect
import pickle

import pytest
import torch

from helpers import NAMES, build_case as build, required_cfg
from loss_cases import CASES
from mmdet.registry import MODELS as MMDET_MODELS
from mmloss_ext.registry import MODELS

EPS32 = torch.finfo(torch.float32).eps


def inputs(name, gen, n=6, dtype=torch.float64, grad=True):
    args = CASES[name].make(n, dtype, gen)
    if grad and CASES[name].differentiable:
        args = (args[0].detach().requires_grad_(), *args[1:])
    return args


def assert_finite_backward(out, pred):
    out.sum().backward() if out.dim() else out.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


def test_every_registered_loss_has_a_case_and_vice_versa():
    assert set(NAMES) == set(CASES)


def test_mmdet_owned_names_keep_resolving_to_mmdet():
    import mmdet.models.losses as mmdet_losses
    owned = set(mmdet_losses.__all__)
    for name in NAMES:
        plain = MMDET_MODELS.get(name)
        if name in owned:
            assert plain is getattr(mmdet_losses, name), name
        else:
            assert plain is MODELS.get(name), name


@pytest.mark.parametrize('name', NAMES)
def test_builds_through_mmdet_registry_with_scope(name):
    loss = build(name, loss_weight=2.0)
    assert type(loss) is MODELS.get(name) and type(loss).__name__ == name
    assert loss.loss_weight == 2.0
    for key, value in CASES[name].cfg.items():
        assert getattr(loss, key) == value
    assert f'loss_weight=2.0' in repr(loss)


@pytest.mark.parametrize('name', NAMES)
def test_build_rejects_unknown_key_and_bad_reduction(name):
    with pytest.raises(TypeError, match='not_a_param'):
        build(name, not_a_param=1)
    with pytest.raises(ValueError, match=name):
        build(name, reduction='avg')


@pytest.mark.parametrize('name', NAMES)
def test_reduction_shapes_and_consistency(name, gen):
    c, args = CASES[name], inputs(name, gen, grad=False)
    w = c.make_weight(args, gen)
    none = build(name, reduction='none')(*args, weight=w)
    mean = build(name, reduction='mean')(*args, weight=w)
    total = build(name, reduction='sum')(*args, weight=w)
    assert tuple(none.shape) == c.none_shape(args)
    assert mean.shape == () and total.shape == ()
    assert torch.isfinite(none).all() and torch.isfinite(mean) and torch.isfinite(total)
    if c.additive:
        torch.testing.assert_close(total, none.sum())
        torch.testing.assert_close(mean, none.sum() / none.numel())


@pytest.mark.parametrize('name', NAMES)
def test_reduction_override(name, gen):
    args = inputs(name, gen, grad=False)
    loss = build(name, reduction='none')
    torch.testing.assert_close(loss(*args, reduction_override='sum'), build(name, reduction='sum')(*args))
    torch.testing.assert_close(loss(*args, reduction_override='mean'), build(name, reduction='mean')(*args))
    assert loss.reduction == 'none'  # the override does not stick
    with pytest.raises(ValueError, match=name):
        loss(*args, reduction_override='avg')


@pytest.mark.parametrize('name', NAMES)
def test_mmdet_style_callers_catch_bad_values_as_assertion_errors(name, gen):
    """mmdet asserts on a bad ``reduction_override`` or weight shape; code that catches the
    ``AssertionError`` keeps working, and the error is still our ``ValueError`` with its message."""
    args = inputs(name, gen, grad=False)
    with pytest.raises(AssertionError, match=name) as err:
        build(name)(*args, reduction_override=True)
    assert isinstance(err.value, ValueError)
    bad_weight = torch.ones(7, 3, 5, dtype=args[0].dtype)
    with pytest.raises(AssertionError, match=f'{name}: `weight`'):
        build(name, reduction='none')(*args, weight=bad_weight)


@pytest.mark.parametrize('name', NAMES)
def test_avg_factor(name, gen):
    c, args = CASES[name], inputs(name, gen, grad=False)
    w = c.make_weight(args, gen)
    with_avg = build(name, reduction='mean')(*args, weight=w, avg_factor=3.0)
    if c.additive:
        expected = build(name, reduction='sum')(*args, weight=w) / (3.0 + EPS32)
        torch.testing.assert_close(with_avg, expected)
    with pytest.raises(ValueError, match=name):
        build(name, reduction='sum')(*args, weight=w, avg_factor=3.0)
    with pytest.raises(ValueError, match=name):
        build(name, reduction='mean')(*args, reduction_override='sum', avg_factor=3.0)


@pytest.mark.parametrize('reduction', ['mean', 'sum'])
@pytest.mark.parametrize('name', NAMES)
def test_zero_weight_gives_connected_zero(name, reduction, gen):
    c, args = CASES[name], inputs(name, gen)
    w = torch.zeros_like(c.make_weight(args, gen))
    out = build(name, reduction=reduction)(*args, weight=w)
    assert out.shape == () and float(out) == 0.0
    if c.differentiable:
        assert_finite_backward(out, args[0])
        assert float(args[0].grad.abs().sum()) == 0.0


@pytest.mark.parametrize('name', NAMES)
def test_empty_input(name, gen):
    c = CASES[name]
    for reduction in ('mean', 'sum', 'none'):
        args = inputs(name, gen, n=0)
        out = build(name, reduction=reduction)(*args)
        if reduction == 'none':
            assert tuple(out.shape) == c.none_shape(args)
        else:
            assert out.shape == () and float(out) == 0.0
        if c.differentiable:
            assert_finite_backward(out, args[0])


@pytest.mark.parametrize('name', [n for n in NAMES if CASES[n].differentiable])
def test_gradcheck_float64(name, gen):
    args = inputs(name, gen, n=4)
    w = CASES[name].make_weight(args, gen)
    loss = build(name)
    assert torch.autograd.gradcheck(lambda p: loss(p, *args[1:], weight=w, avg_factor=2.5, reduction_override='mean'),
                                    (args[0],),
                                    eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('name', NAMES)
def test_module_equals_functional(name, gen):
    c, args = CASES[name], inputs(name, gen, grad=False)
    w = c.make_weight(args, gen)
    loss = build(name, loss_weight=2.5)
    for reduction, avg in (('none', None), ('mean', None), ('mean', 4.0), ('sum', None)):
        expected = 2.5 * c.read(type(loss).loss_fn(*args, weight=w, reduction=reduction, avg_factor=avg,
                                                   **loss.hparams()))
        got = loss(*args, weight=w, avg_factor=avg, reduction_override=reduction)
        torch.testing.assert_close(got, expected)


def _functional_defaults(fn):
    """The keyword-only hyper-parameters of a functional and their defaults, read from its signature."""
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.kind is p.KEYWORD_ONLY and k not in ('weight', 'reduction', 'avg_factor')}


@pytest.mark.parametrize('name', NAMES)
def test_class_defaults_are_the_functional_defaults(name):
    cls = MODELS.get(name)
    fn_params = inspect.signature(cls.loss_fn).parameters
    hparams = _functional_defaults(cls.loss_fn)
    required = required_cfg(name)  # REQUIRED defaults: the class refuses to build without them
    for key in required:
        with pytest.raises(TypeError, match=f'{name}: `{key}` is required'):
            cls(**{k: v for k, v in required.items() if k != key})
    loss = cls(**required)
    assert loss.hparams().keys() == hparams.keys(), 'the class exposes every hyper-parameter'
    for key, default in hparams.items():
        if key in required:
            continue
        value = loss.hparams()[key]
        assert value == default or (value is None and default is None), key
    assert loss.reduction == fn_params['reduction'].default
    assert loss.loss_weight == 1.0
    # what help() and IDEs show: the same parameters and defaults, plus reduction and loss_weight
    sig = inspect.signature(cls)
    expected = {**hparams, 'reduction': fn_params['reduction'].default, 'loss_weight': 1.0}
    assert {k: p.default for k, p in sig.parameters.items()} == expected
    positional = [k for k, p in sig.parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert tuple(positional) == cls.positional


@pytest.mark.parametrize('name', NAMES)
def test_no_class_writes_a_default_of_its_own(name):
    """A constructor in the class hierarchy (e.g. to register a buffer) passes its arguments on
    unchanged: a default written there would be a second copy of the functional's."""
    for klass in MODELS.get(name).__mro__:
        init = klass.__dict__.get('__init__')
        if init is None or klass is torch.nn.Module or klass is object:
            continue
        for p in inspect.signature(init).parameters.values():
            assert p.default is p.empty, f'{klass.__name__}.__init__ writes a default for `{p.name}`'


@pytest.mark.parametrize('name', NAMES)
def test_deepcopy_and_pickle(name, gen):
    args = inputs(name, gen, grad=False)
    loss = build(name, loss_weight=1.5)
    ref = loss(*args)
    for clone in (copy.deepcopy(loss), pickle.loads(pickle.dumps(loss))):
        assert repr(clone) == repr(loss)
        torch.testing.assert_close(clone(*args), ref)


@pytest.mark.parametrize('name', NAMES)
def test_shape_mismatch_names_the_loss(name, gen):
    args = CASES[name].mismatch(inputs(name, gen, grad=False))
    with pytest.raises(ValueError, match=name):
        build(name)(*args)


@pytest.mark.parametrize('name', NAMES)
def test_non_tensor_pred_is_a_type_error(name, gen):
    args = inputs(name, gen, grad=False)
    with pytest.raises(TypeError, match=name):
        build(name)(args[0].tolist(), *args[1:])
