"""What the environment under test has, for the tests that need it (see conftest.py's markers)."""
import importlib.util

import torch


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


#: mmcv with its compiled ops (``mmcv._ext``); mmcv-lite, as installed beside torch 2.1's mmdet in
#: the compatibility run, has none
MMCV_OPS = has_module('mmcv._ext')
#: Triton's CPU interpreter (``TRITON_INTERPRET=1``, triton 3.0+), which runs the CUDA kernels on
#: CPU tensors here; or a GPU
TRITON_INTERPRETER = torch.cuda.is_available() or has_module('triton.runtime.interpreter')
