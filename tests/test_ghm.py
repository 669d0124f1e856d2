"""GHMC and GHMR: parity with mmdet, the running histogram, distributed training, the fused kernels.

Parity is value for value (and gradient for gradient) with mmdet's own classes in float64, over
several calls with ``momentum > 0`` (both modules' histograms move the same way) and with bins left
empty. mmdet's GHMC casts its target to float32 (``target.float()``), which makes torch compute
the BCE in float32 even for float64 logits; :func:`mmdet_ghm` patches that cast, and nothing else,
so that the reference is float64 throughout (the unpatched module is checked too, at float32's
precision). The fused kernels (C++ on the CPU, Triton under its interpreter) are held to the eager
path, which is the spec.
"""
import copy
import pickle
import types

import pytest
import torch
import torch.nn.functional as F

import mmloss_ext  # noqa: F401  (registers the losses)
from helpers import FUSED_TOL, gloo_ranks
from mmdet.registry import MODELS as MMDET_MODELS
from mmloss_ext.kernels import backends
from mmloss_ext.kernels import ghmc as fused_ghm
from mmloss_ext.kernels.common import ran_fused
from mmloss_ext.losses import GHMC, GHMR
from mmloss_ext.losses.ghm import bin_counts, bin_index, ghm_edges, ghmc_loss, ghmr_loss, harmonize

EXACT = dict(rtol=1e-12, atol=1e-14)


@pytest.fixture
def mmdet_ghm(monkeypatch):
    """mmdet's GHMC/GHMR classes; GHMC's BCE computed in pred's dtype (see the module docstring)."""
    import mmdet.models.losses.ghm_loss as module

    def bce64(pred, target, **kw):
        return F.binary_cross_entropy_with_logits(pred, target.to(pred.dtype), **kw)

    monkeypatch.setattr(module, 'F', types.SimpleNamespace(binary_cross_entropy_with_logits=bce64))
    return module


def value_and_grad(fn, pred, *args, **kw):
    p = pred.detach().clone().requires_grad_()
    out = fn(p, *args, **kw)
    grad, = torch.autograd.grad(out.sum(), p)
    return out.detach(), grad


def assert_same_call(ours, ref, pred, *args, tol=EXACT, **kw):
    v1, g1 = value_and_grad(ours, pred, *args, **kw)
    v2, g2 = value_and_grad(ref, pred, *args, **kw)
    torch.testing.assert_close(v1, v2.to(v1.dtype), **tol)
    torch.testing.assert_close(g1, g2.to(g1.dtype), **tol)
    return v1


def ghmc_batch(gen, n, c=6, dtype=torch.float64, ignored=0.2):
    x = torch.randn(n, c, generator=gen, dtype=dtype) * 3.0
    labels = torch.randint(0, c + 1, (n,), generator=gen)  # c: background
    weight = (torch.rand(n, generator=gen) > ignored).to(dtype)
    return x, labels, weight


def ghmr_batch(gen, n, dtype=torch.float64, ignored=0.5):
    pred = torch.randn(n, 4, generator=gen, dtype=dtype) * 0.05
    target = torch.randn(n, 4, generator=gen, dtype=dtype) * 0.05
    weight = (torch.rand(n, 1, generator=gen) > ignored).to(dtype).expand(n, 4).contiguous()  # per box, as a head
    return pred, target, weight


# --- parity with mmdet ------------------------------------------------------------------------------

def test_constructors_are_mmdets(mmdet_ghm):
    assert GHMC(30, 0.75, True, 2.0, 'sum').hparams() == dict(bins=30, momentum=0.75, use_sigmoid=True, impl='auto')
    assert GHMR(0.05, 12, 0.7, 10.0, 'none').hparams() == dict(mu=0.05, bins=12, momentum=0.7)
    assert (GHMC().bins, GHMC().momentum, GHMR().mu, GHMR().bins) == (10, 0.0, 0.02, 10)
    assert GHMC(3, 0.5, True, 2.0).loss_weight == 2.0 and GHMR(0.1, 3, 0.5, 2.0, 'sum').reduction == 'sum'
    for ours, theirs in ((GHMC, mmdet_ghm.GHMC), (GHMR, mmdet_ghm.GHMR)):
        import inspect
        mine = inspect.signature(ours).parameters  # mmdet's order and defaults, then our keyword-only impl
        ref = inspect.signature(theirs.__init__).parameters
        assert [(k, p.default) for k, p in mine.items() if p.kind is p.POSITIONAL_OR_KEYWORD] == \
            [(k, p.default) for k, p in ref.items() if k != 'self']
    with pytest.raises(ValueError, match='GHMC: `use_sigmoid` expected True'):
        GHMC(use_sigmoid=False)  # mmdet: NotImplementedError
    with pytest.raises(TypeError, match='GHMC: `bins` expected an int, got float 2.5'):
        ghmc_loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), bins=2.5)
    with pytest.raises(ValueError, match=r'GHMR: `momentum` expected a value in \[0.0, 1.0\), got 1.0'):
        GHMR(momentum=1.0)


