"""A Triton kernel that fails (compile, launch, an unsupported dtype) degrades to the eager path:
one warning naming the loss and the kernel, the call answered eagerly, and the loss eager on that
device for the rest of the process. The failure is injected: the kernels of the CPU tensors are
replaced by a module whose forward or backward raises, as a Triton module would on a GPU."""
import types
import warnings

import pytest
import torch

from mmloss_ext import FocalLoss, GIoULoss
from mmloss_ext.core import impl
from mmloss_ext.kernels import backends
from mmloss_ext.kernels.common import ran_fused


def _failing_kernels(monkeypatch, broken):
    """Route the fused calls to a stand-in Triton module whose ``broken`` function raises."""
    real = backends.cpu_kernels()

    def kernel(fn_name):
        if fn_name == broken:
            def fail(*args, **kwargs):
                raise RuntimeError('triton.CompilationError: at 12:4: unsupported dtype bf16')
            return fail
        return getattr(real, fn_name)

    fake = types.SimpleNamespace(**{n: kernel(n) for n in ('elementwise_forward', 'elementwise_backward',
                                                           'box_forward', 'box_backward')})
    monkeypatch.setitem(backends.DEVICE_BACKENDS, 'cpu', 'triton')  # the CPU plays a device of Triton kernels
    monkeypatch.setattr(backends, 'triton_available', lambda: True)
    monkeypatch.setattr(backends, 'kernels', lambda op, device: fake)
    monkeypatch.setattr(impl, '_DISABLED', {})


def _inputs(gen=None):
    gen = gen or torch.Generator().manual_seed(0)
    return torch.randn(64, 5, generator=gen, requires_grad=True), torch.randint(0, 6, (64,), generator=gen)


pytestmark = pytest.mark.skipif(backends.cpu_kernels() is None, reason='the stand-in wraps the C++ kernels')


@pytest.mark.parametrize('broken', ['elementwise_forward', 'elementwise_backward'])
def test_a_failing_kernel_warns_once_answers_eagerly_and_stays_eager(monkeypatch, broken):
    _failing_kernels(monkeypatch, broken)
    x, labels = _inputs()
    expected = FocalLoss(impl='eager')(x, labels)
    loss = FocalLoss(impl='fused')
    with pytest.warns(RuntimeWarning, match=r"FocalLoss: the fused kernel 'elementwise': RuntimeError: "
                                            r'triton.CompilationError.* FocalLoss runs eagerly on cpu from now on'):
        out = loss(x, labels)
    assert not ran_fused(out)
    torch.testing.assert_close(out, expected)
    out.backward()  # the eager graph: a backward kernel that would fail is never reached
    assert torch.isfinite(x.grad).all()
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # once: the next calls neither warn nor try the kernel
        again = loss(x.detach(), labels)
    assert not ran_fused(again) and impl.disabled('FocalLoss', 'cpu')
    # another loss, whose kernel works, keeps its fused path
    boxes = torch.rand(8, 4) * 10
    boxes[:, 2:] += boxes[:, :2]
    assert ran_fused(GIoULoss(impl='fused')(boxes.requires_grad_(), boxes.detach() + 1))


def test_loss_value_errors_are_not_taken_for_kernel_failures(monkeypatch):
    _failing_kernels(monkeypatch, 'box_forward')
    x, labels = _inputs()
    with pytest.raises(ValueError, match=r'FocalLoss: `target` expected values in \[0, 5\]'):
        FocalLoss(impl='fused')(x, torch.full_like(labels, 9))
    assert not impl.disabled('FocalLoss', 'cpu')


def test_the_fallback_finds_the_device_of_keyword_tensors(monkeypatch):
    """A functional called with its tensors as keywords: the loss is turned off on their device."""
    from mmloss_ext.losses import focal_loss
    _failing_kernels(monkeypatch, 'elementwise_forward')
    x, labels = _inputs()
    with pytest.warns(RuntimeWarning, match='runs eagerly on cpu'):
        out = focal_loss(pred=x, target=labels, impl='fused')
    assert not ran_fused(out) and impl.disabled('FocalLoss', 'cpu')
