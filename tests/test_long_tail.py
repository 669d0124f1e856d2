"""The long-tail losses against mmdet: SeesawLoss, EQLV2Loss, CrossEntropyCustomLoss, FocalCustomLoss.

* Values and gradients against mmdet's modules, over several successive training-mode calls (the
  statistics evolve), every reduction, weights, avg_factor and ``return_dict`` both ways. float64
  where mmdet allows; where mmdet computes in float32 whatever the input (Seesaw's mitigation
  factor from its float32 ``cum_samples``, EQLv2's weights from its float32 ``pos_neg``) the
  comparison is at float32 tolerance.
* The head protocol: the ``custom_*`` flags, channels, activations and accuracies against mmdet's,
  and mmdet's ``Shared2FCBBoxHead`` (and FCOS for FocalCustomLoss) built with each loss giving
  what it gives with mmdet's: losses, accuracies and predicted boxes.
* State: buffers with mmdet's names (checkpoints load both ways), training-mode updates only,
  an mmengine checkpoint round trip, zero-weight samples, and a 2-process gloo run whose ranks
  end with identical statistics equal to one process on the concatenated batch.
* The generic pieces they needed: ``REQUIRED`` hyper-parameters, integer ranges, losses of parts.

The contract, adversarial and property tests cover them through ``tests/loss_cases/long_tail.py``.
"""
import copy
import pickle

import pytest
import torch
from mmdet.models.losses import CrossEntropyCustomLoss as MMDetCECustom
from mmdet.models.losses import EQLV2Loss as MMDetEQLV2
from mmdet.models.losses import FocalCustomLoss as MMDetFocalCustom
from mmdet.models.losses import SeesawLoss as MMDetSeesaw
from mmdet.registry import MODELS as MMDET_MODELS

from helpers import build, gloo_ranks
from mmloss_ext.core.errors import LossValueError
from mmloss_ext.core.hparams import POSITIVE_INT, REQUIRED
from mmloss_ext.losses import (CrossEntropyCustomLoss, EQLV2Loss, FocalCustomLoss, SeesawLoss,
                               cross_entropy_custom_loss, eqlv2_loss, focal_custom_loss)

EPS32 = torch.finfo(torch.float32).eps
F64 = dict(rtol=1e-9, atol=1e-12)
F32 = dict(rtol=1e-5, atol=1e-6)  # mmdet computes part of the loss in float32 whatever the input
C = 6
REDUCTIONS = ('none', 'mean', 'sum')


def batch(gen, n, width, *, background=0.4, dtype=torch.float64, scale=3.0):
    """Logits (n, width) and labels in [0, C] with about ``background`` of them the background C."""
    x = torch.randn(n, width, generator=gen, dtype=dtype) * scale
    y = torch.randint(0, C, (n,), generator=gen)
    y = torch.where(torch.rand(n, generator=gen) < background, torch.full_like(y, C), y)
    return x, y


def run(loss, x, *args, **kw):
    """(value, gradient w.r.t. x) of a loss call; a dict value keeps its parts, the gradient is of their sum."""
    x = x.detach().clone().requires_grad_()
    out = loss(x, *args, **kw)
    total = sum(v.sum() for v in out.values()) if isinstance(out, dict) else out.sum()
    grad, = torch.autograd.grad(total, x, allow_unused=True)
    detached = {k: v.detach() for k, v in out.items()} if isinstance(out, dict) else out.detach()
    return detached, torch.zeros_like(x) if grad is None else grad


# --- the generic pieces ----------------------------------------------------------------------------

def test_required_hyper_parameters_are_refused_when_missing_and_typed_by_their_declaration():
    for cls, fn in ((CrossEntropyCustomLoss, cross_entropy_custom_loss), (FocalCustomLoss, focal_custom_loss)):
        name = cls.__name__
        with pytest.raises(TypeError, match=f'{name}: `num_classes` is required'):
            cls()
        with pytest.raises(TypeError, match=f'{name}: `num_classes` is required'):
            MMDET_MODELS.build(dict(type=f'mmloss_ext.{name}'))
        with pytest.raises(TypeError, match=f'{name}: `num_classes` is required'):
            fn(torch.zeros(2, 3), torch.tensor([0, 1]))
        with pytest.raises(TypeError, match=f"{name}: `num_classes` expected an int, got float 4.0"):
            cls(num_classes=4.0)
        with pytest.raises(TypeError, match=f"{name}: `num_classes` expected a number, got str '4'"):
            cls(num_classes='4')
        with pytest.raises(ValueError, match=rf'{name}: `num_classes` expected an int in \[1, inf\), got -1'):
            cls(num_classes=-1)  # mmdet's "not given" sentinel
        assert cls(num_classes=4).num_classes == 4
        assert cls.constructor_signature().parameters['num_classes'].default is REQUIRED
    assert repr(REQUIRED) == 'REQUIRED'
    assert pickle.loads(pickle.dumps(REQUIRED)) is REQUIRED and copy.deepcopy(REQUIRED) is REQUIRED
    POSITIVE_INT.check('X', 'n', 3)
    with pytest.raises(TypeError, match='X: `n` expected an int, got bool True'.replace('an int', 'a number')):
        POSITIVE_INT.check('X', 'n', True)