@pytest.mark.parametrize('bins, momentum', [(10, 0.0), (30, 0.0), (10, 0.75), (30, 0.75), (1, 0.5)])
def test_ghmc_equals_mmdet_over_several_calls(mmdet_ghm, gen, bins, momentum):
    ours = GHMC(bins, momentum).double()
    ref = mmdet_ghm.GHMC(bins, momentum).double()
    for step in range(4):
        x, labels, weight = ghmc_batch(gen, 40 + 13 * step)
        for reduction in ('mean', 'none'):
            assert_same_call(ours, ref, x, labels, weight, reduction)
        if momentum:
            torch.testing.assert_close(ours.acc_sum, ref.acc_sum, rtol=0, atol=0)
    if momentum:
        assert float(ours.acc_sum.sum()) > 0


def test_ghmc_dense_targets_and_full_weights_equal_mmdet(mmdet_ghm, gen):
    ours, ref = GHMC(10, 0.6).double(), mmdet_ghm.GHMC(10, 0.6).double()
    for step in range(3):
        x = torch.randn(25, 5, generator=gen, dtype=torch.float64) * 2
        target = (torch.rand(25, 5, generator=gen) < 0.3).double()
        weight = (torch.rand(25, 5, generator=gen) > 0.1).double()
        assert_same_call(ours, ref, x, target, weight)
    torch.testing.assert_close(ours.acc_sum, ref.acc_sum, rtol=0, atol=0)


def test_bins_without_samples_equal_mmdet(mmdet_ghm, gen):
    """Logits far from 0 put every element in the first or the last of 30 bins: 28 stay empty, n = 2."""
    x = torch.randn(20, 3, generator=gen, dtype=torch.float64).sign() * 12
    labels = torch.randint(0, 4, (20,), generator=gen)
    ours, ref = GHMC(30, 0.7).double(), mmdet_ghm.GHMC(30, 0.7).double()
    assert_same_call(ours, ref, x, labels, torch.ones(20, dtype=torch.float64))
    assert int((ours.acc_sum > 0).sum()) == 2
    idx = bin_index((torch.sigmoid(x) - torch.nn.functional.one_hot(labels, 4)[:, :3]).abs(),
                    ghm_edges(30, 'ghmc', torch.float64, 'cpu'))
    assert set(idx.unique().tolist()) == {0, 29}
    pred, target = torch.zeros(6, 4, dtype=torch.float64), torch.full((6, 4), 1e-4, dtype=torch.float64)
    assert_same_call(GHMR(0.02, 10, 0.0).double(), mmdet_ghm.GHMR(0.02, 10, 0.0).double(), pred, target,
                     torch.ones(6, 4, dtype=torch.float64))  # one bin of 10 filled


@pytest.mark.parametrize('mu, bins, momentum', [(0.02, 10, 0.0), (0.02, 10, 0.7), (0.1, 4, 0.3)])
def test_ghmr_equals_mmdet_over_several_calls(mmdet_ghm, gen, mu, bins, momentum):
    ours, ref = GHMR(mu, bins, momentum).double(), mmdet_ghm.GHMR(mu, bins, momentum).double()
    for step in range(4):
        pred, target, weight = ghmr_batch(gen, 30 + 7 * step)
        for reduction in ('mean', 'none'):
            assert_same_call(ours, ref, pred, target, weight, None, reduction)
    if momentum:
        torch.testing.assert_close(ours.acc_sum, ref.acc_sum, rtol=0, atol=0)


def test_float32_modules_equal_mmdets_bit_for_bit_histograms(gen):
    """Default (float32) buffers and float32 inputs, mmdet unpatched: the running histograms agree
    exactly and the losses to float32 rounding (the weighted sums are added in another order)."""
    from mmdet.models.losses.ghm_loss import GHMC as MMDetGHMC, GHMR as MMDetGHMR
    c_ours, c_ref = GHMC(30, 0.75), MMDetGHMC(30, 0.75)
    r_ours, r_ref = GHMR(0.02, 10, 0.7), MMDetGHMR(0.02, 10, 0.7)
    tol = dict(rtol=1e-6, atol=1e-7)
    for step in range(3):
        x, labels, weight = ghmc_batch(gen, 300, dtype=torch.float32)
        assert_same_call(c_ours, c_ref, x, labels, weight, tol=tol)
        pred, target, w = ghmr_batch(gen, 200, dtype=torch.float32)
        assert_same_call(r_ours, r_ref, pred, target, w, tol=tol)
        assert torch.equal(c_ours.acc_sum, c_ref.acc_sum) and torch.equal(r_ours.acc_sum, r_ref.acc_sum)
    # float64 logits against the unpatched mmdet GHMC: its BCE is float32 (see the module docstring)
    x, labels, weight = ghmc_batch(gen, 50)
    assert_same_call(GHMC(), MMDetGHMC(), x, labels, weight, tol=dict(rtol=1e-6, atol=1e-7))


