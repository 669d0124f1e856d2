"""The fused cross-entropy and Dice kernels (kernels/cross_entropy/, kernels/dice/) against the eager functionals.

Values and gradients (float64 tight, float32 1e-5 relative, half precision looser), every option
the kernels take (class_weight, ignore_index incl. all-ignored batches, avg_non_ignore, naive Dice,
probabilities, ignored Dice elements), weight shapes, avg_factor, all reductions, empty batches,
extreme logits, gradcheck through the fused path, thread splits, and the dispatch (what runs fused,
what falls back). Tensors are small: ``impl='fused'`` forces the kernel at any size.
"""
import pytest
import torch

import mmloss_ext  # noqa: F401
from mmloss_ext.losses.classification.cross_entropy import cross_entropy_loss
from mmloss_ext.losses.segmentation import dice_loss
from mmloss_ext.kernels.common import ran_fused
from mmloss_ext.registry import MODELS

from helpers import FUSED_TOL as TOL

N, C = 37, 11  # 37 rows: not a multiple of the vector width, so the tails are exercised


def _run(fn, pred, target, impl, **kw):
    x = pred.detach().clone().requires_grad_()
    out = fn(x, target, impl=impl, **kw)
    upstream = torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view(out.shape)  # a non-uniform grad_output
    (out * upstream).sum().backward()
    return out, x.grad


def _assert_same(fn, pred, target, dtype=None, **kw):
    dtype = dtype or pred.dtype
    v_e, g_e = _run(fn, pred, target, 'eager', **kw)
    v_f, g_f = _run(fn, pred, target, 'fused', **kw)
    assert ran_fused(v_f) and not ran_fused(v_e)
    assert v_f.dtype == v_e.dtype == pred.dtype and v_f.shape == v_e.shape
    assert torch.isfinite(v_f).all() and torch.isfinite(g_f).all()
    torch.testing.assert_close(v_f, v_e, **TOL[dtype])
    torch.testing.assert_close(g_f, g_e, **TOL[dtype])
    return v_f, g_f


# --- cross-entropy --------------------------------------------------------------------------------

def _ce_inputs(gen, dtype, n=N, c=C, ignore=None):
    x = torch.randn(n, c, generator=gen, dtype=torch.float64) * 3
    x[0, :3] = torch.tensor([1e4, -1e4, 0.0], dtype=torch.float64)  # extreme logits
    x[1, :2] = torch.tensor([-1e4, 1e4], dtype=torch.float64)
    labels = torch.randint(0, c, (n,), generator=gen)
    labels[1] = 0  # the label at -1e4 against a 1e4 logit: loss 2e4
    if ignore is not None:
        labels[2::5] = ignore
    return x.to(dtype), labels


def _ce_weight(kind, n, gen, dtype):
    w = torch.rand(n, generator=gen, dtype=torch.float64).to(dtype)
    return {None: None, 'row': w, 'scalar': w[0].clone(), 'one': w[:1].clone()}[kind]


CE_OPTIONS = {
    'plain': dict(),
    'ignore': dict(ignore_index=255),
    'torch-ignore': dict(),  # ignore_index=None: label -100 is ignored, as torch and mmdet
    'class_weight': dict(class_weight=[0.5 + 0.1 * i for i in range(C)]),
    'all': dict(class_weight=torch.linspace(0.2, 2.0, C), ignore_index=7, avg_non_ignore=True),
    'avg_non_ignore': dict(ignore_index=255, avg_non_ignore=True),
}
CE_IGNORED = {'ignore': 255, 'torch-ignore': -100, 'all': 7, 'avg_non_ignore': 255}