def test_positional_arguments_follow_mmdets_constructors():
    assert SeesawLoss(False, 0.5, 1.0, 5, 0.02, 'sum', 2.0, False).hparams() == dict(
        use_sigmoid=False, p=0.5, q=1.0, num_classes=5, eps=0.02, return_dict=False)
    eql = EQLV2Loss(True, 'sum', None, 2.0, 5, False, 0.7, 3.0, 10, False, False)
    assert (eql.num_classes, eql.mu, eql.alpha, eql.gamma, eql.test_with_obj, eql.reduction, eql.loss_weight) == (
        5, 0.7, 3.0, 10, False, 'sum', 2.0)
    ce = CrossEntropyCustomLoss(True, False, 'sum', 5, None, 255, 2.0, True)
    assert (ce.use_sigmoid, ce.num_classes, ce.ignore_index, ce.avg_non_ignore, ce.loss_weight) == (True, 5, 255, True, 2.0)
    focal = FocalCustomLoss(True, 5, 1.0, 0.5, 'sum', 2.0, True)
    assert (focal.num_classes, focal.gamma, focal.alpha, focal.activated, focal.loss_weight) == (5, 1.0, 0.5, True, 2.0)


def test_mmdet_only_values_are_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"SeesawLoss: `use_sigmoid` expected False \(the only mode implemented\), got True"):
        SeesawLoss(use_sigmoid=True)
    with pytest.raises(ValueError, match='EQLV2Loss: `use_sigmoid` expected True'):
        EQLV2Loss(use_sigmoid=False)
    with pytest.raises(ValueError, match=r"EQLV2Loss: `class_weight` expected None .*never applies.*got \[1.0\]"):
        EQLV2Loss(class_weight=[1.0])
    with pytest.raises(ValueError, match='FocalCustomLoss: `use_sigmoid` expected True'):
        FocalCustomLoss(num_classes=3, use_sigmoid=False)
    with pytest.raises(ValueError, match='CrossEntropyCustomLoss: `use_sigmoid` and `use_mask` expected at most one'):
        CrossEntropyCustomLoss(num_classes=3, use_sigmoid=True, use_mask=True)
    with pytest.raises(ValueError, match=r'SeesawLoss: `eps` expected a value in \(0.0, inf\), got 0'):
        SeesawLoss(eps=0)


@pytest.mark.parametrize('cls, width', [(SeesawLoss, C + 2), (EQLV2Loss, C + 1), (CrossEntropyCustomLoss, C + 1),
                                        (FocalCustomLoss, C)])
def test_classifier_width_must_match_num_classes(cls, width, gen):
    x, y = batch(gen, 5, width + 1)
    with pytest.raises(LossValueError, match=rf'{cls.__name__}: `pred` expected shape \(N, {width}\)'):
        cls(num_classes=C)(x, y)


def test_seesaw_parts_are_scaled_and_the_shortcut_keeps_the_dict(gen):
    x, y = batch(gen, 8, C + 2)
    one, two = SeesawLoss(num_classes=C).eval(), SeesawLoss(num_classes=C, loss_weight=2.5).eval()
    a, b = one(x, y), two(x, y)
    assert list(a) == list(b) == ['loss_cls_objectness', 'loss_cls_classes']
    for k in a:
        torch.testing.assert_close(b[k], 2.5 * a[k])
    for args, kw in (((x[:0], y[:0]), {}), ((x, y), dict(weight=torch.zeros(8, dtype=x.dtype)))):
        for reduction in ('mean', 'sum'):
            out = two(*args, reduction_override=reduction, **kw)
            assert list(out) == list(a) and all(v.shape == () and float(v) == 0.0 for v in out.values())
    summed = SeesawLoss(num_classes=C, return_dict=False).eval()
    torch.testing.assert_close(summed(x, y), sum(a.values()))
    assert summed(x[:0], y[:0]).shape == ()


# --- Seesaw against mmdet ---------------------------------------------------------------------------

def _seesaw_calls(gen):
    """Four successive batches; the third has no positives, the last only positives."""
    out = [batch(gen, 24, C + 2), batch(gen, 17, C + 2, background=0.2), batch(gen, 9, C + 2, background=1.0),
           batch(gen, 12, C + 2, background=0.0)]
    return out


