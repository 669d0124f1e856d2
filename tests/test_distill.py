"""KnowledgeDistillationKLDivLoss: parity with mmdet's (values and gradients in float64, every
reduction, weights and avg_factor, the teacher's gradient), the relation to KLDivLoss, LD's head
end to end, and numerics."""
import mmdet.models.losses as mm
import pytest
import torch
from mmdet.models.losses.kd_loss import knowledge_distillation_kl_div_loss as mmdet_kd
from mmdet.registry import MODELS as MMDET_MODELS

from helpers import build, value_and_grad, value_and_pred_grad
from mmloss_ext import LossValueError
from mmloss_ext.losses.classification import (KLDivLoss, KnowledgeDistillationKLDivLoss,
                                              knowledge_distillation_kl_div_loss)

F64 = torch.float64
#: (reduction_override, avg_factor): every combination mmdet's loss supports
REDUCTIONS = [('none', None), ('mean', None), ('mean', 4.0), ('sum', None)]


@pytest.fixture
def g():
    return torch.Generator().manual_seed(0)


def logits(g, *shape, scale=3.0):
    return torch.randn(*shape, generator=g, dtype=F64) * scale


@pytest.mark.parametrize('T', [1, 2.5, 10])
@pytest.mark.parametrize('weighted', [False, True])
def test_parity_with_mmdet_values_and_student_gradients(T, weighted, g):
    pred, soft = logits(g, 12, 17), logits(g, 12, 17)
    weight = torch.rand(12, generator=g, dtype=F64) if weighted else None
    ours = KnowledgeDistillationKLDivLoss(T=T, loss_weight=0.25)
    ref = mm.KnowledgeDistillationKLDivLoss(T=T, loss_weight=0.25)
    for reduction, avg in REDUCTIONS:
        kw = dict(weight=weight, avg_factor=avg, reduction_override=reduction)
        value, grad = value_and_pred_grad(ours, pred, soft, **kw)
        ref_value, ref_grad = value_and_pred_grad(ref, pred, soft, **kw)
        torch.testing.assert_close(value, ref_value, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)
        assert value.dtype == F64


@pytest.mark.parametrize('detach_target', [True, False])
def test_teacher_gradient_matches_mmdet_functional(detach_target, g):
    """The teacher gets no gradient by default (as mmdet); with ``detach_target=False`` it gets
    mmdet's functional's gradient."""
    pred, soft = logits(g, 6, 5), logits(g, 6, 5)

    def ours(p, t):
        return knowledge_distillation_kl_div_loss(p, t, T=3.0, detach_target=detach_target, reduction='sum')

    def ref(p, t):
        return mmdet_kd(p, t, T=3.0, detach_target=detach_target, reduction='sum')

    value, (gp, gt) = value_and_grad(ours, pred, soft)
    ref_value, (rgp, rgt) = value_and_grad(ref, pred, soft)
    torch.testing.assert_close(value, ref_value, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gp, rgp, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gt, rgt, rtol=1e-10, atol=1e-12)
    assert (float(gt.abs().sum()) == 0.0) == detach_target
    # and per call through the module
    p, t = pred.clone().requires_grad_(), soft.clone().requires_grad_()
    KnowledgeDistillationKLDivLoss(T=3.0)(p, t, detach_target=detach_target).backward()
    assert (t.grad is None) == detach_target


def test_is_kl_div_loss_divided_by_the_number_of_classes(g):
    """The documented relation: the same math as KLDivLoss (sum over classes), averaged instead."""
    pred, soft = logits(g, 9, 7), logits(g, 9, 7)
    weight = torch.rand(9, generator=g, dtype=F64)
    kd = KnowledgeDistillationKLDivLoss(T=4.0, reduction='none')(pred, soft, weight=weight)
    kl = KLDivLoss(temperature=4.0, reduction='none')(pred, soft, weight=weight)
    torch.testing.assert_close(kd, kl / 7, rtol=1e-12, atol=1e-14)
    assert float(kd.min()) > 0


def test_hand_value_and_self_distillation_is_zero():
    # p = softmax([0, 0]) = (1/2, 1/2), q = softmax([1, 0]) = (e, 1)/(e + 1): KL / 2 classes
    q = torch.tensor([1.0, 0.0], dtype=F64).softmax(0)
    expected = float((q * (q.log() - torch.tensor(0.5, dtype=F64).log())).sum() / 2)
    out = knowledge_distillation_kl_div_loss(torch.zeros(1, 2, dtype=F64), torch.tensor([[1.0, 0.0]], dtype=F64),
                                             T=1.0, reduction='sum')
    assert abs(float(out) - expected) < 1e-12
    x = torch.randn(5, 3, dtype=F64)
    assert float(knowledge_distillation_kl_div_loss(x, x.clone(), reduction='sum')) == pytest.approx(0.0, abs=1e-12)


