"""The optional C++ extension ``mmloss_ext._fused`` (the fused CPU kernels, see
``mmloss_ext/kernels/``); the package's metadata is in ``pyproject.toml``.

The extension is built when the build can import torch -- ``pip install --no-build-isolation .``
or ``make install`` -- and a C++ compiler works; when the build fails the package installs without
it. An install that built nothing (pip's default build isolation hides torch, or
``MMLOSS_EXT_NO_EXT=1``) compiles the same sources on first CPU use instead
(:func:`mmloss_ext.kernels.backends.cpu_kernels`), or runs every loss eagerly."""
import os
import runpy
import sys

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
#: how the kernels are compiled, written once for this build and the one on first use (read by
#: path: neither torch nor the package need be importable here)
build = runpy.run_path(os.path.join(HERE, 'mmloss_ext', 'kernels', 'build.py'))


def _extensions():
    if build['setup_disabled']():
        return {}, []
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        print('[mmloss_ext] torch is not importable in this build (pip build isolation?): the fused CPU kernels '
              'are compiled on first use instead (`pip install --no-build-isolation .` builds them now)',
              file=sys.stderr)
        return {}, []

    class OptionalBuild(BuildExtension):
        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as err:  # noqa: BLE001 - any compiler failure leaves the eager paths
                print(f'[mmloss_ext] the fused CPU kernels were not built ({err}); the losses run eagerly',
                      file=sys.stderr)

    ext = CppExtension('mmloss_ext._fused', build['sources'](HERE), depends=build['depends'](HERE),
                       define_macros=build['macros'](), extra_compile_args=build['compile_args'](),
                       extra_link_args=build['link_args']())
    return {'build_ext': OptionalBuild}, [ext]


cmdclass, ext_modules = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