@pytest.mark.parametrize('p, q', [(0.8, 2.0), (0.0, 2.0), (0.8, 0.0), (1.5, 1.0)])
@pytest.mark.parametrize('reduction', REDUCTIONS)
def test_seesaw_matches_mmdet_over_successive_calls(p, q, reduction, gen):
    """mmdet computes in float32 whatever the input: the mitigation factor (its float32 counts) and
    the weighted terms (``label_weights.float()``); without them both are float64 throughout. Its
    'mean' of the classes part is over the positives, ours through avg_factor = #positives, whose
    epsilon shows at 1e-7 relative."""
    ours = SeesawLoss(p=p, q=q, num_classes=C, loss_weight=1.5)
    theirs = MMDetSeesaw(p=p, q=q, num_classes=C, loss_weight=1.5)
    for x, y in _seesaw_calls(gen):
        w = torch.rand(len(y), generator=gen, dtype=x.dtype) + 0.5
        for kw in (dict(), dict(weight=w), dict(weight=w, avg_factor=7.0)):
            if reduction != 'mean' and 'avg_factor' in kw:
                continue
            a, ga = run(ours, x, y, kw.get('weight'), kw.get('avg_factor'), reduction_override=reduction)
            b, gb = run(theirs, x, y, kw.get('weight'), kw.get('avg_factor'), reduction_override=reduction)
            torch.testing.assert_close(ours.cum_samples, theirs.cum_samples, rtol=0, atol=0)
            weighted = 'weight' in kw
            obj_tol = F32 if weighted else F64
            cls_tol = F32 if weighted or p > 0 else F64
            if reduction == 'mean' and 'avg_factor' not in kw and cls_tol is F64:
                cls_tol = dict(rtol=1e-6, atol=1e-12)
            pos = y < C
            torch.testing.assert_close(a['loss_cls_objectness'], b['loss_cls_objectness'].to(x.dtype), **obj_tol)
            if reduction == 'none':  # mmdet gives the classes part for the positives only
                if bool(pos.any()):
                    torch.testing.assert_close(a['loss_cls_classes'][pos], b['loss_cls_classes'].to(x.dtype),
                                               **cls_tol)
                assert float(a['loss_cls_classes'][~pos].abs().sum()) == 0.0
            else:
                torch.testing.assert_close(a['loss_cls_classes'], b['loss_cls_classes'].to(x.dtype), **cls_tol)
            torch.testing.assert_close(ga, gb, **(cls_tol if cls_tol is not F64 else obj_tol))
    assert float(ours.cum_samples.sum()) > 0


def test_seesaw_return_dict_false_is_the_sum_as_mmdet(gen):
    ours, theirs = SeesawLoss(num_classes=C, return_dict=False), MMDetSeesaw(num_classes=C, return_dict=False)
    for x, y in _seesaw_calls(gen)[:2]:
        a, ga = run(ours, x, y, None, float(len(y)))
        b, gb = run(theirs, x, y, None, float(len(y)))
        assert a.shape == () and b.shape == ()
        torch.testing.assert_close(a, b, **F32)
        torch.testing.assert_close(ga, gb, **F32)


def test_seesaw_compensation_and_mitigation_are_active_in_the_parity_inputs(gen):
    """The parity test is not vacuous: each factor changes the classes part on those inputs."""
    loss = SeesawLoss(num_classes=C)
    for x, y in _seesaw_calls(gen)[:2]:
        loss(x, y)  # accumulate some counts
    x, y = _seesaw_calls(gen)[0]
    loss.eval()
    parts = {pq: SeesawLoss(p=pq[0], q=pq[1], num_classes=C).eval() for pq in ((0.8, 2.0), (0.0, 2.0), (0.8, 0.0),
                                                                               (0.0, 0.0))}
    for m in parts.values():
        m.cum_samples.copy_(loss.cum_samples)
    values = {pq: float(m(x, y)['loss_cls_classes']) for pq, m in parts.items()}
    assert len(set(values.values())) == 4, values
    plain = torch.nn.functional.cross_entropy(x[y < C, :C], y[y < C])
    assert values[(0.0, 0.0)] == pytest.approx(float(plain), rel=1e-6)  # avg_factor = #positives (+ eps)


def test_seesaw_half_precision_and_extreme_logits_are_finite(gen):
    for dtype in (torch.float16, torch.bfloat16):
        x, y = batch(gen, 16, C + 2, dtype=torch.float32)
        ref = SeesawLoss(num_classes=C)(x, y)
        loss = SeesawLoss(num_classes=C)
        out, grad = run(loss, x.to(dtype), y)
        assert all(v.dtype == dtype and torch.isfinite(v) for v in out.values()) and torch.isfinite(grad).all()
        for k in out:
            torch.testing.assert_close(out[k].float(), ref[k], rtol=3e-2, atol=3e-2)
    x, y = batch(gen, 16, C + 2, dtype=torch.float32)
    loss = SeesawLoss(num_classes=C)
    for _ in range(2):  # training mode: the counts move, the loss stays finite
        out, grad = run(loss, torch.sign(x) * 1e4, y)
        assert all(torch.isfinite(v) for v in out.values()) and torch.isfinite(grad).all()


# --- EQLv2 against mmdet ----------------------------------------------------------------------------

def _eqlv2_calls(gen):
    return [batch(gen, 20, C + 1), batch(gen, 13, C + 1, background=0.7), batch(gen, 8, C + 1, background=1.0),
            batch(gen, 30, C + 1, background=0.1), batch(gen, 16, C + 1)]