def test_builds_like_mmdet_from_the_ld_config_and_positionally(g):
    cfg = dict(loss_weight=0.25, T=10)  # configs/ld: loss_ld
    ours = build('KnowledgeDistillationKLDivLoss', **cfg)
    ref = MMDET_MODELS.build(dict(type='KnowledgeDistillationKLDivLoss', **cfg))
    assert (ours.reduction, ours.loss_weight, ours.T) == (ref.reduction, ref.loss_weight, ref.T)
    pred, soft = logits(g, 8, 17), logits(g, 8, 17)
    torch.testing.assert_close(ours(pred, soft), ref(pred, soft), rtol=1e-10, atol=1e-12)
    # mmdet's constructor order: (reduction, loss_weight, T)
    positional = KnowledgeDistillationKLDivLoss('sum', 2.0, 3)
    torch.testing.assert_close(positional(pred, soft), mm.KnowledgeDistillationKLDivLoss('sum', 2.0, 3)(pred, soft),
                               rtol=1e-10, atol=1e-12)
    # mmdet's forward keywords
    torch.testing.assert_close(ours(pred=pred, soft_label=soft, avg_factor=2.0, reduction_override='mean'),
                               ref(pred=pred, soft_label=soft, avg_factor=2.0, reduction_override='mean'))


def test_temperature_bounds():
    """mmdet asserts T >= 1; a temperature in (0, 1) sharpens and is valid here. T <= 0 is refused."""
    assert KnowledgeDistillationKLDivLoss(T=0.5).T == 0.5
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match=r'KnowledgeDistillationKLDivLoss: `T` expected a value in \(0.0, inf\)'):
            KnowledgeDistillationKLDivLoss(T=bad)
    with pytest.raises(TypeError, match="KnowledgeDistillationKLDivLoss: `T` expected a number, got str '10'"):
        KnowledgeDistillationKLDivLoss(T='10')


def test_bad_inputs_name_the_loss_and_the_argument():
    pred = torch.randn(4, 5)
    with pytest.raises(ValueError, match='KnowledgeDistillationKLDivLoss: `pred` and `soft_label` expected the same '
                                         r'shape, got \(4, 5\) and \(4, 6\)'):
        KnowledgeDistillationKLDivLoss()(pred, torch.randn(4, 6))
    with pytest.raises(TypeError, match='KnowledgeDistillationKLDivLoss: `soft_label` expected a floating-point'):
        KnowledgeDistillationKLDivLoss()(pred, torch.zeros(4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r'KnowledgeDistillationKLDivLoss: `pred` expected at least 2 dims'):
        KnowledgeDistillationKLDivLoss()(torch.randn(5), torch.randn(5))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype, g):
    pred, soft = logits(g, 64, 17).float(), logits(g, 64, 17).float()
    ref = KnowledgeDistillationKLDivLoss()(pred, soft)
    p = pred.to(dtype).requires_grad_()
    out = KnowledgeDistillationKLDivLoss()(p, soft.to(dtype))
    out.backward()
    assert out.dtype == dtype and torch.isfinite(out) and torch.isfinite(p.grad).all()
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    # extreme teacher/student disagreement stays finite in half precision too
    big = torch.full((4, 17), -3e4, dtype=dtype)
    big[:, 0] = 3e4
    out = KnowledgeDistillationKLDivLoss(T=1.0)(big, big.flip(1))
    assert torch.isfinite(out.float()), out


def test_empty_batch_is_a_connected_zero():
    pred = torch.zeros(0, 17, requires_grad=True)
    out = KnowledgeDistillationKLDivLoss()(pred, torch.zeros(0, 17), avg_factor=4.0)
    out.backward()
    assert float(out) == 0.0 and pred.grad.shape == (0, 17)


def _ld_head(loss_ld):
    torch.manual_seed(0)
    return MMDET_MODELS.build(dict(
        type='LDHead', num_classes=3, in_channels=8, feat_channels=32, stacked_convs=1, reg_max=8,
        anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=8, scales_per_octave=1,
                              strides=[8]),
        loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
        loss_dfl=dict(type='DistributionFocalLoss', loss_weight=0.25),
        loss_ld=loss_ld, loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        train_cfg=dict(assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1, pos_weight=-1, debug=False)))


def test_ld_head_distils_exactly_like_with_mmdets_loss():
    """LDHead's loss with ``loss_ld`` swapped for ours gives mmdet's numbers (and gradients)."""
    from mmengine.structures import InstanceData
    gen = torch.Generator().manual_seed(1)
    feats = [torch.randn(2, 8, 8, 8, generator=gen)]
    teacher = [torch.randn(2, 4 * 9, 8, 8, generator=gen) * 3.0]  # the teacher's box distributions
    gts = [InstanceData(bboxes=torch.tensor([[8.0, 8.0, 40.0, 36.0], [30.0, 2.0, 60.0, 30.0]]),
                        labels=torch.tensor([0, 2])),
           InstanceData(bboxes=torch.tensor([[4.0, 20.0, 50.0, 60.0]]), labels=torch.tensor([1]))]
    metas = [dict(img_shape=(64, 64), pad_shape=(64, 64), scale_factor=(1.0, 1.0))] * 2
    results = {}
    for loss_type in ('KnowledgeDistillationKLDivLoss', 'mmloss_ext.KnowledgeDistillationKLDivLoss'):
        head = _ld_head(dict(type=loss_type, loss_weight=0.25, T=10))
        cls_scores, bbox_preds = head(feats)
        losses = head.loss_by_feat(cls_scores, bbox_preds, gts, metas, teacher)
        loss_ld = sum(losses['loss_ld'])
        grad, = torch.autograd.grad(loss_ld, bbox_preds[0])
        results[loss_type] = (loss_ld.detach(), grad, type(head.loss_ld).__module__)
    (ref, ref_grad, ref_module), (ours, grad, module) = results.values()
    assert ref_module.startswith('mmdet.') and module.startswith('mmloss_ext.')
    assert float(ref) > 0
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(grad, ref_grad)
