"""Segmentation family: parity with mmdet, MONAI and kornia, hand-derived values, identities, numerics."""
import pytest
import torch
from kornia.losses import lovasz_hinge_loss, lovasz_softmax_loss
from mmdet.models import losses as mmdet_losses
from monai.losses import DiceLoss as MonaiDice, TverskyLoss as MonaiTversky

from helpers import assert_parity
from mmloss_ext.losses import segmentation as S

EPS32 = torch.finfo(torch.float32).eps
SETTINGS = [('none', None), ('mean', None), ('sum', None), ('mean', 7.0)]
F64 = torch.float64


def binary_data(gen, n=5, shape=(6, 7), dtype=F64):
    pred = torch.randn(n, *shape, generator=gen, dtype=dtype) * 2
    target = (torch.rand(n, *shape, generator=gen) > 0.6).to(dtype)
    weight = torch.rand(n, generator=gen, dtype=dtype) + 0.1
    return pred, target, weight


def multiclass_data(gen, n=4, c=4, shape=(5, 6), dtype=F64):
    pred = torch.randn(n, c, *shape, generator=gen, dtype=dtype) * 2
    target = torch.randint(0, c, (n, *shape), generator=gen)
    weight = torch.rand(n, c, generator=gen, dtype=dtype) + 0.1
    return pred, target, weight


def reduce_like_mmdet(per_item, weight, reduction, avg):
    """mmdet's weight/avg_factor/reduction rule applied to a reference's per-item losses."""
    loss = per_item * weight
    if reduction == 'none':
        return loss
    if avg is not None:
        return loss.sum() / (avg + EPS32)
    return loss.sum() if reduction == 'sum' else loss.mean()


# --- DiceLoss ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('reduction, avg', SETTINGS)
@pytest.mark.parametrize('naive_dice', [False, True])
@pytest.mark.parametrize('use_sigmoid, activate', [(True, True), (True, False), (False, False)])
def test_dice_parity_with_mmdet(use_sigmoid, activate, naive_dice, reduction, avg, gen):
    pred, target, weight = binary_data(gen)
    if not activate:  # probabilities
        pred = pred.sigmoid()
    kw = dict(use_sigmoid=use_sigmoid, activate=activate, naive_dice=naive_dice, eps=0.05, loss_weight=1.5)
    ours, theirs = S.DiceLoss(**kw), mmdet_losses.DiceLoss(**kw)
    assert_parity(lambda p, t, w: ours(p, t, weight=w, avg_factor=avg, reduction_override=reduction),
                  lambda p, t, w: theirs(p, t, weight=w, avg_factor=avg, reduction_override=reduction),
                  pred, target, weight)
    # mmdet's mask heads pass (N, C, H, W) masks; the whole sample is one set
    pred4, target4 = pred.view(5, 2, 3, 7), target.view(5, 2, 3, 7)
    assert_parity(lambda p, t: ours(p, t, reduction_override=reduction),
                  lambda p, t: theirs(p, t, reduction_override=reduction), pred4, target4)


def test_dice_softmax_activation_is_dice_of_the_softmax(gen):
    # mmdet raises NotImplementedError for use_sigmoid=False, activate=True; here it is the softmax over dim 1
    pred = torch.randn(3, 4, 5, generator=gen, dtype=F64)
    target = torch.nn.functional.one_hot(torch.randint(0, 4, (3, 5), generator=gen), 4).transpose(1, 2).to(F64)
    torch.testing.assert_close(S.dice_loss(pred, target, use_sigmoid=False, reduction='none'),
                               S.dice_loss(pred.softmax(1), target, activate=False, reduction='none'))


