"""Property-based tests (hypothesis) over every registered loss.

Random batch sizes, weights, reductions and avg_factor for each name in the registry (inputs from
``tests/loss_cases``), plus the invariances of the box-IoU family. Example counts are CI-sized and
derandomized, so a failure reproduces.
"""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import BOX_NAMES, NAMES, build_case as build
from loss_cases import CASES
EPS32 = torch.finfo(torch.float32).eps

CI = settings(max_examples=10, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def draw_inputs(name, seed, n):
    gen = torch.Generator().manual_seed(seed)
    args = CASES[name].make(n, torch.float64, gen)
    weight = CASES[name].make_weight(args, gen)
    weight = weight * (torch.rand(weight.shape, generator=gen, dtype=weight.dtype) > 0.3)  # some zeros
    return args, weight


@pytest.mark.parametrize('name', NAMES)
@CI
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 9), avg=st.one_of(st.none(), st.floats(0.5, 50.0)))
def test_reductions_weights_and_avg_factor(name, seed, n, avg):
    c = CASES[name]
    args, w = draw_inputs(name, seed, n)
    none = build(name, reduction='none')(*args, weight=w)
    mean = build(name, reduction='mean')(*args, weight=w, avg_factor=avg)
    total = build(name, reduction='sum')(*args, weight=w)
    for out in (none, mean, total):
        assert torch.isfinite(out).all()
    if not c.signed:
        assert (none >= -1e-7).all() and total >= -1e-7
    if c.additive:
        torch.testing.assert_close(total, none.sum())
        expected_mean = none.sum() / (avg + EPS32) if avg is not None else none.mean()
        torch.testing.assert_close(mean, expected_mean)
    zero = build(name, reduction='sum')(*args, weight=torch.zeros_like(w))
    assert float(zero) == 0.0


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('name', NAMES)
def test_half_precision_close_to_float32_with_finite_gradients(name, dtype):
    c = CASES[name]
    gen = torch.Generator().manual_seed(0)
    args = c.make(16, torch.float32, gen)
    loss = build(name, reduction='mean')
    loss.eval()  # stateful losses: do not move running statistics between the two calls
    ref = loss(*args)
    half_args = tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
    pred = half_args[0].detach().requires_grad_(c.differentiable)
    out = loss(pred, *half_args[1:])
    assert out.dtype == dtype and torch.isfinite(out)
    torch.testing.assert_close(out.float(), ref, rtol=5e-2, atol=5e-2)
    if c.differentiable:
        out.backward()
        assert pred.grad.dtype == dtype and torch.isfinite(pred.grad).all()


def _sum(name, pred, target, **kw):
    return build(name, reduction='sum', **kw)(pred, target)


def _box_kw(name):
    # an image-size normaliser (MPDIoU img_shape) is tied to the original frame: drop it here
    return {'img_shape': None} if 'img_shape' in CASES[name].cfg else {}


@pytest.mark.parametrize('name', BOX_NAMES)
@CI
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 9), shift=st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)),
       scale=st.floats(0.05, 20.0))
def test_box_losses_are_invariant_to_translation_scale_and_axis_swap(name, seed, n, shift, scale):
    (pred, target), _ = draw_inputs(name, seed, n)
    kw = _box_kw(name)
    ref = _sum(name, pred, target, **kw)
    offset = torch.tensor([shift[0], shift[1], shift[0], shift[1]], dtype=pred.dtype)
    torch.testing.assert_close(_sum(name, pred + offset, target + offset, **kw), ref, rtol=1e-6, atol=1e-8)
    if CASES[name].scale_invariant:
        torch.testing.assert_close(_sum(name, pred * scale, target * scale, **kw), ref, rtol=1e-5, atol=1e-8)
    swap = [1, 0, 3, 2]  # (x1, y1, x2, y2) -> (y1, x1, y2, x2)
    torch.testing.assert_close(_sum(name, pred[:, swap], target[:, swap], **kw), ref, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize('name', BOX_NAMES)
@CI
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 9))
def test_identical_boxes_give_the_minimum(name, seed, n):
    (pred, target), _ = draw_inputs(name, seed, n)
    kw = _box_kw(name)
    same = build(name, reduction='none', **kw)(target, target)
    other = build(name, reduction='none', **kw)(pred, target)
    assert (same.abs() < 1e-3).all(), same
    assert (same <= other + 1e-9).all()
