"""The first fused call of a loss configuration on a device whose kernels the test suite never ran
is checked against the eager spec on a small fixed input (values and gradients): a kernel that
disagrees costs one warning naming the loss, the device, the dtype and the difference; the call is
answered eagerly and the loss stays eager there, as after a kernel that fails to compile.

Here the CPU plays the new device (its C++ kernels are otherwise trusted: the rest of the suite
holds them to the eager spec), and a wrong kernel is injected by wrapping a C++ kernel function."""
import functools
import types
import warnings

import pytest
import torch

from environment import TRITON_INTERPRETER
from helpers import build_case
from loss_cases import CASES
from mmloss_ext import FocalLoss, GIoULoss, SIoULoss, giou_loss, siou_loss
from mmloss_ext.core import impl, selfcheck
from mmloss_ext.core.abi import BoxKind
from mmloss_ext.kernels import backends
from mmloss_ext.kernels.common import ran_fused
from mmloss_ext.losses import probes
from mmloss_ext.registry import LOSSES

pytestmark = pytest.mark.skipif(backends.cpu_kernels() is None, reason='the CPU plays the new device: its C++ kernels')

#: every loss with a fused path (each declares its probe)
FUSED = sorted(n for n, cls in LOSSES.items() if cls.spec().probe is not None)


@pytest.fixture
def new_device(monkeypatch):
    """The CPU as a device whose kernels are unchecked, in a fresh process's state; returns the
    verdicts of the self-checks that run, as ``(loss, verdict)`` (None: agreed)."""
    monkeypatch.setattr(impl, 'TRUSTED_DEVICES', frozenset())
    monkeypatch.setattr(impl, '_CHECKED', set())
    monkeypatch.setattr(impl, '_DISABLED', {})
    monkeypatch.setenv(impl.ENV_SELF_CHECK, '1')
    verdicts = []
    compare = selfcheck.compare

    def spy(call, *args):
        verdict = compare(call, *args)
        verdicts.append((call.__name__, verdict))
        return verdict

    monkeypatch.setattr(selfcheck, 'compare', spy)
    return verdicts


def _route(monkeypatch, kernels):
    """The CPU as a device of Triton kernels, whose kernels are ``kernels`` (a stand-in module)."""
    monkeypatch.setitem(backends.DEVICE_BACKENDS, 'cpu', 'triton')
    monkeypatch.setattr(backends, 'triton_available', lambda: True)
    monkeypatch.setattr(backends, 'kernels', lambda op, device: kernels)


def _kernels(monkeypatch, **wrappers):
    """Route the fused calls to a stand-in module: the C++ kernels, but ``name`` through
    ``wrappers[name](real_function, *args)``; returns the names of the kernel calls, in order."""
    real = backends.cpu_kernels()
    calls = []

    def kernel(name):
        def run(*args):
            calls.append(name)
            if name in wrappers:
                return wrappers[name](getattr(real, name), *args)
            return getattr(real, name)(*args)
        return run

    names = ('elementwise_forward', 'elementwise_backward', 'box_forward', 'box_backward')
    _route(monkeypatch, types.SimpleNamespace(**{n: kernel(n) for n in names}))
    return calls


def _siou_off_by_a_hundredth(real, kind, *args):
    out = real(kind, *args)
    return out + 1e-2 if kind == BoxKind.SIOU else out


def _boxes(n=64, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 10
    p = torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=gen, dtype=torch.float64) * 5], 1)
    t = p + torch.randn(n, 4, generator=gen, dtype=torch.float64) * 0.5
    return p.to(dtype).requires_grad_(), t.to(dtype)


def test_a_wrong_kernel_warns_once_answers_eagerly_and_stays_eager(new_device, monkeypatch):
    calls = _kernels(monkeypatch, box_forward=_siou_off_by_a_hundredth)
    pred, target = _boxes()
    expected = SIoULoss(impl='eager')(pred, target)
    loss = SIoULoss(impl='fused')
    with pytest.warns(RuntimeWarning) as record:
        out = loss(pred, target)
    assert len(record) == 1
    assert str(record[0].message) == (
        "SIoULoss: the fused kernel disagrees with the eager formula in torch.float32 (the values of "
        "reduction='none' differ by up to 0.01 (rtol=1e-05, atol=1e-06)) on cpu; SIoULoss runs eagerly on cpu "
        "from now on.")
    assert not ran_fused(out) and torch.equal(out, expected)  # the eager answer, already for this call
    out.backward()
    assert torch.isfinite(pred.grad).all()
    assert impl.disabled('SIoULoss', 'cpu') and [n for n, _ in new_device] == ['siou_loss']
    seen = len(calls)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # once: later calls neither warn, nor check again, nor run the kernel
        again = loss(pred.detach(), target)
    assert not ran_fused(again) and len(calls) == seen and len(new_device) == 1


