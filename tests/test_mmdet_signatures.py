"""Every mmdet loss type has a drop-in here that accepts every call mmdet's class accepts.

For each loss type mmdet 3.3 registers that mmloss_ext registers too:

* constructor: mmdet's parameters, by the same names, defaults and positional order; ours may add
  keyword-only parameters after them;
* ``forward``: mmdet's parameters by the same names in the same positional order (so calls by
  position and by keyword bind alike); ours may add keyword parameters;
* constructed positionally and by keyword with the same (non-default) values, ours keeps each value
  under mmdet's attribute name, and the constructions mmdet refuses are refused with an error of
  mmdet's class (ours derive from it, e.g. ``LossValueError`` is an ``AssertionError``).

``test_every_mmdet_loss_type_is_registered`` lists the loss types not registered yet.
"""
import inspect

import pytest
import torch

from mmdet_losses import MMDET_33_LOSS_TYPES, MMDET_LOSS_TYPES, SHARED, mmdet_class, our_class
from mmloss_ext.core.hparams import REQUIRED
from mmloss_ext.registry import MODELS

P = inspect.Parameter
POSITIONAL = (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)

#: per loss type, mmdet's constructor arguments in its positional order: valid values, other than
#: the default wherever mmdet accepts another one (so a swapped or ignored argument shows)
ALT_ARGS = {
    'CrossEntropyLoss': (True, False, 'sum', [1.0, 2.0, 3.0], 7, 0.5, True),
    'FocalLoss': (True, 1.5, 0.4, 'sum', 0.5, True),
    'SmoothL1Loss': (0.5, 'sum', 0.5),
    'BalancedL1Loss': (0.4, 1.2, 0.8, 'sum', 0.5),
    'MSELoss': ('sum', 0.5),
    'IoULoss': (False, 1e-4, 'sum', 0.5, 'square'),
    'BoundedIoULoss': (0.3, 1e-4, 'sum', 0.5),
    'GIoULoss': (1e-4, 'sum', 0.5),
    'DIoULoss': (1e-4, 'sum', 0.5),
    'CIoULoss': (1e-4, 'sum', 0.5),
    'EIoULoss': (1e-4, 'sum', 0.5, 0.2),
    'SIoULoss': (1e-4, 'sum', 0.5, True),
    'GHMC': (20, 0.5, True, 0.5, 'sum'),
    'GHMR': (0.05, 20, 0.5, 0.5, 'sum'),
    'L1Loss': ('sum', 0.5),
    'AssociativeEmbeddingLoss': (0.5, 0.1),
    'GaussianFocalLoss': (3.0, 2.0, 'sum', 0.5, 2.0, 0.5),
    'QualityFocalLoss': (True, 1.5, 'sum', 0.5, True),
    'DistributionFocalLoss': ('sum', 0.5),
    'VarifocalLoss': (True, 0.5, 1.5, False, 'sum', 0.5),
    'KnowledgeDistillationKLDivLoss': ('sum', 0.5, 5),
    'SeesawLoss': (False, 0.7, 1.5, 10, 0.05, 'sum', 0.5, False),
    'DiceLoss': (True, False, 'sum', True, 0.5, 1e-2),
    'EQLV2Loss': (True, 'sum', None, 0.5, 10, False, 0.7, 3.0, 10, False, False),
    'MarginL2Loss': (3, 0.1, 0.2, True, 'sum', 0.5),
    'MultiPosCrossEntropyLoss': ('sum', 0.5),
    'L2Loss': (3, 0.1, 0.2, True, 'sum', 0.5),
    'TripletLoss': (0.5, 0.5, True),
    'CrossEntropyCustomLoss': (False, False, 'sum', 10, [1.0] * 11, 7, 0.5, True),
    'FocalCustomLoss': (True, 10, 1.5, 0.4, 'sum', 0.5, False),
}

#: constructions mmdet refuses at build time (keyword arguments); deliberately accepted here (see the
#: README's differences from mmdet): KnowledgeDistillationKLDivLoss's T in (0, 1)
REFUSED = [
    ('CrossEntropyLoss', dict(use_sigmoid=True, use_mask=True)),
    ('GHMC', dict(use_sigmoid=False)),
    ('SeesawLoss', dict(use_sigmoid=True)),
    ('CrossEntropyCustomLoss', dict()),  # num_classes is required in effect
    ('CrossEntropyCustomLoss', dict(num_classes=10, use_sigmoid=True, use_mask=True)),
    ('FocalCustomLoss', dict()),
    ('FocalCustomLoss', dict(num_classes=10, use_sigmoid=False)),
]


def _params(fn):
    return [p for p in inspect.signature(fn).parameters.values() if p.name != 'self']


