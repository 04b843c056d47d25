"""Does streaming weights overlap the fused stack's exchanges? A Gluon microbenchmark, GPU only.

    PYTHONPATH=. python scripts/bench_stack_async.py            # prints us per round
    PYTHONPATH=. python scripts/bench_stack_async.py --compile  # sm_90 build check, no GPU

The fused stack kernel (`kernels/triton/stack.py`) loses its time where each phase waits
3-4 us for its first small input after a barrier, behind 32-64 KB of weights per SM that
Triton's loads bring in at ~2.2 TB/s in all (docs/generation.md). Its two exchanges a layer
cost ~2.4 us each (`bench_stack_sync.py`), so a 0.29 ms step needs the weights to stream
*while* the programs exchange. Triton places the waits of its asynchronous copies itself;
Gluon (`triton.experimental.gluon`) lets a kernel issue cp.async copies into shared memory
and wait for them where it chooses. 128 programs of 8 warps, --rounds rounds of:

    exchange             1024 floats added by every program, a grid barrier, a read of them
    weights, then exchange   64 KB of weights per program copied (cp.async) and waited for,
                         summed, then the exchange: serial
    weights ahead        the next round's 64 KB requested before this round's exchange and
                         waited for after it (two shared-memory buffers)

If "weights ahead" costs about what "exchange" does, the weights stream under the exchange
and a Gluon fused stack can approach 2 x 2.4 us a layer; if it costs what "weights, then
exchange" does, it cannot. Every round's weights are distinct memory (rounds x 8 MB), so
they come from HBM, not L2.
"""
from __future__ import annotations

import argparse
import statistics

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy

ROWS, COLS, WIDTH = 16, 2048, 1024      # 16 x 2048 bf16 = 64 KB a program, like in_proj's rows


@gluon.jit
def _exchange(vec_ptr, sem_ptr, i, WIDTH: gl.constexpr, vec_l: gl.constexpr):
    """WIDTH floats added by every program into round i's vector, a sense-reversing grid
    barrier (as `kernels/triton/stack._grid_barrier`), then the vector read back."""
    k = gl.arange(0, WIDTH, layout=vec_l)
    gl.atomic_add(vec_ptr + i * WIDTH + k, (gl.program_id(0) + k).to(gl.float32), sem="relaxed")
    gl.thread_barrier()
    expected = gl.num_programs(0).to(gl.uint32)
    add = gl.where(gl.program_id(0) == 0, 0x80000000 - (expected - 1), 1).to(gl.uint32)
    seen = gl.atomic_add(sem_ptr, add, sem="release")
    flipped = False
    while not flipped:
        now = gl.atomic_add(sem_ptr, 0, sem="acquire")
        flipped = ((seen ^ now) & 0x80000000) != 0
    gl.thread_barrier()
    return gl.load(vec_ptr + i * WIDTH + k, cache_modifier=".cg")


@gluon.jit
def stream_kernel(w_ptr, vec_ptr, sem_ptr, out_ptr, ROUNDS, MODE: gl.constexpr,
                  ROWS: gl.constexpr, COLS: gl.constexpr, WIDTH: gl.constexpr):
    """MODE 0: exchange only; 1: weights, then exchange; 2: weights a round ahead."""
    tile_l: gl.constexpr = gl.BlockedLayout([1, 8], [1, 32], [gl.num_warps(), 1], [1, 0])
    vec_l: gl.constexpr = gl.BlockedLayout([4], [32], [gl.num_warps()], [0])
    pid = gl.program_id(0)
    rows = gl.arange(0, ROWS, layout=gl.SliceLayout(1, tile_l))
    cols = gl.arange(0, COLS, layout=gl.SliceLayout(0, tile_l))
    offs = (pid * ROWS + rows)[:, None] * COLS + cols[None, :]
    stride = gl.num_programs(0) * ROWS * COLS                     # one round, every program
    smem = gl.allocate_shared_memory(gl.bfloat16, [2, ROWS, COLS],
                                     gl.SwizzledSharedLayout(8, 1, 1, [1, 0]))
    acc = gl.zeros([ROWS], gl.float32, layout=gl.SliceLayout(1, tile_l))
    seen = gl.zeros([WIDTH], gl.float32, layout=vec_l)
    if MODE == 2:
        async_copy.async_copy_global_to_shared(smem.index(0), w_ptr + offs)
        async_copy.commit_group()
    for i in range(ROUNDS):
        if MODE == 1:
            async_copy.async_copy_global_to_shared(smem.index(0), w_ptr + i * stride + offs)
            async_copy.commit_group()
            async_copy.wait_group(0)
            gl.thread_barrier()
            acc += gl.sum(smem.index(0).load(tile_l).to(gl.float32), axis=1)
            gl.thread_barrier()
        if MODE == 2:  # round i+1's weights (the first round's again after the last)
            async_copy.async_copy_global_to_shared(smem.index((i + 1) % 2),
                                                   w_ptr + ((i + 1) % ROUNDS) * stride + offs)
            async_copy.commit_group()
        seen += _exchange(vec_ptr, sem_ptr, i, WIDTH, vec_l)
        if MODE == 2:
            async_copy.wait_group(1)       # round i's copy (issued a round ago) has landed
            gl.thread_barrier()
            acc += gl.sum(smem.index(i % 2).load(tile_l).to(gl.float32), axis=1)
            gl.thread_barrier()            # read before round i+1 copies into the other buffer
    if MODE == 2:
        async_copy.wait_group(0)
    gl.store(out_ptr + pid * ROWS + rows, acc)
    gl.store(out_ptr + gl.num_programs(0) * ROWS + pid * WIDTH
             + gl.arange(0, WIDTH, layout=vec_l), seen)