@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('option', sorted(CE_OPTIONS))
def test_ce_fused_equals_eager(option, dtype, reduction, gen):
    x, labels = _ce_inputs(gen, dtype, ignore=CE_IGNORED.get(option))
    kw = dict(CE_OPTIONS[option])
    if isinstance(kw.get('class_weight'), torch.Tensor):
        kw['class_weight'] = kw['class_weight'].to(dtype)
    v, g = _assert_same(cross_entropy_loss, x, labels, reduction=reduction, **kw)
    if option in CE_IGNORED:  # ignored rows: no loss, no gradient
        rows = labels == CE_IGNORED[option]
        assert rows.any() and (g[rows] == 0).all()
        if reduction == 'none':
            assert (v[rows] == 0).all()


@pytest.mark.parametrize('weight_kind', ['row', 'scalar', 'one'])
@pytest.mark.parametrize('option', ['plain', 'all'])
def test_ce_fused_weights_and_avg_factor(option, weight_kind, gen):
    for dtype, reduction, avg_factor in ((torch.float64, 'none', None), (torch.float64, 'mean', 7.5),
                                         (torch.float64, 'mean', torch.tensor(3.0)), (torch.float32, 'sum', None),
                                         (torch.float32, 'mean', None)):
        x, labels = _ce_inputs(gen, dtype, ignore=CE_IGNORED.get(option))
        w = _ce_weight(weight_kind, N, gen, dtype)
        kw = dict(CE_OPTIONS[option])
        _assert_same(cross_entropy_loss, x, labels, weight=w, reduction=reduction, avg_factor=avg_factor, **kw)


def test_ce_fused_avg_non_ignore_divides_by_the_kept_rows(gen):
    x, labels = _ce_inputs(gen, torch.float64, ignore=255)
    kept = int((labels != 255).sum())
    assert 0 < kept < N
    mean = cross_entropy_loss(x, labels, ignore_index=255, avg_non_ignore=True, impl='fused')
    total = cross_entropy_loss(x, labels, ignore_index=255, reduction='sum', impl='fused')
    torch.testing.assert_close(mean, total / kept, rtol=1e-6, atol=0)  # / (kept + float32 eps)
    assert mean > cross_entropy_loss(x, labels, ignore_index=255, impl='fused')  # plain 'mean': / N


@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('avg_non_ignore', [False, True])
def test_ce_fused_all_ignored_and_empty(avg_non_ignore, reduction, gen):
    x, _ = _ce_inputs(gen, torch.float64)
    labels = torch.full((N,), 255)
    v, g = _assert_same(cross_entropy_loss, x, labels, ignore_index=255, avg_non_ignore=avg_non_ignore,
                        reduction=reduction)
    assert (v == 0).all() and (g == 0).all()
    empty = x[:0].detach().requires_grad_()
    for impl in ('fused', 'eager'):
        out = cross_entropy_loss(empty, labels[:0], ignore_index=255, avg_non_ignore=avg_non_ignore,
                                 reduction=reduction, impl=impl)
        assert out.shape == ((0,) if reduction == 'none' else ()) and (out == 0).all()
        out.sum().backward()
        assert empty.grad is not None and empty.grad.shape == (0, C)
        assert ran_fused(out) == (impl == 'fused')


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_ce_fused_half_precision(dtype, gen):
    x, labels = _ce_inputs(gen, torch.float32, ignore=255)
    x = x.to(dtype)  # +-1e4 is representable in both
    _assert_same(cross_entropy_loss, x, labels, ignore_index=255, reduction='mean')
    _assert_same(cross_entropy_loss, x, labels, ignore_index=255, reduction='none',
                 weight=_ce_weight('row', N, gen, dtype))


def test_ce_fused_gradcheck(gen):
    x, labels = _ce_inputs(gen, torch.float64, n=9, c=5, ignore=255)
    x = (x.clamp(-5, 5)).requires_grad_()
    w = torch.rand(9, generator=gen, dtype=torch.float64)
    cw = torch.rand(5, generator=gen, dtype=torch.float64) + 0.5
    for reduction in ('none', 'mean', 'sum'):
        def fn(inp):
            out = cross_entropy_loss(inp, labels, ignore_index=255, class_weight=cw, weight=w,
                                     reduction=reduction, impl='fused')
            assert ran_fused(out)
            return out
        assert torch.autograd.gradcheck(fn, (x,))


