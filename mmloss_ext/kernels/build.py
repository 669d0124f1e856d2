"""How the fused C++ kernels are compiled, written once for both ways of building them:

* ahead of time, by ``setup.py`` (``make install``, ``pip install --no-build-isolation .``), into
  ``mmloss_ext._fused``;
* on first CPU use, by :func:`mmloss_ext.kernels.backends.cpu_kernels` through
  ``torch.utils.cpp_extension.load`` into torch's extension cache, when the install could not see
  torch (pip's default build isolation) and so built nothing.

Standard library only, and no import of the package: ``setup.py`` loads this file by its path,
before torch or the package can be imported.
"""
from __future__ import annotations

import glob
import os
import runpy
from typing import List, Tuple

#: the package's root folder (this file is ``<root>/kernels/build.py``)
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the kernels' folder: one folder per op (``<op>/<op>.cpp``, adding its functions to the module
#: through ``cpp/registry.h``), and ``cpp/`` with the module (``module.cpp``) and the shared headers
KERNELS = os.path.join(PACKAGE_DIR, 'kernels')
CPP = os.path.join(KERNELS, 'cpp')
#: the module's translation unit; the ops' are the ``*.cpp`` of every operation's folder
MODULE_CPP = os.path.join(CPP, 'module.cpp')
ABI_PY = os.path.join(PACKAGE_DIR, 'core', 'abi.py')

#: ``MMLOSS_EXT_NO_EXT=1``: ``setup.py`` builds no extension (the losses run eagerly, or the
#: kernels are compiled on first use)
ENV_NO_EXT = 'MMLOSS_EXT_NO_EXT'
#: ``MMLOSS_EXT_JIT=0``: no compilation on first use (an install without the extension runs eagerly)
ENV_JIT = 'MMLOSS_EXT_JIT'

# torch's vector headers set off ~900 of these per build (unroll pragmas GCC ignores, the
# intrinsics' deliberate `__m512 __Y = __Y`); they drown any warning of ours
_QUIET = ('-Wno-unknown-pragmas', '-Wno-maybe-uninitialized', '-Wno-uninitialized')


def _folders() -> List[str]:
    """``cpp/`` and the operations' folders (a Python package each: ``__init__.py``), absolute. Only
    those: a folder an older release left in an installation that was upgraded over it is no
    operation, and its sources are not built."""
    ops = sorted(os.path.dirname(d) for d in glob.glob(os.path.join(KERNELS, '*', '__init__.py')))
    return [CPP] + ops


def _found(suffix: str) -> List[str]:
    """The files ending in ``suffix`` of :func:`_folders`, absolute, in a fixed order."""
    return [f for d in _folders() for f in sorted(glob.glob(os.path.join(d, '*' + suffix)))]


def _relative(files: List[str], relative_to: str) -> List[str]:
    return [os.path.relpath(f, relative_to) for f in files] if relative_to else files


def sources(relative_to: str = '') -> List[str]:
    """The extension's source files, ``cpp/module.cpp`` first, then every op's: relative to
    ``relative_to`` when given (setuptools wants paths relative to ``setup.py``), else absolute.
    The JIT build names its objects by basename: the basenames must differ (they do: ``<op>.cpp``)."""
    files = [MODULE_CPP] + [f for f in _found('.cpp') if f != MODULE_CPP]
    names = [os.path.basename(f) for f in files]
    if len(set(names)) != len(names):
        raise RuntimeError(f'mmloss_ext: two C++ sources share a file name (the JIT build would overwrite one '
                           f'object with the other): {sorted(n for n in names if names.count(n) > 1)}')
    return _relative(files, relative_to)


def depends(relative_to: str = '') -> List[str]:
    """The files whose change rebuilds the extension: every header and ``core/abi.py``."""
    return _relative(_found('.h') + [ABI_PY], relative_to)


def isa_flags() -> List[str]:
    """Vector ISA of the build machine: AVX-512, else AVX2, else none (ATen's scalar fallback).
    The module records its ISA; at import it is used only if the running CPU has it."""
    try:
        with open('/proc/cpuinfo') as f:
            flags = set(f.read().split())
    except OSError:
        return []
    if {'avx512f', 'avx512dq', 'avx512vl', 'avx512bw', 'fma'} <= flags:
        return ['-mavx512f', '-mavx512dq', '-mavx512vl', '-mavx512bw', '-mfma', '-mf16c', '-DCPU_CAPABILITY_AVX512',
                '-DCPU_CAPABILITY=AVX512']
    if {'avx2', 'fma', 'f16c'} <= flags:
        return ['-mavx2', '-mfma', '-mf16c', '-DCPU_CAPABILITY_AVX2', '-DCPU_CAPABILITY=AVX2']
    return []


def macros() -> List[Tuple[str, str]]:
    """The kernels' ids and constants as ``MMLOSS_*`` preprocessor definitions (``cpp/abi.h``),
    from ``core/abi.py`` (read by path)."""
    return runpy.run_path(ABI_PY)['cpp_macros']()


def compile_args() -> List[str]:
    """The compiler's flags, optimisation and ISA included (the definitions are :func:`macros`)."""
    return ['-O3', '-fopenmp', *isa_flags(), *_QUIET]


def link_args() -> List[str]:
    return ['-fopenmp']


def define_flags() -> List[str]:
    """:func:`macros` as ``-D`` flags (``torch.utils.cpp_extension.load`` takes flags, not macros)."""
    return [f'-D{name}={value}' for name, value in macros()]


def setup_disabled() -> bool:
    """Whether ``setup.py`` is told to build no extension (:data:`ENV_NO_EXT`)."""
    return os.environ.get(ENV_NO_EXT) == '1'


def jit_disabled() -> bool:
    """Whether compiling on first use is turned off (:data:`ENV_JIT` ``=0``)."""
    return os.environ.get(ENV_JIT, '1').strip().lower() in ('0', 'false', 'no', 'off')