@pytest.mark.parametrize('cfg', [dict(), dict(mu=0.5, alpha=2.0, gamma=6), dict(test_with_obj=False)])
def test_eqlv2_matches_mmdet_over_successive_calls(cfg, gen):
    ours, theirs = EQLV2Loss(num_classes=C, loss_weight=1.5, **cfg), MMDetEQLV2(num_classes=C, loss_weight=1.5, **cfg)
    moved = False
    for i, (x, y) in enumerate(_eqlv2_calls(gen)):
        a, ga = run(ours, x, y)
        b, gb = run(theirs, x, y)
        # the weights come from mmdet's float32 pos_neg: float32 tolerance once it has moved
        tol = F64 if i == 0 else F32
        torch.testing.assert_close(a, b, **tol)
        torch.testing.assert_close(ga, gb, **tol)
        for key in ('pos_grad', 'neg_grad', 'pos_neg'):
            assert getattr(ours, key).dtype == torch.float32
            torch.testing.assert_close(getattr(ours, key), getattr(theirs, key), rtol=2e-6, atol=1e-6)
        moved = moved or bool((ours.pos_neg < 5).any())
    assert moved  # the weights really changed along the way


def test_eqlv2_applies_reduction_weight_and_avg_factor_that_mmdet_ignores(gen):
    """mmdet's value is the sum over the batch / N whatever is passed; ours is that for 'mean'
    without weight or avg_factor, and applies the others (the RoI heads' unit weights and
    avg_factor = N give mmdet's value up to avg_factor's epsilon)."""
    x, y = batch(gen, 12, C + 1)
    theirs = float(MMDetEQLV2(num_classes=C).eval()(x, y))
    loss = EQLV2Loss(num_classes=C).eval()
    none = loss(x, y, reduction_override='none')
    assert none.shape == (12,)
    assert float(none.sum()) / 12 == pytest.approx(theirs, rel=1e-12)
    assert float(loss(x, y, reduction_override='sum')) == pytest.approx(12 * theirs, rel=1e-12)
    assert float(loss(x, y, avg_factor=12.0)) == pytest.approx(theirs * 12 / (12 + EPS32), rel=1e-12)
    w = torch.rand(12, generator=gen, dtype=x.dtype)
    assert float(loss(x, y, w)) == pytest.approx(float((w * none).sum()) / 12, rel=1e-12)
    assert float(loss(x, y, torch.ones(12, dtype=x.dtype), avg_factor=12.0)) == pytest.approx(theirs, rel=1e-6)


def test_eqlv2_zero_weight_samples_add_nothing_to_the_statistics(gen):
    x, y = batch(gen, 14, C + 1)
    padded, alone = EQLV2Loss(num_classes=C), EQLV2Loss(num_classes=C)
    w = torch.ones(14, dtype=x.dtype)
    w[9:] = 0
    padded(x, y, w)
    alone(x[:9], y[:9])
    for key in ('pos_grad', 'neg_grad', 'pos_neg'):
        torch.testing.assert_close(getattr(padded, key), getattr(alone, key))
    # and a sample weight scales its contribution
    half, full = EQLV2Loss(num_classes=C), EQLV2Loss(num_classes=C)
    half(x, y, torch.full((14,), 0.5, dtype=x.dtype))
    full(x, y)
    torch.testing.assert_close(half.pos_grad * 2, full.pos_grad)
    torch.testing.assert_close(half.neg_grad * 2, full.neg_grad)


def test_eqlv2_functional_state_arguments(gen):
    x, y = batch(gen, 10, C + 1)
    state = [torch.zeros(C), torch.zeros(C), torch.full((C,), 100.0)]
    # the initial state is the no-state call (every weight 1: the plain BCE summed over classes)
    torch.testing.assert_close(eqlv2_loss(x, y, *state, num_classes=C), eqlv2_loss(x, y, num_classes=C))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        x, torch.nn.functional.one_hot(y, C + 1).to(x.dtype), reduction='sum') / 10
    torch.testing.assert_close(eqlv2_loss(x, y, num_classes=C), bce)
    eqlv2_loss(x, y, *state, False, num_classes=C)
    assert float(state[0].abs().sum()) == 0.0  # training=False: untouched
    eqlv2_loss(x, y, *state, True, num_classes=C)
    assert float(state[0].sum()) > 0 and float(state[1].sum()) > 0
    torch.testing.assert_close(state[2], state[0] / (state[1] + 1e-10))
    with pytest.raises(ValueError, match='EQLV2Loss: `pos_neg` expected a tensor with the other statistics, got None'):
        eqlv2_loss(x, y, state[0], state[1], num_classes=C)
    with pytest.raises(ValueError, match=r'EQLV2Loss: `neg_grad` expected shape \(6,\), got \(5,\)'):
        eqlv2_loss(x, y, state[0], torch.zeros(5), state[2], num_classes=C)


