"""The fused kernels inside ``torch.compile`` and ``torch.export``.

The kernels are custom operators (``torch.ops.mmloss_ext.*``, mmloss_ext/kernels/ops.py): a fused
loss compiles with ``fullgraph=True`` (no graph break) into a graph that calls the operator, and
gives the values and gradients of the eager call. Most checks trace with dynamo only (a backend
that records the graph and runs it), AOT autograd once per family (``aot_eager``: fake tensors
through the operators' meta functions, the backward from their autograd formula) and Inductor
for the sigmoid focal loss and GIoU. On a torch without custom operators (before 2.4) those
checks skip: there a compiled model runs each loss outside its graph, which the last test holds to
the eager values.
"""
import pytest
import torch

from helpers import FUSED_TOL, NAMES, build_case
from loss_cases import CASES
from mmloss_ext.core.compat import HAS_CUSTOM_OP
from mmloss_ext.kernels.backends import cpu_kernels
from mmloss_ext.kernels.common import ran_fused
from mmloss_ext.registry import MODELS

pytestmark = pytest.mark.skipif(cpu_kernels() is None, reason='the C++ kernels are not built (`make install` builds them)')
#: the checks of the operators themselves (one node, no graph break, export)
needs_custom_ops = pytest.mark.skipif(not HAS_CUSTOM_OP, reason='needs torch.library.custom_op (torch 2.4+); this torch '
                                      'runs the losses outside the compiled graph (test_compile_equals_eager_on_any_torch)')

#: the losses with a fused path (an ``impl`` hyper-parameter)
FUSED_NAMES = [n for n in NAMES if 'impl' in MODELS.get(n).spec().defaults]


def _inputs(name, dtype=torch.float64, n=24, seed=0):
    args = CASES[name].make(n, dtype, torch.Generator().manual_seed(seed))
    return (args[0].detach().requires_grad_(),) + tuple(args[1:])


def _ops_in(gm):
    return sorted({str(node.target) for node in gm.graph.nodes
                   if node.op == 'call_function' and str(node.target).startswith('mmloss_ext.')})


class Recorder:
    """A torch.compile backend that keeps the dynamo graph and runs it as traced."""

    def __init__(self):
        self.graphs = []

    def __call__(self, gm, example_inputs):
        self.graphs.append(gm)
        return gm.forward


def _value_and_grad(fn, args):
    pred = args[0].detach().requires_grad_()
    out = fn(pred, *args[1:])
    out.backward()
    return out.detach(), pred.grad


def test_the_fused_losses_are_found():
    assert {'FocalLoss', 'GIoULoss', 'CrossEntropyLoss', 'DiceLoss', 'GaussianFocalLoss', 'GHMC'} <= set(FUSED_NAMES)


@needs_custom_ops
@pytest.mark.parametrize('name', FUSED_NAMES)
def test_fullgraph_compile_calls_the_kernel_and_matches_eager(name):
    torch.compiler.reset()
    args = _inputs(name)
    loss = build_case(name, impl='fused')
    eager_out = loss(*args)
    fused_eagerly = ran_fused(eager_out)
    expected = _value_and_grad(loss, args)
    recorder = Recorder()
    compiled = torch.compile(lambda *a: loss(*a), backend=recorder, fullgraph=True)  # a graph break raises
    got = _value_and_grad(compiled, args)
    ops = [op for gm in recorder.graphs for op in _ops_in(gm)]
    if fused_eagerly:  # the case's options have a kernel: the compiled graph calls it
        assert ops, f'{name}: the compiled graph has no mmloss_ext operator'
    else:
        assert not ops
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, **FUSED_TOL[torch.float64])


#: one loss per operator, through AOT autograd (fake tensors, the registered backward)
AOT_NAMES = ['FocalLoss', 'SmoothL1Loss', 'GIoULoss', 'CrossEntropyLoss', 'DiceLoss', 'GaussianFocalLoss', 'GHMC']
#: case options the kernels lack, switched off
KERNEL_CFG = {'CrossEntropyLoss': dict(label_smoothing=0.0)}


@needs_custom_ops
@pytest.mark.parametrize('name', AOT_NAMES)
@pytest.mark.parametrize('reduction', ['mean', 'none'])
def test_aot_autograd_traces_the_operators(name, reduction):
    torch.compiler.reset()
    args = _inputs(name, torch.float32)
    loss = build_case(name, impl='fused', reduction=reduction, **KERNEL_CFG.get(name, {}))
    assert ran_fused(loss(*args).sum())

    def call(*a):
        return loss(*a).sum()

    expected = _value_and_grad(call, args)
    got = _value_and_grad(torch.compile(call, backend='aot_eager', fullgraph=True), args)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, **FUSED_TOL[torch.float32])


@needs_custom_ops
@pytest.mark.parametrize('name, size', [('FocalLoss', 2000), ('GIoULoss', 5000)])
def test_inductor_keeps_the_kernel_and_matches_eager(name, size):
    torch.compiler.reset()
    args = _inputs(name, torch.float32, n=size)
    loss = build_case(name, impl='fused')
    expected = _value_and_grad(loss, args)
    explanation = torch._dynamo.explain(lambda *a: loss(*a))(*args)
    assert explanation.graph_break_count == 0
    assert any(_ops_in(gm) for gm in explanation.graphs)
    got = _value_and_grad(torch.compile(lambda *a: loss(*a), fullgraph=True), args)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, **FUSED_TOL[torch.float32])


@needs_custom_ops
def test_bad_labels_fail_inside_the_compiled_graph():
    """Under compile the label check is a device assert (no host read): a RuntimeError at run time."""
    torch.compiler.reset()
    loss = build_case('FocalLoss', impl='fused')
    pred, labels = _inputs('FocalLoss', torch.float32)
    compiled = torch.compile(lambda p, t: loss(p, t), backend='aot_eager', fullgraph=True)
    compiled(pred, labels)
    with pytest.raises(RuntimeError, match='FocalLoss'):
        compiled(pred, torch.full_like(labels, 99))


@needs_custom_ops
def test_export_keeps_the_operator():
    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(8, 4)
            self.loss = build_case('GIoULoss', impl='fused')

        def forward(self, feats, boxes, target):
            return self.loss(boxes + self.linear(feats), target)

    gen = torch.Generator().manual_seed(0)
    pred, target = CASES['GIoULoss'].make(32, torch.float32, gen)
    feats = torch.randn(32, 8, generator=gen)
    head = Head()
    exported = torch.export.export(head, (feats, pred, target))
    assert any(str(n.target).startswith('mmloss_ext.') for n in exported.graph.nodes if n.op == 'call_function')
    torch.testing.assert_close(exported.module()(feats, pred, target), head(feats, pred, target))


@pytest.mark.parametrize('name, size', [('FocalLoss', 2000), ('GIoULoss', 5000), ('CrossEntropyLoss', 2000)])
def test_compile_equals_eager_on_any_torch(name, size):
    """Inductor around a fused loss gives the eager values and gradients: one node on a torch with
    custom operators, a graph break around the loss on an older one (never a wrong value)."""
    torch.compiler.reset()
    args = _inputs(name, torch.float32, n=size)
    loss = build_case(name, impl='fused', **KERNEL_CFG.get(name, {}))

    def model(pred, *rest):
        return loss(pred * 1.5, *rest) * 2.0

    expected = _value_and_grad(model, args)
    got = _value_and_grad(torch.compile(model), args)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, **FUSED_TOL[torch.float32])
    breaks = torch._dynamo.explain(model)(*args).graph_break_count
    assert breaks == 0 if HAS_CUSTOM_OP else breaks >= 1