def test_each_kind_is_checked_a_right_one_keeps_its_kernel(new_device, monkeypatch):
    # the same box kernels, a wrong SIoU kind: GIoU's configuration passes its own check
    _kernels(monkeypatch, box_forward=_siou_off_by_a_hundredth)
    pred, target = _boxes()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        out = GIoULoss(impl='fused')(pred, target)
    assert ran_fused(out) and new_device == [('giou_loss', None)]
    with pytest.warns(RuntimeWarning, match='SIoULoss: the fused kernel disagrees'):
        SIoULoss(impl='fused')(pred, target)
    assert not impl.disabled('GIoULoss', 'cpu') and ran_fused(GIoULoss(impl='fused')(pred, target))


def test_a_wrong_gradient_is_caught(new_device, monkeypatch):
    _kernels(monkeypatch, box_backward=lambda real, *args: real(*args) * 1.01)
    pred, target = _boxes(dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match=r"GIoULoss: the fused kernel disagrees with the eager formula in "
                                            r"torch\.float64 \(the gradients of reduction='none' differ by up to "):
        out = GIoULoss(impl='fused')(pred, target)
    assert not ran_fused(out)


def test_the_check_follows_the_target_form(new_device, monkeypatch):
    # a kernel wrong only with integer labels: dense targets pass, the labels configuration is caught
    def wrong_with_labels(real, kind, hp, x, target, labels, *rest):
        out = real(kind, hp, x, target, labels, *rest)
        return out if labels is None else out + 1e-2

    _kernels(monkeypatch, elementwise_forward=wrong_with_labels)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(32, 5, generator=gen, requires_grad=True)
    labels = torch.randint(0, 6, (32,), generator=gen)
    dense = torch.nn.functional.one_hot(labels, 6)[:, :5].float()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert ran_fused(FocalLoss(impl='fused')(x, dense))
    with pytest.warns(RuntimeWarning, match=r"FocalLoss: the fused kernel disagrees.*torch\.float32.*values"):
        out = FocalLoss(impl='fused')(x, labels)
    torch.testing.assert_close(out, FocalLoss(impl='eager')(x, labels), rtol=0, atol=0)


def test_checked_once_per_configuration_device_and_dtype(new_device):
    pred, target = _boxes()
    for _ in range(3):
        giou_loss(pred, target, impl='fused')
    assert new_device == [('giou_loss', None)]
    giou_loss(pred, target, impl='fused', eps=1e-7)  # another configuration
    giou_loss(pred.double(), target.double(), impl='fused')  # another dtype
    giou_loss(pred, target, impl='fused', reduction='sum', weight=torch.ones(64))  # plumbing: the same one
    assert new_device == [('giou_loss', None)] * 3
    giou_loss(pred, target, impl='eager')  # no kernel: nothing to check
    giou_loss(pred, target, eps=1e-5)  # 'auto' below its size threshold: no kernel either
    assert len(new_device) == 3
    giou_loss(pred.repeat(64, 1), target.repeat(64, 1), eps=1e-5)  # 'auto' from it on (4096 boxes)
    assert len(new_device) == 4


def test_the_environment_variable_turns_it_off(new_device, monkeypatch):
    monkeypatch.setenv(impl.ENV_SELF_CHECK, '0')
    _kernels(monkeypatch, box_forward=_siou_off_by_a_hundredth)
    pred, target = _boxes()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        out = SIoULoss(impl='fused', reduction='none')(pred, target)
    assert ran_fused(out) and not new_device  # the (wrong) kernel, unchecked
    torch.testing.assert_close(out, SIoULoss(impl='eager', reduction='none')(pred, target) + 1e-2)


def test_trusted_devices_are_not_checked(monkeypatch):
    # the CPU's C++ kernels: the test suite verifies them (the default)
    assert 'cpu' in impl.TRUSTED_DEVICES
    monkeypatch.setenv(impl.ENV_SELF_CHECK, '1')
    monkeypatch.setattr(selfcheck, 'compare', lambda *a: pytest.fail('checked a trusted device'))
    pred, target = _boxes()
    assert ran_fused(giou_loss(pred, target, impl='fused'))


