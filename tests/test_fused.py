"""The fused kernels (mmloss_ext/kernels) against the eager functionals, which are the spec.

Values and gradients for every fused loss, reduction, weight shape, ``avg_factor``, empty input,
degenerate boxes, extreme logits and half precision; then the ``impl`` dispatch and its
environment variables. Tensors are small: ``impl='fused'`` forces the kernel at any size.
"""
import pytest
import torch

import mmloss_ext  # noqa: F401
from mmloss_ext import kernels
from mmloss_ext.kernels import dispatch
from mmloss_ext.kernels.common import ran_fused
from mmloss_ext.losses.bbox.classic import ciou_loss, diou_loss, eiou_loss, giou_loss, iou_loss, siou_loss
from mmloss_ext.losses.bbox.modern import efficient_iou_loss, wiou_loss
from mmloss_ext.losses.classification.focal import focal_loss, quality_focal_loss, varifocal_loss
from mmloss_ext.losses.regression import balanced_l1_loss, l1_loss, smooth_l1_loss
from mmloss_ext.registry import MODELS

from helpers import FUSED_TOL as TOL

N, C = 37, 11  # 37 rows: not a multiple of the vector width, so the tails are exercised


def _boxes(n, gen, dtype):
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 10
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 5
    p = torch.cat([xy, xy + wh], 1)
    t = p + torch.randn(n, 4, generator=gen, dtype=torch.float64)
    p[:4] = t[:4]                 # identical boxes
    p[4:8, 2] = p[4:8, 0] - 1.0   # inverted (x2 < x1), an untrained head
    p[8:12, 0] = t[8:12, 0]       # ties in max/min
    p[12:14, 3] = p[12:14, 1]     # zero height
    p[14:16] += 100.0             # far apart
    # boxes of ~1e-4 (dyadic: exact in every dtype) whose union, enclosing area, diagonal and sides^2
    # are below eps = 1e-7: the guards' branches (max(d, eps), no gradient through d; or mmdet's
    # d + eps); and two boxes of zero width side by side (SIoU's width term, 0 / max(0, eps))
    a, b, c = 2.0 ** -13, 2.0 ** -14, 2.0 ** -15
    edge = torch.tensor([[[0.0, 0.0, b, a], [c, c, c + b, c + a]],
                         [[0.0, 0.0, a, b], [c, c, c + a, c + b]],
                         [[1.0, 1.0, 1.0, 3.0], [2.0, 1.0, 2.0, 3.0]]], dtype=torch.float64)[:max(0, n - 16)]
    p[16:19], t[16:19] = edge[:, 0], edge[:, 1]
    return p.to(dtype), t.to(dtype)


def _logits_and_targets(kind, gen, dtype, n=N, c=C):
    x = (torch.randn(n, c, generator=gen, dtype=torch.float64) * 3)
    x[0, :3] = torch.tensor([1e4, -1e4, 0.0], dtype=torch.float64)  # extreme logits
    labels = torch.randint(0, c + 1, (n,), generator=gen)            # c = background
    soft = torch.rand(n, c, generator=gen, dtype=torch.float64) * (torch.rand(n, c, generator=gen) > 0.7)
    scores = torch.rand(n, generator=gen, dtype=torch.float64)
    target = {'labels': labels, 'soft': soft.to(dtype), 'pair': (labels, scores.to(dtype))}[kind]
    return x.to(dtype), target