def test_ce_fused_large_split_across_threads(gen):
    # chunks of rows over two threads; float32 totals of many rows; C = 81 (5 AVX-512 vectors + 1)
    x, labels = _ce_inputs(gen, torch.float64, n=3001, c=81, ignore=255)
    w = torch.rand(3001, generator=gen, dtype=torch.float64)
    calls = [(x, 'mean', None), (x, 'none', w), (x.float(), 'mean', None), (x.float(), 'sum', w.float())]
    eager = [_run(cross_entropy_loss, p, labels, 'eager', ignore_index=255, reduction=r, weight=wt)
             for p, r, wt in calls]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fused = [_run(cross_entropy_loss, p, labels, 'fused', ignore_index=255, reduction=r, weight=wt)
                 for p, r, wt in calls]
    finally:
        torch.set_num_threads(threads)
    for (v_e, g_e), (v_f, g_f), (p, _, _) in zip(eager, fused, calls):
        torch.testing.assert_close(v_f, v_e, **TOL[p.dtype])
        torch.testing.assert_close(g_f, g_e, **TOL[p.dtype])


def test_ce_fused_matches_mmdet(gen):
    from mmdet.models.losses import CrossEntropyLoss as MMDetCE
    x, labels = _ce_inputs(gen, torch.float32, ignore=255)
    cw = [0.5 + 0.1 * i for i in range(C)]
    for kw in (dict(ignore_index=255), dict(class_weight=cw, ignore_index=255, avg_non_ignore=True)):
        ref = MMDetCE(**kw)(x, labels)
        ours = MODELS.build(dict(type='mmloss_ext.CrossEntropyLoss', impl='fused', **kw))(x.clone().requires_grad_(),
                                                                                           labels)
        assert ran_fused(ours)
        torch.testing.assert_close(ours, ref, **TOL[torch.float32])


def test_ce_fused_bad_labels_raise_as_eager(gen):
    x, labels = _ce_inputs(gen, torch.float32)
    for bad in (C, -1):
        labels[5] = bad
        messages = []
        for impl in ('eager', 'fused'):
            with pytest.raises(ValueError, match='CrossEntropyLoss') as err:
                cross_entropy_loss(x, labels, impl=impl)
            messages.append(str(err.value))
        assert messages[0] == messages[1]
    with pytest.raises(ValueError, match='shape'):
        cross_entropy_loss(x, labels[:-1].clamp(0, C - 1), impl='fused')
    with pytest.raises(TypeError, match='integer'):
        cross_entropy_loss(x, torch.zeros(N, dtype=torch.bool), impl='fused')


def test_ce_unsupported_options_fall_back_to_eager(gen):
    x, labels = _ce_inputs(gen, torch.float32)
    x = x.clamp(-20, 20)
    soft = torch.softmax(torch.randn(N, C, generator=gen), 1)
    binary = torch.randint(0, C + 1, (N,), generator=gen)
    calls = [(x, labels, dict(label_smoothing=0.1)), (x, soft, dict()), (x, binary, dict(use_sigmoid=True)),
             (x.view(N, C, 1, 1).expand(N, C, 2, 3).contiguous(), labels.view(N, 1, 1).expand(N, 2, 3), dict()),
             (x, labels, dict(weight=torch.rand(N, generator=gen).requires_grad_()))]
    for pred, target, kw in calls:
        out = cross_entropy_loss(pred.clone().requires_grad_(), target, impl='fused', reduction='sum', **kw)
        assert not ran_fused(out)
        torch.testing.assert_close(out, cross_entropy_loss(pred, target, impl='eager', reduction='sum', **kw))


# --- Dice -----------------------------------------------------------------------------------------

