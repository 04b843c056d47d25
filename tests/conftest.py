"""Test setup shared by every test module.

Without CUDA, the Triton kernels run in Triton's interpreter: TRITON_INTERPRET must be
set before any kernel module is imported, which is why it is set here, at collection.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