# (functional, kwargs, input maker, weight shapes to try)
def _cases():
    for kind in ('labels', 'soft'):
        yield f'focal-{kind}', focal_loss, dict(gamma=2.0), ('logits', kind), ('row', 'full', 'flat')
    yield 'focal-gamma1.5', focal_loss, dict(gamma=1.5, alpha=0.4), ('logits', 'labels'), ('full',)
    yield 'focal-gamma0', focal_loss, dict(gamma=0.0), ('logits', 'soft'), ('row',)
    yield 'qfl-pair', quality_focal_loss, dict(), ('logits', 'pair'), ('row',)
    yield 'qfl-soft', quality_focal_loss, dict(beta=1.5), ('logits', 'soft'), ('row',)
    yield 'vfl', varifocal_loss, dict(), ('logits', 'soft'), ('row', 'full')
    yield 'vfl-plain', varifocal_loss, dict(iou_weighted=False, gamma=1.5), ('logits', 'soft'), ('full',)
    yield 'smooth_l1', smooth_l1_loss, dict(beta=0.5), ('residual',), ('row', 'full')
    yield 'smooth_l1-beta0', smooth_l1_loss, dict(beta=0.0), ('residual',), ('full',)
    yield 'l1', l1_loss, dict(), ('residual',), ('row',)
    yield 'balanced_l1', balanced_l1_loss, dict(), ('residual',), ('row', 'full')
    for mode in ('linear', 'square', 'log'):
        yield f'iou-{mode}', iou_loss, dict(mode=mode), ('boxes',), ('row', 'full')
    for fn in (giou_loss, diou_loss, ciou_loss):
        yield fn.__name__, fn, dict(), ('boxes',), ('row', 'full')
    yield 'eiou_loss', eiou_loss, dict(), ('boxes',), ('row', 'full')
    yield 'eiou-smooth0.5', eiou_loss, dict(smooth_point=0.5, eps=1e-4), ('boxes',), ('full',)
    yield 'siou_loss', siou_loss, dict(), ('boxes',), ('row', 'full')
    yield 'siou-neg_gamma', siou_loss, dict(neg_gamma=True), ('boxes',), ('row', 'full')
    yield 'efficient_iou_loss', efficient_iou_loss, dict(), ('boxes',), ('row', 'full')
    yield 'efficient-focal0.5', efficient_iou_loss, dict(focal_gamma=0.5), ('boxes',), ('row', 'full')
    yield 'efficient-focal2', efficient_iou_loss, dict(focal_gamma=2.0, eps=1e-6), ('boxes',), ('full',)
    yield 'wiou-v1', wiou_loss, dict(version='v1'), ('boxes',), ('row', 'full')
    # v2/v3: the batch mean, a running mean updated in place (training) or only read (eval); a
    # callable value makes a fresh buffer for each call (see _kw)
    yield 'wiou-v2-batch', wiou_loss, dict(version='v2'), ('boxes',), ('row', 'full')
    yield 'wiou-v3-batch', wiou_loss, dict(version='v3'), ('boxes',), ('row', 'full')
    yield 'wiou-v2-train', wiou_loss, dict(version='v2', running_mean=lambda: torch.tensor(0.7), training=True), \
        ('boxes',), ('row', 'full')
    yield 'wiou-v3-train', wiou_loss, dict(version='v3', running_mean=lambda: torch.tensor(0.7), training=True), \
        ('boxes',), ('row', 'full')
    yield 'wiou-v3-eval', wiou_loss, dict(version='v3', running_mean=lambda: torch.tensor(0.4), training=False,
                                          alpha=1.5, delta=2.0), ('boxes',), ('full',)


FUSED_CASES = {name: (fn, kw, make, weights) for name, fn, kw, make, weights in _cases()}
NEW_BOX_KINDS = ['eiou_loss', 'eiou-smooth0.5', 'siou_loss', 'siou-neg_gamma', 'efficient_iou_loss',
                 'efficient-focal0.5', 'wiou-v1', 'wiou-v3-batch', 'wiou-v2-train', 'wiou-v3-train']
# SIoU's gradient at inverted boxes is ~1/eps (a clamped enclosure of width eps, as in the eager
# spec), and the other coordinates of such a box are differences of terms of that size; so are
# Extended-IoU's at the boxes below eps (partials ~1e2, of its signed intersection over a union of
# ~eps, that cancel to ~0.3): compared relative to the largest gradient of their box (when above 1)
ROW_SCALED = {'siou_loss', 'siou-neg_gamma', 'eiou_loss', 'eiou-smooth0.5'}


def _kw(kw):
    """``kw`` with callable values called: a fresh running-mean buffer for each call."""
    return {k: v() if callable(v) else v for k, v in kw.items()}