def _dice_inputs(gen, dtype, shape=(5, 1, 9, 13), target_kind='binary', ignore=None):
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 3
    x.view(shape[0], -1)[0, :2] = torch.tensor([1e4, -1e4], dtype=torch.float64)  # extreme logits
    t = torch.rand(shape, generator=gen, dtype=torch.float64)
    t = {'binary': (t > 0.5).double(), 'soft': t, 'bool': t > 0.5, 'uint8': (t > 0.5).to(torch.uint8),
         'long': (t > 0.5).long()}[target_kind]
    if shape[1] == 1 and target_kind == 'binary':
        t = t[:, 0]  # pred (N, 1, *) with target (N, *)
    if ignore is not None:
        t.view(shape[0], -1)[:, ::7] = ignore
    return x.to(dtype), t.to(dtype) if t.is_floating_point() else t


DICE_OPTIONS = {
    'default': dict(),
    'naive': dict(naive_dice=True),
    'eps0': dict(eps=0.0),
    'naive-eps0': dict(naive_dice=True, eps=0.0),
    'probabilities': dict(activate=False),
    'probabilities-naive': dict(activate=False, naive_dice=True, eps=1.0),
    'ignore': dict(ignore_index=255),
}


@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('option', sorted(DICE_OPTIONS))
def test_dice_fused_equals_eager(option, dtype, reduction, gen):
    kw = DICE_OPTIONS[option]
    x, t = _dice_inputs(gen, dtype, ignore=kw.get('ignore_index'))
    if not kw.get('activate', True):
        x = torch.rand(x.shape, generator=gen, dtype=torch.float64).to(dtype)
    v, g = _assert_same(dice_loss, x, t, reduction=reduction, **kw)
    if 'ignore_index' in kw:  # ignored elements get no gradient
        mask = (t == 255).unsqueeze(1)
        assert mask.any() and (g[mask] == 0).all() and (g[~mask] != 0).any()


@pytest.mark.parametrize('shape,target_kind', [((5, 1, 9, 13), 'soft'), ((5, 117), 'bool'), ((3, 2, 4, 5), 'uint8'),
                                               ((4, 7, 6), 'long')])
def test_dice_fused_shapes_and_target_dtypes(shape, target_kind, gen):
    x, t = _dice_inputs(gen, torch.float64, shape=shape, target_kind=target_kind)
    for kw in (dict(), dict(naive_dice=True)):
        _assert_same(dice_loss, x, t, reduction='none', **kw)


@pytest.mark.parametrize('weight_kind', ['row', 'scalar', 'one'])
def test_dice_fused_weights_and_avg_factor(weight_kind, gen):
    for dtype, reduction, avg_factor in ((torch.float64, 'none', None), (torch.float64, 'mean', 2.5),
                                         (torch.float64, 'mean', torch.tensor(4.0)), (torch.float32, 'sum', None)):
        x, t = _dice_inputs(gen, dtype)
        w = torch.rand(x.shape[0], generator=gen, dtype=torch.float64).to(dtype)
        w = {'row': w, 'scalar': w[0].clone(), 'one': w[:1].clone()}[weight_kind]
        for kw in (dict(), dict(naive_dice=True, ignore_index=1)):  # ignore_index=1: the positives drop out
            _assert_same(dice_loss, x, t, weight=w, reduction=reduction, avg_factor=avg_factor, **kw)


def test_dice_fused_empty_masks_and_saturated_logits(gen):
    # all logits -1e4 and empty targets: p = 0 exactly, so with eps = 0 the denominator hits its
    # floor (loss 1, no gradient through it); +1e4 saturates p = 1
    x = torch.full((3, 1, 8, 8), -1e4, dtype=torch.float64)
    x[1] = 1e4
    t = torch.zeros(3, 8, 8, dtype=torch.float64)
    t[1, :4] = 1.0
    for kw in (dict(eps=0.0), dict(naive_dice=True, eps=0.0), dict()):
        v, g = _assert_same(dice_loss, x, t, reduction='none', **kw)
        assert v[0] == 1.0 and (g == 0).all()  # sigmoid' = 0 at +-1e4