@pytest.mark.parametrize('reduction, avg', SETTINGS)
@pytest.mark.parametrize('naive_dice', [False, True])
def test_dice_multiclass_parity_with_monai(naive_dice, reduction, avg, gen):
    pred, target, weight = multiclass_data(gen)
    eps = 0.01
    # our V-Net form 2I / (sum p^2 + eps + sum t^2 + eps) is MONAI's squared_pred with nr = 0, dr = 2 eps;
    # the naive form (2I + eps) / (sum p + sum t + eps) is MONAI's default form with nr = dr = eps.
    # include_background=True (every class counts), batch=False (per sample and class).
    smooth = dict(smooth_nr=eps, smooth_dr=eps) if naive_dice else dict(smooth_nr=0.0, smooth_dr=2 * eps)
    monai = MonaiDice(softmax=True, to_onehot_y=True, include_background=True, squared_pred=not naive_dice,
                      batch=False, reduction='none', **smooth)
    ours = S.DiceLoss(mode='multiclass', naive_dice=naive_dice, eps=eps)
    assert_parity(lambda p, w: ours(p, target, weight=w, avg_factor=avg, reduction_override=reduction),
                  lambda p, w: reduce_like_mmdet(monai(p, target[:, None]).flatten(1), w, reduction, avg),
                  pred, weight)
    # and MONAI's own 'mean' (over samples and classes) without weights
    torch.testing.assert_close(ours(pred, target),
                               MonaiDice(softmax=True, to_onehot_y=True, squared_pred=not naive_dice, **smooth)(
                                   pred, target[:, None]))


@pytest.mark.parametrize('name', ['DiceLoss', 'JaccardLoss', 'TverskyLoss', 'FocalTverskyLoss', 'LovaszLoss'])
def test_ignore_index_equals_dropping_the_pixels(name, gen):
    # ignoring the last column gives the loss of the image without that column, in both modes
    cls = getattr(S, name)
    kw = dict(per_image=True) if name == 'LovaszLoss' else {}
    pred, target, _ = multiclass_data(gen, c=3)
    ignored = target.clone()
    ignored[..., -1] = 255
    loss = cls(mode='multiclass', ignore_index=255, reduction='none', **kw)
    torch.testing.assert_close(loss(pred, ignored), cls(mode='multiclass', reduction='none', **kw)(
        pred[..., :-1], target[..., :-1]))
    pred, target, _ = binary_data(gen)
    ignored = target.clone()
    ignored[..., -1] = 255
    loss = cls(ignore_index=255, reduction='none', **kw)
    torch.testing.assert_close(loss(pred, ignored), cls(reduction='none', **kw)(pred[..., :-1], target[..., :-1]))


# --- JaccardLoss ------------------------------------------------------------------------------------

def test_jaccard_hand_values():
    # binary, probabilities p = [.8, .6, .1, 0], t = [1, 0, 1, 0]:
    # I = .8 + .1 = .9, sum p = 1.5, sum t = 2, U = 1.5 + 2 - .9 = 2.6
    p = torch.tensor([[0.8, 0.6, 0.1, 0.0]], dtype=F64)
    t = torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=F64)
    torch.testing.assert_close(S.jaccard_loss(p, t, from_logits=False, reduction='none'),
                               torch.tensor([1 - 0.9 / 2.6], dtype=F64))
    # smooth = 1: 1 - (0.9 + 1) / (2.6 + 1)
    torch.testing.assert_close(S.jaccard_loss(p, t, from_logits=False, smooth=1.0),
                               torch.tensor(1 - 1.9 / 3.6, dtype=F64))
    # multiclass, probabilities of 3 pixels, labels [0, 1, 1]:
    # class 0: p = [.7, .2, .5], fg = [1, 0, 0]: I = .7, U = 1.4 + 1 - .7 = 1.7
    # class 1: p = [.3, .8, .5], fg = [0, 1, 1]: I = 1.3, U = 1.6 + 2 - 1.3 = 2.3
    probs = torch.tensor([[[0.7, 0.2, 0.5], [0.3, 0.8, 0.5]]], dtype=F64)
    labels = torch.tensor([[0, 1, 1]])
    torch.testing.assert_close(S.jaccard_loss(probs, labels, mode='multiclass', from_logits=False, reduction='none'),
                               torch.tensor([[1 - 0.7 / 1.7, 1 - 1.3 / 2.3]], dtype=F64))
    # both masks empty: 0 / max(0, eps) -> loss 1 with smooth = 0, and 0 with smooth > 0
    empty = torch.zeros(1, 4, dtype=F64)
    assert float(S.jaccard_loss(empty, empty, from_logits=False)) == 1.0
    assert float(S.jaccard_loss(empty, empty, from_logits=False, smooth=1.0)) == 0.0


