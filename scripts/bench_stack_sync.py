"""What the fused stack kernel's synchronisation costs alone (`kernels/triton/stack.py`), on
a GPU: one program per 16 channels of the 353M model (128), 8 warps, `--iters` rounds of

    barrier                      the grid barrier alone
    atomics 1024 + barrier       every program adds 1024 floats into one vector (out_proj's
                                 partial sums), barrier, every program reads the vector
    stores 1024 + barrier        the same with plain stores (wrong sums: the cost without
                                 the atomics' same-address serialisation)
    atomics 96 + barrier         96 scalar floats (x_proj's sums), barrier, read

Each round uses its own vector (zeroed before the launch), so no round waits for another's
zeroing. Prints us per round (CUDA events over the whole launch, median of --repeats).

    PYTHONPATH=. python scripts/bench_stack_sync.py
"""
from __future__ import annotations

import argparse
import statistics

import torch
import triton
import triton.language as tl

from bytessm.kernels.triton.stack import _grid_barrier


@triton.jit
def sync_kernel(sem_ptr, buf_ptr, out_ptr, ITERS, WIDTH: tl.constexpr, MODE: tl.constexpr):
    """MODE 0: barrier only; 1: atomics of WIDTH floats, barrier, read; 2: stores, barrier,
    read."""
    k = tl.arange(0, WIDTH)
    part = (tl.program_id(0) + k).to(tl.float32)
    total = tl.zeros([WIDTH], tl.float32)
    for i in range(ITERS):
        row = buf_ptr + i * WIDTH + k
        if MODE == 1:
            tl.atomic_add(row, part, sem="relaxed")
        if MODE == 2:
            tl.store(row, part)
        _grid_barrier(sem_ptr, True)
        if MODE != 0:
            total += tl.load(row, cache_modifier=".cg")
    tl.store(out_ptr + tl.program_id(0) * WIDTH + k, total)


def run(mode: int, width: int, programs: int, iters: int, repeats: int) -> float:
    sem = torch.zeros(1, dtype=torch.uint32, device="cuda")
    buf = torch.zeros(iters, width, device="cuda")
    out = torch.empty(programs, width, device="cuda")
    times = []
    for _ in range(repeats + 1):
        buf.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        sync_kernel[(programs,)](sem, buf, out, iters, WIDTH=width, MODE=mode, num_warps=8)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / iters)
    return statistics.median(times[1:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--programs", type=int, default=128)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    print(f"{torch.cuda.get_device_name()}, {a.programs} programs of 8 warps, {a.iters} rounds")
    print("| round | us |\n|---|---:|")
    for name, mode, width in (("barrier", 0, 1024), ("atomics 1024 + barrier + read", 1, 1024),
                              ("stores 1024 + barrier + read", 2, 1024),
                              ("atomics 128 + barrier + read", 1, 128),
                              ("stores 128 + barrier + read", 2, 128)):
        print(f"| {name} | {run(mode, width, a.programs, a.iters, a.repeats):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