def _inputs(name, gen, dtype, rows=N, cols=C):
    """``(pred, target)`` of case ``name``: ``rows`` samples (logits: of ``cols`` classes; boxes)."""
    make = FUSED_CASES[name][2]
    if make[0] == 'logits':
        return _logits_and_targets(make[1], gen, dtype, n=rows, c=cols)
    if make[0] == 'residual':
        x = torch.randn(rows, 4, generator=gen, dtype=torch.float64)
        t = x + torch.randn(rows, 4, generator=gen, dtype=torch.float64) * 1.5
        t[:3] = x[:3]  # zero residual: the subgradient of |d| at 0
        return x.to(dtype), t.to(dtype)
    return _boxes(rows, gen, dtype)


def _weight(kind, pred, gen):
    full = torch.rand(pred.shape, generator=gen, dtype=torch.float64).to(pred.dtype)
    return {'row': full[:, 0].contiguous(), 'full': full, 'flat': full.reshape(-1)}[kind]


def _run(fn, kw, pred, target, impl, reduction, weight=None, avg_factor=None):
    x = pred.detach().clone().requires_grad_()
    out = fn(x, target, impl=impl, weight=weight, reduction=reduction, avg_factor=avg_factor, **_kw(kw))
    upstream = torch.linspace(-1, 2, out.numel(), dtype=out.dtype, device=out.device).view(out.shape)  # non-uniform
    (out * upstream).sum().backward()
    return out.detach(), x.grad


def _to(obj, device):
    """Tensors (also inside tuples: QFL's (labels, scores) target) moved to ``device``."""
    if isinstance(obj, tuple):
        return tuple(_to(o, device) for o in obj)
    return obj.to(device) if isinstance(obj, torch.Tensor) else obj


def _assert_same(name, gen, dtype, reduction, weight_kind=None, avg_factor=None, device='cpu'):
    """fused == eager for case ``name`` on ``device`` (test_triton runs it on the Triton backend)."""
    fn, kw, _, _ = FUSED_CASES[name]
    pred, target = _inputs(name, gen, dtype)
    w = None if weight_kind is None else _weight(weight_kind, pred, gen)
    if w is not None and FUSED_CASES[name][2][0] == 'boxes' and weight_kind == 'full':
        w = torch.rand(pred.shape, generator=gen, dtype=torch.float64).to(dtype)  # (N, 4): mmdet averages it
    pred, target, w = _to((pred, target, w), device)
    v_e, g_e = _run(fn, kw, pred, target, 'eager', reduction, w, avg_factor)
    v_f, g_f = _run(fn, kw, pred, target, 'fused', reduction, w, avg_factor)
    assert v_f.dtype == v_e.dtype and v_f.shape == v_e.shape
    assert torch.isfinite(v_f).all() and torch.isfinite(g_f).all()
    torch.testing.assert_close(v_f, v_e, **TOL[dtype])
    _assert_grads_close(name, g_f, g_e, dtype)


def _assert_grads_close(name, g_f, g_e, dtype):
    if name in ROW_SCALED and g_e.numel():
        scale = g_e.abs().amax(-1, keepdim=True).clamp(min=1.0)
        g_f, g_e = g_f / scale, g_e / scale
    torch.testing.assert_close(g_f, g_e, **TOL[dtype])


def test_extension_is_built_and_used():
    # `make install` builds mmloss_ext._fused; without it every loss silently runs eagerly
    assert kernels.fused_available(), 'mmloss_ext._fused is missing: run `make install`'
    x = torch.randn(8, 3, requires_grad=True)
    out = focal_loss(x, torch.randint(0, 4, (8,)), impl='fused', reduction='sum')
    assert ran_fused(out)


@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('name', sorted(FUSED_CASES))
def test_fused_equals_eager(name, dtype, reduction, gen):
    _assert_same(name, gen, dtype, reduction)


@pytest.mark.parametrize('name', sorted(FUSED_CASES))
def test_fused_equals_eager_with_weights_and_avg_factor(name, gen):
    for weight_kind in FUSED_CASES[name][3]:
        _assert_same(name, gen, torch.float64, 'none', weight_kind)
        _assert_same(name, gen, torch.float64, 'mean', weight_kind, avg_factor=7.5)
        _assert_same(name, gen, torch.float32, 'sum', weight_kind)