def test_eqlv2_half_precision_and_extreme_logits_are_finite(gen):
    for dtype in (torch.float16, torch.bfloat16):
        x, y = batch(gen, 16, C + 1, dtype=torch.float32)
        ref = EQLV2Loss(num_classes=C)(x, y)
        out, grad = run(EQLV2Loss(num_classes=C), x.to(dtype), y)
        assert out.dtype == dtype and torch.isfinite(out) and torch.isfinite(grad).all()
        torch.testing.assert_close(out.float(), ref, rtol=3e-2, atol=3e-2)
    x, y = batch(gen, 16, C + 1, dtype=torch.float32)
    loss = EQLV2Loss(num_classes=C)
    for _ in range(3):
        out, grad = run(loss, torch.sign(x) * 1e4, y)
        assert torch.isfinite(out) and torch.isfinite(grad).all()
    assert all(torch.isfinite(getattr(loss, k)).all() for k in ('pos_grad', 'neg_grad', 'pos_neg'))


# --- the V3Det custom losses against mmdet --------------------------------------------------------

@pytest.mark.parametrize('impl', ['eager', 'fused'])
@pytest.mark.parametrize('cfg', [dict(), dict(class_weight=[1.0, 0.5, 2.0, 1.5, 1.0, 0.7, 1.2]),
                                 dict(ignore_index=2), dict(ignore_index=2, avg_non_ignore=True),
                                 dict(use_sigmoid=True), dict(use_sigmoid=True, class_weight=[2.0] * C)])
@pytest.mark.parametrize('reduction', REDUCTIONS)
def test_cross_entropy_custom_matches_mmdet(cfg, reduction, impl, gen):
    """mmdet casts the weights (and the sigmoid form's targets) with ``.float()``: float32 tolerance there."""
    width = C if cfg.get('use_sigmoid') else C + 1
    x, y = batch(gen, 15, width)
    if 'ignore_index' in cfg:
        y[[1, 4, 9]] = cfg['ignore_index']
    w = torch.rand(15, generator=gen, dtype=x.dtype) + 0.5
    ours = CrossEntropyCustomLoss(num_classes=C, loss_weight=1.5, reduction=reduction, impl=impl, **cfg)
    theirs = MMDetCECustom(num_classes=C, loss_weight=1.5, reduction=reduction, **cfg)
    for args in ((), (w,), (w, 6.0)):
        if reduction == 'sum' and len(args) == 2:
            continue
        # avg_non_ignore: our count is a tensor (no host sync), so avg_factor + eps rounds in float32
        tol = F32 if args or cfg.get('use_sigmoid') or cfg.get('avg_non_ignore') else F64
        a, ga = run(ours, x, y, *args)
        b, gb = run(theirs, x, y, *args)
        torch.testing.assert_close(a, b.to(a.dtype), **tol)
        torch.testing.assert_close(ga, gb, **tol)


@pytest.mark.parametrize('impl', ['eager', 'fused'])
@pytest.mark.parametrize('reduction', REDUCTIONS)
def test_focal_custom_matches_mmdet(reduction, impl, gen):
    x, y = batch(gen, 15, C)
    w = torch.rand(15, generator=gen, dtype=x.dtype) + 0.5
    ours = FocalCustomLoss(num_classes=C, gamma=1.5, alpha=0.3, loss_weight=1.5, reduction=reduction, impl=impl)
    theirs = MMDetFocalCustom(num_classes=C, gamma=1.5, alpha=0.3, loss_weight=1.5, reduction=reduction)
    for args in ((), (w,), (w, 6.0), (w.repeat_interleave(C),)):  # an (N * C,) weight is viewed as (N, C)
        if reduction == 'sum' and len(args) == 2:
            continue
        a, ga = run(ours, x, y, *args)
        b, gb = run(theirs, x, y, *args)
        torch.testing.assert_close(a, b, **F64)
        torch.testing.assert_close(ga, gb, **F64)