@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
def test_dice_fused_empty_batch(reduction, gen):
    x = torch.randn(0, 1, 4, 4, generator=gen).requires_grad_()
    out = dice_loss(x, torch.zeros(0, 4, 4), reduction=reduction, impl='fused')
    ref = dice_loss(x, torch.zeros(0, 4, 4), reduction=reduction, impl='eager')
    assert ran_fused(out) and out.shape == ref.shape and (out == 0).all()
    out.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_dice_fused_half_precision(dtype, gen):
    x, t = _dice_inputs(gen, torch.float32)
    x.view(x.shape[0], -1)[0, :2] = torch.tensor([1e4, -1e4])
    x, t = x.to(dtype), t.to(dtype)
    _assert_same(dice_loss, x, t, reduction='mean')
    _assert_same(dice_loss, x, t, reduction='none', naive_dice=True, weight=torch.rand(5, generator=gen).to(dtype))


def test_dice_fused_gradcheck(gen):
    x, t = _dice_inputs(gen, torch.float64, shape=(3, 1, 4, 5), target_kind='soft', ignore=255)
    x = x.clamp(-4, 4).requires_grad_()
    p = torch.rand(x.shape, generator=gen, dtype=torch.float64).requires_grad_()
    w = torch.rand(3, generator=gen, dtype=torch.float64)
    for inp, kw in ((x, dict()), (x, dict(naive_dice=True, ignore_index=255)), (p, dict(activate=False)),
                    (p, dict(activate=False, naive_dice=True, eps=0.5))):
        for reduction in ('none', 'mean'):
            def fn(a):
                out = dice_loss(a, t.clamp(max=1) if 'ignore_index' not in kw else t, weight=w,
                                reduction=reduction, impl='fused', **kw)
                assert ran_fused(out)
                return out
            assert torch.autograd.gradcheck(fn, (inp,))


def test_dice_fused_long_rows_split_into_blocks_and_threads(gen):
    # 3 rows of 50001: several 8192-element blocks per row and a ragged last block; the blocks'
    # partial sums are combined in a fixed order, so 1 and 2 threads give the same bits
    x, t = _dice_inputs(gen, torch.float64, shape=(3, 50001), target_kind='soft')
    for dtype in (torch.float64, torch.float32):
        xd, td = x.to(dtype), t.to(dtype)
        for kw in (dict(), dict(naive_dice=True)):
            v_e, g_e = _run(dice_loss, xd, td, 'eager', reduction='none', **kw)
            threads = torch.get_num_threads()
            results = []
            for n in (1, 2):
                torch.set_num_threads(n)
                try:
                    results.append(_run(dice_loss, xd, td, 'fused', reduction='none', **kw))
                finally:
                    torch.set_num_threads(threads)
            (v1, g1), (v2, g2) = results
            assert torch.equal(v1, v2) and torch.equal(g1, g2)
            torch.testing.assert_close(v2, v_e, **TOL[dtype])
            torch.testing.assert_close(g2, g_e, **TOL[dtype])


def test_dice_fused_matches_mmdet(gen):
    from mmdet.models.losses import DiceLoss as MMDetDice
    x, t = _dice_inputs(gen, torch.float32, shape=(4, 1, 16, 16))
    for kw in (dict(), dict(naive_dice=True), dict(activate=False, eps=0.5)):
        pred = x.sigmoid() if kw.get('activate') is False else x
        ref = MMDetDice(**kw)(pred, t)
        ours = MODELS.build(dict(type='mmloss_ext.DiceLoss', impl='fused', **kw))(pred.clone().requires_grad_(), t)
        assert ran_fused(ours)
        torch.testing.assert_close(ours, ref, **TOL[torch.float32])