def _same_default(ours, theirs):
    if ours is REQUIRED:  # mmdet's num_classes=-1 of the V3Det losses: 'not given', asserted away
        return theirs == -1
    if isinstance(theirs, bool) or isinstance(ours, bool):
        return type(ours) is type(theirs) and ours == theirs
    return ours == theirs


def assert_accepts_every_call_of(ours, theirs, what):
    """``ours`` binds every call ``theirs`` accepts to the same parameter names."""
    mine, other = _params(ours), _params(theirs)
    named = [p for p in other if p.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD)]
    mine_named = [p for p in mine if p.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD)]
    assert [p.name for p in mine_named[:len(named)]] == [p.name for p in named], (
        f'{what}: mmdet takes {[p.name for p in named]}, ours {[p.name for p in mine_named]}')
    for t, m in zip(named, mine_named):
        if t.kind in POSITIONAL:
            assert m.kind is P.POSITIONAL_OR_KEYWORD, f'{what}: `{t.name}` must be positional-or-keyword like mmdet'
        else:
            assert m.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY), f'{what}: `{t.name}` must accept a keyword'
        if t.default is not P.empty:
            assert m.default is not P.empty and _same_default(m.default, t.default), (
                f'{what}: `{t.name}` defaults to {t.default!r} in mmdet, {m.default!r} here')
    for m in mine_named[len(named):]:
        assert m.kind is P.KEYWORD_ONLY, f'{what}: our extra parameter `{m.name}` must be keyword-only'
        assert m.default is not P.empty, f'{what}: our extra parameter `{m.name}` must have a default'
    for kind in (P.VAR_POSITIONAL, P.VAR_KEYWORD):
        if any(p.kind is kind for p in other):
            assert any(p.kind is kind for p in mine), f'{what}: mmdet takes {kind.description}, ours does not'


def test_the_mmdet_loss_types_are_mmdet_33s_thirty():
    assert MMDET_LOSS_TYPES == MMDET_33_LOSS_TYPES
    assert set(ALT_ARGS) == set(MMDET_LOSS_TYPES)


def test_every_mmdet_loss_type_is_registered():
    """All 30 of mmdet's loss types, as ``type='mmloss_ext.X'``."""
    missing = [n for n in MMDET_LOSS_TYPES if n not in MODELS.module_dict]
    assert not missing, f'{len(missing)} of mmdet\'s {len(MMDET_LOSS_TYPES)} loss types are not registered: {missing}'


@pytest.mark.parametrize('name', SHARED)
def test_constructor_signature_is_mmdets_plus_keywords(name):
    assert_accepts_every_call_of(our_class(name), mmdet_class(name), f'{name}.__init__')


@pytest.mark.parametrize('name', SHARED)
def test_forward_signature_is_mmdets_plus_keywords(name):
    assert_accepts_every_call_of(our_class(name).forward, mmdet_class(name).forward, f'{name}.forward')


def _attr_equal(a, b):
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.equal(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64))
    return _same_default(a, b)


@pytest.mark.parametrize('name', SHARED)
def test_constructs_positionally_and_by_keyword_like_mmdet(name):
    args = ALT_ARGS[name]
    names = [p.name for p in _params(mmdet_class(name))]
    assert len(args) == len(names)
    kwargs = dict(zip(names, args))
    theirs = mmdet_class(name)(*args)
    by_position, by_keyword = our_class(name)(*args), our_class(name)(**kwargs)
    compared = 0
    for key, value in kwargs.items():
        if not hasattr(theirs, key):  # mmdet keeps it under another name (or folds it into another)
            continue
        compared += 1
        for ours in (by_position, by_keyword):
            assert _attr_equal(getattr(ours, key), getattr(theirs, key)), (
                f'{name}.{key}: ours {getattr(ours, key)!r}, mmdet {getattr(theirs, key)!r}')
    assert compared >= len(kwargs) - 1, f'{name}: mmdet keeps too few arguments under their own name'


@pytest.mark.parametrize('name', SHARED)
def test_default_construction_matches_mmdet(name):
    try:
        theirs = mmdet_class(name)()
    except Exception as err:  # e.g. the custom losses' num_classes=-1
        with pytest.raises(type(err)):
            our_class(name)()
        return
    ours = our_class(name)()
    for p in _params(mmdet_class(name)):
        if hasattr(theirs, p.name):
            assert _attr_equal(getattr(ours, p.name), getattr(theirs, p.name)), f'{name}.{p.name}'


@pytest.mark.parametrize('name, kwargs', REFUSED, ids=lambda v: v if isinstance(v, str) else str(v))
def test_refuses_what_mmdet_refuses_with_mmdets_error_class(name, kwargs):
    with pytest.raises(Exception) as theirs:
        mmdet_class(name)(**kwargs)
    with pytest.raises(theirs.type):
        our_class(name)(**kwargs)
