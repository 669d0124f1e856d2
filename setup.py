"""mmloss_ext: pure Python, plus an optional C++ extension ``mmloss_ext._fused`` (the fused CPU
kernels, see ``mmloss_ext/kernels/``). The extension is built when torch and a C++ compiler are
available; when the build fails the package installs without it and every loss runs its eager
path. ``MMLOSS_EXT_NO_EXT=1`` skips the build."""
import os
import runpy
import sys

from setuptools import find_packages, setup

#: the kernels' ids and constants, written once (read by path: neither torch nor the package is importable yet)
ABI_PY = 'mmloss_ext/core/abi.py'


def _isa_flags():
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


def _extensions():
    if os.environ.get('MMLOSS_EXT_NO_EXT') == '1':
        return {}, []
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        return {}, []

    class OptionalBuild(BuildExtension):
        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as err:  # noqa: BLE001 - any compiler failure leaves the eager paths
                print(f'[mmloss_ext] the fused CPU kernels were not built ({err}); the losses run eagerly',
                      file=sys.stderr)

    csrc = 'mmloss_ext/kernels/csrc/'
    # torch's vector headers set off ~900 of these per build (unroll pragmas GCC ignores, the
    # intrinsics' deliberate `__m512 __Y = __Y`); they drown any warning of ours
    _QUIET = ['-Wno-unknown-pragmas', '-Wno-maybe-uninitialized', '-Wno-uninitialized']
    # the ids and constants as MMLOSS_* macros (csrc/abi.h); a change to core/abi.py rebuilds the module
    macros = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), ABI_PY))['cpp_macros']()
    ext = CppExtension('mmloss_ext._fused', [csrc + 'fused.cpp', csrc + 'dense.cpp', csrc + 'heatmap.cpp',
                        csrc + 'ghm.cpp'],
                       depends=[csrc + 'abi.h', csrc + 'vec_common.h', ABI_PY], define_macros=macros,
                       extra_compile_args=['-O3', '-fopenmp', *_isa_flags(), *_QUIET], extra_link_args=['-fopenmp'])
    return {'build_ext': OptionalBuild}, [ext]


cmdclass, ext_modules = _extensions()
setup(name='mmloss_ext', version='0.1.0', packages=find_packages(include=['mmloss_ext', 'mmloss_ext.*']),
      python_requires='>=3.11', ext_modules=ext_modules, cmdclass=cmdclass)
