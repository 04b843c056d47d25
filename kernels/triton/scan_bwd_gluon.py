"""Backward selective scan in Gluon: W channels per program on W warps, dB and dC summed
across the warps in shared memory before the atomic adds (CUDA only: Gluon kernels do not
run in Triton's interpreter, where `scan_bwd.py` computes the same gradients).

The math is `scan_bwd.py`'s (same monoids, same saved states, same hand-over of the adjoint
from chunk to chunk); what differs is the layout, which Gluon takes explicitly: warp w holds
channel w's (CHUNK,) row, CHUNK // 32 positions a thread. At one channel per one-warp
program the backward's dB/dC adds alone take 8.2 of its 10.3 ms at 1x128K on an H200, and
summed over four warps' channels 2.8 (`scripts/bench_scan_atomics.py`). Scope: no
cu_seqlens, B and C rows whole chunks; `scan.scan_backward` uses the Triton kernel
otherwise.

Reverse scans (REVERSE) run the same code on each chunk mirrored: logical position k is
position CHUNK - 1 - k of the chunk, so k runs in scan order, and the chunks are walked in
position order. Only the addresses change: the chunk's rows of u, delta, z, dout, du, ddelta
and dz are read and written one position a thread (once per chunk), and B, C, dB and dC,
read and added per state, are flipped copies in rows of LP = whole chunks
(`scan.scan_backward`), in which the mirrored chunk is ascending, so they stay vector loads
and adds. Where the grid gets the lower register cap (8x2K at d_inner 1536) the mirrored
walk spills and the Triton kernel runs instead. On an H200 (twenty-fifth session, against
the Triton kernel): 0.74x the reverse backward's time at 2x16K, 0.84x at 1x128K.

Segments: where batch x channels alone would leave the GPU short of warps (batch 1 at a
d_inner of 512, say), the chunks are split into segments as in `scan_bwd.py`: grid axis 1,
CPS chunks each. The Triton kernel's adjoint-only pass and the carry pass (`carry.py`) put
what arrives at each segment's end into `ends` (HAS_ENTER); this kernel starts each
segment's walk from there and leaves what reaches the segment's start in the same row.
At batch 1 on an H200 (twenty-fourth session, against the Triton kernel's segments at one
channel per program): 0.79x the backward's time at d_inner 512 and 1x128K (3.97 ms), 0.84x
at 1x1M, 0.69-0.83x at d_inner 256-768 from 1x8K to 1x128K.

The rows of u, delta, z and dout are read as they come, whatever their length: the layouts
are explicit, so an unaligned row only costs its loads their vectorisation (once per chunk,
against the loop over states), where the Triton kernels need rows padded to a multiple of
16 positions (`scan.py`), four copies of (batch, dim, length) alive through the backward.

Per state, each warp runs one dependent chain: exp2, the adjoint and the states over each
thread's 8 positions in registers, then one scan across the lanes of both recurrences'
group totals (`_scans`: 5 steps of 4 independent shuffles, where a scan for each waited 10
steps), then the dB/dC rows through shared memory. The grid holds too few warps to hide
that chain (1x128K: 1536 warps on 132 SMs, under 3 a scheduler; ncu on the four-channel
draft found an instruction issued every other cycle, stalls mostly short scoreboard), so
what shortens it pays: fusing the two scans took the kernel from 0.88x to 0.81x the Triton
backward's time at 1x128K, and adding each state's dA one state later, its shuffles across
the lanes behind the next state's work, to 0.78x.

Measured on an H200 (twenty-first session, `bench_scan_ab.py` against the Triton backward,
three interleaved rounds, the backward alone; `docs/benchmarks/scan.md` has the table):
0.985x at 8x2K, 0.77x at 2x16K, 0.78x at 1x128K, 0.81x at 1x1M, at two channels per program
and 168 registers where that costs the grid no wave (`scan._gluon_cap`), else 128. Four
channels per program measured 0.88-1.00x before the scans were fused, eight 0.95-1.20x;
two states an iteration, their rows summed after one barrier, 1.08-1.39x (without the
next state's early loads: long-scoreboard stalls from 0.6 to 3.0 cycles an instruction);
this loop unrolled by two, a buffer pair for each half so that one barrier a state goes
(301 instructions per state), 1.11-1.25x this kernel's time; dA summed across the lanes
once per program instead of once per state, and the row adds unmasked (299 instructions, no
branch), 0.98-1.12x: the tail it cut had hidden the next state's B/C row loads (ncu,
twenty-second session, `docs/benchmarks/scan.md`).
The loop over states: 325 instructions per state (sm_90a SASS, W=2, 168 registers; 28
shuffles, 2 barriers), against 402 for the Triton kernel at one channel per program; 314
with the two passes of `_scans_2p` (the default under the cap of 168: 0.98x the time).
The dB/dC rows go through shared memory without bank conflicts (`spread_rows`; thirty-third
session: ncu at 1x128K, store bank conflicts 208.3M -> 4.0M, store wavefronts 409.6M ->
205.3M, the loop still 314 instructions): 0.967x the backward's time at 8x2K, 0.956x at
16x8K (d_inner 1024), 0.965x reversed at 1x128K, 0.992x at 1x128K, 0.999x at 1x1M, 1.006x at
2x16K. With the rows staged that way, four channels per program (`configs.gluon_bwd`; 321
instructions a state, half the dB/dC adds) took 0.923-0.990x the time of two in scan order
(0.990x at 1x128K, 0.957x at 1x1M) but 1.040x reversed at 1x128K, where two stay
(`configs.gluon_bwd_reverse`). Read as float32 copies instead of bf16 (309 instructions a
state, no spill), B and C took the four-channel backward 1.04-1.14x the time.
After the barrier the rows of dB and of dC are read in one batch of loads, then summed and
added (thirty-fourth session; before, dC's loads waited behind dB's adds, two load latencies
a state): 320 instructions a state, 0.984x the backward's time at 1x128K, 0.980x at 2x16K,
0.988x at 8x2K, 0.990x at 1x1M, 0.991-0.992x reversed. Reading the previous state's rows
during this state's scans (their loads among its shuffles) took 0.995-1.070x the time; adding
them before this state's scans, 0.984-1.017x.
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from .common import LOG2E, load_dt, load_tile, sigmoid, store_chunk_grads


@gluon.jit
def _halves(v):
    """(..., 2k) -> its even and odd positions, (..., k) each."""
    return gl.split(gl.reshape(v, [v.shape[0], v.shape[1], v.shape[2] // 2, 2]))


@gluon.jit
def _unpack8(v):
    """(W, G, 8) -> its 8 positions, (W, G) each (splits of a thread's registers)."""
    e, o = _halves(v)                  # 0 2 4 6 | 1 3 5 7
    e0, e1 = _halves(e)                # 0 4 | 2 6
    o0, o1 = _halves(o)                # 1 5 | 3 7
    p0, p4 = gl.split(e0)
    p2, p6 = gl.split(e1)
    p1, p5 = gl.split(o0)
    p3, p7 = gl.split(o1)
    return p0, p1, p2, p3, p4, p5, p6, p7


@gluon.jit
def _positions8(v, W: gl.constexpr, G: gl.constexpr):
    """A (W, 8 G) tile whose threads hold 8 consecutive positions -> each thread's 8
    positions, (W, G) each (`_unpack8` of the tile as (W, G, 8), a renaming of registers)."""
    t3: gl.constexpr = gl.BlockedLayout([1, 1, 8], [1, 32, 1], [W, 1, 1], [2, 1, 0])
    return _unpack8(gl.convert_layout(gl.reshape(v, [W, G, 8]), t3, assert_trivial=True))


@gluon.jit
def _pack8(p0, p1, p2, p3, p4, p5, p6, p7):
    """The inverse of `_unpack8`: 8 (W, G) tensors -> (W, G, 8)."""
    e = gl.reshape(gl.join(gl.join(p0, p4), gl.join(p2, p6)), [p0.shape[0], p0.shape[1], 4])
    o = gl.reshape(gl.join(gl.join(p1, p5), gl.join(p3, p7)), [p0.shape[0], p0.shape[1], 4])
    return gl.reshape(gl.join(e, o), [p0.shape[0], p0.shape[1], 8])


@gluon.jit
def _two_pairs(a1, x1, m1, y1, a2, x2, m2, y2):
    """`pair_combine` of two independent pairs: one scan step shuffles both."""
    return a1 * a2, a2 * x1 + x2, m1 * m2, m2 * y1 + y2


@gluon.jit
def _across_lanes(r, s, m, y, g_end, W: gl.constexpr, G: gl.constexpr):
    """The scan across the lanes of both recurrences' group totals, (W, G) each, a group a
    thread: the states' decay over the group (r) and its state from zero (s); the adjoint's
    decay (m) and value (y) at the group's first position from inside it, so that what
    leaves group k through its first position is out_k = y_k + m_k out_{k+1}, with out
    after the last group g_end. Returns, in r's layout, what enters each group from its end
    (the adjoint, e) and from its start (the state, hk)."""
    lanes: gl.constexpr = gl.BlockedLayout([1, 1], [1, 32], [W, 1], [1, 0])
    # the adjoint's totals scanned in reverse group order, put there by a gather (a shuffle
    # a value) rather than Triton's reverse scan across lanes, which moves every value to
    # the mirrored lane and back; the scan wants a blocked layout, not t3's slice
    kk = gl.arange(0, G, layout=gl.SliceLayout(0, lanes))[None, :] + gl.zeros([W, G], gl.int32,
                                                                                lanes)
    rev = G - 1 - kk
    m = gl.gather(gl.convert_layout(m, lanes, assert_trivial=True), rev, 1)
    y = gl.gather(gl.convert_layout(y, lanes, assert_trivial=True), rev, 1)
    _r, hs, mi, yi = gl.associative_scan(
        (gl.convert_layout(r, lanes, assert_trivial=True),
         gl.convert_layout(s, lanes, assert_trivial=True), m, y), 1, _two_pairs)
    ge = gl.convert_layout(g_end, gl.SliceLayout(1, lanes), assert_trivial=True)[:, None]
    out = yi + mi * ge                   # what leaves group G - 1 - j, at j
    # what enters group k from its end: what leaves group k + 1 (at j = G - 2 - k), g_end
    # for the last group; from its start: the state at group k - 1's end, zero for the first
    e = gl.where(kk == G - 1, ge + 0.0 * out, gl.gather(out, gl.maximum(rev - 1, 0), 1))
    hk = gl.where(kk == 0, 0.0, gl.gather(hs, gl.maximum(kk - 1, 0), 1))
    return (gl.convert_layout(e, r.type.layout, assert_trivial=True),
            gl.convert_layout(hk, r.type.layout, assert_trivial=True))


@gluon.jit
def _scans(beta, f, x, g_end, W: gl.constexpr, CHUNK: gl.constexpr):
    """One state index over the chunk, both ways: the adjoint g_t = beta_t + f_{t+1} g_{t+1}
    (`reverse_adjoint_scan` of common.py), g_end arriving at the chunk's end, and the states
    h_t = f_t h_{t-1} + x_t from zero (the entering state is in x's first position). Each
    thread's 8 positions are chained in registers, then the lanes' totals of both
    recurrences go through one scan across the lanes: its steps shuffle four values that
    do not wait on each other, where two scans in a row wait twice as many steps."""
    G: gl.constexpr = CHUNK // 8
    b0, b1, b2, b3, b4, b5, b6, b7 = _positions8(beta, W, G)
    f0, f1, f2, f3, f4, f5, f6, f7 = _positions8(f, W, G)
    x0, x1, x2, x3, x4, x5, x6, x7 = _positions8(x, W, G)
    # the adjoint inside the group (q) and the decay from the group's end (p) ...
    q7 = b7
    q6 = b6 + f7 * q7
    q5 = b5 + f6 * q6
    q4 = b4 + f5 * q5
    q3 = b3 + f4 * q4
    q2 = b2 + f3 * q3
    q1 = b1 + f2 * q2
    q0 = b0 + f1 * q1
    p6 = f7
    p5 = f6 * p6
    p4 = f5 * p5
    p3 = f4 * p4
    p2 = f3 * p3
    p1 = f2 * p2
    p0 = f1 * p1
    # ... the states inside the group from zero (s) and the decay from its start (r)
    s1 = f1 * x0 + x1
    s2 = f2 * s1 + x2
    s3 = f3 * s2 + x3
    s4 = f4 * s3 + x4
    s5 = f5 * s4 + x5
    s6 = f6 * s5 + x6
    s7 = f7 * s6 + x7
    r1 = f0 * f1
    r2 = r1 * f2
    r3 = r2 * f3
    r4 = r3 * f4
    r5 = r4 * f5
    r6 = r5 * f6
    r7 = r6 * f7
    e, hk = _across_lanes(r7, s7, f0 * p0, f0 * q0, g_end, W, G)
    g3 = _pack8(q0 + p0 * e, q1 + p1 * e, q2 + p2 * e, q3 + p3 * e, q4 + p4 * e, q5 + p5 * e,
                q6 + p6 * e, q7 + e)
    h3 = _pack8(x0 + f0 * hk, s1 + r1 * hk, s2 + r2 * hk, s3 + r3 * hk, s4 + r4 * hk,
                s5 + r5 * hk, s6 + r6 * hk, s7 + r7 * hk)
    return gl.reshape(g3, [W, CHUNK]), gl.reshape(h3, [W, CHUNK])


@gluon.jit
def _scans_2p(beta, f, x, g_end, T, W: gl.constexpr, CHUNK: gl.constexpr):
    """`_scans` in two passes (TWO_PASS, the default where the cap is 168). T (W, CHUNK // 8)
    is each thread's total decay over its 8 positions, one exp2 of A log2(e) times their
    summed dt (`_group_sums`, once per chunk), where `_scans` multiplies the decays out
    position by position (p and r, 14 multiplications). The first pass chains the adjoint
    from the group's end and the states from zero only as far as the scan across the lanes
    needs (q0, s7); the second chains both again from what enters the group, as `_scans`
    completes them from the products. 314 sm_90a instructions per state in the loop against
    325 (H200, thirtieth session: 0.983x the backward's time at 1x128K, 0.982x
    at 2x16K, 0.977x and 0.988x on reverse scans there). Under the cap of 128 (8x2K) it
    spills 164 bytes against 112 and took 1.12x the time, so it is not launched there; the
    second pass split in halves (each from its own start, the products for it formed
    early: 321 instructions) took 1.01x this one's."""
    G: gl.constexpr = CHUNK // 8
    b0, b1, b2, b3, b4, b5, b6, b7 = _positions8(beta, W, G)
    f0, f1, f2, f3, f4, f5, f6, f7 = _positions8(f, W, G)
    x0, x1, x2, x3, x4, x5, x6, x7 = _positions8(x, W, G)
    q = b6 + f7 * b7
    s = f1 * x0 + x1
    q = b5 + f6 * q
    s = f2 * s + x2
    q = b4 + f5 * q
    s = f3 * s + x3
    q = b3 + f4 * q
    s = f4 * s + x4
    q = b2 + f3 * q
    s = f5 * s + x5
    q = b1 + f2 * q
    s = f6 * s + x6
    q = b0 + f1 * q
    s = f7 * s + x7
    e, hk = _across_lanes(T, s, T, f0 * q, g_end, W, G)
    g7 = b7 + e
    h0 = f0 * hk + x0
    g6 = b6 + f7 * g7
    h1 = f1 * h0 + x1
    g5 = b5 + f6 * g6
    h2 = f2 * h1 + x2
    g4 = b4 + f5 * g5
    h3 = f3 * h2 + x3
    g3 = b3 + f4 * g4
    h4 = f4 * h3 + x4
    g2 = b2 + f3 * g3
    h5 = f5 * h4 + x5
    g1 = b1 + f2 * g2
    h6 = f6 * h5 + x6
    g0 = b0 + f1 * g1
    h7 = f7 * h6 + x7
    return (gl.reshape(_pack8(g0, g1, g2, g3, g4, g5, g6, g7), [W, CHUNK]),
            gl.reshape(_pack8(h0, h1, h2, h3, h4, h5, h6, h7), [W, CHUNK]))


@gluon.jit
def _group_sums(dt, W: gl.constexpr, CHUNK: gl.constexpr):
    """dt summed over each thread's 8 positions, (W, CHUNK // 8)."""
    d0, d1, d2, d3, d4, d5, d6, d7 = _positions8(dt, W, CHUNK // 8)
    return ((d0 + d1) + (d2 + d3)) + ((d4 + d5) + (d6 + d7))


@gluon.constexpr_function
def spread_rows(shape):
    """A shared layout for 4-byte rows (the last dimension, 64 elements or more) that threads
    write or read 8 elements at a time (two 16-byte vectors, 32 bytes apart from lane to
    lane) or 4 at a time, without bank conflicts either way: a row's 16-byte vector v is
    stored at v ^ ((v >> 3) & 1) (bit 2 of the offset is bit 2 of the element XORed with
    bit 5), so the 8 threads of a quarter warp meet 8 distinct bank groups. Unswizzled,
    lanes l and l + 4 meet the same banks: each 16-byte access takes two wavefronts."""
    rank = len(shape)

    def unit(dim, value):
        return [value if i == dim else 0 for i in range(rank)]
    bases = [unit(rank - 1, v) for v in (1, 2, 4, 8, 16, 36)]
    bases += [unit(rank - 1, 1 << j) for j in range(6, shape[-1].bit_length() - 1)]
    for dim in range(rank - 2, -1, -1):
        bases += [unit(dim, 1 << j) for j in range(shape[dim].bit_length() - 1)]
    return gl.SharedLinearLayout(bases)


@gluon.jit
def scan_bwd_gluon_kernel(
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr,
    states_ptr, adj_ptr, ends_ptr, dout_ptr, dlast_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
    L, LP, D, N, G, DG, CPS,
    su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
    sz_b, sz_d, sz_l, sdo_b, sdo_d, sdo_l,
    HAS_BIAS: gl.constexpr, SOFTPLUS: gl.constexpr, HAS_DLAST: gl.constexpr,
    HAS_D: gl.constexpr, HAS_Z: gl.constexpr, HAS_ENTER: gl.constexpr, REVERSE: gl.constexpr,
    CHUNK: gl.constexpr, W: gl.constexpr, N_PAD: gl.constexpr,
    TWO_PASS: gl.constexpr = False,
):
    tile: gl.constexpr = gl.BlockedLayout([1, CHUNK // 32], [1, 32], [W, 1], [1, 0])
    # a (W, CHUNK) tile read back from shared memory: each thread holds all W channels of
    # CHUNK // (32 W) positions, warp w the w-th W-th of the positions
    cols: gl.constexpr = gl.BlockedLayout([W, CHUNK // (32 * W)], [1, 32], [1, W], [1, 0])
    small: gl.constexpr = gl.BlockedLayout([1, 1], [1, 32], [W, 1], [1, 0])   # (W, N_PAD)
    chan: gl.constexpr = gl.SliceLayout(1, tile)
    smem: gl.constexpr = spread_rows([W, CHUNK])
    buf_b = gl.allocate_shared_memory(gl.float32, [W, CHUNK], smem)
    buf_c = gl.allocate_shared_memory(gl.float32, [W, CHUNK], smem)

    pid = gl.program_id(0)
    s = gl.program_id(1)                   # the segment: chunks [c_lo, c_hi], see the docstring
    S = gl.num_programs(1)
    nbd = gl.cdiv(DG, W)
    g = (pid // nbd) % G
    b = (pid // (nbd * G)).to(gl.int64)
    dg = (pid % nbd) * W + gl.arange(0, W, layout=chan)
    d = g * DG + dg
    dmask = dg < DG
    k = gl.arange(0, CHUNK, layout=gl.SliceLayout(0, tile))
    kc = gl.arange(0, CHUNK, layout=gl.SliceLayout(0, cols))
    NC = gl.cdiv(L, CHUNK)
    c_lo = s * CPS
    c_hi = gl.minimum(c_lo + CPS, NC) - 1

    STEP: gl.constexpr = 1 if REVERSE else -1   # the walk's step, against the scan
    if REVERSE:   # the walk against the scan: chunks in position order
        c_first = c_lo
        walk_first = s == 0
    else:
        c_first = c_hi
        walk_first = s == S - 1

    # the gradient arriving at the segment's end (in scan order) -> adj[b, the walk's first
    # chunk]: from the carry pass (HAS_ENTER), and the last state's for the sequence's last
    # segment
    ds = g * DG + (pid % nbd) * W + gl.arange(0, W, layout=gl.SliceLayout(1, small))
    nn = gl.arange(0, N_PAD, layout=gl.SliceLayout(0, small))
    m_dn = ((ds - g * DG) < DG)[:, None] & (nn < N)[None, :]
    gin = gl.zeros([W, N_PAD], gl.float32, small)
    if HAS_ENTER:
        gin = gl.load(ends_ptr + ((b * S + s) * D + ds[:, None]) * N + nn[None, :], mask=m_dn,
                      other=0.0)
    if HAS_DLAST:
        gin += gl.load(dlast_ptr + (b * D + ds[:, None]) * N + nn[None, :],
                       mask=m_dn & walk_first, other=0.0)
    gl.store(adj_ptr + ((b * NC + c_first) * D + ds[:, None]) * N + nn[None, :], gin,
             mask=m_dn)
    Dv = gl.zeros([W], gl.float32, chan)
    if HAS_D:
        Dv = gl.load(D_ptr + d, mask=dmask, other=0.0)
        dD_acc = gl.zeros([W], gl.float32, chan)
    if HAS_BIAS:
        dbias_acc = gl.zeros([W], gl.float32, chan)

    for i in range(0, c_hi - c_lo + 1):
        if REVERSE:
            # the chunk mirrored: logical position k is t0 + CHUNK - 1 - k, so that k runs in
            # scan order and everything below is the forward scan's. The chunk's rows load
            # one position a thread (once per chunk); B and C, loaded per state, come
            # flipped (rows of LP, a multiple of CHUNK) and dB, dC go out flipped: at r0 +
            # [0, CHUNK) their chunk reads ascending
            c = c_lo + i
            t0 = c * CHUNK
            t = t0 + CHUNK - 1 - k
            r0 = LP - t0 - CHUNK
            rk = r0 + k
        else:
            c = c_hi - i
            t0 = c * CHUNK
            t = t0 + k
            r0 = t0
            rk = t
        # u, delta, z and dout are read as they are, up to the length, not from rows padded
        # to LP (`scan.scan_backward`): dB's and dC's rows are LP long
        valid = dmask[:, None] & (t < L)[None, :]
        m = valid
        dt, _raw = load_dt(delta_ptr, bias_ptr, b, d, t, m, valid, dmask, sdl_b, sdl_d, sdl_l,
                           HAS_BIAS, SOFTPLUS)
        dy = load_tile(dout_ptr, b, d, t, m, sdo_b, sdo_d, sdo_l)
        if HAS_Z:
            zt = load_tile(z_ptr, b, d, t, m, sz_b, sz_d, sz_l)
            dy = dy * zt * sigmoid(zt)
        dtu = dt * load_tile(u_ptr, b, d, t, m, su_b, su_d, su_l)
        if TWO_PASS:
            dsum = _group_sums(dt, W, CHUNK)
        gB = gl.zeros([W, CHUNK], gl.float32, tile)      # sum over n of g B
        gHA = gl.zeros([W, CHUNK], gl.float32, tile)     # ... of g a h_prev A
        y = gl.zeros([W, CHUNK], gl.float32, tile)
        here = adj_ptr + ((b * NC + c) * D + d) * N
        if REVERSE:
            more = c < c_hi
        else:
            more = c > c_lo
        if more:   # the walk's next chunk
            edge = adj_ptr + ((b * NC + c + STEP) * D + d) * N
        else:   # what reaches the segment's start (the carry pass read its row already)
            edge = ends_ptr + ((b * S + s) * D + d) * N
        h_enter = states_ptr + ((b * NC + c) * D + d) * N
        gl.thread_barrier()  # the previous chunk's stores of `here` are visible
        # state n + 1's loads are issued in state n's iteration, their latency behind its scans
        B_row = B_ptr + b * sB_b + g * sB_g + rk * sB_l
        C_row = C_ptr + b * sC_b + g * sC_g + rk * sC_l
        g_nx = gl.load(here, mask=dmask, other=0.0)
        A_nx = gl.load(A_ptr + d * N, mask=dmask, other=0.0)
        h_nx = gl.load(h_enter, mask=dmask, other=0.0)
        B_nx = gl.load(B_row)
        C_nx = gl.load(C_row)
        dA_n = gl.zeros([W], gl.float32, chan)
        for n in range(0, N):
            g_in, A, h_in = g_nx, A_nx, h_nx
            Bn = B_nx.to(gl.float32)
            Cn = C_nx.to(gl.float32)
            nx = gl.minimum(n + 1, N - 1)   # the last iteration loads state N - 1's again
            g_nx = gl.load(here + nx, mask=dmask, other=0.0)
            A_nx = gl.load(A_ptr + d * N + nx, mask=dmask, other=0.0)
            h_nx = gl.load(h_enter + nx, mask=dmask, other=0.0)
            B_nx = gl.load(B_row + nx * sB_n)
            C_nx = gl.load(C_row + nx * sC_n)
            a = gl.exp2(dt * (A * LOG2E)[:, None])
            x = dtu * Bn[None, :]
            x_in = gl.where((k == 0)[None, :], x + a * h_in[:, None], x)
            if TWO_PASS:
                A2 = gl.convert_layout(A * LOG2E, gl.SliceLayout(1, dsum.type.layout))
                gr, hn = _scans_2p(dy * Cn[None, :], a, x_in, g_in, gl.exp2(A2[:, None] * dsum),
                                   W, CHUNK)
            else:
                gr, hn = _scans(dy * Cn[None, :], a, x_in, g_in, W, CHUNK)
            gr = gl.convert_layout(gr, tile)
            hn = gl.convert_layout(hn, tile)
            # what reaches the chunk's entering state, stored by the thread that holds it
            gl.store(edge[:, None] + n + 0 * k[None, :], a * gr,
                     mask=dmask[:, None] & (k == 0)[None, :])
            if HAS_Z:
                y += hn * Cn[None, :]
            ghx = gr * (hn - x)
            gB += gr * Bn[None, :]
            gHA += ghx * A[:, None]
            # dA: the previous state's sum, whose shuffles across the lanes have had this
            # state's scans to finish in, then this state's
            gl.atomic_add(dA_ptr + d * N + n - 1, dA_n, mask=dmask & (n > 0), sem="relaxed")
            dA_n = gl.sum(ghx * dt, axis=1)
            # dB, dC: the W channels' rows summed in shared memory, then one add per position
            buf_b.store(gr * dtu)
            buf_c.store(hn * dy)
            gl.thread_barrier()
            row = ((b * G + g) * N + n) * LP + r0 + kc
            keep = r0 + kc < LP
            rows_b = buf_b.load(cols)   # both rows' loads before either's adds
            rows_c = buf_c.load(cols)
            gl.atomic_add(dB_ptr + row, gl.sum(rows_b, axis=0), mask=keep, sem="relaxed")
            gl.atomic_add(dC_ptr + row, gl.sum(rows_c, axis=0), mask=keep, sem="relaxed")
        gl.atomic_add(dA_ptr + d * N + N - 1, dA_n, mask=dmask, sem="relaxed")
        dD_c, dbias_c = store_chunk_grads(
            gB, gHA, y, dt, dy, Dv, b, d, t, m, valid, dmask, L, D, u_ptr, delta_ptr, bias_ptr,
            z_ptr, dout_ptr, du_ptr, ddelta_ptr, dz_ptr, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l,
            sz_b, sz_d, sz_l, sdo_b, sdo_d, sdo_l, HAS_BIAS, SOFTPLUS, HAS_D, HAS_Z,
            EXP2_SIGMOID=True)
        if HAS_D:
            dD_acc += dD_c
        if HAS_BIAS:
            dbias_acc += dbias_c
    if HAS_D:
        gl.atomic_add(dD_ptr + d, dD_acc, mask=dmask, sem="relaxed")
    if HAS_BIAS:
        gl.atomic_add(dbias_ptr + d, dbias_acc, mask=dmask, sem="relaxed")