def test_retina_head_with_ghm_losses_trains_like_mmdets(gen):
    """A RetinaHead as in mmdet's GHM config (its avg_factor passed to both losses and ignored,
    reg_decoded_bbox=False): losses, gradients and histograms equal mmdet's over training steps."""
    from mmengine.structures import InstanceData

    def head(scope):
        torch.manual_seed(0)
        return MMDET_MODELS.build(dict(
            type='RetinaHead', num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1,
            anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=1,
                                  ratios=[0.5, 1.0], strides=[8]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[1.0] * 4),
            loss_cls=dict(type=f'{scope}GHMC', bins=30, momentum=0.75, use_sigmoid=True, loss_weight=1.0),
            loss_bbox=dict(type=f'{scope}GHMR', mu=0.02, bins=10, momentum=0.7, loss_weight=10.0),
            train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0),
                           sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1, debug=False)))

    heads = {scope: head(scope) for scope in ('', 'mmloss_ext.')}
    assert type(heads['mmloss_ext.'].loss_cls) is GHMC and type(heads[''].loss_cls).__module__.startswith('mmdet')
    gt = InstanceData(bboxes=torch.tensor([[8.0, 8.0, 40.0, 36.0], [30.0, 2.0, 60.0, 30.0]]),
                      labels=torch.tensor([0, 2]))
    metas = [dict(img_shape=(64, 64), pad_shape=(64, 64), scale_factor=(1.0, 1.0))]
    for step in range(3):
        feats = [torch.randn(1, 8, 8, 8, generator=gen)]
        out = {}
        for scope, h in heads.items():
            losses = h.loss_by_feat(*h(feats), [gt], metas)
            total = sum(losses['loss_cls']) + sum(losses['loss_bbox'])
            grads = torch.autograd.grad(total, list(h.parameters()))
            out[scope] = (torch.stack([sum(losses['loss_cls']), sum(losses['loss_bbox'])]).detach(), grads)
        torch.testing.assert_close(out['mmloss_ext.'][0], out[''][0], rtol=1e-5, atol=1e-6)
        for a, b in zip(out['mmloss_ext.'][1], out[''][1]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        for loss in ('loss_cls', 'loss_bbox'):
            assert torch.equal(getattr(heads['mmloss_ext.'], loss).acc_sum, getattr(heads[''], loss).acc_sum)
    assert float(out[''][0][1]) > 0


# --- the formula, the reductions and the call convention ---------------------------------------------

def test_hand_computed_ghmc():
    """bins=2: g = |sigmoid(x) - t| of 0.12, 0.27 (bin 0) and 0.5, 0.95 (bin 1): n = 2, tot = 4, every
    element weighted 4 / (2 * 2) = 1; the ignored fifth element is in no bin."""
    x = torch.tensor([[2.0, -1.0], [0.0, 3.0], [5.0, 5.0]], dtype=torch.float64)
    labels = torch.tensor([0, 2, 1])
    weight = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    t = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    bce = F.binary_cross_entropy_with_logits(x, t, reduction='none')
    expected = bce * torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(ghmc_loss(x, labels, bins=2, weight=weight, reduction='none'), expected, **EXACT)
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(ghmc_loss(x, labels, bins=2, weight=weight), expected.sum() / (4 + eps), **EXACT)
    # three in bin 0, one in bin 1: 4 / (2 * 3) and 4 / (2 * 1)
    x2 = torch.tensor([[-3.0, -2.0], [-1.5, 3.0]], dtype=torch.float64)
    w2 = torch.tensor([[2 / 3, 2 / 3], [2 / 3, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(ghmc_loss(x2, torch.tensor([2, 2]), bins=2, reduction='none'),
                               F.binary_cross_entropy_with_logits(x2, torch.zeros_like(x2), reduction='none') * w2,
                               **EXACT)


def test_hand_computed_ghmr():
    """mu = 0.02: d = 0, 0.01 give g = 0, 0.447 (bin 0 of 2), d = 0.5, -1 give 0.999, 0.9998 (bin 1);
    GHMR's tot is the sum of the weights (2.5 here), its weights tot / (n count) = 2.5 / 4."""
    d = torch.tensor([[0.0, 0.01, 0.5, -1.0]], dtype=torch.float64)
    asl1 = torch.sqrt(d * d + 0.02 ** 2) - 0.02
    weight = torch.tensor([[1.0, 0.5, 0.5, 0.5]], dtype=torch.float64)
    out = ghmr_loss(d, torch.zeros_like(d), bins=2, weight=weight, reduction='none')
    torch.testing.assert_close(out, asl1 * 2.5 / 4, **EXACT)
    total = ghmr_loss(d, torch.zeros_like(d), bins=2, weight=weight, reduction='sum')
    torch.testing.assert_close(ghmr_loss(d, torch.zeros_like(d), bins=2, weight=weight), total / 2.5, rtol=1e-7,
                               atol=0)  # + float32 eps


@pytest.mark.parametrize('name', ['GHMC', 'GHMR'])
def test_sum_is_the_sum_of_none_and_mean_divides_by_tot(name, gen):
    if name == 'GHMC':
        x, target, weight = ghmc_batch(gen, 30)
        tot = float(weight.sum()) * x.shape[1]  # the valid elements
        loss = GHMC(7).double()
    else:
        x, target, weight = ghmr_batch(gen, 30)
        weight = weight * 0.5  # GHMR: the sum of the weights, not their count
        tot = float(weight.sum())
        loss = GHMR(0.02, 7).double()
    none = loss(x, target, weight=weight, reduction_override='none')
    total = loss(x, target, weight=weight, reduction_override='sum')
    mean = loss(x, target, weight=weight)
    torch.testing.assert_close(total, none.sum(), **EXACT)
    torch.testing.assert_close(mean, total / (tot + torch.finfo(torch.float32).eps), **EXACT)
    # avg_factor (a head passes its number of positives) is checked but not used, as in mmdet
    torch.testing.assert_close(loss(x, target, weight=weight, avg_factor=3.0), mean, rtol=0, atol=0)
    with pytest.raises(ValueError, match=f"{name}: `avg_factor` can not be used with reduction='sum'"):
        loss(x, target, weight=weight, avg_factor=3.0, reduction_override='sum')
    # weight marks the valid elements: its values do not scale GHMC's loss (nor GHMR's weighting)
    if name == 'GHMC':
        torch.testing.assert_close(loss(x, target, weight * 7.0), mean, **EXACT)


def test_label_weight_positional_or_weight_keyword(gen):
    x, labels, weight = ghmc_batch(gen, 12)
    loss = GHMC()
    torch.testing.assert_close(loss(x, labels, weight), loss(x, labels, weight=weight), rtol=0, atol=0)
    torch.testing.assert_close(loss(x, labels, weight, 'sum'), loss(x, labels, weight=weight, reduction_override='sum'))
    with pytest.raises(TypeError, match='GHMC: got both `label_weight` and `weight`'):
        loss(x, labels, weight, weight=weight)
    pred, target, w = ghmr_batch(gen, 5)
    r = GHMR()
    torch.testing.assert_close(r(pred, target, w, 2.0, 'mean'), r(pred, target, weight=w), rtol=0, atol=0)
    torch.testing.assert_close(r(pred, target, w, None, 'sum'), r(pred, target, weight=w, reduction_override='sum'))
    # label_weight optional (mmdet requires it): None means every element counts
    torch.testing.assert_close(loss(x, labels), loss(x, labels, torch.ones(12, dtype=x.dtype)))


def test_label_range_and_target_values_are_checked(gen):
    x, labels, _ = ghmc_batch(gen, 4)
    with pytest.raises(ValueError, match=r'GHMC: `target` expected values in \[0, 6\], got values in \[-1, -1\]'):
        ghmc_loss(x, torch.tensor([0, -1, 2, 6]))
    with pytest.raises(ValueError, match=r'GHMC: `target` expected values in \[0, 1\]'):
        ghmc_loss(x, torch.full_like(x, 2.0))
    soft = torch.rand(x.shape, generator=gen, dtype=x.dtype)
    assert torch.isfinite(ghmc_loss(x, soft))  # soft targets in [0, 1]: g stays in [0, 1]
    with pytest.raises(ValueError, match=r'GHMC: `acc_sum` expected shape \(10,\) \(one value per bin\), got \(3,\)'):
        ghmc_loss(x, labels, torch.zeros(3))
    with pytest.raises(ValueError, match=r'GHMR: `acc_sum` expected shape \(4,\)'):
        GHMR(bins=4)(x, x, bins=4, acc_sum=torch.zeros(5))


def test_binning_is_vectorised_and_never_reads_the_device(gen, monkeypatch):
    """bin_index / bin_counts / harmonize are tensor ops only: no value reaches the host (on CUDA
    that would be a sync per call). Every way a tensor's value can be read is made to fail."""
    x, labels, _ = ghmc_batch(gen, 64, dtype=torch.float32)
    g = (torch.sigmoid(x) - torch.nn.functional.one_hot(labels, 7)[:, :6]).abs()
    acc = torch.zeros(10)
    edges = ghm_edges(10, 'ghmc', torch.float32, 'cpu')

    def refuse(*_, **__):
        raise AssertionError('a tensor value was read on the host')

    for attr in ('item', 'tolist', '__bool__', '__int__', '__float__', '__index__', 'numpy'):
        monkeypatch.setattr(torch.Tensor, attr, refuse)
    idx = bin_index(g, edges, torch.ones_like(g, dtype=torch.bool))
    counts = bin_counts(idx, 10)
    weights = harmonize(counts[:10], counts.sum(), torch.float32, acc, True, 0.6)
    monkeypatch.undo()
    ref = torch.bincount(idx.flatten(), minlength=11)
    assert torch.equal(counts, ref) and int(counts.sum()) == g.numel()
    filled = ref[:10] > 0
    expected = g.numel() / (0.4 * ref[:10].double()) / int(filled.sum())
    torch.testing.assert_close(weights[filled].double(), expected[filled], rtol=1e-6, atol=0)
    assert torch.equal(acc, torch.where(filled, (0.4 * ref[:10].double()).float(), 0.0))


def test_edges_and_bins_are_mmdets():
    from mmdet.models.losses.ghm_loss import GHMC as MMDetGHMC, GHMR as MMDetGHMR
    for bins in (1, 10, 30):
        assert torch.equal(ghm_edges(bins, 'ghmc', torch.float32, 'cpu'), MMDetGHMC(bins).edges)
        assert torch.equal(ghm_edges(bins, 'ghmr', torch.float32, 'cpu'), MMDetGHMR(bins=bins).edges)
    edges = ghm_edges(10, 'ghmc', torch.float64, 'cpu')  # float32 values: 0.3 lies below the edge 0.3f
    g = torch.tensor([0.0, 0.1, 0.3, float(torch.tensor(0.3)), 0.99999, 1.0, 1.0000005, 1.000002, float('nan')],
                     dtype=torch.float64)
    assert bin_index(g, edges).tolist() == [0, 0, 2, 3, 9, 9, 9, 10, 10]


# --- state: the running histogram --------------------------------------------------------------------

def test_running_histogram_updates_in_training_mode_only(mmdet_ghm, gen):
    ours, ref = GHMC(10, 0.75).double(), mmdet_ghm.GHMC(10, 0.75).double()
    assert 'acc_sum' in ours.state_dict() and torch.equal(ours.acc_sum, torch.zeros(10, dtype=torch.float64))
    x, labels, weight = ghmc_batch(gen, 50)
    assert_same_call(ours, ref, x, labels, weight)
    trained = ours.acc_sum.clone()
    # eval: the value mmdet's module gives for this call (it updates whenever called) ...
    x2, labels2, weight2 = ghmc_batch(gen, 30)
    ours.eval()
    assert_same_call(ours, copy.deepcopy(ref), x2, labels2, weight2)
    # ... without moving the histogram
    assert torch.equal(ours.acc_sum, trained)
    ours.train()
    assert_same_call(ours, ref, x2, labels2, weight2)
    assert not torch.equal(ours.acc_sum, trained)


def test_buffer_is_registered_without_momentum_and_stays_float32_under_half():
    for loss in (GHMC(), GHMR(), GHMC(bins=4, momentum=0.5)):
        assert list(loss.state_dict()) == ['acc_sum'] and loss.acc_sum.shape == (loss.bins,)
        assert loss.half().acc_sum.dtype == torch.float32  # counts past 65504 must not overflow
        assert loss.double().acc_sum.dtype == torch.float64
    stateless = GHMC()
    x = torch.randn(8, 3)
    stateless(x, torch.randint(0, 4, (8,)))
    assert not stateless.acc_sum.any()  # momentum = 0 keeps no history


def test_state_survives_state_dict_deepcopy_and_pickle(gen):
    loss = GHMR(0.02, 10, 0.7)
    for _ in range(2):
        loss(*ghmr_batch(gen, 20, dtype=torch.float32))
    pred, target, weight = ghmr_batch(gen, 20, dtype=torch.float32)
    ref = copy.deepcopy(loss).eval()(pred, target, weight)
    fresh = GHMR(0.02, 10, 0.7)
    fresh.load_state_dict(loss.state_dict())
    for clone in (fresh, copy.deepcopy(loss), pickle.loads(pickle.dumps(loss))):
        assert torch.equal(clone.acc_sum, loss.acc_sum)
        torch.testing.assert_close(clone.eval()(pred, target, weight), ref)


def test_running_histogram_survives_an_mmengine_checkpoint(tmp_path, gen):
    """The histogram is a buffer: mmengine's save/load_checkpoint carry it (as `--resume` does), and the
    resumed model continues the same trajectory."""
    from mmengine.runner.checkpoint import load_checkpoint, save_checkpoint

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)
            self.loss_cls = MMDET_MODELS.build(dict(type='mmloss_ext.GHMC', bins=30, momentum=0.75))
            self.loss_bbox = MMDET_MODELS.build(dict(type='mmloss_ext.GHMR', mu=0.02, bins=10, momentum=0.7))

        def step(self, g):
            x, labels, w = ghmc_batch(g, 40, dtype=torch.float32)
            p, t, bw = ghmr_batch(g, 40, dtype=torch.float32)
            return self.loss_cls(x, labels, w) + self.loss_bbox(p, t, bw)

    head = Head()
    for _ in range(3):
        head.step(gen)
    path = str(tmp_path / 'epoch_1.pth')
    save_checkpoint({'state_dict': head.state_dict()}, path)
    resumed = Head()
    assert not resumed.loss_cls.acc_sum.any()
    load_checkpoint(resumed, path, map_location='cpu', strict=True)
    for loss in ('loss_cls', 'loss_bbox'):
        assert torch.equal(getattr(resumed, loss).acc_sum, getattr(head, loss).acc_sum)
    state = gen.get_state()
    a = head.step(gen)
    gen.set_state(state)
    b = resumed.step(gen)
    assert torch.equal(a, b)
    for loss in ('loss_cls', 'loss_bbox'):
        assert torch.equal(getattr(resumed, loss).acc_sum, getattr(head, loss).acc_sum)


@pytest.mark.parametrize('momentum', [0.0, 0.75])
def test_mmdet_checkpoints_load_strictly(mmdet_ghm, gen, momentum):
    """mmdet's modules also save `edges` (a function of bins) and, without momentum, no `acc_sum`."""
    theirs = mmdet_ghm.GHMC(10, momentum)
    x, labels, weight = ghmc_batch(gen, 30, dtype=torch.float32)
    theirs(x, labels, weight)
    ours = GHMC(10, momentum)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    if momentum:
        assert torch.equal(ours.acc_sum, theirs.acc_sum) and ours.acc_sum.any()
    x2, labels2, weight2 = ghmc_batch(gen, 30, dtype=torch.float32)
    assert_same_call(ours, theirs, x2, labels2, weight2, tol=dict(rtol=1e-6, atol=1e-7))
    with pytest.raises(RuntimeError, match=r'`edges` of shape \(11,\) in the checkpoint, expected \(4,\)'):
        GHMC(3, momentum).load_state_dict(theirs.state_dict())


# --- torch.distributed: every rank keeps the histogram of the concatenated batch -----------------------

# per rank and call: (number of samples, all of them ignored). Call 1: rank 0's batch is empty and
# call 3 all ignored ('mean': BaseLoss's shortcut answers); call 2: rank 1 ignores all ('none')
_DIST_CALLS = [[(9, False), (0, False), (6, False), (4, True)], [(5, False), (7, False), (8, True), (5, False)]]
_DIST_REDUCTIONS = ['mean', 'mean', 'none', 'mean']


def _dist_batches(rank, call):
    """Rank ``rank``'s inputs at ``call`` (seeded by both), GHMC and GHMR."""
    n, ignored = _DIST_CALLS[rank][call]
    gen = torch.Generator().manual_seed(100 * rank + call)
    x, labels, w = ghmc_batch(gen, n)
    pred, target, bw = ghmr_batch(gen, n)
    if ignored:
        w, bw = torch.zeros_like(w), torch.zeros_like(bw)
    return (x, labels, w), (pred, target, bw)


def _modules():
    return GHMC(10, 0.75).double(), GHMR(0.02, 10, 0.7).double()


def _ghm_rank(rank):
    cls, reg = _modules()
    history, outputs = [], []
    for call, reduction in enumerate(_DIST_REDUCTIONS):
        c_args, r_args = _dist_batches(rank, call)
        # an empty or all-ignored batch with 'mean' takes BaseLoss's shortcut: it must still join
        outputs.append((cls(*c_args, reduction_override=reduction).detach(),
                        reg(*r_args, reduction_override=reduction).detach()))
        history.append((cls.acc_sum.clone(), reg.acc_sum.clone()))
    return history, outputs


def test_two_ranks_keep_the_histogram_of_the_concatenated_batch():
    world = len(_DIST_CALLS)
    results = gloo_ranks(_ghm_rank, world)
    cls, reg = _modules()  # one process on the concatenated batches
    for call, reduction in enumerate(_DIST_REDUCTIONS):
        parts = [_dist_batches(rank, call) for rank in range(world)]
        c_args = [torch.cat([p[0][i] for p in parts]) for i in range(3)]
        r_args = [torch.cat([p[1][i] for p in parts]) for i in range(3)]
        c_out = cls(*c_args, reduction_override=reduction).detach()
        r_out = reg(*r_args, reduction_override=reduction).detach()
        for rank in range(world):
            c_acc, r_acc = results[rank][0][call]
            assert torch.equal(c_acc, cls.acc_sum) and torch.equal(r_acc, reg.acc_sum), (rank, call)
        if reduction == 'none':  # every rank weights its elements as the single process does
            torch.testing.assert_close(torch.cat([results[r][1][call][0] for r in range(world)]), c_out, **EXACT)
            torch.testing.assert_close(torch.cat([results[r][1][call][1] for r in range(world)]), r_out, **EXACT)
    assert cls.acc_sum.any() and reg.acc_sum.any()


# --- the fused kernels against the eager path ----------------------------------------------------------

def ghmc_fused_inputs(gen, dtype, n=37, c=11, kind='labels'):
    """Logits with extreme values, labels in [0, c] or binary/soft targets; 37 rows: vector tails."""
    x = torch.randn(n, c, generator=gen, dtype=torch.float64) * 3
    x[0, :3] = torch.tensor([1e4, -1e4, 0.0], dtype=torch.float64)
    x[1, :2] = torch.tensor([30.0, -30.0], dtype=torch.float64)
    if kind == 'labels':
        target = torch.randint(0, c + 1, (n,), generator=gen)
    elif kind == 'binary':
        target = (torch.rand(n, c, generator=gen) < 0.2).to(dtype)
    else:
        target = torch.rand(n, c, generator=gen, dtype=torch.float64).to(dtype)
    return x.to(dtype), target


def make_weight(kind, x, gen):
    if kind is None:
        return None
    if kind == 'row':
        return (torch.rand(x.shape[0], generator=gen) > 0.3).to(x.dtype) * 2.0
    return (torch.rand(x.shape, generator=gen) > 0.3).to(x.dtype)


def assert_fused_equals_eager(gen, dtype, reduction, kind='labels', weight_kind='row', momentum=0.0, bins=10,
                              calls=1, n=37, c=11):
    eager, fused = GHMC(bins, momentum, impl='eager'), GHMC(bins, momentum, impl='fused')
    for _ in range(calls):
        x, target = ghmc_fused_inputs(gen, dtype, n, c, kind)
        w = make_weight(weight_kind, x, gen)
        v_e, g_e = value_and_grad(eager, x, target, w, reduction)
        p = x.detach().clone().requires_grad_()
        out = fused(p, target, w, reduction)
        assert ran_fused(out)
        g_f, = torch.autograd.grad(out.sum(), p)
        v_f = out.detach()
        assert v_f.dtype == v_e.dtype == dtype and v_f.shape == v_e.shape
        assert torch.isfinite(v_f).all() and torch.isfinite(g_f).all()
        torch.testing.assert_close(v_f, v_e, **FUSED_TOL[dtype])
        torch.testing.assert_close(g_f, g_e, **FUSED_TOL[dtype])
        assert torch.equal(eager.acc_sum, fused.acc_sum)
    return fused


needs_ext = pytest.mark.skipif(not backends.has_kernel('ghmc', 'cpu'),
                               reason='the C++ extension is not built (`make install`)')


def test_the_kernels_are_built_and_take_their_bins():
    # `make install` builds kernels/ghmc/ghmc.cpp into mmloss_ext._fused; without it GHMC silently runs eagerly
    assert backends.has_kernel('ghmc', 'cpu'), 'mmloss_ext._fused is missing: run `make install`'
    x = torch.zeros(1)
    assert fused_ghm.supported(x, fused_ghm.CPU_MAX_BINS) and not fused_ghm.supported(x, fused_ghm.CPU_MAX_BINS + 1)
    with backends.triton_on_cpu():  # the Triton kernels' one-hot over next_power_of_2(bins + 2) lanes
        assert fused_ghm.supported(x, 1022) and not fused_ghm.supported(x, 1023)
    assert not fused_ghm.supported(x.to('meta'), 10)  # no kernels there


@needs_ext
@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('kind, weight_kind', [('labels', 'row'), ('labels', None), ('labels', 'full'),
                                               ('binary', 'full'), ('soft', None)])
def test_fused_equals_eager(gen, dtype, reduction, kind, weight_kind):
    assert_fused_equals_eager(gen, dtype, reduction, kind, weight_kind)


@needs_ext
@pytest.mark.parametrize('bins, momentum', [(30, 0.75), (1, 0.0), (3, 0.5)])
def test_fused_equals_eager_with_momentum_over_several_calls(gen, bins, momentum):
    fused = assert_fused_equals_eager(gen, torch.float64, 'mean', bins=bins, momentum=momentum, calls=3)
    assert bool(fused.acc_sum.any()) == (momentum > 0)


@needs_ext
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_fused_half_precision(gen, dtype):
    for reduction in ('mean', 'none'):
        assert_fused_equals_eager(gen, dtype, reduction)


@needs_ext
def test_fused_at_scale_is_deterministic_and_thread_independent(gen):
    """Many chunks (fixed, merged in order): bitwise the same with 1 or 2 threads and call to call."""
    x, target = ghmc_fused_inputs(gen, torch.float32, n=3000, c=80)
    w = make_weight('row', x, gen)
    threads = torch.get_num_threads()
    outs = []
    try:
        for t in (1, 2, 2):
            torch.set_num_threads(t)
            outs.append(value_and_grad(GHMC(30, impl='fused'), x, target, w))
    finally:
        torch.set_num_threads(threads)
    for v, g in outs[1:]:
        assert torch.equal(v, outs[0][0]) and torch.equal(g, outs[0][1])
    v_e, g_e = value_and_grad(GHMC(30, impl='eager'), x, target, w)
    torch.testing.assert_close(outs[0][0], v_e, **FUSED_TOL[torch.float32])
    torch.testing.assert_close(outs[0][1], g_e, **FUSED_TOL[torch.float32])


@needs_ext
def test_fused_is_the_default_from_min_numel_on(gen):
    x, target = ghmc_fused_inputs(gen, torch.float32, n=600, c=8)  # 4800 elements
    p = x.clone().requires_grad_()
    assert ran_fused(GHMC()(p, target))
    assert not ran_fused(GHMC()(p[:10], target[:10]))
    assert not ran_fused(GHMC(impl='eager')(p, target))


@needs_ext
@pytest.mark.parametrize('impl', ['eager', 'fused'])
def test_empty_and_all_ignored_batches(impl, gen):
    loss = GHMC(10, 0.75, impl=impl)
    for reduction in ('mean', 'sum', 'none'):
        x = torch.zeros(0, 5, requires_grad=True)
        out = loss(x, torch.zeros(0, dtype=torch.long), reduction_override=reduction)
        assert out.shape == ((0, 5) if reduction == 'none' else ())
        out.sum().backward()
        assert x.grad.shape == (0, 5)
        x, labels = ghmc_fused_inputs(gen, torch.float32, n=9, c=5)
        x.requires_grad_()
        out = loss(x, labels, torch.zeros(9), reduction)  # every anchor ignored
        assert torch.equal(out.detach(), torch.zeros_like(out))
        out.sum().backward()
        assert torch.equal(x.grad, torch.zeros_like(x))
    assert not loss.acc_sum.any()
    r = GHMR(momentum=0.5)
    assert float(r(torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(0, 4))) == 0.0
    assert float(r(torch.ones(3, 4), torch.zeros(3, 4), torch.zeros(3, 4))) == 0.0
    assert not r.acc_sum.any()


@needs_ext
@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_fused_propagates_non_finite_logits_like_eager(gen, value):
    x, labels = ghmc_fused_inputs(gen, torch.float64)
    x[3, 2] = value
    w = make_weight('row', x, gen)
    w[3] = 0.0  # even an ignored element's NaN / inf reaches the loss (eager: loss * 0)
    for reduction in ('sum', 'none'):
        eager = GHMC(impl='eager')(x, labels, w, reduction)
        fused = GHMC(impl='fused')(x, labels, w, reduction)
        assert not torch.isfinite(eager).all() and not torch.isfinite(fused).all()
        torch.testing.assert_close(fused, eager, equal_nan=True, **FUSED_TOL[torch.float64])


# --- the Triton kernels (under Triton's CPU interpreter without a GPU) --------------------------------------

CUDA = torch.cuda.is_available()
DEVICE = 'cuda' if CUDA else 'cpu'



def _on_device(*tensors):
    return tuple(None if t is None else t.to(DEVICE) for t in tensors)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('kind, weight_kind, reduction', [('labels', 'row', 'mean'), ('labels', 'full', 'none'),
                                                          ('binary', None, 'sum'), ('soft', 'full', 'mean')])
def test_triton_equals_eager(gen, dtype, kind, weight_kind, reduction, on_triton):
    x, target = ghmc_fused_inputs(gen, dtype, kind=kind)
    w = make_weight(weight_kind, x, gen)
    x, target, w = _on_device(x, target, w)
    eager, fused = GHMC(30, 0.75, impl='eager').to(DEVICE), GHMC(30, 0.75, impl='fused').to(DEVICE)
    for _ in range(2):
        v_e, g_e = value_and_grad(eager, x, target, w, reduction)
        v_f, g_f = value_and_grad(fused, x, target, w, reduction)
        torch.testing.assert_close(v_f, v_e, **FUSED_TOL[dtype])
        torch.testing.assert_close(g_f, g_e, **FUSED_TOL[dtype])
        assert torch.equal(eager.acc_sum, fused.acc_sum)
    assert {'ghmc_histogram', 'ghmc_backward'} <= set(on_triton)
    assert ('ghmc_forward' in on_triton) == (reduction == 'none')


def test_triton_half_precision_and_nan(gen, on_triton):
    x, labels = ghmc_fused_inputs(gen, torch.float16)
    x, labels = _on_device(x, labels)
    v_e, g_e = value_and_grad(GHMC(impl='eager'), x, labels)
    v_f, g_f = value_and_grad(GHMC(impl='fused'), x, labels)
    torch.testing.assert_close(v_f, v_e, **FUSED_TOL[torch.float16])
    torch.testing.assert_close(g_f, g_e, **FUSED_TOL[torch.float16])
    x = x.double()
    x[2, 2] = float('nan')
    assert torch.isnan(GHMC(impl='fused')(x, labels)) and on_triton


@pytest.mark.skipif(not CUDA, reason='needs a CUDA GPU')
def test_cuda_path_never_synchronises(gen):
    """On CUDA neither path reads a value on the host (no sync): tot, n and the histogram stay there."""
    x, labels = ghmc_fused_inputs(gen, torch.float32, n=512, c=80)
    x, labels, w = x.cuda().requires_grad_(), labels.cuda(), make_weight('row', x, gen).cuda()
    for impl in ('eager', 'fused'):
        loss = GHMC(30, 0.75, impl=impl).cuda()
        loss(x, labels, w)  # first call: caches, Triton compilation
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode('error')
        try:
            loss(x, labels, w).backward()
            GHMR(momentum=0.7).cuda()(x[:, :4], x[:, 4:8].detach(), w[:, None].expand(-1, 4))
        finally:
            torch.cuda.set_sync_debug_mode('default')
