"""``python -m mmloss_ext info``: what this installation runs on and which path the fused losses
take -- torch and Triton, the OpenMMLab packages and the registry, where the C++ kernels come
from (built with the package, compiled on first use, or absent and why), and the backend of
every fused kernel per device type."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from typing import List, Optional

import torch

__all__ = ['report']


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _mmcv_ops() -> bool:
    try:
        return importlib.util.find_spec('mmcv._ext') is not None
    except Exception:  # noqa: BLE001 - a broken mmcv install
        return False


def _openmmlab() -> str:
    parts = []
    for name, dists in (('mmengine', ('mmengine',)), ('mmcv', ('mmcv', 'mmcv-lite')), ('mmdet', ('mmdet',))):
        version = next(filter(None, map(_version, dists)), None)
        if version is not None:
            ops = f' ({"with" if _mmcv_ops() else "without"} compiled ops)' if name == 'mmcv' else ''
            parts.append(f'{name} {version}{ops}')
    return ', '.join(parts) or 'none installed'


def _registry() -> str:
    from .registry import MMDET_MODELS, MODELS, LossRegistry
    if not isinstance(MODELS, LossRegistry):
        return 'none (mmengine is not installed): the classes and functionals only'
    if MMDET_MODELS is not None and MODELS.parent is MMDET_MODELS:
        return "child of mmdet's MODELS, scope 'mmloss_ext' (type='mmloss_ext.X'; plain names for the losses mmdet lacks)"
    return "child of mmengine's root MODELS, scope 'mmloss_ext' (type='mmloss_ext.X')"


def _triton() -> str:
    from .kernels.backends import triton_available
    version = _version('triton') or _version('pytorch-triton')
    if not version or not triton_available():
        return 'not installed: CUDA tensors run every loss eagerly'
    interpreter = importlib.util.find_spec('triton.runtime.interpreter') is not None
    return (f'{version} (the CUDA kernels; its CPU interpreter, TRITON_INTERPRET=1: '
            f'{"available" if interpreter else "not in this release"})')


def report() -> str:
    """The text ``python -m mmloss_ext info`` prints (loads the C++ kernels, compiling them if
    this is their first use)."""
    from . import __version__
    from .core.impl import ENV_IMPL, ENV_SELF_CHECK, TRUSTED_DEVICES, min_numel, self_check_enabled
    from .kernels import build
    from .kernels.backends import OPERATIONS, cpu_kernels_origin, triton_available
    from .registry import LOSSES

    origin, detail = cpu_kernels_origin()
    cpp = {'built': 'C++, built with the package', 'compiled': 'C++, compiled on first use'}.get(origin)
    cuda_device = torch.cuda.is_available()
    lines: List[str] = [
        f'mmloss_ext {__version__} ({os.path.dirname(os.path.abspath(__file__))})',
        f'python {sys.version.split()[0]}, torch {torch.__version__} '
        f'(CPU capability {torch.backends.cpu.get_cpu_capability()}; CUDA device: {"yes" if cuda_device else "no"})',
        f'triton: {_triton()}',
        f'OpenMMLab: {_openmmlab()}',
        f'registry: {_registry()}',
        f'C++ kernels: {cpp or "absent"} ({detail})',
        f'impl: {os.environ.get(ENV_IMPL) or "auto"} (\'auto\' takes a fused kernel from {min_numel()} elements; '
        f'${ENV_IMPL} and impl= change it; ${build.ENV_JIT}=0 turns compiling on first use off)',
        f'self-check: {"on" if self_check_enabled() else "off"} (the first fused call of each configuration on a device '
        f'other than {", ".join(sorted(TRUSTED_DEVICES))} is compared with the eager formula; ${ENV_SELF_CHECK}=0 '
        'turns it off)',
        '',
    ]
    rows = [('fused kernel', 'cpu', 'cuda')]
    for name, kernels in sorted(OPERATIONS.items()):
        cpu = cpp.split(',')[0] if cpp else 'eager (no C++ kernels)'
        if 'triton' not in kernels:
            cuda = 'eager (no CUDA kernel)'
        elif triton_available():
            cuda = 'Triton' + ('' if cuda_device else ' (no CUDA device here)')
        else:
            cuda = 'eager (triton not installed)'
        rows.append((name, cpu, cuda))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines += ['  '.join(f'{c:{w}}' for c, w in zip(r, widths)).rstrip() for r in rows]
    fused = sorted(n for n, cls in LOSSES.items() if 'impl' in cls.spec().defaults)
    lines += ['', f'losses with a fused path ({len(fused)}): {", ".join(fused)}',
              'a kernel that fails on a device, or disagrees with the eager formula there, warns once, and that loss '
              'then runs eagerly there']
    return '\n'.join(lines)