@pytest.mark.parametrize('weight_kind', ['row', 'full'])
@pytest.mark.parametrize('name', ['smooth_l1', 'balanced_l1'])
def test_fused_narrow_rows_regrouped(name, weight_kind, gen):
    # (160, 4): 640 elements, regrouped into rows of 64 by the kernel wrapper (N=37 above gives one flat row)
    fn, kw, _, _ = FUSED_CASES[name]
    x = torch.randn(160, 4, generator=gen, dtype=torch.float64)
    t = x + torch.randn(160, 4, generator=gen, dtype=torch.float64)
    w = _weight(weight_kind, x, gen)
    for reduction in ('none', 'mean'):
        v_e, g_e = _run(fn, kw, x, t, 'eager', reduction, w)
        v_f, g_f = _run(fn, kw, x, t, 'fused', reduction, w)
        torch.testing.assert_close(v_f, v_e, **TOL[torch.float64])
        torch.testing.assert_close(g_f, g_e, **TOL[torch.float64])


@pytest.mark.parametrize('name', ['focal-labels', 'qfl-pair', 'vfl', 'smooth_l1', 'iou-log', 'giou_loss', 'ciou_loss',
                                  'eiou_loss', 'siou_loss', 'efficient-focal0.5', 'wiou-v1', 'wiou-v3-train'])
def test_fused_large_inputs_split_across_threads(name, gen):
    # two threads: chunk boundaries off the vector width, prefetches past the last row; float32
    # totals accumulated over thousands of vectors (smooth L1: 50001 x 4 does not regroup, one long
    # row); float32 gradients of single boxes can cancel catastrophically, in eager as in fused:
    # those are compared in float64
    fn, kw, make, _ = FUSED_CASES[name]
    rows = {'logits': 1201, 'residual': 50001, 'boxes': 9001}[make[0]]
    pred, target = _inputs(name, gen, torch.float64, rows=rows, cols=80)
    w = _weight('row', pred, gen)
    single = tuple(t.float() if t.is_floating_point() else t for t in (target if isinstance(target, tuple)
                                                                       else (target,)))
    single = single if isinstance(target, tuple) else single[0]
    calls = [(pred, target, 'mean', None, torch.float64), (pred, target, 'none', w, torch.float64),
             (pred.float(), single, 'mean', None, torch.float32)]
    eager = [_run(fn, kw, p, t, 'eager', r, wt) for p, t, r, wt, _ in calls]  # eager: the default threads
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fused = [_run(fn, kw, p, t, 'fused', r, wt) for p, t, r, wt, _ in calls]
    finally:
        torch.set_num_threads(threads)
    for (v_e, g_e), (v_f, g_f), (_, _, _, _, dtype) in zip(eager, fused, calls):
        torch.testing.assert_close(v_f, v_e, **TOL[dtype])
        if dtype == torch.float64:
            _assert_grads_close(name, g_f, g_e, dtype)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('name', ['focal-labels', 'qfl-pair', 'vfl', 'smooth_l1', 'giou_loss', 'ciou_loss']
                         + NEW_BOX_KINDS)
def test_fused_half_precision(name, dtype, gen):
    _assert_same(name, gen, dtype, 'mean')
    _assert_same(name, gen, dtype, 'none', 'row')


@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('name', sorted(FUSED_CASES))
def test_fused_empty_input_is_connected(name, reduction, gen):
    fn, kw, make, _ = FUSED_CASES[name]
    pred, target = _inputs(name, gen, torch.float32)
    target = tuple(t[:0] for t in target) if isinstance(target, tuple) else target[:0]
    x = pred[:0].detach().requires_grad_()
    out = fn(x, target, impl='fused', reduction=reduction, **_kw(kw))
    ref = fn(x, target, impl='eager', reduction=reduction, **_kw(kw))
    assert out.shape == ref.shape and (out == 0).all()
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_module_impl_is_config_settable_and_validated():
    loss = MODELS.build(dict(type='mmloss_ext.FocalLoss', impl='eager'))
    assert loss.impl == 'eager' and "impl='eager'" in repr(loss)
    with pytest.raises(ValueError, match='impl'):
        MODELS.build(dict(type='mmloss_ext.GIoULoss', impl='fast'))


