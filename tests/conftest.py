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


# Under pytest-xdist (the README's `-n auto`) each worker is a process of its own: give each
# its share of the cores, so that the workers' torch thread pools do not oversubscribe them
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _workers))