def compile_sm90(mode: int):
    """The kernel built for sm_90 without a GPU (Triton's compiler and ptxas run anywhere)."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource
    fn = stream_kernel
    consts = dict(MODE=mode, ROWS=ROWS, COLS=COLS, WIDTH=WIDTH)
    types = dict(w_ptr="*bf16", vec_ptr="*fp32", sem_ptr="*u32", out_ptr="*fp32", ROUNDS="i32")
    sig = {n: "constexpr" if n in consts else types[n] for n in fn.arg_names}
    src = GluonASTSource(fn, sig, constexprs={(fn.arg_names.index(k),): v
                                              for k, v in consts.items()},
                         attrs={(i,): [["tt.divisibility", 16]] for i in range(4)})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})


def run(mode: int, programs: int, rounds: int, repeats: int) -> float:
    w = torch.randn(rounds * programs * ROWS * COLS, device="cuda").to(torch.bfloat16)
    vec = torch.zeros(rounds, WIDTH, device="cuda")
    sem = torch.zeros(1, dtype=torch.uint32, device="cuda")
    out = torch.empty(programs * (ROWS + WIDTH), device="cuda")
    times = []
    for _ in range(repeats + 1):
        vec.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        stream_kernel[(programs,)](w, vec, sem, out, rounds, MODE=mode, ROWS=ROWS, COLS=COLS,
                                   WIDTH=WIDTH, num_warps=8)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / rounds)
    seen = out[programs * ROWS:].view(programs, WIDTH)
    k = torch.arange(WIDTH, device="cuda", dtype=torch.float32)
    want = rounds * (programs * k + programs * (programs - 1) / 2)
    assert torch.allclose(seen, want.expand_as(seen)), "a read saw an incomplete sum"
    if mode:
        per_row = w.view(rounds, programs * ROWS, COLS).float().sum(-1).sum(0)
        torch.testing.assert_close(out[:programs * ROWS], per_row, rtol=1e-3, atol=1e-1)
    return statistics.median(times[1:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--programs", type=int, default=128)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", action="store_true",
                   help="only build the kernel for sm_90 and print its resources (no GPU)")
    a = p.parse_args(argv)
    names = ("exchange", "weights, then exchange", "weights ahead")
    if a.compile:
        for mode, name in enumerate(names):
            k = compile_sm90(mode)
            print(f"{name}: {k.metadata.shared} bytes of shared memory, "
                  f"{k.asm['ptx'].count('cp.async.cg') + k.asm['ptx'].count('cp.async.ca')} "
                  f"cp.async")
        return 0
    print(f"{torch.cuda.get_device_name()}, {a.programs} programs of 8 warps, {a.rounds} rounds, "
          f"{ROWS * COLS * 2 // 1024} KB of weights a program a round")
    print("| round | us |\n|---|---:|")
    for mode, name in enumerate(names):
        print(f"| {name} | {run(mode, a.programs, a.rounds, a.repeats):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
