"""The elementwise and box Triton kernels (kernels/elementwise/, kernels/boxes/) against the eager
functionals, which are the spec.

Without a GPU the kernels run under Triton's interpreter (``TRITON_INTERPRET=1``, set by
conftest.py) on CPU tensors; with one, compiled, on CUDA tensors. Either way the entry points of
the operations route to the Triton modules (conftest's ``on_triton``: the CPU's backend is
Triton), so weights, ``avg_factor``, reductions, ``out_mode`` and half precision go through the
real plumbing. The box kinds that no
loss wires yet (6-9) and the new ``hp``-list ABI of every box kind go through a small autograd
Function over the module's functions. Only the tests that need CUDA itself skip without it.
"""
import inspect
import os
import subprocess
import sys

import pytest
import torch

triton = pytest.importorskip('triton', reason='triton is not installed (a test dependency: make install)')
pytestmark = pytest.mark.triton_interpreter

from mmloss_ext.core.abi import BOX_HP, BoxKind  # noqa: E402
from mmloss_ext.kernels import backends, common, dispatch  # noqa: E402
from mmloss_ext.kernels.boxes import boxes_triton as gpu  # noqa: E402
from mmloss_ext.kernels.elementwise import elementwise, elementwise_triton  # noqa: E402
from mmloss_ext.losses.bbox.classic import ciou_loss, diou_loss, eiou_loss, giou_loss, iou_loss, siou_loss  # noqa: E402
from mmloss_ext.losses.bbox.modern import efficient_iou_loss, wiou_loss  # noqa: E402
from mmloss_ext.losses.classification.focal import focal_loss, quality_focal_loss  # noqa: E402
from mmloss_ext.losses.regression import smooth_l1_loss  # noqa: E402
import test_fused  # noqa: E402
from test_fused import FUSED_CASES, TOL, _boxes  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = 'cuda' if CUDA else 'cpu'
needs_cuda = pytest.mark.skipif(not CUDA, reason='needs a CUDA GPU')


def _to_device(obj):
    return test_fused._to(obj, DEVICE)


def _assert_same(name, gen, dtype, reduction, weight_kind=None, avg_factor=None):
    """test_fused's check (its cases, inputs, weights and tolerances) on DEVICE."""
    test_fused._assert_same(name, gen, dtype, reduction, weight_kind, avg_factor, device=DEVICE)


# --- the losses' fused paths (test_fused's cases) on the Triton backend ----------------------------

@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('name', sorted(FUSED_CASES))
def test_triton_equals_eager(name, dtype, reduction, gen, on_triton):
    _assert_same(name, gen, dtype, reduction)
    assert {'box_forward', 'box_backward'} <= set(on_triton) or {
        'elementwise_forward', 'elementwise_backward'} <= set(on_triton)


@pytest.mark.parametrize('name', sorted(FUSED_CASES))
def test_triton_weights_and_avg_factor(name, gen, on_triton):
    for weight_kind in FUSED_CASES[name][3]:
        _assert_same(name, gen, torch.float64, 'none', weight_kind)
        _assert_same(name, gen, torch.float64, 'mean', weight_kind, avg_factor=7.5)
        _assert_same(name, gen, torch.float32, 'sum', weight_kind)
    assert on_triton


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('name', ['focal-labels', 'qfl-pair', 'vfl', 'smooth_l1', 'balanced_l1', 'giou_loss',
                                  'ciou_loss'])
def test_triton_half_precision(name, dtype, gen, on_triton):
    _assert_same(name, gen, dtype, 'mean')
    _assert_same(name, gen, dtype, 'none', 'row')
    assert on_triton


@pytest.mark.parametrize('name', ['focal-labels', 'qfl-pair', 'qfl-soft', 'vfl', 'balanced_l1', 'giou_loss',
                                  'ciou_loss'])
