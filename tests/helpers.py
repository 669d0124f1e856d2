"""Shared test utilities: value-and-gradient parity against a reference implementation."""
import torch


def value_and_grad(fn, *tensors):
    """``fn(*tensors)`` and the gradients of its sum w.r.t. every floating-point input."""
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in tensors]
    out = fn(*leaves)
    diff = [t for t in leaves if t.requires_grad]
    grads = torch.autograd.grad(out.sum(), diff, allow_unused=True)
    return out.detach(), [torch.zeros_like(t) if g is None else g for t, g in zip(diff, grads)]


def assert_parity(ours, ref, *tensors, atol=1e-5, rtol=1e-5):
    """Values and gradients of ``ours`` and ``ref`` agree on the same inputs."""
    v1, g1 = value_and_grad(ours, *tensors)
    v2, g2 = value_and_grad(ref, *tensors)
    torch.testing.assert_close(v1, v2.to(v1.dtype), atol=atol, rtol=rtol)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b.to(a.dtype), atol=atol, rtol=rtol)


#: fused == eager tolerances (DESIGN: float64 tight, float32 1e-5 relative; half precision looser)
FUSED_TOL = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6),
             torch.float16: dict(rtol=2e-3, atol=1e-3), torch.bfloat16: dict(rtol=2e-2, atol=1e-2)}
