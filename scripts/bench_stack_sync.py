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
    PYTHONPATH=. python scripts/bench_stack_sync.py --smoke    # CPU interpreter, one program
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

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
        _grid_barrier(sem_ptr)
        if MODE != 0:
            total += tl.load(row, cache_modifier=".cg")
    tl.store(out_ptr + tl.program_id(0) * WIDTH + k, total)


def run(mode: int, width: int, programs: int, iters: int, repeats: int, device) -> float:
    """us per round; checks the reads: after round i every program has read the sum (or,
    with stores, one program's value) of round i's vector."""
    cuda = device.type == "cuda"
    sem = torch.zeros(1, dtype=torch.uint32, device=device)
    buf = torch.zeros(iters, width, device=device)
    out = torch.empty(programs, width, device=device)
    times = []
    for _ in range(repeats + 1):
        buf.zero_()
        t0 = time.perf_counter()
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        sync_kernel[(programs,)](sem, buf, out, iters, WIDTH=width, MODE=mode, num_warps=8)
        if cuda:
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e3 / iters)
        else:
            times.append((time.perf_counter() - t0) * 1e6 / iters)
    if mode == 1:  # every program read every round's complete sum
        k = torch.arange(width, device=device, dtype=torch.float32)
        want = iters * (programs * k + programs * (programs - 1) / 2)
        assert torch.allclose(out, want.expand_as(out)), "a read saw an incomplete sum"
    return statistics.median(times[1:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--programs", type=int, default=128)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="CPU interpreter: 1 program, 3 rounds")
    a = p.parse_args(argv)
    if a.smoke:
        a.programs, a.iters, a.repeats = 1, 3, 1
    device = torch.device("cuda" if torch.cuda.is_available() and not a.smoke else "cpu")
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("without a GPU: --smoke with TRITON_INTERPRET=1 set")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (interpreter)"
    print(f"{name}, {a.programs} programs of 8 warps, {a.iters} rounds")
    print("| round | us |\n|---|---:|")
    for name, mode, width in (("barrier", 0, 1024), ("atomics 1024 + barrier + read", 1, 1024),
                              ("stores 1024 + barrier + read", 2, 1024),
                              ("atomics 128 + barrier + read", 1, 128),
                              ("stores 128 + barrier + read", 2, 128)):
        us = run(mode, width, a.programs, a.iters, a.repeats, device)
        print(f"| {name} | {us:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