def test_jaccard_formula_values_and_gradients(gen):
    # the definition written out directly, on random logits with weights and avg_factor
    pred, target, weight = multiclass_data(gen)

    def ref(p, w):
        prob = p.softmax(1).flatten(2)
        onehot = torch.nn.functional.one_hot(target.flatten(1), 4).transpose(1, 2).to(p)
        inter = (prob * onehot).sum(-1)
        union = prob.sum(-1) + onehot.sum(-1) - inter
        return ((1 - (inter + 0.5) / (union + 0.5)) * w).sum() / (3.0 + EPS32)

    assert_parity(lambda p, w: S.jaccard_loss(p, target, mode='multiclass', smooth=0.5, weight=w, avg_factor=3.0),
                  ref, pred, weight)
    # from_logits=False takes probabilities
    pred, target, _ = binary_data(gen)
    torch.testing.assert_close(S.jaccard_loss(pred, target), S.jaccard_loss(pred.sigmoid(), target, from_logits=False))


def test_jaccard_is_dice_over_two_minus_dice_for_hard_masks(gen):
    # J = I / (|P| + |T| - I) and D = 2I / (|P| + |T|)  =>  J = D / (2 - D)
    pred = (torch.rand(6, 30, generator=gen) > 0.5).to(F64)
    target = (torch.rand(6, 30, generator=gen) > 0.5).to(F64)
    d = 1 - S.dice_loss(pred, target, activate=False, naive_dice=True, eps=0.0, reduction='none')
    j = 1 - S.jaccard_loss(pred, target, from_logits=False, eps=0.0, reduction='none')
    torch.testing.assert_close(j, d / (2 - d))


# --- TverskyLoss / FocalTverskyLoss -----------------------------------------------------------------

@pytest.mark.parametrize('reduction, avg', SETTINGS)
@pytest.mark.parametrize('alpha, beta, smooth', [(0.5, 0.5, 1e-5), (0.3, 0.7, 1.0), (0.9, 0.1, 0.0)])
def test_tversky_parity_with_monai(alpha, beta, smooth, reduction, avg, gen):
    # MONAI with smooth_nr = smooth_dr = smooth; sigmoid on (N, 1, H, W) masks for binary mode,
    # softmax + one-hot labels for multiclass; include_background=True, batch=False
    ours = S.TverskyLoss(alpha=alpha, beta=beta, smooth=smooth, loss_weight=2.0)
    common = dict(alpha=alpha, beta=beta, smooth_nr=smooth, smooth_dr=smooth, reduction='none')
    pred, target, weight = binary_data(gen)
    pred, target = pred[:, None], target[:, None]
    monai = MonaiTversky(sigmoid=True, **common)
    assert_parity(lambda p, w: ours(p, target, weight=w, avg_factor=avg, reduction_override=reduction),
                  lambda p, w: 2.0 * reduce_like_mmdet(monai(p, target).flatten(), w, reduction, avg), pred, weight)
    ours = S.TverskyLoss(alpha=alpha, beta=beta, smooth=smooth, mode='multiclass')
    pred, target, weight = multiclass_data(gen)
    monai = MonaiTversky(softmax=True, to_onehot_y=True, **common)
    assert_parity(lambda p, w: ours(p, target, weight=w, avg_factor=avg, reduction_override=reduction),
                  lambda p, w: reduce_like_mmdet(monai(p, target[:, None]), w, reduction, avg), pred, weight)


