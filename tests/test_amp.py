"""Every loss under mixed precision: ``torch.autocast('cpu', dtype=torch.bfloat16)``, as mmengine's
``AmpOptimWrapper`` runs a model's forward (and its losses) on the CPU.

Inside autocast a loss gets float32 inputs (a head's output cast back, or a loss's own inputs)
or bfloat16 ones (a layer's output): either way it gives a finite value within
:data:`BF16_TOL` of its float32 value outside autocast on the same input values, and a gradient in
the input's dtype. The losses of probabilities (QFL with ``activated=True``, BCE of probabilities,
the Gaussian focal loss) included: mmdet's BCE on probabilities is refused by CUDA's autocast
(``F.binary_cross_entropy``), ours never calls it.
"""
import pytest
import torch

from helpers import NAMES, build_case
from loss_cases import CASES

#: bfloat16 keeps 8 bits of mantissa (a relative step of 2^-8 ~ 0.4%): a loss computed from
#: bfloat16 inputs, or with autocast's bfloat16 matmuls inside, lands within a few of those steps
BF16_TOL = dict(rtol=3e-2, atol=3e-2)

#: the probability-input configurations that autocast must not break
PROBABILITY_CFGS = [('QualityFocalLoss', dict(activated=True)), ('BCELoss', dict(use_logits=False, pos_weight=None))]


def _inputs(name, dtype, seed=0):
    args = CASES[name].make(8, torch.float32, torch.Generator().manual_seed(seed))
    pred = args[0].detach().to(dtype).requires_grad_(CASES[name].differentiable)
    return (pred,) + tuple(args[1:])


def _run(loss, args, autocast):
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
        out = loss(*args)
    if args[0].requires_grad:
        (out.sum() if out.dim() else out).backward()
    return out


@pytest.mark.parametrize('pred_dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('name', NAMES)
def test_bf16_autocast_is_finite_close_to_float32_with_grads_in_the_input_dtype(name, pred_dtype):
    args = _inputs(name, pred_dtype)
    # the reference: float32 on the same values (bfloat16 inputs rounded as the autocast run sees them)
    ref_args = (args[0].detach().float().requires_grad_(args[0].requires_grad),) + args[1:]
    ref = _run(build_case(name), ref_args, autocast=False)
    out = _run(build_case(name), args, autocast=True)
    assert torch.isfinite(out).all(), f'{name}: {out}'
    torch.testing.assert_close(out.float(), ref.float(), **BF16_TOL)
    if args[0].requires_grad:
        grad = args[0].grad
        assert grad is not None and grad.dtype == pred_dtype
        assert torch.isfinite(grad).all()
        torch.testing.assert_close(grad.float(), ref_args[0].grad.float(), **BF16_TOL)


@pytest.mark.parametrize('name, cfg', PROBABILITY_CFGS)
def test_losses_of_probabilities_run_under_autocast(name, cfg):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 5, generator=gen)
    labels = torch.randint(0, 6, (16,), generator=gen)
    score = torch.rand(16, generator=gen)
    target = (labels, score) if name == 'QualityFocalLoss' else torch.rand(16, 5, generator=gen)
    layer = torch.nn.Linear(5, 5)
    ref = build_case(name, **cfg)(layer(logits).sigmoid(), target)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        probs = layer(logits).sigmoid()  # bfloat16: the linear layer ran in bfloat16
        assert probs.dtype == torch.bfloat16
        out = build_case(name, **cfg)(probs, target)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(layer.weight.grad).all()
    torch.testing.assert_close(out.float(), ref, **BF16_TOL)
