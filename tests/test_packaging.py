"""The package's metadata (pyproject.toml), its C++ sources and the lowest Python it claims."""
import fnmatch
import os
import re
import subprocess
import sys
import tomllib

import pytest

import mmloss_ext
from mmloss_ext.kernels import build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYPROJECT = os.path.join(ROOT, 'pyproject.toml')
pytestmark = pytest.mark.skipif(not os.path.exists(PYPROJECT), reason='an installed copy: no pyproject.toml beside it')


@pytest.fixture(scope='module')
def project():
    with open(PYPROJECT, 'rb') as f:
        return tomllib.load(f)


def test_requires_python_is_the_lowest_version_vermin_confirms(project):
    # `.long()` (torch's Tensor method) reads to vermin as Python 2's `long`: that rule is excluded
    proc = subprocess.run([sys.executable, '-c', 'import sys, vermin; sys.exit(vermin.main())', '--no-tips', '--eval-annotations', '--exclude', 'long',
                           os.path.join(ROOT, 'mmloss_ext')], capture_output=True, text=True, timeout=300)
    found = re.search(r'Minimum required versions: (3\.\d+)', proc.stdout)
    assert found, proc.stdout + proc.stderr
    assert project['project']['requires-python'] == f'>={found.group(1)}'


def test_dependencies_name_torch_without_pinning_it_and_nothing_of_openmmlab(project):
    deps = project['project']['dependencies']
    assert 'torch>=2.1' in deps
    assert not [d for d in deps if re.match(r'(mmcv|mmdet|mmengine)\b', d)]
    extras = project['project']['optional-dependencies']
    assert {'mmdet', 'tests'} <= set(extras)
    assert not [d for d in extras['mmdet'] if d.startswith('mmcv')]  # the user's, as OpenMMLab instructs


def test_the_version_and_the_console_script(project):
    assert project['tool']['setuptools']['dynamic']['version'] == {'attr': 'mmloss_ext.__version__'}
    module, func = project['project']['scripts']['mmloss-ext'].split(':')
    assert module == 'mmloss_ext.__main__' and func == 'main'
    proc = subprocess.run([sys.executable, '-c', 'import sys; from mmloss_ext.__main__ import main; '
                           'sys.exit(main(["list", "--family", "image"]))'], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and 'SSIMLoss' in proc.stdout, proc.stderr


def _cpp_files_on_disk():
    """Every C++ file under kernels/, relative to it."""
    kernels = os.path.dirname(mmloss_ext.kernels.__file__)
    return sorted(os.path.relpath(os.path.join(folder, name), kernels) for folder, _, names in os.walk(kernels)
                  for name in names if name.endswith(('.cpp', '.h')))


def test_every_cpp_source_is_built_and_shipped(project):
    assert build.KERNELS == os.path.dirname(mmloss_ext.kernels.__file__)
    on_disk = _cpp_files_on_disk()
    assert 'cpp/module.cpp' in on_disk and 'cpp/abi.h' in on_disk
    # every C++ file is compiled or a dependency of the build (the JIT build's digest included)
    headers = [f for f in build.depends() if f != build.ABI_PY]
    assert build.ABI_PY in build.depends()
    assert sorted(os.path.relpath(f, build.KERNELS) for f in build.sources() + headers) == on_disk
    assert build.sources()[0] == build.MODULE_CPP
    shipped = project['tool']['setuptools']['package-data']['mmloss_ext.kernels']
    for name in on_disk:  # an install without the extension compiles them on first use
        assert any(fnmatch.fnmatch(name, pattern) for pattern in shipped), name


def test_every_op_is_its_own_folder_and_registers_itself_once():
    # kernels/<op>/<op>.cpp adds its functions with MMLOSS_REGISTER_OP (cpp/registry.h); the JIT build
    # names objects by basename, so the basenames differ
    ops = build.sources()[1:]
    assert len({os.path.basename(f) for f in build.sources()}) == len(build.sources())
    assert {'elementwise', 'boxes', 'cross_entropy', 'dice', 'gaussian_focal', 'ghmc'} <= {
        os.path.basename(os.path.dirname(f)) for f in ops}
    for path in ops:
        assert os.path.basename(path) == os.path.basename(os.path.dirname(path)) + '.cpp', path
        with open(path) as f:
            text = f.read()
        assert len(re.findall(r'^MMLOSS_REGISTER_OP\(\w+\);$', text, re.M)) == 1, path
        assert 'PYBIND11_MODULE' not in text and '#include "../cpp/registry.h"' in text, path
    with open(build.MODULE_CPP) as f:
        module = f.read()
    assert 'PYBIND11_MODULE' in module and 'registered_ops()' in module


def test_the_build_flags_define_every_kernel_constant():
    defined = dict(flag[2:].split('=', 1) for flag in build.define_flags())
    assert defined == dict(build.macros())
    assert defined['MMLOSS_ABI'] == str(__import__('mmloss_ext.core.abi', fromlist=['ABI']).ABI)