def test_focal_custom_activated_takes_probabilities():
    """mmdet documents ``activated`` but its module reads logits regardless; ours takes probabilities."""
    gen = torch.Generator().manual_seed(3)
    x, y = batch(gen, 10, C)
    probs = torch.sigmoid(x)
    act = FocalCustomLoss(num_classes=C, activated=True)(probs, y)
    torch.testing.assert_close(act, FocalCustomLoss(num_classes=C)(x, y), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(act, build('FocalLoss', activated=True)(probs, y))


@pytest.mark.parametrize('cls, width, cfg', [(SeesawLoss, C + 2, {}), (EQLV2Loss, C + 1, {}),
                                             (CrossEntropyCustomLoss, C + 1, {}),
                                             (CrossEntropyCustomLoss, C, dict(use_sigmoid=True)),
                                             (FocalCustomLoss, C, {})])
def test_empty_batches_give_zeros_in_every_reduction(cls, width, cfg):
    loss = cls(num_classes=C, **cfg)
    for reduction in REDUCTIONS:
        x = torch.zeros(0, width, requires_grad=True)
        out = loss(x, torch.zeros(0, dtype=torch.long), reduction_override=reduction)
        parts = out.values() if isinstance(out, dict) else [out]
        for v in parts:
            assert torch.isfinite(v).all() and float(v.abs().sum()) == 0.0
            if reduction == 'none':
                assert v.shape[0] == 0
        sum(v.sum() for v in parts).backward()
        assert x.grad is not None and x.grad.shape == x.shape


# --- the head protocol ------------------------------------------------------------------------------

PAIRS = [('SeesawLoss', MMDetSeesaw, {}), ('EQLV2Loss', MMDetEQLV2, {}),
         ('CrossEntropyCustomLoss', MMDetCECustom, {}), ('CrossEntropyCustomLoss', MMDetCECustom, dict(use_sigmoid=True)),
         ('FocalCustomLoss', MMDetFocalCustom, {})]
PAIR_IDS = ['seesaw', 'eqlv2', 'ce-custom', 'ce-custom-sigmoid', 'focal-custom']


@pytest.mark.parametrize('name, mmdet_cls, cfg', PAIRS, ids=PAIR_IDS)
def test_protocol_flags_channels_activation_and_accuracy_match_mmdet(name, mmdet_cls, cfg, gen):
    ours, theirs = build(name, num_classes=C, **cfg), mmdet_cls(num_classes=C, **cfg)
    for flag in ('custom_cls_channels', 'custom_activation', 'custom_accuracy'):
        assert getattr(ours, flag) is getattr(theirs, flag, False), flag
    if name == 'EQLV2Loss':  # mmdet's has no get_cls_channels / get_accuracy
        assert ours.get_channel_num(C) == theirs.get_channel_num(C) == ours.get_cls_channels(C) == C + 1
    else:
        assert ours.get_cls_channels(C) == theirs.get_cls_channels(C)
        with pytest.raises(AssertionError, match=f'{name}: `num_classes` expected the loss\'s {C}'):
            ours.get_cls_channels(C + 1)  # mmdet asserts; ours says why (and is an AssertionError too)
    width = ours.get_cls_channels(C)
    for background in (0.4, 1.0, 0.0):
        x, y = batch(gen, 11, width, background=background, dtype=torch.float32)
        torch.testing.assert_close(ours.get_activation(x), theirs.get_activation(x.clone()))
        if name != 'EQLV2Loss':
            a, b = ours.get_accuracy(x, y), theirs.get_accuracy(x, y)
            assert list(a) == list(b)
            for k in a:
                torch.testing.assert_close(a[k].reshape(-1), b[k].reshape(-1).float())
    if name == 'SeesawLoss':
        assert set(ours.get_accuracy(x, y)) == {'acc_objectness', 'acc_classes'}
        assert ours.get_activation(x).shape == (11, C + 1)


def _bbox_head(loss_cls):
    torch.manual_seed(0)
    return MMDET_MODELS.build(dict(
        type='Shared2FCBBoxHead', in_channels=4, fc_out_channels=16, roi_feat_size=3, num_classes=C,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2]),
        reg_class_agnostic=False, loss_cls=loss_cls, loss_bbox=dict(type='L1Loss', loss_weight=1.0)))


@pytest.mark.parametrize('name, mmdet_cls, cfg', PAIRS, ids=PAIR_IDS)
def test_shared2fc_bbox_head_with_our_loss_trains_and_predicts_as_with_mmdets(name, mmdet_cls, cfg):
    from mmengine.config import ConfigDict
    theirs = _bbox_head(dict(type=mmdet_cls.__name__, num_classes=C, **cfg))
    ours = _bbox_head(dict(type=f'mmloss_ext.{name}', num_classes=C, **cfg))
    assert type(ours.loss_cls).__module__.startswith('mmloss_ext')
    assert ours.fc_cls.out_features == theirs.fc_cls.out_features
    ours.load_state_dict(theirs.state_dict())  # same weights (and the loss's buffers: same names)
    gen = torch.Generator().manual_seed(1)
    for step in range(3):  # the statistics evolve alike
        n = 16
        feats = torch.randn(n, 4, 3, 3, generator=gen)
        xy = torch.rand(n, 2, generator=gen) * 40
        rois = torch.cat([torch.zeros(n, 1), xy, xy + 8 + torch.rand(n, 2, generator=gen) * 20], dim=1)
        labels = torch.where(torch.rand(n, generator=gen) < 0.5, torch.randint(0, C, (n,), generator=gen),
                             torch.full((n,), C))
        targets = torch.randn(n, 4, generator=gen)
        losses = {}
        for key, head in (('ours', ours), ('theirs', theirs)):
            cls_score, bbox_pred = head(feats)
            out = head.loss(cls_score, bbox_pred, rois, labels, torch.ones(n), targets, torch.ones(n, 4))
            total = sum(v.sum() for k, v in out.items() if k.startswith('loss'))
            grads = torch.autograd.grad(total, [head.fc_cls.weight])
            losses[key] = ({k: v.detach() for k, v in out.items()}, grads[0])
        (a, ga), (b, gb) = losses['ours'], losses['theirs']
        assert list(a) == list(b), (list(a), list(b))
        for k in a:
            # EQLv2: mmdet divides by N, ours by avg_factor = N (+ eps); float32 throughout
            torch.testing.assert_close(a[k].reshape(-1), b[k].reshape(-1).float(), rtol=2e-5, atol=1e-6)
        torch.testing.assert_close(ga, gb, rtol=2e-5, atol=1e-6)
    for key in ('cum_samples', 'pos_grad', 'neg_grad', 'pos_neg'):
        if hasattr(theirs.loss_cls, key):
            torch.testing.assert_close(getattr(ours.loss_cls, key), getattr(theirs.loss_cls, key), rtol=1e-5, atol=1e-6)
    # predict_by_feat: the boxes, scores and labels after NMS are the same
    ours.eval(), theirs.eval()
    cfg_test = ConfigDict(score_thr=0.01, nms=dict(type='nms', iou_threshold=0.5), max_per_img=20)
    metas = [dict(img_shape=(64, 64), scale_factor=(1.0, 1.0))]
    with torch.no_grad():
        results = [head.predict_by_feat((rois,), (head(feats)[0],), (head(feats)[1],), metas, rcnn_test_cfg=cfg_test)[0]
                   for head in (ours, theirs)]
    assert len(results[0]) > 0
    for field in ('bboxes', 'scores', 'labels'):
        torch.testing.assert_close(getattr(results[0], field), getattr(results[1], field))