def test_triton_several_programs(name, gen, on_triton):
    # more rows / boxes than one program holds: masked tails, partial sums over programs, QFL's row tiles
    fn, kw, make, _ = FUSED_CASES[name]
    rows = 301 if make[0] == 'logits' else 700
    pred, target = _to_device(test_fused._inputs(name, gen, torch.float64, rows=rows, cols=11))
    w = torch.rand(pred.shape[0], generator=gen, dtype=torch.float64).to(DEVICE)
    for reduction, weight in (('mean', None), ('none', w), ('sum', w)):
        outs = []
        for impl in ('eager', 'fused'):
            x = pred.detach().clone().requires_grad_()
            out = fn(x, target, impl=impl, weight=weight, reduction=reduction, **kw)
            out.sum().backward()
            outs.append((out.detach(), x.grad))
        torch.testing.assert_close(outs[1][0], outs[0][0], **TOL[torch.float64])
        torch.testing.assert_close(outs[1][1], outs[0][1], **TOL[torch.float64])
    assert on_triton.count('elementwise_forward') + on_triton.count('box_forward') >= 3


@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('name', ['focal-labels', 'qfl-pair', 'vfl', 'smooth_l1', 'iou-log', 'ciou_loss'])
def test_triton_empty_input_is_connected(name, reduction, gen, on_triton):
    fn, kw, _, _ = FUSED_CASES[name]
    pred, target = _to_device(test_fused._inputs(name, gen, torch.float32))
    target = tuple(t[:0] for t in target) if isinstance(target, tuple) else target[:0]
    x = pred[:0].detach().requires_grad_()
    out = fn(x, target, impl='fused', reduction=reduction, **kw)
    ref = fn(x, target, impl='eager', reduction=reduction, **kw)
    assert out.shape == ref.shape and (out == 0).all()
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_triton_extreme_logits_are_finite(gen, on_triton):
    x = torch.tensor([[1e4, -1e4, 0.0, 88.0, -88.0, 30.0]], dtype=torch.float32, device=DEVICE)
    for target in (torch.tensor([0], device=DEVICE), torch.tensor([6], device=DEVICE)):
        for impl in ('fused', 'eager'):
            xx = x.clone().requires_grad_()
            out = focal_loss(xx, target, impl=impl, reduction='none')
            out.sum().backward()
            assert torch.isfinite(out).all() and torch.isfinite(xx.grad).all()
            if impl == 'fused':
                fused_out, fused_grad = out.detach(), xx.grad
        torch.testing.assert_close(fused_out, out.detach(), **TOL[torch.float32])
        torch.testing.assert_close(fused_grad, xx.grad, **TOL[torch.float32])


# --- every box kind through the new ABI (hp lists), against the eager functionals ---------------------

class _GpuBoxes(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pred, target, kind, eps, hp, w, out_mode):
        ctx.args = (kind, eps, hp, out_mode)
        ctx.save_for_backward(pred, target, w)
        return gpu.box_forward(kind, eps, hp, pred, target, w, out_mode)

    @staticmethod
    def backward(ctx, grad):
        pred, target, w = ctx.saved_tensors
        kind, eps, hp, out_mode = ctx.args
        scale, per_box = (float(grad), None) if out_mode == 0 else (1.0, grad.contiguous())
        return (gpu.box_backward(kind, eps, hp, pred, target, w, scale, per_box),) + (None,) * 6


def _box_family(kind, eps, hp, pred, target, weight, reduction, avg_factor):
    """kernels/boxes' box_family plumbing over _GpuBoxes."""
    dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
    p, t = pred.to(dtype).contiguous(), target.detach().to(dtype).contiguous()
    if weight is not None and weight.shape == pred.shape:
        weight = weight.mean(-1)  # mmdet's (N, 4) rule
    wrow, wfull = common.split_weight('loss', weight, (p.shape[0],), dtype)
    w = wrow if wfull is None else wfull.reshape(-1)

    def run(out_mode=1):
        return _GpuBoxes.apply(p, t, kind, eps, hp, w, out_mode)

    return common.reduce(run, (p.shape[0],), reduction, avg_factor, 'loss').to(pred.dtype)


