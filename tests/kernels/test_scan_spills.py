"""Spills of the Triton backward where CUDA runs it (cu_seqlens, reverse), compiled for sm_90
by `scripts/scan_registers.py` on any machine. A guard for a measured regression: taking its
chunk epilogue's sigmoids through exp2 (as the Gluon kernel does) made the one-channel
backward spill 40 bytes instead of 12 at 1x16K in 4 sequences, and it took 1.04-1.05x the
time on an H200 (twenty-second session, `bench_scan_ab.py --seqs 4`)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "scan_registers.py"


def _backward_spills(*args: str) -> list[int]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if "backward full pass" in line]
    assert lines, out.stdout
    return [int(re.search(r"(\d+) bytes spilled", line).group(1)) for line in lines]


def test_packed_backward_spills_no_more_than_measured():
    # 1x16384 in 4 sequences: one channel per one-warp program, capped at 168 registers
    assert _backward_spills("--shapes", "1x16384", "--seqs", "4") == [12]