def test_a_kernel_that_fails_in_the_check_takes_the_failure_path(new_device, monkeypatch):
    def fail(real, *args):
        raise RuntimeError('triton.CompilationError: at 3:4: unsupported')

    _kernels(monkeypatch, box_backward=fail)
    pred, target = _boxes()
    with pytest.warns(RuntimeWarning, match=r"GIoULoss: the fused kernel 'boxes.*': RuntimeError: triton\."
                                            r"CompilationError.* GIoULoss runs eagerly on cpu from now on"):
        out = GIoULoss(impl='fused')(pred, target)
    assert not ran_fused(out) and impl.disabled('GIoULoss', 'cpu')


def test_a_backward_that_fails_after_the_forwards_probe_still_takes_the_failure_path(new_device, monkeypatch):
    """The forward runs the backward once per configuration; a backward that fails only later
    (here, in the self-check's gradient) is a kernel failure all the same, not a failed check."""
    def fail_after_the_probe(real, *args):
        if fail_after_the_probe.calls:
            raise RuntimeError('triton.CompilationError: at 3:4: unsupported')
        fail_after_the_probe.calls += 1
        return real(*args)

    fail_after_the_probe.calls = 0
    _kernels(monkeypatch, box_backward=fail_after_the_probe)
    pred, target = _boxes()
    with pytest.warns(RuntimeWarning, match=r"GIoULoss: the fused kernel 'boxes.*': RuntimeError: triton\."
                                            r"CompilationError.* GIoULoss runs eagerly on cpu from now on"):
        out = GIoULoss(impl='fused')(pred, target)
    assert fail_after_the_probe.calls == 1  # the probe passed: the failure came from the later backward
    assert not ran_fused(out) and impl.disabled('GIoULoss', 'cpu')


def test_the_backwards_probe_is_per_kernels_module_even_when_an_old_modules_id_is_reused(monkeypatch):
    """The probe's record keeps each kernels module it saw, so a new module never reads as one
    already probed (a freed object's id is handed to the next one: here each stand-in is freed as
    soon as the next replaces it)."""
    real = backends.cpu_kernels()
    current = []
    _route(monkeypatch, None)
    monkeypatch.setattr(backends, 'kernels', lambda op, device: current[-1])
    names = ('box_forward', 'box_backward')
    for _ in range(20):
        calls = []
        current[:] = [types.SimpleNamespace(**{n: functools.partial(_recorded, calls, n, getattr(real, n))
                                                for n in names})]
        pred, target = _boxes()
        giou_loss(pred, target, impl='fused')
        assert calls == ['box_forward', 'box_backward']  # each new module's first call probes its backward


def _recorded(calls, name, kernel, *args):
    calls.append(name)
    return kernel(*args)


@pytest.mark.parametrize('loss, wrong', [(siou_loss, True), (giou_loss, False)])
def test_a_compiled_first_call_never_returns_an_unchecked_kernel(new_device, monkeypatch, loss, wrong):
    """Inside a traced graph the check does not run: an unchecked configuration takes the eager
    formula there (or, where the compiler runs the loss outside its graph, the check runs first)."""
    _kernels(monkeypatch, box_forward=_siou_off_by_a_hundredth)
    pred, target = _boxes()
    torch._dynamo.reset()
    compiled = torch.compile(lambda p, t: loss(p, t, impl='fused', reduction='none'), backend='eager')
    try:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter('always')
            out = compiled(pred, target)
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(out, loss(pred, target, impl='eager', reduction='none'))
    ours = [str(w.message) for w in record if 'runs eagerly' in str(w.message)]
    assert len(ours) <= int(wrong) and all('disagrees with the eager formula' in m for m in ours)


#: the losses whose kernels have a Triton twin (the ones a new device runs); cross-entropy and Dice
#: have C++ kernels only
TRITON_BACKED = [n for n in FUSED if n not in ('CrossEntropyLoss', 'CrossEntropyCustomLoss', 'DiceLoss')]


