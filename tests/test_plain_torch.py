"""Plain-PyTorch use: the losses as functionals and ``nn.Module``s in a hand-written loop, whatever
else is installed. This file imports nothing of OpenMMLab: it also runs in the torch-only
environment (``make test-torch-only``), where neither mmengine, mmcv nor mmdet is installed and
the fused CPU kernels are compiled on first use.
"""
import inspect
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import mmloss_ext
from mmloss_ext.kernels.backends import cpu_kernels_origin
from mmloss_ext.kernels.common import ran_fused
from mmloss_ext.registry import LOSSES, MODELS

def run_python(code, env=None):
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_every_loss_and_its_functional_are_at_the_top_level():
    assert len(LOSSES) == 58
    for name, cls in LOSSES.items():
        assert getattr(mmloss_ext, name) is cls, name
        functional = cls.loss_fn.__name__
        assert getattr(mmloss_ext, functional) is cls.loss_fn, functional
        assert issubclass(cls, torch.nn.Module)


def test_the_registry_lists_the_same_class_objects():
    # with a registry (mmengine or mmdet) and without one, `module_dict` holds the very classes
    assert dict(MODELS.module_dict) == LOSSES


def hiding(*modules):
    """Python source that makes ``modules`` (and their submodules) unimportable in its process."""
    return textwrap.dedent(f"""
        import importlib.abc, sys
        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split('.')[0] in {modules!r} or name in {modules!r}:
                    raise ImportError(f'{{name}} is hidden')
        sys.meta_path.insert(0, Hide())
    """)


def test_without_mmengine_the_classes_work_and_a_registry_build_says_what_to_install():
    out = run_python(hiding('mmengine', 'mmdet', 'mmcv') + textwrap.dedent("""
        import torch, mmloss_ext
        from mmloss_ext.registry import LOSSES, MODELS
        assert 'mmengine' not in sys.modules and 'mmdet' not in sys.modules
        loss = mmloss_ext.GIoULoss(loss_weight=2.0)
        print(float(loss(torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[1., 0., 3., 2.]]))))
        print(len(MODELS.module_dict), 'GIoULoss' in MODELS, MODELS.module_dict['GIoULoss'] is mmloss_ext.GIoULoss)
        try:
            MODELS.build(dict(type='mmloss_ext.GIoULoss'))
        except ImportError as err:
            print(err)
    """)).stdout.splitlines()
    # IoU 2/6, enclosing box = union: 2 * (1 - 1/3)
    assert float(out[0]) == pytest.approx(4 / 3)
    assert out[1] == '58 True True'
    assert out[2].startswith('mmloss_ext.registry.MODELS.build: building losses from config dicts needs mmengine')


def fit_line(loss_fn):
    """y = 3x + 0.5 with 10% gross outliers, fitted by Adam in a hand-written loop."""
    gen = torch.Generator().manual_seed(0)
    x = torch.linspace(-1, 1, 200)
    y = 3.0 * x + 0.5 + 0.05 * torch.randn(200, generator=gen)
    y[torch.randperm(200, generator=gen)[:20]] += 8.0
    w = torch.zeros(2, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        loss_fn(w[0] * x + w[1], y).backward()
        opt.step()
    return w.detach()


def test_a_robust_loss_module_trains_in_a_plain_loop():
    # the outliers all push upwards: the median fit (quantile 0.5, Charbonnier ~ L1) keeps the
    # true line within a few hundredths, the mean fit (MSE) is lifted by about 10% of 8 = 0.8
    robust = fit_line(mmloss_ext.CharbonnierLoss(eps=1e-4))
    mse = fit_line(mmloss_ext.MSELoss())
    assert abs(robust[0] - 3.0) < 0.1 and abs(robust[1] - 0.5) < 0.1
    assert mse[1] > 1.0


def boxes(n, gen):
    xy = torch.rand(n, 2, generator=gen) * 100
    wh = torch.rand(n, 2, generator=gen) * 50 + 1
    return torch.cat([xy, xy + wh], 1)


def test_the_fused_cpu_kernels_are_there_and_equal_the_eager_spec(gen):
    # built with the package (make install) or compiled on first use (a pip install that could
    # not see torch): either way a C++ compiler exists on every machine the tests run on
    origin, detail = cpu_kernels_origin()
    assert origin in ('built', 'compiled'), detail
    x, labels = torch.randn(512, 20, generator=gen), torch.randint(0, 21, (512,), generator=gen)
    pred = boxes(5000, gen)
    target = pred + torch.randn(5000, 4, generator=gen)
    for fn, args in ((mmloss_ext.focal_loss, (x, labels)), (mmloss_ext.giou_loss, (pred, target))):
        values, grads = [], []
        for impl in ('fused', 'eager'):
            p = args[0].clone().requires_grad_()
            out = fn(p, *args[1:], impl=impl)
            out.backward()
            assert ran_fused(out) == (impl == 'fused')
            values.append(out.detach())
            grads.append(p.grad)
        torch.testing.assert_close(values[0], values[1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def test_the_classes_keep_their_signature_and_hyper_parameters():
    loss = mmloss_ext.FocalLoss(gamma=1.5, alpha=0.5, loss_weight=2.0)
    assert (loss.gamma, loss.alpha, loss.loss_weight) == (1.5, 0.5, 2.0)
    assert list(inspect.signature(mmloss_ext.FocalLoss).parameters)[:2] == ['use_sigmoid', 'gamma']
    with pytest.raises(ValueError, match=r'FocalLoss: `alpha` expected a value in \[0\.0, 1\.0\], got -1'):
        mmloss_ext.FocalLoss(alpha=-1)


def test_without_a_compiler_or_with_compiling_off_the_losses_run_eagerly(tmp_path):
    # a package with no built extension: `mmloss_ext._fused` hidden from the import system
    hide = hiding('mmloss_ext._fused') + textwrap.dedent("""
        import warnings, torch, mmloss_ext
        from mmloss_ext.kernels.backends import cpu_kernels_origin
        from mmloss_ext.kernels.common import ran_fused
        x, y = torch.randn(200, 30, requires_grad=True), torch.randint(0, 31, (200,))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            out = [mmloss_ext.focal_loss(x, y, impl='fused') for _ in range(3)]
        out[0].backward()
        print(cpu_kernels_origin()[0], ran_fused(out[0]), len(caught), x.grad.isfinite().all().item())
        print(cpu_kernels_origin()[1])
        print('|'.join(str(w.message) for w in caught))
    """)
    off = run_python(hide, env={'MMLOSS_EXT_JIT': '0'})
    lines = off.stdout.splitlines()
    assert lines[0] == 'absent False 0 True'
    assert '$MMLOSS_EXT_JIT=0' in lines[1]
    # a compiler that fails: one warning for the first call, none for the next two; eager answers
    failing = run_python(hide, env={'CXX': 'false', 'TORCH_EXTENSIONS_DIR': str(tmp_path)})
    lines = failing.stdout.splitlines()
    assert lines[0] == 'absent False 1 True'
    assert lines[1].startswith('compiling them failed')
    assert 'could not be compiled' in lines[2] and 'the losses run eagerly on the CPU' in lines[2]
    assert '[mmloss_ext] compiling the fused CPU kernels into' in failing.stderr