def test_dice_unsupported_options_fall_back_to_eager(gen):
    x, t = _dice_inputs(gen, torch.float32, shape=(4, 3, 5, 5))
    labels = torch.randint(0, 3, (4, 5, 5), generator=gen)
    t1 = t[:, :1]
    calls = [(x, labels, dict(mode='multiclass')), (x[:, :1], t1, dict(use_sigmoid=False)),
             (x, t, dict(weight=torch.rand(4, generator=gen).requires_grad_())),
             (x, t.clone().requires_grad_(), dict())]
    for pred, target, kw in calls:
        out = dice_loss(pred.clone().requires_grad_(), target, impl='fused', reduction='sum', **kw)
        assert not ran_fused(out)
        torch.testing.assert_close(out, dice_loss(pred, target, impl='eager', reduction='sum', **kw))


def test_dice_fused_errors_match_eager(gen):
    x, t = _dice_inputs(gen, torch.float32)
    for impl in ('eager', 'fused'):
        with pytest.raises(ValueError, match='same shape'):
            dice_loss(x, t[:, :-1], impl=impl)
        with pytest.raises(ValueError, match='at least 2 dims'):
            dice_loss(x.reshape(-1), t.reshape(-1), impl=impl)
        with pytest.raises(ValueError, match='weight'):
            dice_loss(x, t, weight=torch.ones(4), impl=impl)


# --- dispatch -------------------------------------------------------------------------------------

@pytest.mark.parametrize('loss', ['CrossEntropyLoss', 'DiceLoss'])
def test_dense_impl_switch(loss, gen, monkeypatch):
    from mmloss_ext.kernels import dispatch
    monkeypatch.delenv(dispatch.ENV_IMPL, raising=False)
    monkeypatch.setenv(dispatch.ENV_MIN_NUMEL, '200')
    if loss == 'CrossEntropyLoss':
        x, target = _ce_inputs(gen, torch.float32, n=16, c=16)  # 256 elements
    else:
        x, target = _dice_inputs(gen, torch.float32, shape=(4, 1, 8, 8))
    small = (x[:4], target[:4]) if loss == 'CrossEntropyLoss' else (x[:, :, :2], target[:, :2])

    def path(impl, inputs=(x, target)):
        module = MODELS.build(dict(type=f'mmloss_ext.{loss}', impl=impl))
        return 'fused' if ran_fused(module(inputs[0].clone().requires_grad_(), inputs[1])) else 'eager'

    assert [path('auto'), path('auto', small), path('eager'), path('fused', small)] == ['fused', 'eager', 'eager',
                                                                                      'fused']
    monkeypatch.setenv(dispatch.ENV_IMPL, 'eager')
    assert path('auto') == 'eager' and path('fused') == 'fused'
    with pytest.raises(ValueError, match='impl'):
        MODELS.build(dict(type=f'mmloss_ext.{loss}', impl='fast'))


def test_dense_eager_never_calls_the_kernels(gen, monkeypatch):
    from mmloss_ext.kernels import backends as cpu

    class Boom:
        def __getattr__(self, name):
            raise AssertionError(f'kernel {name} called')

    boom = Boom()
    monkeypatch.setattr(cpu, 'cpu_kernels', lambda: boom)
    x, labels = _ce_inputs(gen, torch.float32, n=200, c=81)
    cross_entropy_loss(x.requires_grad_(), labels, impl='eager').backward()
    xd, t = _dice_inputs(gen, torch.float32, shape=(2, 1, 64, 64))
    dice_loss(xd.requires_grad_(), t, impl='eager').backward()
    with pytest.raises(AssertionError, match='ce_forward'):
        cross_entropy_loss(x, labels, impl='fused')
    with pytest.raises(AssertionError, match='dice_forward'):
        dice_loss(xd, t, impl='fused')