def _path(impl='auto', n=8):
    x = torch.randn(n, 3, requires_grad=True)
    return 'fused' if ran_fused(smooth_l1_loss(x, torch.zeros(n, 3), impl=impl, reduction='sum')) else 'eager'


def test_auto_dispatch_threshold_and_env(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_IMPL, raising=False)
    monkeypatch.setenv(dispatch.ENV_MIN_NUMEL, '100')
    assert _path(n=8) == 'eager'        # 24 elements < 100: eager
    assert _path(n=40) == 'fused'       # 120 elements: fused
    assert _path('eager', n=40) == 'eager'
    assert _path('fused', n=8) == 'fused'
    monkeypatch.setenv(dispatch.ENV_IMPL, 'eager')     # replaces 'auto' everywhere ...
    assert _path(n=40) == 'eager'
    assert _path('fused', n=8) == 'fused'  # ... but not an explicit choice
    monkeypatch.setenv(dispatch.ENV_IMPL, 'fused')
    assert _path(n=8) == 'fused'
    monkeypatch.setenv(dispatch.ENV_IMPL, 'bogus')
    with pytest.raises(ValueError, match='MMLOSS_EXT_IMPL'):
        _path()


def test_unsupported_options_and_grad_targets_fall_back_to_eager(gen):
    x = torch.randn(6, 3, generator=gen, requires_grad=True)
    labels = torch.randint(0, 4, (6,), generator=gen)
    for kw in (dict(pos_weight=[1.0, 2.0, 3.0]), dict(use_sigmoid=False, gamma=2.0)):
        out = focal_loss(x, labels.clamp(max=2), impl='fused', reduction='sum', **kw)
        assert not ran_fused(out)
        torch.testing.assert_close(out, focal_loss(x, labels.clamp(max=2), impl='eager', reduction='sum', **kw))
    t = torch.rand(6, 3, generator=gen, requires_grad=True)  # a target that needs a gradient
    out = smooth_l1_loss(x, t, impl='fused', reduction='sum')
    out.backward()
    assert t.grad is not None and torch.isfinite(t.grad).all()


def test_fused_errors_match_eager(gen):
    x = torch.randn(6, 3, generator=gen)
    with pytest.raises(ValueError, match='FocalLoss'):
        focal_loss(x, torch.full((6,), 4), impl='fused')      # label > C
    with pytest.raises(ValueError, match='weight'):
        smooth_l1_loss(x, x, weight=torch.ones(5), impl='fused')
    with pytest.raises(ValueError, match='avg_factor'):
        giou_loss(*_boxes(6, gen, torch.float32), impl='fused', reduction='sum', avg_factor=2.0)


@pytest.mark.parametrize('name', ['giou_loss'] + NEW_BOX_KINDS)
def test_fused_boxes_with_leading_dims(name, gen):
    # (B, N, 4) boxes; per-sample (B,), per-box (B, N) and per-coordinate (B, N, 4) weights
    fn, kw, _, _ = FUSED_CASES[name]
    pred, target = (b.view(2, 20, 4) for b in _boxes(40, gen, torch.float64))
    full = torch.rand(2, 20, 4, generator=gen, dtype=torch.float64)
    for w in (full[:, 0, 0], full[..., 0], full):
        for reduction, avg_factor in (('none', None), ('mean', 3.0), ('sum', None)):
            v_e, g_e = _run(fn, kw, pred, target, 'eager', reduction, w, avg_factor)
            v_f, g_f = _run(fn, kw, pred, target, 'fused', reduction, w, avg_factor)
            torch.testing.assert_close(v_f, v_e, **TOL[torch.float64])
            _assert_grads_close(name, g_f, g_e, torch.float64)


