#!/usr/bin/env python3
"""One forward and one backward of the Triton scan at the benchmark's workload, for a profiler.

    python scripts/scan_once.py --batch 1 --length 131072
    ncu --clock-control none --kernel-name regex:scan_ --launch-skip 2 --launch-count 2 \
        --section WarpStateStats --section SchedulerStats --section Occupancy \
        --section LaunchStats python scripts/scan_once.py

D=1536, N=16, bf16 inputs, softplus, shared B/C, as `bench_scan.py`. Runs the pair twice
(the first compiles), so `--launch-skip 2` profiles the second forward and backward. With
`--section SourceCounters` and `-o <report>`, `scripts/ncu_stalls.py` lists where each
kernel's loop waits, instruction by instruction.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scan import scan_inputs  # noqa: E402

from bytessm.kernels import selective_scan  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--length", type=int, default=131072)
    p.add_argument("--reverse", action="store_true")
    a = p.parse_args()
    args = scan_inputs(a.batch, a.length, grad=True)
    for _ in range(2):
        out = selective_scan(**args, reverse=a.reverse, backend="triton")
        out.float().sum().backward()
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
