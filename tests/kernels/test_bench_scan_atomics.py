"""`scripts/bench_scan_atomics.py`: its Triton kernel's sums (interpreter or GPU), and its
Gluon kernel as compiled for sm_90 on any machine: one barrier per state, whole-vector adds."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kernel_helpers import gluon_ptx

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))
import bench_scan_atomics as bench  # noqa: E402


def test_triton_rows_add_every_channel():
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dim, length, n = 3, 2 * bench.CHUNK, 4
    x = torch.randn(dim, length, device=dev).to(torch.bfloat16)
    dB = torch.zeros(n, length, device=dev)
    dC = torch.zeros_like(dB)
    bench.run("triton", x, dB, dC, n)
    s = torch.arange(n, device=dev, dtype=torch.float32)[:, None]
    col = x.float().sum(0)[None, :]
    torch.testing.assert_close(dB, col * s, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dC, col + dim * s, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("warps, vector", [(2, "v4"), (4, "v2")])
def test_gluon_sum_has_one_barrier_per_state(warps, vector):
    sig = {"x_ptr": "*bf16", "dB_ptr": "*fp32", "dC_ptr": "*fp32", "L": "i32", "N": "i32",
           "CHUNK": "constexpr", "W": "constexpr"}
    ptx = gluon_ptx("bench_scan_atomics", "rows_gluon", sig, {"CHUNK": bench.CHUNK, "W": warps},
                    aligned=("x_ptr", "dB_ptr", "dC_ptr", "L"), path=(SCRIPTS,),
                    num_warps=warps)
    assert ptx.count("bar.sync") == 2          # the loop body takes two states
    assert "shfl" not in ptx                   # the sum goes through shared memory only
    adds = re.findall(r"(?:red|atom)\.global\.[a-z.]*add\.(v\d)\.f32", ptx)
    assert adds and set(adds) == {vector}, adds


@pytest.mark.parametrize("args, message", [
    (["--lengths", "1000"], "--lengths must be multiples of 256"),
    (["--dim", "1537"], "--dim must be a multiple of every Gluon kind's warps"),
    (["--dstate", "15"], "--dstate must be even"),
])
def test_bad_arguments_are_refused(args, message):
    script = Path(bench.__file__)
    r = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and message in r.stderr, r.stderr
