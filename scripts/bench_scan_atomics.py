#!/usr/bin/env python3
"""What the backward scan's dB and dC atomics cost alone, and what summing channels across
warps before them could save: a measurement for issue 3's backward, on the GPU.

    python scripts/bench_scan_atomics.py [--lengths 131072,1048576] [--dim 1536] [--check]

The backward (`kernels/triton/scan_bwd.py`) adds, for every channel, state index and
position, one float32 to dB and one to dC: at 1x128K, D=1536, N=16, 6.4e9 atomic adds in
rows of 256 positions, 16-byte vectors per thread (on CUDA the Gluon backward,
`scan_bwd_gluon.py`, now sums two channels first). This script runs only that traffic:

- `triton`: the backward's pattern. One one-warp program per channel walks chunks of 256
  positions, loads a (256,) bf16 row of its channel once per chunk (8 positions a thread,
  as the backward's tiles) and, for each of N states, adds two rows computed from it to dB
  and dC (`tl.atomic_add`, relaxed): Triton converts the row to 4 positions a thread for
  the adds, with the same shuffles as in the backward.
- `gluon W`: W channels per program, one warp each (Gluon's explicit layouts). Per state
  each warp writes its two rows to shared memory (double-buffered by state parity: one
  barrier per state), then each warp sums all W channels over its 256 / W positions and
  adds them: W times fewer atomic adds, each 16 or 8 bytes a thread, whole 32-byte sectors.

The times bound what the backward can gain from summing across warps: if `triton` alone
takes most of the backward's time and `gluon 4` a quarter of it, a Gluon backward with one
warp per channel is worth writing; if the sum's barrier costs more than the atomics save,
it is not. `--check` compares dB and dC with torch's sums first (a short length).
Gluon kernels compile only for the GPU (not in Triton's interpreter).
"""
from __future__ import annotations

import argparse

import torch
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.testing import do_bench

CHUNK = 256


@triton.jit
def rows_triton(x_ptr, dB_ptr, dC_ptr, L, N, CHUNK: tl.constexpr):
    d = tl.program_id(0)
    k = tl.arange(0, CHUNK)
    for c in range(0, tl.cdiv(L, CHUNK)):
        t = c * CHUNK + k
        x = tl.load(x_ptr + d * L + t).to(tl.float32)
        for n in range(0, N):
            s = n * 1.0
            tl.atomic_add(dB_ptr + n * L + t, x * s, sem="relaxed")
            tl.atomic_add(dC_ptr + n * L + t, x + s, sem="relaxed")


@gluon.jit
def _sum_rows(x, s, n, buf_b, buf_c, dB_ptr, dC_ptr, L, cols: gl.constexpr):
    buf_b.store(x * s)
    buf_c.store(x + s)
    gl.thread_barrier()
    gl.atomic_add(dB_ptr + n * L, gl.sum(buf_b.load(cols), axis=0), sem="relaxed")
    gl.atomic_add(dC_ptr + n * L, gl.sum(buf_c.load(cols), axis=0), sem="relaxed")


