"""The Gluon forward (`kernels/triton/scan_fwd_gluon.py`): compiled for sm_90 on any machine
(registers, the loop's shuffles), and on CUDA against the Triton forward it stands in for:
output, last state, the states it saves for the backward, and the gradients through them."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from bytessm.kernels.triton import configs, scan

W = configs.TUNED.gluon_fwd   # warps per channel


def test_compiles_without_spills_to_one_scan_across_lanes_per_state():
    """`scan_registers.py` compiles what an H200 launches at 1x4096: the Gluon forward, W
    warps a channel, in few enough registers that 3072 two-warp channels' warps stay
    resident (at most 80 registers: 24 warps an SM), no spills; its only shuffles are the
    scan across the lanes (5 steps of 2) and the gather of the lane before."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).resolve().parents[2] / "scripts" / "scan_registers.py"
    out = subprocess.run([sys.executable, str(script), "--shapes", "1x4096"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    line = [x for x in out.stdout.splitlines() if "forward (Gluon) full pass" in x]
    assert len(line) == 1, out.stdout
    m = re.search(rf"grid \(1536,\), chunk 256, 1 channel\(s\) x {W} warp\(s\): (\d+) registers, "
                  r"(\d+) bytes spilled, (\d+) shuffles", line[0])
    assert m, line[0]
    registers, spilled, shuffles = (int(v) for v in m.groups())
    assert registers <= 80 and spilled == 0 and shuffles == 11, line[0]


def test_applies_only_on_cuda_in_scan_order(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cfg = configs.TUNED        # scan_config's is the interpreter's here
    cpu = torch.empty(1, 1536, 4096)
    cuda = types.SimpleNamespace(is_cuda=True, shape=cpu.shape)
    assert scan._gluon_forward(cfg, cpu, False, False, 1, 4096, 16) == 0
    assert scan._gluon_forward(cfg, cuda, False, False, 1, 4096, 16) == W
    assert scan._gluon_forward(cfg, cuda, True, False, 1, 4096, 16) == 0      # reverse
    assert scan._gluon_forward(cfg, cuda, False, True, 1, 4096, 16) == 0      # cu_seqlens
    assert scan._gluon_forward(cfg, cuda, False, False, 2, 4096, 16) == 0     # segments
    assert scan._gluon_forward(cfg, cuda, False, False, 1, 4096, 15) == 0     # dstate % W
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert scan._gluon_forward(cfg, cuda, False, False, 1, 4096, 16) == 0     # interpreter


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _run(monkeypatch, overrides: str, batch, dim, length, groups, h0, z_and_d):
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", overrides)
    g = torch.Generator(device="cuda").manual_seed(0)

    def r(*s, scale=1.0):
        return torch.randn(*s, device="cuda", generator=g) * scale
    u, z = r(batch, dim, length).bfloat16(), r(batch, dim, length).bfloat16()
    delta = (r(batch, dim, length, scale=0.5) - 2).bfloat16()
    bc = (batch, groups, 16, length) if groups > 1 else (batch, 16, length)
    B, C = r(*bc).bfloat16(), r(*bc).bfloat16()
    A = -torch.rand(dim, 16, device="cuda", generator=g) - 0.5
    D, bias = r(dim), r(dim, scale=0.1)
    if not z_and_d:
        z = D = None
    hs = r(batch, dim, 16) if h0 else None
    args = (u, delta, A, B, C, D, z, bias)
    out, last, states = scan.scan_forward(*args, hs, None, True, False)
    dout = r(*out.shape).bfloat16()
    dlast = r(*last.shape)
    grads = scan.scan_backward(dout, dlast, *args, hs, None, states, True, False)
    return (out, last, states) + tuple(grads)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("batch, dim, length, groups, h0, z_and_d", [
    (2, 768, 2048, 1, False, True),
    (2, 768, 1000, 2, True, True),    # rows padded to 1008, 2 groups, initial state
    (1, 1536, 4097, 1, True, False),  # one position past 16 chunks, no z, no D
])
def test_matches_the_triton_forward(monkeypatch, batch, dim, length, groups, h0, z_and_d):
    u = torch.empty(batch, dim, length, device="cuda")
    cfg = configs.scan_config(16, length)
    assert scan._gluon_forward(cfg, u, False, False, 1, scan.bc_row_length(length), 16) == W
    gluon = _run(monkeypatch, "", batch, dim, length, groups, h0, z_and_d)
    triton_ = _run(monkeypatch, '{"gluon_fwd": 0}', batch, dim, length, groups, h0, z_and_d)
    names = ("out", "last_state", "states", "du", "ddelta", "dA", "dB", "dC", "dD", "dz",
             "ddelta_bias", "dinitial_state")
    for name, x, y in zip(names, gluon, triton_):
        if y.numel():
            err = ((x.double() - y.double()).norm() / y.double().norm()).item()
            assert err < (5e-3 if x.dtype == torch.bfloat16 else 1e-4), (name, err)
