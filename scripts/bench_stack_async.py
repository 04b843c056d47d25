"""Does streaming weights overlap the fused stack's exchanges? A Gluon microbenchmark, GPU only.

    PYTHONPATH=. python scripts/bench_stack_async.py            # prints us per round
    PYTHONPATH=. python scripts/bench_stack_async.py --compile  # sm_90 build check, no GPU

The fused stack kernel (`kernels/triton/stack.py`) loses its time where each phase waits
3-4 us for its first small input after a barrier, behind 32-64 KB of weights per SM that
Triton's loads bring in at ~2.2 TB/s in all (docs/generation.md). Its two exchanges a layer
cost ~2.4 us each (`bench_stack_sync.py`), so a 0.29 ms step needs the weights to stream
*while* the programs exchange. Triton places the waits of its asynchronous copies itself;
Gluon (`triton.experimental.gluon`) lets a kernel issue asynchronous copies into shared
memory and wait for them where it chooses. 128 programs of 8 warps, --rounds rounds of:

    exchange                 1024 floats added by every program, a grid barrier, a read
    weights, then exchange   --rows x 2048 bf16 of weights per program (64 KB at 16 rows)
                             copied with cp.async and waited for, summed, then the exchange
    weights ahead            the next round's weights (cp.async) requested before this
                             round's exchange and waited for after it (two buffers)
    ... after the arrival    the same, requested after this program's release-arrival at the
                             barrier and before its wait (a release may wait for the copies)
    TMA weights ahead        the next round's weights as TMA boxes (the async proxy, completed
                             on an mbarrier), requested before the exchange
    TMA weights, then exchange   serial, for TMA's own bandwidth

If a "weights ahead" row costs about what "exchange" does, the weights stream under the
exchange and a Gluon fused stack can approach 2 x 2.4 us a layer; if it costs what "weights,
then exchange" does, it cannot. Every round's weights are distinct memory (rounds x 8 MB at
16 rows), so they come from HBM, not L2. results/bench_stack/async.md has the H200's answer.
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma

ROWS, COLS, WIDTH = 16, 2048, 1024      # 16 x 2048 bf16 = 64 KB a program, like in_proj's rows


@gluon.jit
def _arrive(vec_ptr, sem_ptr, i, WIDTH: gl.constexpr, vec_l: gl.constexpr):
    """WIDTH floats added by every program into round i's vector, then this program's arrival
    at a sense-reversing grid barrier (as `kernels/triton/stack._grid_barrier`)."""
    k = gl.arange(0, WIDTH, layout=vec_l)
    gl.atomic_add(vec_ptr + i * WIDTH + k, (gl.program_id(0) + k).to(gl.float32), sem="relaxed")
    gl.thread_barrier()
    expected = gl.num_programs(0).to(gl.uint32)
    add = gl.where(gl.program_id(0) == 0, 0x80000000 - (expected - 1), 1).to(gl.uint32)
    return gl.atomic_add(sem_ptr, add, sem="release")


@gluon.jit
def _wait(vec_ptr, sem_ptr, seen, i, WIDTH: gl.constexpr, vec_l: gl.constexpr):
    """The barrier's wait (the sign bit flips once every program arrived), then round i's
    vector read back."""
    flipped = False
    while not flipped:
        now = gl.atomic_add(sem_ptr, 0, sem="acquire")
        flipped = ((seen ^ now) & 0x80000000) != 0
    gl.thread_barrier()
    return gl.load(vec_ptr + i * WIDTH + gl.arange(0, WIDTH, layout=vec_l), cache_modifier=".cg")


@gluon.jit
def _sum_boxes(smem, first, ROWS: gl.constexpr, CHUNKS: gl.constexpr, tile_l: gl.constexpr,
               rows_l: gl.constexpr):
    """Row sums of the TMA boxes smem[first:first+CHUNKS] (each ROWS x 256)."""
    acc = gl.zeros([ROWS], gl.float32, layout=rows_l)
    for j in gl.static_range(CHUNKS):
        acc += gl.sum(smem.index(first + j).load(tile_l).to(gl.float32), axis=1)
    return acc


@gluon.jit
def _tma_round(desc, smem, bar, row, first, ROWS: gl.constexpr, BOX: gl.constexpr,
               CHUNKS: gl.constexpr):
    """One round's ROWS x COLS weights as CHUNKS TMA boxes into smem[first:first+CHUNKS],
    completing `bar` when all have landed."""
    mbarrier.expect(bar, CHUNKS * ROWS * BOX * 2)
    for j in gl.static_range(CHUNKS):
        tma.async_copy_global_to_shared(desc, [row, j * BOX], bar, smem.index(first + j))


@gluon.jit
def _ws_producer(desc, smem, full, empty, ROUNDS, ROWS: gl.constexpr, BOX: gl.constexpr,
                 CHUNKS: gl.constexpr):
    """Warp-specialized mode's loader (one warp): each round's weights as TMA boxes into
    buffer round % 2, once the consumers have emptied it."""
    row0 = gl.program_id(0) * ROWS
    stride_rows = gl.num_programs(0) * ROWS
    for i in range(ROUNDS):
        b = i % 2
        mbarrier.wait(empty.index(b), ((i // 2) % 2) ^ 1)   # a fresh barrier passes parity 1
        _tma_round(desc, smem, full.index(b), row0 + i * stride_rows, b * CHUNKS, ROWS, BOX,
                   CHUNKS)


@gluon.jit
def _ws_consumer(vec_ptr, sem_ptr, out_ptr, smem, full, empty, ROUNDS, ROWS: gl.constexpr,
                 CHUNKS: gl.constexpr, WIDTH: gl.constexpr):
    """Warp-specialized mode's compute warps: the exchange, then round i's weights summed
    from buffer i % 2 (waited for on its mbarrier) and the buffer handed back. They issue no
    global load of the weights, so their release at the barrier has none to wait for."""
    tile_l: gl.constexpr = gl.BlockedLayout([1, 8], [1, 32], [gl.num_warps(), 1], [1, 0])
    vec_l: gl.constexpr = gl.BlockedLayout([4], [32], [gl.num_warps()], [0])
    rows_l: gl.constexpr = gl.SliceLayout(1, tile_l)
    acc = gl.zeros([ROWS], gl.float32, layout=rows_l)
    seen = gl.zeros([WIDTH], gl.float32, layout=vec_l)
    for i in range(ROUNDS):
        arrived = _arrive(vec_ptr, sem_ptr, i, WIDTH, vec_l)
        seen += _wait(vec_ptr, sem_ptr, arrived, i, WIDTH, vec_l)
        b = i % 2
        mbarrier.wait(full.index(b), (i // 2) % 2)
        acc += _sum_boxes(smem, b * CHUNKS, ROWS, CHUNKS, tile_l, rows_l)
        gl.thread_barrier()                 # every consumer warp has read the buffer
        mbarrier.arrive(empty.index(b), count=1)
    pid = gl.program_id(0)
    gl.store(out_ptr + pid * ROWS + gl.arange(0, ROWS, layout=rows_l), acc)
    gl.store(out_ptr + gl.num_programs(0) * ROWS + pid * WIDTH
             + gl.arange(0, WIDTH, layout=vec_l), seen)


@gluon.jit
def stream_kernel(w_ptr, vec_ptr, sem_ptr, out_ptr, ROUNDS, MODE: gl.constexpr,
                  ROWS: gl.constexpr, COLS: gl.constexpr, WIDTH: gl.constexpr):
    """MODE 0: exchange only; 1: weights (cp.async), then exchange; 2: the next round's
    weights (cp.async) requested before the exchange; 3: requested after this program's
    arrival, before its wait; 4: the next round's weights as TMA boxes (async proxy) requested
    before the exchange; 5: TMA weights, then exchange; 6: warp-specialized, a one-warp TMA
    loader a round ahead of the compute warps that exchange (`_ws_producer`,
    `_ws_consumer`; unswizzled boxes)."""
    BOX: gl.constexpr = 256                                       # TMA box: <= 256 a dimension
    CHUNKS: gl.constexpr = COLS // BOX
    TMA: gl.constexpr = MODE == 4 or MODE == 5
    vec_l: gl.constexpr = gl.BlockedLayout([4], [32], [gl.num_warps()], [0])
    tile_l: gl.constexpr = gl.BlockedLayout([1, 8], [1, 32], [gl.num_warps(), 1], [1, 0])
    rows_l: gl.constexpr = gl.SliceLayout(1, tile_l)
    pid = gl.program_id(0)
    rows = gl.arange(0, ROWS, layout=rows_l)
    acc = gl.zeros([ROWS], gl.float32, layout=rows_l)
    seen = gl.zeros([WIDTH], gl.float32, layout=vec_l)
    if MODE == 6:
        flat_l: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=16,
                                                    rank=2)
        wdesc = tma.make_tensor_descriptor(w_ptr, shape=[ROUNDS * gl.num_programs(0) * ROWS,
                                                         COLS],
                                           strides=[COLS, 1], block_shape=[ROWS, BOX],
                                           layout=flat_l)
        wsmem = gl.allocate_shared_memory(gl.bfloat16, [2 * CHUNKS, ROWS, BOX], flat_l)
        full = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
        empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
        for b in gl.static_range(2):
            mbarrier.init(full.index(b), count=1)
            mbarrier.init(empty.index(b), count=1)
        gl.warp_specialize([(_ws_consumer, (vec_ptr, sem_ptr, out_ptr, wsmem, full, empty,
                                            ROUNDS, ROWS, CHUNKS, WIDTH)),
                            (_ws_producer, (wdesc, wsmem, full, empty, ROUNDS, ROWS, BOX,
                                            CHUNKS))], [1], [40])
        return
    if TMA:
        box_l: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16,
                                                   rank=2)
        desc = tma.make_tensor_descriptor(w_ptr, shape=[ROUNDS * gl.num_programs(0) * ROWS, COLS],
                                          strides=[COLS, 1], block_shape=[ROWS, BOX],
                                          layout=box_l)
        smem = gl.allocate_shared_memory(gl.bfloat16, [2 * CHUNKS, ROWS, BOX], box_l)
        bars = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
        mbarrier.init(bars.index(0), count=1)
        mbarrier.init(bars.index(1), count=1)
        gl.thread_barrier()
        row0 = pid * ROWS
        stride_rows = gl.num_programs(0) * ROWS
        if MODE == 4:
            _tma_round(desc, smem, bars.index(0), row0, 0, ROWS, BOX, CHUNKS)
        for i in range(ROUNDS):
            if MODE == 5:
                _tma_round(desc, smem, bars.index(0), row0 + i * stride_rows, 0, ROWS, BOX, CHUNKS)
                mbarrier.wait(bars.index(0), i % 2)
                acc += _sum_boxes(smem, 0, ROWS, CHUNKS, tile_l, rows_l)
                gl.thread_barrier()
            else:
                _tma_round(desc, smem, bars.index((i + 1) % 2),
                           row0 + ((i + 1) % ROUNDS) * stride_rows, ((i + 1) % 2) * CHUNKS,
                           ROWS, BOX, CHUNKS)
            arrived = _arrive(vec_ptr, sem_ptr, i, WIDTH, vec_l)
            seen += _wait(vec_ptr, sem_ptr, arrived, i, WIDTH, vec_l)
            if MODE == 4:
                mbarrier.wait(bars.index(i % 2), (i // 2) % 2)
                acc += _sum_boxes(smem, (i % 2) * CHUNKS, ROWS, CHUNKS, tile_l, rows_l)
                gl.thread_barrier()        # read before round i+1 copies into this buffer
        if MODE == 4:
            mbarrier.wait(bars.index(ROUNDS % 2), (ROUNDS // 2) % 2)
    else:
        cols = gl.arange(0, COLS, layout=gl.SliceLayout(0, tile_l))
        offs = (pid * ROWS + rows)[:, None] * COLS + cols[None, :]
        stride = gl.num_programs(0) * ROWS * COLS                 # one round, every program
        smem = gl.allocate_shared_memory(gl.bfloat16, [2, ROWS, COLS],
                                         gl.SwizzledSharedLayout(8, 1, 1, [1, 0]))
        if MODE >= 2:
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
            nxt = w_ptr + ((i + 1) % ROUNDS) * stride + offs  # the first round's after the last
            if MODE == 2:
                async_copy.async_copy_global_to_shared(smem.index((i + 1) % 2), nxt)
                async_copy.commit_group()
            arrived = _arrive(vec_ptr, sem_ptr, i, WIDTH, vec_l)
            if MODE == 3:
                async_copy.async_copy_global_to_shared(smem.index((i + 1) % 2), nxt)
                async_copy.commit_group()
            seen += _wait(vec_ptr, sem_ptr, arrived, i, WIDTH, vec_l)
            if MODE >= 2:
                async_copy.wait_group(1)   # round i's copy (issued a round ago) has landed
                gl.thread_barrier()
                acc += gl.sum(smem.index(i % 2).load(tile_l).to(gl.float32), axis=1)
                gl.thread_barrier()        # read before round i+1 copies into this buffer
        if MODE >= 2:
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


def run(mode: int, programs: int, rounds: int, repeats: int, rows: int = ROWS) -> float:
    w = torch.randn(rounds * programs * rows * COLS, device="cuda").to(torch.bfloat16)
    vec = torch.zeros(rounds, WIDTH, device="cuda")
    sem = torch.zeros(1, dtype=torch.uint32, device="cuda")
    out = torch.empty(programs * (rows + WIDTH), device="cuda")
    # in-kernel TMA descriptors live in a global scratch buffer that Triton asks for
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8,
                                                                 device="cuda"))
    times = []
    for _ in range(repeats + 1):
        vec.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        stream_kernel[(programs,)](w, vec, sem, out, rounds, MODE=mode, ROWS=rows, COLS=COLS,
                                   WIDTH=WIDTH, num_warps=8)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / rounds)
    seen = out[programs * rows:].view(programs, WIDTH)
    k = torch.arange(WIDTH, device="cuda", dtype=torch.float32)
    want = rounds * (programs * k + programs * (programs - 1) / 2)
    assert torch.allclose(seen, want.expand_as(seen)), "a read saw an incomplete sum"
    if mode:
        per_row = w.view(rounds, programs * rows, COLS).float().sum(-1).sum(0)
        torch.testing.assert_close(out[:programs * rows], per_row, rtol=1e-3, atol=1e-1)
    return statistics.median(times[1:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--programs", type=int, default=128)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rows", type=int, nargs="+", default=[ROWS, ROWS // 2],
                   help="weight rows of 2048 bf16 per program and round (16 = 64 KB; at least "
                        "8: the TMA kernels' register tile has 8 rows)")
    p.add_argument("--compile", action="store_true",
                   help="only build the kernel for sm_90 and print its resources (no GPU)")
    a = p.parse_args(argv)
    names = ("exchange", "weights, then exchange", "weights ahead",
             "weights ahead, requested after the arrival", "TMA weights ahead",
             "TMA weights, then exchange", "warp-specialized TMA loader ahead")
    if a.compile:
        for mode, name in enumerate(names):
            k = compile_sm90(mode)
            print(f"{name}: {k.metadata.shared} bytes of shared memory, "
                  f"{k.asm['ptx'].count('cp.async.cg') + k.asm['ptx'].count('cp.async.ca')} "
                  f"cp.async, {k.asm['ptx'].count('cp.async.bulk.tensor')} TMA copies")
        return 0
    print(f"{torch.cuda.get_device_name()}, {a.programs} programs of 8 warps, {a.rounds} rounds; "
          f"us per round, by weights a program a round\n")
    print("| round | " + " | ".join(f"{r * COLS * 2 // 1024} KB" for r in a.rows) + " |")
    print("|---|" + "---:|" * len(a.rows))
    for mode, name in enumerate(names):
        cells = []
        for rows in a.rows:
            try:
                cells.append(f"{run(mode, a.programs, a.rounds, a.repeats, rows):.2f}")
            except Exception as e:  # one configuration that does not build keeps its row
                print(f"[bench_stack_async] {name}, {rows} rows: {type(e).__name__}: "
                      f"{str(e).strip().splitlines()[-1][:200]}", file=sys.stderr)
                cells.append("failed")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