# kind: (eager functional, its keywords, the kernel's eps, the kernel's hp)
BOX_KINDS = {
    0: (iou_loss, dict(mode='linear', eps=1e-3), 1e-6, [1e-3]),
    1: (iou_loss, dict(mode='square'), 1e-6, [1e-6]),
    2: (iou_loss, dict(mode='log', eps=1e-2), 1e-6, [1e-2]),
    3: (giou_loss, dict(eps=1e-6), 1e-6, []),
    4: (diou_loss, dict(eps=1e-7), 1e-7, []),
    5: (ciou_loss, dict(eps=1e-6), 1e-6, []),
    6: (eiou_loss, dict(eps=1e-6, smooth_point=0.1), 1e-6, [0.1]),
    7: (siou_loss, dict(eps=1e-6, neg_gamma=False), 1e-6, [0.0]),
    '7-neg': (siou_loss, dict(eps=1e-6, neg_gamma=True), 1e-6, [1.0]),
    8: (efficient_iou_loss, dict(eps=1e-7), 1e-7, []),
    9: (wiou_loss, dict(version='v1'), 1e-7, []),
}


def _eager_box(fn, kw, pred, target, weight, reduction, avg_factor):
    if 'impl' in inspect.signature(fn).parameters:
        kw = dict(kw, impl='eager')
    return fn(pred, target, weight=weight, reduction=reduction, avg_factor=avg_factor, **kw)


def _run_box(key, pred, target, reduction, weight=None, avg_factor=None):
    fn, kw, eps, hp = BOX_KINDS[key]
    kind = int(str(key).split('-')[0])
    results = []
    for run in (lambda x: _eager_box(fn, kw, x, target, weight, reduction, avg_factor),
                lambda x: _box_family(kind, eps, hp, x, target, weight, reduction, avg_factor)):
        x = pred.detach().clone().requires_grad_()
        out = run(x)
        upstream = torch.linspace(-1, 2, out.numel(), dtype=out.dtype, device=out.device).view(out.shape)
        (out * upstream).sum().backward()
        results.append((out.detach(), x.grad))
    return results


@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('key', list(BOX_KINDS), ids=str)
def test_box_kinds_equal_eager(key, dtype, reduction, gen):
    pred, target = _to_device(_boxes(37, gen, dtype))  # identical, inverted, ties, zero height, far apart
    (v_e, g_e), (v_f, g_f) = _run_box(key, pred, target, reduction)
    assert v_f.shape == v_e.shape and v_f.dtype == v_e.dtype
    assert torch.isfinite(v_f).all() and torch.isfinite(g_f).all()
    torch.testing.assert_close(v_f, v_e, **TOL[dtype])
    _assert_grad_close(g_f, g_e, dtype)


def _assert_grad_close(g_f, g_e, dtype):
    # SIoU's gradients reach ~1e5 where a box's enclosing width is clamped at eps (inverted targets),
    # and its angle cost's partials cancel there: the absolute error scales with the largest gradient
    tol = dict(TOL[dtype])
    tol['atol'] *= max(1.0, float(g_e.abs().max()))
    torch.testing.assert_close(g_f, g_e, **tol)


@pytest.mark.parametrize('key', list(BOX_KINDS), ids=str)
def test_box_kinds_weights_avg_factor_half(key, gen):
    pred, target = _to_device(_boxes(37, gen, torch.float64))
    w_row = torch.rand(37, generator=gen, dtype=torch.float64).to(DEVICE)
    w_box = torch.rand(37, 4, generator=gen, dtype=torch.float64).to(DEVICE)
    for weight, reduction, avg in ((w_row, 'none', None), (w_box, 'mean', 7.5), (w_row, 'sum', None)):
        (v_e, g_e), (v_f, g_f) = _run_box(key, pred, target, reduction, weight, avg)
        torch.testing.assert_close(v_f, v_e, **TOL[torch.float64])
        _assert_grad_close(g_f, g_e, torch.float64)
    half = _to_device(_boxes(37, gen, torch.float16))
    (v_e, _), (v_f, g_f) = _run_box(key, *half, 'mean')
    assert v_f.dtype == torch.float16 and torch.isfinite(g_f).all()
    torch.testing.assert_close(v_f, v_e, **TOL[torch.float16])