def test_fcos_head_with_focal_custom_loss_matches_mmdets():
    """V3Det's FCOS: the dense head reads custom_cls_channels (activation) and custom_accuracy."""
    from mmengine.config import ConfigDict
    from mmengine.structures import InstanceData

    def head(loss_type):
        torch.manual_seed(0)
        return MMDET_MODELS.build(dict(
            type='FCOSHead', num_classes=C, in_channels=8, feat_channels=8, stacked_convs=1, strides=[8],
            regress_ranges=((-1, 1e8),), norm_on_bbox=True, centerness_on_reg=True, center_sampling=True,
            conv_bias=True, norm_cfg=None, loss_cls=dict(type=loss_type, use_sigmoid=True, num_classes=C, gamma=2.0, alpha=0.25),
            loss_bbox=dict(type='IoULoss', loss_weight=1.0),
            loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
            test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.6),
                          max_per_img=50)))

    feats = [torch.randn(1, 8, 8, 8, generator=torch.Generator().manual_seed(1))]
    gt = InstanceData(bboxes=torch.tensor([[8.0, 8.0, 40.0, 36.0], [30.0, 2.0, 60.0, 30.0]]), labels=torch.tensor([0, 4]))
    metas = [dict(img_shape=(64, 64), pad_shape=(64, 64), scale_factor=(1.0, 1.0))]
    out = {}
    for loss_type in ('FocalCustomLoss', 'mmloss_ext.FocalCustomLoss'):
        h = head(loss_type)
        preds = h(feats)
        losses = h.loss_by_feat(*preds, [gt], metas)
        h.eval()
        res = h.predict_by_feat(*[[p.detach() for p in level] for level in preds], batch_img_metas=metas,
                                cfg=ConfigDict(h.test_cfg))[0]
        out[loss_type] = (losses, res)
    (a, ra), (b, rb) = out['mmloss_ext.FocalCustomLoss'], out['FocalCustomLoss']
    assert list(a) == list(b) and 'acc_classes' in a
    for k in a:
        torch.testing.assert_close(a[k].reshape(-1), b[k].reshape(-1), rtol=1e-5, atol=1e-6)
    for field in ('bboxes', 'scores', 'labels'):
        torch.testing.assert_close(getattr(ra, field), getattr(rb, field))


# --- state ------------------------------------------------------------------------------------------

STATEFUL = [('SeesawLoss', C + 2, ('cum_samples',)), ('EQLV2Loss', C + 1, ('pos_grad', 'neg_grad', 'pos_neg'))]


@pytest.mark.parametrize('name, width, buffers', STATEFUL, ids=['seesaw', 'eqlv2'])
def test_statistics_move_in_training_mode_only(name, width, buffers, gen):
    loss = build(name, num_classes=C)
    assert [k for k, _ in loss.named_buffers()] == list(buffers)
    x, y = batch(gen, 12, width)
    initial = {k: getattr(loss, k).clone() for k in buffers}
    loss.eval()
    first = loss(x, y)
    assert all(torch.equal(getattr(loss, k), initial[k]) for k in buffers)
    loss.train()
    loss(x, y)
    assert all(not torch.equal(getattr(loss, k), initial[k]) for k in buffers if k != 'pos_neg' or name == 'EQLV2Loss')
    # a call that fails validation leaves them alone
    moved = {k: getattr(loss, k).clone() for k in buffers}
    with pytest.raises(ValueError, match=f'{name}: `target` expected values in'):
        loss(x, torch.full_like(y, C + 1))
    with pytest.raises(ValueError, match=f'{name}: `weight` expected shape'):
        loss(x, y, torch.ones(5))
    assert all(torch.equal(getattr(loss, k), moved[k]) for k in buffers)
    del first