@gluon.jit
def rows_gluon(x_ptr, dB_ptr, dC_ptr, L, N, CHUNK: gl.constexpr, W: gl.constexpr):
    # (W, CHUNK) tiles: warp w holds channel w's row, CHUNK // 32 positions a thread
    tile: gl.constexpr = gl.BlockedLayout([1, CHUNK // 32], [1, 32], [W, 1], [1, 0])
    # the same tile read back from shared memory: each thread holds all W rows of its
    # CHUNK // (32 W) positions, warp w the w-th W-th of the positions
    cols: gl.constexpr = gl.BlockedLayout([W, CHUNK // (32 * W)], [1, 32], [1, W], [1, 0])
    smem: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[1, 0])
    # two buffers each, for even and odd states: a warp writes state n + 1's rows while
    # another may still read state n's, so one barrier per state (after the writes) suffices
    b0 = gl.allocate_shared_memory(gl.float32, [W, CHUNK], smem)
    c0 = gl.allocate_shared_memory(gl.float32, [W, CHUNK], smem)
    b1 = gl.allocate_shared_memory(gl.float32, [W, CHUNK], smem)
    c1 = gl.allocate_shared_memory(gl.float32, [W, CHUNK], smem)
    d0 = gl.program_id(0) * W
    r = gl.arange(0, W, layout=gl.SliceLayout(1, tile))
    k = gl.arange(0, CHUNK, layout=gl.SliceLayout(0, tile))
    kc = gl.arange(0, CHUNK, layout=gl.SliceLayout(0, cols))
    for c in range(0, gl.cdiv(L, CHUNK)):
        t0 = c * CHUNK
        x = gl.load(x_ptr + (d0 + r)[:, None] * L + (t0 + k)[None, :]).to(gl.float32)
        db = dB_ptr + t0 + kc     # state 0's rows of the chunk
        dc = dC_ptr + t0 + kc
        for n in range(0, N, 2):   # N even
            _sum_rows(x, n.to(gl.float32), n, b0, c0, db, dc, L, cols)
            _sum_rows(x, (n + 1).to(gl.float32), n + 1, b1, c1, db, dc, L, cols)


def warps(kind: str) -> int:
    """Channels (warps) per program of a kind: "triton" 1, "gluon W" W."""
    return 1 if kind == "triton" else int(kind.split()[1])


def run(kind: str, x, dB, dC, n: int):
    dim, length = x.shape
    w = warps(kind)
    if kind == "triton":
        rows_triton[(dim,)](x, dB, dC, length, n, CHUNK=CHUNK, num_warps=1)
    else:
        rows_gluon[(dim // w,)](x, dB, dC, length, n, CHUNK=CHUNK, W=w, num_warps=w)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", default="131072,1048576")
    p.add_argument("--dim", type=int, default=1536)
    p.add_argument("--dstate", type=int, default=16)
    p.add_argument("--kinds", default="triton,gluon 2,gluon 4,gluon 8")
    p.add_argument("--check", action="store_true")
    a = p.parse_args()
    kinds = a.kinds.split(",")
    lengths = [int(v) for v in a.lengths.split(",")]
    widths = [warps(k) for k in kinds if k != "triton"]
    if a.dstate % 2:
        p.error(f"--dstate must be even (the Gluon kernels take the states two at a time), "
                f"got {a.dstate}")
    if any(a.dim % w for w in widths):
        p.error(f"--dim must be a multiple of every Gluon kind's warps {widths}, got {a.dim}")
    if any(n % CHUNK for n in lengths):
        p.error(f"--lengths must be multiples of {CHUNK} (the kernels load whole chunks), got "
                f"{a.lengths}")
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU (Gluon kernels do not run in Triton's interpreter)")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"triton {triton.__version__}; D={a.dim}, N={a.dstate}, chunk {CHUNK}")
    if a.check:
        x = torch.randn(a.dim, 4 * CHUNK, device="cuda").to(torch.bfloat16)
        s = torch.arange(a.dstate, device="cuda", dtype=torch.float32)[:, None]
        col = x.float().sum(0)[None, :]
        for kind in kinds:
            dB = torch.zeros(a.dstate, x.shape[1], device="cuda")
            dC = torch.zeros_like(dB)
            run(kind, x, dB, dC, a.dstate)
            err = max(((dB - col * s).norm() / (col * s).norm()).item(),
                      ((dC - (col + a.dim * s)).norm() / (col + a.dim * s).norm()).item())
            print(f"check {kind}: relative error {err:.1e}")
            if not err < 1e-4:
                raise SystemExit(f"check failed: {kind} sums are off by {err:.1e} (relative)")
    print("| length | kind | ms | atomic adds / s |")
    print("|---|---|---:|---:|")
    for length in lengths:
        x = torch.randn(a.dim, length, device="cuda").to(torch.bfloat16)
        dB = torch.zeros(a.dstate, length, device="cuda")
        dC = torch.zeros_like(dB)
        for kind in kinds:
            ms = do_bench(lambda: run(kind, x, dB, dC, a.dstate))
            adds = 2 * a.dim // warps(kind) * a.dstate * length
            print(f"| {length} | {kind} | {ms:.3f} | {adds / ms / 1e6:.3g}e9 |", flush=True)


if __name__ == "__main__":
    main()