@pytest.mark.parametrize('mode', ['binary', 'multiclass'])
def test_tversky_half_half_is_naive_dice(mode, gen):
    # TP + (FP + FN) / 2 = (sum p + sum t) / 2, so TI = (2 TP + 2s) / (sum p + sum t + 2s): naive Dice, eps = 2s
    pred, target, _ = binary_data(gen) if mode == 'binary' else multiclass_data(gen)
    for s in (1e-5, 0.3):
        torch.testing.assert_close(S.tversky_loss(pred, target, smooth=s, mode=mode, reduction='none'),
                                   S.dice_loss(pred, target, naive_dice=True, eps=2 * s, mode=mode, reduction='none'))


def test_focal_tversky_gamma_one_is_tversky_and_matches_monai_power(gen):
    pred, target, weight = multiclass_data(gen)
    kw = dict(alpha=0.7, beta=0.3, smooth=0.1, mode='multiclass')
    torch.testing.assert_close(S.focal_tversky_loss(pred, target, gamma=1.0, weight=weight, **kw),
                               S.tversky_loss(pred, target, weight=weight, **kw))
    # (1 - TI)^gamma with 1 - TI from MONAI's Tversky, values and gradients
    monai = MonaiTversky(softmax=True, to_onehot_y=True, alpha=0.7, beta=0.3, smooth_nr=0.1, smooth_dr=0.1,
                         reduction='none')
    assert_parity(lambda p, w: S.focal_tversky_loss(p, target, gamma=0.75, weight=w, avg_factor=5.0, **kw),
                  lambda p, w: (monai(p, target[:, None]) ** 0.75 * w).sum() / (5.0 + EPS32), pred, weight)


def test_focal_tversky_hand_value_and_finite_gradient_at_perfect_prediction():
    # logits +-40 give p = 1 / 0 to float64 precision; target [1, 0, 1, 0], prediction [1, 1, 0, 0]:
    # TP = FP = FN = 1, alpha = .3, beta = .7, smooth = 0: TI = 1 / (1 + .3 + .7) = 1/2, loss = (1/2)^0.75
    logits = torch.tensor([[40.0, 40.0, -40.0, -40.0]], dtype=F64)
    target = torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=F64)
    got = S.focal_tversky_loss(logits, target, alpha=0.3, beta=0.7, smooth=0.0)
    torch.testing.assert_close(got, torch.tensor(0.5 ** 0.75, dtype=F64))
    # a perfect prediction: TI -> 1, where (1 - TI)^0.75 has an infinite slope; the gradient stays finite
    for dtype in (torch.float32, F64):
        for scale in (5.0, 40.0, 1e4):
            p = (torch.tensor([[1.0, -1.0, 1.0, -1.0]], dtype=dtype) * scale).requires_grad_()
            loss = S.focal_tversky_loss(p, torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=dtype), smooth=0.0)
            loss.backward()
            assert torch.isfinite(loss) and float(loss) < 0.05
            assert torch.isfinite(p.grad).all()


# --- LovaszLoss -------------------------------------------------------------------------------------

def berman_lovasz(errors, fg):
    """Berman et al. (2018), Alg. 1 for one class, written out on 1-D tensors."""
    errors_sorted, perm = errors.sort(descending=True)
    fg_sorted = fg[perm]
    total = fg_sorted.sum()
    jaccard = 1 - (total - fg_sorted.cumsum(0)) / (total + (1 - fg_sorted).cumsum(0))
    grad = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return (errors_sorted.relu() * grad).sum()


def berman_softmax(pred, target, classes, ignore_index=None):
    """Lovász-softmax of one group (pred (C, P) logits, target (P,)), ignored pixels dropped."""
    keep = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    prob, target = pred.softmax(0)[:, keep], target[keep]
    losses = []
    for c in range(pred.shape[0]):
        fg = (target == c).to(pred)
        if classes == 'present' and fg.sum() == 0:
            continue
        losses.append(berman_lovasz((fg - prob[c]).abs(), fg))
    return torch.stack(losses).mean() if losses else pred.sum() * 0


