import os

import pytest
import torch

os.environ.setdefault('OMP_NUM_THREADS', '2')
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def gen():
    """A seeded generator: every test draws its random inputs from it."""
    return torch.Generator().manual_seed(0)


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: end-to-end training runs (still part of make test)')
