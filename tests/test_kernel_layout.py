"""The shape every fused operation takes (kernels/<op>/: its entry point and operator, its C++ and
Triton kernels), the one device-to-backend table, and the import graph of mmloss_ext/kernels: no
circle, and every module importable on its own in a fresh process."""
import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mmloss_ext  # noqa: F401  (imports every operation's entry point)
from mmloss_ext.kernels import backends

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / 'mmloss_ext' / 'kernels'
OPERATIONS = sorted(p.name for p in KERNELS.iterdir() if (p / '__init__.py').exists())
HAS_TRITON = importlib.util.find_spec('triton') is not None


def test_every_operation_folder_has_its_entry_point_and_kernels():
    assert OPERATIONS == ['boxes', 'cross_entropy', 'dice', 'elementwise', 'gaussian_focal', 'ghmc']
    assert sorted(backends.OPERATIONS) == OPERATIONS  # each registered itself when its operator was defined
    for op in OPERATIONS:
        folder = KERNELS / op
        # the backends an operation declares are the kernels its folder holds
        has = {'cpp': (folder / f'{op}.cpp').exists(), 'triton': (folder / f'{op}_triton.py').exists()}
        assert set(backends.OPERATIONS[op]) == {b for b, present in has.items() if present}, op
        assert has['cpp'], f'{op}: every operation has a C++ kernel (the CPU runs it)'


def test_the_device_table_decides_where_each_operation_runs(monkeypatch):
    monkeypatch.setattr(backends, 'triton_available', lambda: True)
    cpu = backends.cpu_kernels() is not None
    for op, kernels_in in backends.OPERATIONS.items():
        assert backends.has_kernel(op, 'cpu') == cpu
        assert backends.has_kernel(op, 'cuda') == ('triton' in kernels_in)
        assert not backends.has_kernel(op, 'meta') and not backends.has_kernel(op, 'mps')
    monkeypatch.setitem(backends.DEVICE_BACKENDS, 'mps', 'triton')  # a new device type: one line of the table
    assert backends.has_kernel('boxes', torch.device('mps')) and not backends.has_kernel('dice', 'mps')


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix('')
    parts = rel.parts[:-1] if rel.name == '__init__' else rel.parts
    return '.'.join(parts)


MODULES = sorted(_module_name(p) for p in KERNELS.rglob('*.py'))


def _imports(path: Path, name: str):
    """The modules of mmloss_ext.kernels that the module ``name`` (at ``path``) imports at its top level."""
    package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit('.', node.level - 1)[0] if node.level > 1 else package
            target = f'{base}.{node.module}' if node.module else base
            for alias in node.names:
                sub = f'{target}.{alias.name}'
                found.add(sub if sub in MODULES else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in MODULES and m != name}


def test_no_import_circle_inside_kernels():
    graph = {_module_name(p): _imports(p, _module_name(p)) for p in KERNELS.rglob('*.py')}
    assert graph['mmloss_ext.kernels.backends'] <= {'mmloss_ext.kernels.build'}  # the table depends on no kernel
    state = {}

    def visit(node, path):
        if state.get(node) == 'done':
            return
        assert state.get(node) != 'open', 'import circle: ' + ' -> '.join(path + [node])
        state[node] = 'open'
        for nxt in sorted(graph[node]):
            visit(nxt, path + [node])
        state[node] = 'done'

    for node in sorted(graph):
        visit(node, [])


@pytest.mark.parametrize('module', MODULES)
def test_every_kernels_module_imports_alone_in_a_fresh_process(module):
    if module.endswith('_triton') or module.endswith('triton_common'):
        if not HAS_TRITON:
            pytest.skip('triton is not installed')
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    proc = subprocess.run([sys.executable, '-c', f'import {module}'], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_misspelt_operation_is_an_error_not_a_silent_eager_path():
    from mmloss_ext.kernels import use_fused
    with pytest.raises(ValueError, match=r"GIoULoss: no fused operation 'boxs'; the operations are \['boxes'"):
        use_fused('GIoULoss', 'fused', torch.zeros(4, 4), op='boxs')
    assert use_fused('GIoULoss', 'eager', torch.zeros(4, 4), op='boxes') is False