@pytest.mark.parametrize('reduction, avg', SETTINGS[1:])
def test_lovasz_hinge_parity_with_kornia(reduction, avg, gen):
    # kornia: per image, mean over the batch (per_image=True, reduction='mean'); it builds the Lovász
    # gradient in float32 from integer counts, hence the 1e-6 tolerance in float64
    pred, target, weight = binary_data(gen)
    pred = pred[:, None]
    target = target.long()
    assert_parity(lambda p: S.lovasz_loss(p, target, per_image=True), lambda p: lovasz_hinge_loss(p, target),
                  pred, atol=1e-6, rtol=1e-6)
    # weights and avg_factor: kornia on one image at a time
    assert_parity(lambda p, w: S.lovasz_loss(p, target, per_image=True, weight=w, reduction=reduction,
                                             avg_factor=avg),
                  lambda p, w: reduce_like_mmdet(torch.stack([lovasz_hinge_loss(p[i:i + 1], target[i:i + 1])
                                                          for i in range(len(p))]), w, reduction, avg),
                  pred, weight, atol=1e-6, rtol=1e-6)


def test_lovasz_softmax_parity_with_kornia_per_class(gen):
    # kornia 0.8.2's lovasz_softmax_loss sorts the integer *labels* in place of each class's 0/1
    # foreground (target_flatten[batch_index, permutations]), so for C > 2 it is not Berman's loss:
    pred, target, _ = multiclass_data(gen, c=3)
    ours = S.lovasz_loss(pred, target, mode='multiclass', per_image=True, classes='all')
    assert not torch.allclose(ours, lovasz_softmax_loss(pred, target), atol=1e-3)
    # ... but on a two-channel problem [log(1 - p_c), log p_c] with labels [t = c] both of its classes
    # reduce to the class-c term |[t = c] - p_c| with foreground [t = c], which it computes exactly.
    # Per class, through kornia, values and gradients (classes='all', per_image=True = kornia's mean):

    def via_kornia(p):
        prob = p.softmax(1)
        terms = [lovasz_softmax_loss(torch.stack([torch.log1p(-prob[:, c]), prob[:, c].log()], 1),
                                     (target == c).long()) for c in range(3)]
        return torch.stack(terms).mean()

    assert_parity(lambda p: S.lovasz_loss(p, target, mode='multiclass', per_image=True, classes='all'),
                  via_kornia, pred, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize('per_image', [True, False])
@pytest.mark.parametrize('classes', ['present', 'all'])
@pytest.mark.parametrize('ignore_index', [None, 255])
def test_lovasz_softmax_matches_berman_loop(per_image, classes, ignore_index, gen):
    pred, target, _ = multiclass_data(gen, c=5, shape=(4, 5))
    target[0, :2] = 255 if ignore_index is not None else 0
    target[1] = target[1].clamp(max=1)  # image 1 has only classes 0 and 1 present
    if ignore_index is not None:
        target[2] = 255  # an image with nothing but ignored pixels: loss 0 ('present') per image
    fn = lambda p: S.lovasz_loss(p, target, mode='multiclass', per_image=per_image, classes=classes,
                                 ignore_index=ignore_index, reduction='none')
    if per_image:
        ref = lambda p: torch.stack([berman_softmax(p[i].flatten(1), target[i].flatten(), classes, ignore_index)
                                     for i in range(len(p))])
    else:
        ref = lambda p: berman_softmax(p.transpose(0, 1).flatten(1), target.flatten(), classes, ignore_index)
    assert_parity(fn, ref, pred)


def test_lovasz_hand_values():
    # hinge: logits [2, -1, .5], t = [1, 0, 0] -> errors 1 - x(2t - 1) = [-1, 0, 1.5];
    # sorted [1.5 (t=0), 0 (t=0), -1 (t=1)]: Jaccard losses along the order 1 - 1/2, 1 - 1/3, 1 - 0/3
    # -> gradient [1/2, 1/6, 1/3]; loss = relu(1.5) * 1/2 = 0.75
    logits = torch.tensor([[2.0, -1.0, 0.5]], dtype=F64)
    assert float(S.lovasz_loss(logits, torch.tensor([[1, 0, 0]]))) == pytest.approx(0.75, abs=1e-12)
    # softmax with probabilities p1 = sigmoid(l1 - l0) of 2 pixels, labels [1, 0]:
    # logits chosen so p1 = [.8, .4]. Class 1: errors |[1, 0] - [.8, .4]| = [.2, .4], sorted [.4 (fg 0), .2 (fg 1)]:
    # Jaccard losses 1 - 1/2, 1 - 0/2 -> gradient [1/2, 1/2] -> .3. Class 0: errors [.2, .4] again
    # (p0 = [.2, .6], fg [0, 1]), sorted [.4 (fg 1), .2 (fg 0)]: Jaccard 1 - 0/1, 1 - 0/2 -> grad [1, 0] -> .4
    lg = torch.log(torch.tensor([0.8, 0.4], dtype=F64) / torch.tensor([0.2, 0.6], dtype=F64))
    pred = torch.stack([torch.zeros(2, dtype=F64), lg])[None]  # (1, 2, 2)
    got = S.lovasz_loss(pred, torch.tensor([[1, 0]]), mode='multiclass', classes='all')
    torch.testing.assert_close(got, torch.tensor((0.3 + 0.4) / 2, dtype=F64))


def test_lovasz_batch_group_shapes_and_weights(gen):
    pred, target, weight = binary_data(gen)
    none = S.lovasz_loss(pred, target, reduction='none')
    assert none.shape == ()  # per_image=False: the batch is one group
    torch.testing.assert_close(S.lovasz_loss(pred, target), none)
    torch.testing.assert_close(S.lovasz_loss(pred, target, reduction='sum'), none)
    # the batch loss is the loss of all pixels side by side in one image
    torch.testing.assert_close(none, S.lovasz_loss(pred.transpose(0, 1).reshape(1, 6, 35),
                                                   target.transpose(0, 1).reshape(1, 6, 35)))
    with pytest.raises(ValueError, match='LovaszLoss.*weight'):
        S.lovasz_loss(pred, target, weight=weight)
    per_image = S.lovasz_loss(pred, target, per_image=True, reduction='none')
    assert per_image.shape == (5,)
    # an image whose pixels are all ignored has no loss (and the others keep theirs)
    ignored = target.clone()
    ignored[1] = 255
    got = S.lovasz_loss(pred, ignored, per_image=True, ignore_index=255, reduction='none')
    assert float(got[1]) == 0.0
    torch.testing.assert_close(got[[0, 2, 3, 4]], per_image[[0, 2, 3, 4]])


# --- shared checks ----------------------------------------------------------------------------------

ALL = [
    ('DiceLoss', {}), ('DiceLoss', {'mode': 'multiclass'}), ('DiceLoss', {'naive_dice': True}),
    ('JaccardLoss', {}), ('JaccardLoss', {'mode': 'multiclass'}),
    ('TverskyLoss', {}), ('TverskyLoss', {'mode': 'multiclass'}),
    ('FocalTverskyLoss', {}), ('FocalTverskyLoss', {'mode': 'multiclass'}),
    ('LovaszLoss', {}), ('LovaszLoss', {'per_image': True}), ('LovaszLoss', {'mode': 'multiclass'}),
    ('LovaszLoss', {'mode': 'multiclass', 'classes': 'all', 'per_image': True}),
]


def make(cfg, gen, n=4, dtype=F64, scale=None):
    """Inputs for a config; with ``scale`` the logits are ``tanh(x) * scale`` (so within +-scale)."""
    if cfg.get('mode') == 'multiclass':
        pred, target, _ = multiclass_data(gen, n=n, c=3, shape=(4, 5))
    else:
        pred, target, _ = binary_data(gen, n=n, shape=(4, 5))
    if scale is not None:
        pred = torch.tanh(pred) * scale
    return pred.to(dtype), target.to(dtype) if target.is_floating_point() else target


@pytest.mark.parametrize('name, cfg', ALL)
def test_every_mode_gradcheck_and_empty_batch(name, cfg, gen):
    loss = getattr(S, name)(**cfg)
    pred, target = make(cfg, gen, n=3)
    pred.requires_grad_()
    assert torch.autograd.gradcheck(lambda p: loss(p, target), (pred,), eps=1e-6, atol=1e-5, rtol=1e-4)
    for reduction in ('none', 'mean', 'sum'):
        pred, target = make(cfg, gen, n=0)
        pred.requires_grad_()
        out = loss.loss_fn(pred, target, reduction=reduction, **loss.hparams())
        expected = () if reduction != 'none' or (name == 'LovaszLoss' and not cfg.get('per_image')) else (
            (0, 3) if cfg.get('mode') == 'multiclass' and name != 'LovaszLoss' else (0,))
        assert out.shape == expected
        out.sum().backward()
        assert float(out.sum()) == 0.0 and pred.grad.shape == pred.shape


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('name, cfg', ALL)
def test_half_precision_and_extreme_logits(name, cfg, dtype, gen):
    loss = getattr(S, name)(**cfg)
    for scale in (1.0, 1e4):
        pred, target = make(cfg, gen, dtype=dtype, scale=scale)
        pred.requires_grad_()
        out = loss(pred, target)
        assert out.dtype == dtype and torch.isfinite(out)
        out.backward()
        assert pred.grad.dtype == dtype and torch.isfinite(pred.grad).all()
        # the value is the float32 computation, rounded
        ref = loss(pred.detach().float(), target.float() if target.is_floating_point() else target)
        torch.testing.assert_close(out.float(), ref, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize('name', ['DiceLoss', 'JaccardLoss', 'TverskyLoss', 'FocalTverskyLoss', 'LovaszLoss'])
def test_bad_inputs_name_the_loss(name, gen):
    cls = getattr(S, name)
    pred, target, _ = binary_data(gen)
    with pytest.raises(ValueError, match=f'{name}.*same shape'):
        cls()(pred, target[:, :-1])
    with pytest.raises(ValueError, match=f'{name}.*at least 2 dims'):
        cls()(pred[:, 0, 0], target[:, 0, 0])
    with pytest.raises(TypeError, match=f'{name}.*pred'):
        cls()(pred.long(), target)
    pred, target, _ = multiclass_data(gen, c=3)
    mc = cls(mode='multiclass')
    with pytest.raises(ValueError, match=rf'{name}.*target.*\(4, 5, 6\)'):
        mc(pred, target[..., :-1])
    with pytest.raises(TypeError, match=f'{name}.*integer'):
        mc(pred, target.to(F64))
    with pytest.raises(ValueError, match=rf'{name}.*\[0, 2\]'):
        mc(pred, target + 1)
    with pytest.raises(ValueError, match=rf'{name}.*\[0, 2\].*ignore_index=255'):
        cls(mode='multiclass', ignore_index=255)(pred, target.masked_fill(target == 0, 254))
    with pytest.raises(ValueError, match=f"{name}.*mode.*'binary', 'multiclass'"):
        cls(mode='multilabel')
    with pytest.raises(TypeError, match=f'{name}.*ignore_index'):
        cls(ignore_index=255.0)
    with pytest.raises(ValueError, match=f'{name}.*weight'):
        cls(mode='multiclass')(pred, target, weight=torch.ones(5, dtype=F64))


def test_bad_hyper_parameters_name_the_loss(gen):
    pred, target, _ = binary_data(gen)
    with pytest.raises(ValueError, match='DiceLoss.*eps'):
        S.dice_loss(pred, target, eps=-1.0)
    with pytest.raises(ValueError, match='TverskyLoss.*alpha'):
        S.tversky_loss(pred, target, alpha=-0.1)
    with pytest.raises(ValueError, match='FocalTverskyLoss.*gamma'):
        S.focal_tversky_loss(pred, target, gamma=0.0)
    with pytest.raises(ValueError, match='LovaszLoss.*classes'):
        S.LovaszLoss(classes='some')
    with pytest.raises(TypeError, match='JaccardLoss.*from_logits'):
        S.JaccardLoss(from_logits='yes')
