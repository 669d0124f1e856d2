import os

import pytest
import torch

# without a GPU the Triton kernels run in Triton's CPU interpreter; read when they are decorated,
# so before anything imports mmloss_ext.kernels.gpu
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')
os.environ.setdefault('OMP_NUM_THREADS', '2')
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def gen():
    """A seeded generator: every test draws its random inputs from it."""
    return torch.Generator().manual_seed(0)


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: end-to-end training runs (still part of make test)')
