"""`pad.pad_rows_kernel`, the copy of (batch, dim, length) rows into zero-padded rows that
`scan._pad` launches on CUDA, against the plain copy, in Triton's interpreter on the CPU
and on CUDA where there is one."""
from __future__ import annotations

import pytest
import torch

from bytessm.kernels.triton import scan
from bytessm.kernels.triton.configs import cdiv
from bytessm.kernels.triton.pad import pad_rows_kernel


def _reference(x: torch.Tensor, lp: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, lp - x.shape[-1]))


def _inputs(device):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 40, 75, generator=g).to(device=device, dtype=torch.bfloat16)
    return {
        "contiguous": base[:, :5, :61].contiguous(),            # odd rows
        "row view": base[:, 3:8, 7:68],                          # rows start at odd positions
        "channels last": base[:, :5, :61].transpose(1, 2).contiguous().transpose(1, 2),
        "float32": base[:2, :4, :33].float(),
    }


@pytest.mark.parametrize("name", ["contiguous", "row view", "channels last", "float32"])
def test_kernel_pads_like_the_plain_copy(name):
    """The kernel itself (on CPU tensors in the interpreter without CUDA), several blocks a
    row."""
    x = _inputs("cuda" if torch.cuda.is_available() else "cpu")[name]
    lp = scan.row_length(x.shape[-1])
    out = torch.full((*x.shape[:-1], lp), float("nan"), dtype=x.dtype, device=x.device)
    block = 16     # the last block of a row partly past lp
    pad_rows_kernel[(x.shape[0] * x.shape[1] * cdiv(lp, block),)](
        x, out, x.shape[1], x.shape[-1], lp, *x.stride(), BLOCK=block)
    assert torch.equal(out, _reference(x, lp))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
@pytest.mark.parametrize("name", ["contiguous", "row view", "channels last", "float32"])
def test_pad_on_cuda(name):
    x = _inputs("cuda")[name]
    lp = scan.row_length(x.shape[-1])
    assert torch.equal(scan._pad(x, lp), _reference(x, lp))