@pytest.mark.parametrize('key', [k for k in BOX_KINDS if k not in (5, 9)], ids=str)
def test_box_kinds_gradcheck(key, gen):
    # CIoU's trade-off alpha and WIoU's normaliser carry no gradient: finite differences see them,
    # so those two kinds are held to eager autograd (above) instead
    _, _, eps, hp = BOX_KINDS[key]
    kind = int(str(key).split('-')[0])
    xy = torch.rand(5, 2, generator=gen, dtype=torch.float64) * 4
    p = torch.cat([xy, xy + 1 + torch.rand(5, 2, generator=gen, dtype=torch.float64) * 3], 1)
    t = p + torch.randn(5, 4, generator=gen, dtype=torch.float64) * 0.7  # generic: no ties, no clamps
    w = torch.rand(5, generator=gen, dtype=torch.float64)
    p, t, w = _to_device(p).requires_grad_(), _to_device(t), _to_device(w)
    for out_mode in (0, 1):
        assert torch.autograd.gradcheck(lambda x: _GpuBoxes.apply(x, t, kind, eps, hp, w, out_mode), (p,))


def test_box_kinds_empty(gen):
    p = torch.zeros(0, 4, dtype=torch.float32, device=DEVICE)
    for kind in BoxKind:
        hp = [0.1] * len(BOX_HP[kind])
        assert gpu.box_forward(kind, 1e-6, hp, p, p, None, 1).shape == (0,)
        assert float(gpu.box_forward(kind, 1e-6, hp, p, p, None, 0)) == 0.0
        assert gpu.box_backward(kind, 1e-6, hp, p, p, None, 1.0, None).shape == (0, 4)


@pytest.mark.parametrize('kind,hp', [(0, []), (3, [0.0]), (7, []), (9, [1.0])])
def test_box_hp_count_checked_like_cpp(kind, hp, gen):
    # both backends refuse a hyper-parameter list of the wrong length for the kind
    p, t = _boxes(8, gen, torch.float64)
    with pytest.raises(ValueError, match='hyper-parameters'):
        gpu.box_forward(kind, 1e-6, hp, *_to_device((p, t)), None, 1)
    if backends.cpu_kernels() is not None:
        with pytest.raises(RuntimeError, match='hyper-parameters'):
            backends.cpu_kernels().box_forward(kind, 1e-6, hp, p, t, None, 1)


@pytest.mark.parametrize('kind,hp', [(0, (0.25, 2.0)), (0, (0.4, 1.5)), (1, (2.0,)), (1, (1.5,)), (2, (0.75, 2.0, 1.0)),
                                     (2, (0.75, 1.5, 0.0)), (3, (0.5,)), (3, (0.0,)), (4, (0.5, 1.5, 1.0))])
def test_elementwise_gradcheck(kind, hp, gen, on_triton):
    x = (torch.randn(4, 5, generator=gen, dtype=torch.float64) * 2).to(DEVICE).requires_grad_()
    t = torch.rand(4, 5, generator=gen, dtype=torch.float64) * (torch.rand(4, 5, generator=gen) > 0.5)
    t = (x.detach() + torch.randn(4, 5, generator=gen, dtype=torch.float64).to(DEVICE) if kind >= 3 else t.to(DEVICE))
    w = torch.rand(4, 5, generator=gen, dtype=torch.float64).to(DEVICE)
    for out_mode in (0, 1, 2) if kind == 1 else (0, 1):
        def f(z, out_mode=out_mode):
            return elementwise(z, int(kind), list(hp), t, None, None, None, w, out_mode)
        assert torch.autograd.gradcheck(f, (x,))
    assert 'elementwise_backward' in on_triton


# --- dispatch ------------------------------------------------------------------------------------------

def test_one_table_from_device_to_backend():
    assert backends.triton_available()
    assert backends.backend_of('cpu') == 'cpp' and backends.backend_of(torch.device('cuda')) == 'triton'
    assert backends.backend_of('meta') is None and not backends.has_kernel('boxes', 'meta')
    assert backends.kernels('boxes', 'cpu') is backends.cpu_kernels()
    assert backends.kernels('boxes', 'cuda') is gpu and backends.kernels('elementwise', 'cuda') is elementwise_triton
    assert backends.has_kernel('boxes', 'cuda') and not backends.has_kernel('dice', 'cuda')  # Dice: C++ only
    assert backends.has_kernel('dice', 'cpu') == (backends.cpu_kernels() is not None)
    assert not backends.has_kernel('no_such_op', 'cpu')
    x = torch.randn(64, 80)
    assert dispatch.use_fused('FocalLoss', 'fused', x, op='elementwise') == (backends.cpu_kernels() is not None)
    with backends.triton_on_cpu():  # the CPU's backend is Triton: the operations without a Triton kernel run eagerly
        assert backends.backend_of('cpu') == 'triton' and backends.kernels('boxes', 'cpu') is gpu
        assert dispatch.use_fused('FocalLoss', 'fused', x, op='elementwise')
        assert not dispatch.use_fused('DiceLoss', 'fused', x, op='dice')
    assert backends.backend_of('cpu') == 'cpp'