@pytest.mark.parametrize('name, width, buffers', STATEFUL, ids=['seesaw', 'eqlv2'])
def test_statistics_survive_an_mmengine_checkpoint_and_load_from_mmdets(name, width, buffers, tmp_path, gen):
    from mmengine.runner.checkpoint import load_checkpoint, save_checkpoint

    class Head(torch.nn.Module):
        def __init__(self, loss_cls):
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)
            self.loss_cls = loss_cls

    calls = [batch(gen, 10 + i, width) for i in range(4)]
    head = Head(build(name, num_classes=C))
    for x, y in calls[:3]:
        head.loss_cls(x, y)
    path = str(tmp_path / 'iter_3.pth')
    save_checkpoint({'state_dict': head.state_dict()}, path)
    resumed = Head(build(name, num_classes=C))
    load_checkpoint(resumed, path, map_location='cpu', strict=True)
    for k in buffers:
        assert torch.equal(getattr(resumed.loss_cls, k), getattr(head.loss_cls, k))
    x, y = calls[3]
    torch.testing.assert_close(resumed.loss_cls(x, y), head.loss_cls(x, y))  # the same trajectory
    for k in buffers:
        assert torch.equal(getattr(resumed.loss_cls, k), getattr(head.loss_cls, k))
    # mmdet's checkpoints load into ours and ours into mmdet's (same names, shapes and dtype)
    mmdet_loss = (MMDetSeesaw if name == 'SeesawLoss' else MMDetEQLV2)(num_classes=C)
    mmdet_loss.load_state_dict(head.loss_cls.state_dict(), strict=True)
    fresh = build(name, num_classes=C)
    fresh.load_state_dict(mmdet_loss.state_dict(), strict=True)
    for k in buffers:
        assert torch.equal(getattr(fresh, k), getattr(head.loss_cls, k))
    clone = copy.deepcopy(head.loss_cls)
    assert all(torch.equal(getattr(clone, k), getattr(head.loss_cls, k)) for k in buffers)
    clone = pickle.loads(pickle.dumps(head.loss_cls))
    assert all(torch.equal(getattr(clone, k), getattr(head.loss_cls, k)) for k in buffers)


def test_seesaw_zero_weight_samples_are_not_counted(gen):
    x, y = batch(gen, 12, C + 2)
    w = torch.ones(12, dtype=x.dtype)
    w[::3] = 0
    loss = SeesawLoss(num_classes=C)
    loss(x, y, w)
    torch.testing.assert_close(loss.cum_samples, torch.bincount(y[w > 0], minlength=C + 1).float())
    loss(x, y, torch.zeros(12, dtype=x.dtype))  # the all-zero shortcut: nothing counted either
    torch.testing.assert_close(loss.cum_samples, torch.bincount(y[w > 0], minlength=C + 1).float())


def _rank_batches(rank):
    """Rank 0 and rank 1's batches for three steps; rank 1 has an empty one, rank 0 a zero-weight one."""
    gen = torch.Generator().manual_seed(10 + rank)
    sizes = [[9, 0, 7], [5, 11, 0]][rank]
    out = []
    for step, n in enumerate(sizes):
        x, y = batch(gen, n, C + 2)
        w = torch.zeros(n, dtype=x.dtype) if (rank, step) == (0, 2) else None
        out.append((x, y, w))
    return out


def _state_rank(rank):
    seesaw, eql = SeesawLoss(num_classes=C), EQLV2Loss(num_classes=C)
    for x, y, w in _rank_batches(rank):
        seesaw(x, y, w)
        eql(x[:, :C + 1], y, w)
    return {'cum_samples': seesaw.cum_samples, 'pos_grad': eql.pos_grad, 'neg_grad': eql.neg_grad,
            'pos_neg': eql.pos_neg}


def test_two_gloo_ranks_end_with_the_statistics_of_the_concatenated_batch():
    world = 2
    results = gloo_ranks(_state_rank, world)
    seesaw, eql = SeesawLoss(num_classes=C), EQLV2Loss(num_classes=C)
    for step in range(3):  # one process, each step's batches of both ranks concatenated
        parts = [_rank_batches(rank)[step] for rank in range(world)]
        x = torch.cat([p[0] for p in parts])
        y = torch.cat([p[1] for p in parts])
        w = torch.cat([p[2] if p[2] is not None else torch.ones(len(p[1]), dtype=x.dtype) for p in parts])
        seesaw(x, y, w)
        eql(x[:, :C + 1], y, w)
    assert float(seesaw.cum_samples.sum()) > 0 and float(eql.pos_grad.sum()) > 0
    for key, expected in (('cum_samples', seesaw.cum_samples), ('pos_grad', eql.pos_grad),
                          ('neg_grad', eql.neg_grad), ('pos_neg', eql.pos_neg)):
        assert torch.equal(results[0][key], results[1][key]), key  # the ranks agree exactly
        torch.testing.assert_close(results[0][key], expected, rtol=1e-6, atol=1e-7)