def _plain_boxes(n, gen, inside=False):
    """Boxes away from every kink (no ties, no clamped sizes), for gradcheck. ``inside``: each pred
    strictly inside its target, so that the enclosing box is the target's, constant in pred."""
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 10
    p = torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=gen, dtype=torch.float64) * 5], 1)
    if inside:
        return p, torch.cat([p[:, :2] - 0.5 - torch.rand(n, 2, generator=gen, dtype=torch.float64),
                             p[:, 2:] + 0.5 + torch.rand(n, 2, generator=gen, dtype=torch.float64)], 1)
    return p, p + torch.randn(n, 4, generator=gen, dtype=torch.float64) * 0.7


@pytest.mark.parametrize('fn, kw', [
    (eiou_loss, {}), (eiou_loss, dict(smooth_point=2.0)), (siou_loss, {}), (siou_loss, dict(neg_gamma=True)),
    (efficient_iou_loss, {}), (wiou_loss, dict(version='v1'))], ids=lambda v: getattr(v, '__name__', str(v)))
def test_fused_box_gradcheck(fn, kw, gen):
    # the hand-derived backward against finite differences, through the fused path (the focusing
    # factors of Focal-EIoU and WIoU v2/v3 carry no gradient by design: v1 / gamma 0 only; WIoU's
    # detached enclosing diagonal is constant for a pred inside its target)
    pred, target = _plain_boxes(12, gen, inside=fn is wiou_loss)
    w = torch.rand(12, generator=gen, dtype=torch.float64)
    x = pred.clone().requires_grad_()
    assert ran_fused(fn(x, target, impl='fused', reduction='sum', **kw))
    for reduction in ('none', 'mean'):
        assert torch.autograd.gradcheck(lambda p: fn(p, target, impl='fused', weight=w, reduction=reduction, **kw),
                                        (x,), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize('training', [True, False])
@pytest.mark.parametrize('version', ['v2', 'v3'])
def test_fused_wiou_running_mean_matches_eager(version, training, gen):
    # the module's buffer after a fused step equals the buffer after an eager step (boxes of zero
    # weight do not count); the loss and its gradient too
    pred, target = _boxes(N, gen, torch.float64)
    weight = torch.rand(N, generator=gen, dtype=torch.float64) * (torch.arange(N) % 3 > 0)
    results = []
    for impl in ('eager', 'fused'):
        loss = MODELS.build(dict(type='mmloss_ext.WIoULoss', version=version, impl=impl, loss_weight=2.0))
        loss.train(training)
        x = pred.float().requires_grad_()
        outs = []
        for _ in range(2):  # two steps: the second one reads the updated mean
            out = loss(x, target.float(), weight=weight.float(), avg_factor=5.0)
            out.backward()
            outs.append(out.detach())
        assert ran_fused(out) == (impl == 'fused')
        results.append((torch.stack(outs), x.grad, loss.iou_mean.clone()))
    (v_e, g_e, m_e), (v_f, g_f, m_f) = results
    assert (m_e != 1.0) == training  # updated in training only
    torch.testing.assert_close(m_f, m_e, **TOL[torch.float32])
    torch.testing.assert_close(v_f, v_e, **TOL[torch.float32])
    torch.testing.assert_close(g_f, g_e, **TOL[torch.float32])


@pytest.mark.parametrize('loss_type, cfg', [('EIoULoss', dict(smooth_point=0.2)), ('SIoULoss', dict(neg_gamma=True)),
                                            ('EfficientIoULoss', dict(focal_gamma=0.5)), ('WIoULoss', {})])
def test_new_box_modules_build_with_impl(loss_type, cfg, gen):
    pred, target = _boxes(N, gen, torch.float32)
    outs = {}
    for impl in ('eager', 'fused'):
        loss = MODELS.build(dict(type=f'mmloss_ext.{loss_type}', impl=impl, **cfg))
        assert loss.impl == impl and f"impl='{impl}'" in repr(loss)
        outs[impl] = loss(pred.clone().requires_grad_(), target)
        assert ran_fused(outs[impl]) == (impl == 'fused')
    torch.testing.assert_close(outs['fused'], outs['eager'], **TOL[torch.float32])
    with pytest.raises(ValueError, match='impl'):
        MODELS.build(dict(type=f'mmloss_ext.{loss_type}', impl='triton'))