def test_kernels_compile_for_sm90_without_a_gpu():
    # the interpreter accepts code the compiler rejects: compile the hardest variants to a cubin
    code = '''
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from mmloss_ext.core.abi import BOX_EPS_ADDED, BoxKind
from mmloss_ext.kernels.boxes import boxes_triton
from mmloss_ext.kernels.elementwise import elementwise_triton
consts = dict(KIND=5, GRAD=True, FLAG=False, ADD=True, HAS_W=True, HAS_GOUT=True, OUT_ELEM=True, F64=False,
              I64=False, BLOCK=256)
sig = dict(p_ptr='*fp32', t_ptr='*fp32', w_ptr='*fp32', hp_ptr='*fp32', scale_ptr='*fp32', gout_ptr='*fp32',
           out_ptr='*fp32', n='i32')
for kind in (BoxKind.CIOU, BoxKind.SIOU, BoxKind.EFFICIENT_IOU):  # eps added; added; clamped
    c = dict(consts, KIND=int(kind), FLAG=kind == BoxKind.SIOU, ADD=kind in BOX_EPS_ADDED)
    triton.compile(ASTSource(fn=boxes_triton._box_kernel, signature={**sig, **{k: 'constexpr' for k in c}}, constexprs=c),
                   target=GPUTarget('cuda', 90, 32))
p = '*fp64'
sig = dict(x_ptr=p, t_ptr=p, lab_ptr='*i64', score_ptr=p, wrow_ptr=p, wfull_ptr=p, hp_ptr=p, out_ptr=p,
           rows='i32', cols='i32')
c = dict(KIND=1, POW=-1, FLAG=False, HAS_T=False, HAS_SCORE=True, HAS_WROW=True, HAS_WFULL=False, F64=True,
         I64=False, BLOCK_R=16, BLOCK_C=128)
triton.compile(ASTSource(fn=elementwise_triton._row_sum_kernel, signature={**sig, **{k: 'constexpr' for k in c}}, constexprs=c),
               target=GPUTarget('cuda', 90, 32))
print('compiled')
'''
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    env['TRITON_DEFAULT_FP_FUSION'] = '1'
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = subprocess.run([sys.executable, '-c', code], env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and 'compiled' in res.stdout, res.stderr[-3000:]


# --- real GPU: the losses route to Triton by themselves --------------------------------------------------

@needs_cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
def test_cuda_losses_route_to_triton(dtype, gen):
    x = torch.randn(300, 20, generator=gen).to('cuda', dtype)
    labels = torch.randint(0, 21, (300,), generator=gen).cuda()
    p, t = (b.to('cuda', dtype) for b in _boxes(300, gen, torch.float32))
    r = torch.randn(300, 4, generator=gen).to('cuda', dtype)
    calls = [(focal_loss, x, labels, {}), (quality_focal_loss, x, (labels, torch.rand(300, generator=gen).cuda()), {}),
             (smooth_l1_loss, r, torch.zeros_like(r), {}), (giou_loss, p, t, {}), (ciou_loss, p, t, {})]
    for fn, pred, target, kw in calls:
        outs = []
        for impl in ('fused', 'eager'):
            xx = pred.detach().clone().requires_grad_()
            out = fn(xx, target, impl=impl, **kw)
            out.backward()
            outs.append((out.detach(), xx.grad, common.ran_fused(out)))
        assert outs[0][2] and not outs[1][2], fn.__name__
        torch.testing.assert_close(outs[0][0], outs[1][0], **TOL[dtype])
        if dtype == torch.float32:
            torch.testing.assert_close(outs[0][1], outs[1][1], **TOL[dtype])
        assert torch.isfinite(outs[0][1]).all()