@pytest.mark.parametrize('name', TRITON_BACKED)
def test_every_loss_catches_a_wrong_forward_of_its_kernel(new_device, monkeypatch, name):
    """Each probe reaches its loss's kernel: a forward off by 1e-2 is caught, and answered eagerly."""
    real = backends.cpu_kernels()

    def wrapped(fn_name):
        fn = getattr(real, fn_name)
        if fn_name.endswith('_forward'):
            return lambda *a: fn(*a) + 1e-2
        return fn

    names = ('elementwise_forward', 'elementwise_backward', 'box_forward', 'box_backward', 'heatmap_forward',
             'heatmap_backward', 'ghmc_histogram', 'ghmc_forward', 'ghmc_backward')
    wrong = types.SimpleNamespace(**{n: wrapped(n) for n in names})
    _route(monkeypatch, wrong)
    args = CASES[name].make(16, torch.float32, torch.Generator().manual_seed(3))
    loss = build_case(name, impl='fused')
    expected = build_case(name, impl='eager')(*args)
    with pytest.warns(RuntimeWarning, match=rf'{name}: the fused kernel disagrees with the eager formula in '
                                            r'torch\.float32 \(the values of .* differ by up to 0\.01'):
        out = loss(*args)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert impl.disabled(name, 'cpu')


@pytest.mark.skipif(not TRITON_INTERPRETER, reason="needs Triton's CPU interpreter (triton 3.0+) or a GPU")
@pytest.mark.parametrize('name, cfg', [('GIoULoss', {}), ('SIoULoss', dict(neg_gamma=True)), ('FocalLoss', {}),
                                       ('SmoothL1Loss', {}), ('GaussianFocalLoss', {}), ('GHMC', {})])
def test_the_triton_kernels_pass_the_check(new_device, name, cfg):
    """The kernels the check is for: Triton's (under its interpreter on the CPU without a GPU)."""
    pytest.importorskip('triton', reason='triton is not installed (a test dependency: make install)')
    args = CASES[name].make(16, torch.float32, torch.Generator().manual_seed(4))
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
    args = (args[0].detach().requires_grad_(), *args[1:])
    loss = build_case(name, impl='fused', **cfg).to(device)
    with backends.triton_on_cpu(), warnings.catch_warnings():
        warnings.simplefilter('error', RuntimeWarning)
        out = loss(*args)
    assert new_device == [(loss.loss_fn.__name__, None)] and ran_fused(out)


#: hyper-parameters beyond each case's that change the kernel's kind or code path
VARIANTS = [('IoULoss', dict(mode='linear')), ('IoULoss', dict(mode='square')), ('SIoULoss', dict(neg_gamma=True)),
            ('EIoULoss', dict(smooth_point=0.5)), ('WIoULoss', dict(version='v1')),
            ('EfficientIoULoss', dict(focal_gamma=0.5)), ('SmoothL1Loss', dict(beta=0.0)),
            ('VarifocalLoss', dict(iou_weighted=False, gamma=1.5)), ('CrossEntropyLoss', dict(ignore_index=1)),
            ('DiceLoss', dict(naive_dice=True)), ('DiceLoss', dict(activate=False)),
            ('GaussianFocalLoss', dict(alpha=1.5, gamma=3.0)), ('GHMC', dict(bins=30, momentum=0.75))]


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize('name, cfg', [(n, {}) for n in FUSED] + VARIANTS)
def test_every_fused_loss_passes_its_check_with_right_kernels(new_device, name, cfg, dtype):
    """Each probe fits its loss: the C++ kernels, right ones, agree with the eager spec on it in
    every dtype, silently; and the loss keeps its kernel."""
    args = CASES[name].make(16, dtype, torch.Generator().manual_seed(2))
    loss = build_case(name, impl='fused', **cfg)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        loss(*args)
    assert len(new_device) == 1 and new_device[0][1] is None, new_device
    assert not impl._DISABLED


def test_probes_are_small_and_fixed():
    pred = torch.zeros(3, 7)
    for make, target in ((probes.logits, torch.zeros(3, dtype=torch.long)), (probes.logits, torch.zeros(3, 7)),
                         (probes.boxes, torch.zeros(3, 4)), (probes.residuals, torch.zeros(3, 4)),
                         (probes.heatmap, torch.zeros(3, 7)), (probes.dice, torch.zeros(3, 7))):
        x1, t1 = make(pred, target, {})
        x2, t2 = make(pred, target, {})
        assert x1.numel() <= 120 and torch.equal(x1, x2) and torch.equal(t1, t2)
        assert x1.dtype == pred.dtype and t1.dtype in (target.dtype, pred.dtype)
    # the first class, the background, the ignored label
    labels = probes.logits(pred, torch.zeros(3, dtype=torch.long), {'use_sigmoid': True, 'ignore_index': -100})[1]
    assert labels.tolist()[:3] == [0, 7, -100]
    assert probes.logits(pred, torch.zeros(3, dtype=torch.long), {'use_sigmoid': False})[1].max() == 6
    assert probes.logits(pred, torch.zeros(3, dtype=torch.long), {'use_mask': True}) is None  # no kernel
