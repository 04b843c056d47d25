"""Forward selective scan in Gluon: W channels per program, one warp each, 16 positions a
thread, B and C staged in shared memory (CUDA only; `scan_fwd.py` computes the same
everywhere else, and is what the interpreter runs).

The math, the saved states and the chunks are `scan_fwd.py`'s at its long tier (chunks of
512 positions, a state saved every 256); what differs is the layout and where B and C come
from. Triton gives the (1, 512) tiles 8 positions a thread, the 16 bytes of one bf16
vector load, so a thread holds two runs of 8 and every state's scan crosses the lanes twice
(22 shuffles and 12 selects in the loop over states, sm_90a SASS). Here a thread holds 16
positions, chained in registers as four runs of 4 side by side (`_scan16`), and one scan of
the lanes' totals crosses the lanes. The W channels of a program share the chunk's B and C
rows (all N of them), which cp.async copies into shared memory a chunk ahead, so the loop
over states reads them there instead of waiting on global loads (with those loads made
free, wrongly, the one-channel version of this kernel took 0.84x its time at 1x128K).

Measured on an H200 (twenty-eighth session, `bench_scan_ab.py` against the Triton forward,
three interleaved rounds, W=4, 144 registers, 3 programs an SM): 0.888x its time at 1x128K
(2.40 against 2.70 ms), 0.891x at 1x1M, 0.858x at 2x16K, 0.984x at 16x8K (d_inner 1024),
1.014x at 8x2K. Without the shared memory (one channel per one-warp program, rows loaded
from global memory a state ahead): 0.97-1.02x with 14-18% fewer instructions than the
Triton forward, 1.16-1.23x at d_inner 1024; the rows read from shared memory a state ahead
instead of at their use: 1.004-1.013x (`docs/benchmarks/scan.md`).

Two states an iteration (PAIRS, the default; twenty-ninth session): the loop over states
takes states n and n + 1 together, and one scan across the lanes shuffles both pairs of
totals (`_scan16x2`, 5 steps of 4 shuffles that do not wait on each other), so one state's
chain of shuffles runs beside the other's exponentials. 377 sm_90a SASS instructions a pair
against 198 a state, 168 registers (3 programs an SM still: shared memory holds three), no
spill in the loop (8 bytes a chunk outside it; at 144 the pairs spill 20). Against one state
an iteration, same process, interleaved rounds: 0.950x at 1x128K (2.27 against 2.39 ms),
0.954x at 2x16K, 0.958x at 8x2K, 0.953x at 16x8K (d_inner 1024). The same two states
written as two calls in a row (`_state` twice, two scans) compile to 377 instructions too,
but ptxas runs the second state's shuffles after the first's (SASS at the cap of 144), so
the fused scan it is; that version was not timed. An odd dstate's last state runs alone
after the pairs.

z's row loaded at the chunk's start beside delta's and u's, held over the loop over states
as it comes (16 bits a position), and y started at D u there (thirty-first session): the
chunk's end then waits on no load, and the loop has no spill (8 bytes before). Against
reloading u and z after the loop, same process, interleaved rounds: 0.974x the forward's
time at 1x128K (2.185 against 2.242 ms), 0.973x at 2x16K and 8x2K, 0.970x at 16x8K (d_inner
1024). z alone held: 0.976-0.983x; y started at D u alone (z loaded after the loop): 1.026-
1.036x. B and C staged as float32 rather than as bf16 words (321 instructions a pair against
377, no widening in the loop; the next chunk's rows loaded into registers at the chunk's end,
since two float32 slots do not fit three programs an SM): 1.115-1.151x
(`docs/benchmarks/not_kept/thirty_first_session_forward_rows_float32.diff`).

The staged rows are laid out without bank conflicts (`spread_rows`; thirty-third session):
each thread reads its 16 positions of a row as two 16-byte vectors, 32 bytes from lane to
lane, and unswizzled lanes l and l + 4 met the same banks, so every load took two
wavefronts. ncu at 1x128K: shared-load bank conflicts 102.6M -> 1.5M, load wavefronts 209.6M
-> 108.4M; 380 instructions a pair against 379. Against the unswizzled rows, same process,
interleaved rounds: 0.965x the forward's time at 1x128K (2.108 against 2.184 ms), 0.963x at
1x1M, 0.961x at 2x16K, 0.958x at 8x2K, 0.957x at 16x8K (d_inner 1024).

Reverse scans (REVERSE, `configs.gluon_fwd_reverse`; thirty-third session): the same code on
each chunk mirrored, as the backward does. Logical position k of chunk c is position t0 +
CHUNK - 1 - k, so the loop over states is the in-order one (380 sm_90a instructions a pair,
the same 33 shuffles); the chunks are walked from the last, B and C come as flipped copies
in rows of whole chunks (staged ascending, as in order), and the saved states go to the
rows the reverse backward restarts from (`common.entering_row`'s). A thread's 16 positions
are 16 consecutive ones in memory, so u, delta and z load and out stores as 16-byte vectors
and `_flip16` reverses them in registers: 1512 instructions in all against 1509 in order, 4
bytes spilled outside the loop (compiled offline). On an H200 (thirty-fourth session,
`bench_scan_ab.py --reverse`, against the Triton reverse forward in the same process): 0.913x
its time at 8x2K, 0.806x at 2x16K, 0.827x at 1x128K (2.163 against 2.616 ms; the in-order
forward in the same call: 2.104), so reverse scans take it by default.

Scope: scan order (and mirrored chunks, above), no cu_seqlens, one segment, chunks of 512
and a saved state every 256, B and C bf16 rows of whole chunks read as int32 words
(`scan._bc_pairs`), channels per group a multiple of W, dstate up to 16, on GPUs with
cp.async and room for two programs' rows in an SM's shared memory; `scan.scan_forward`
picks it (`scan._gluon_forward`).
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy as ac

from .common import LOG2E, load_dt, load_stored, load_tile, sigmoid
from .scan_bwd_gluon import _pack8, _positions8, _two_pairs, spread_rows


@gluon.jit
def _pair(a1, x1, a2, x2):
    """The states' monoid (`common.pair_combine`)."""
    return a1 * a2, a2 * x1 + x2


@gluon.jit
def _widen(w):
    """int32 words of two bf16 positions -> the even and the odd positions as float32, one
    bit operation a position (bf16 is float32's upper half)."""
    return (w << 16).to(gl.float32, bitcast=True), (w & -65536).to(gl.float32, bitcast=True)


@gluon.jit
def _swap_last(x):
    """(..., 2) -> the two halves of the last dimension swapped."""
    a, b = gl.split(x)
    return gl.join(b, a)


@gluon.jit
def _flip16(v, W: gl.constexpr, CHUNK: gl.constexpr):
    """A (W, CHUNK) tile whose threads hold 16 consecutive positions, each thread's 16
    reversed: index 16 q + j -> 16 q + 15 - j, all 4 bits of j flipped, one at a time as the
    last dimension (a renaming of registers)."""
    x = gl.reshape(v, [W, CHUNK // 16, 2, 2, 2, 2])
    x = _swap_last(x)
    x = gl.permute(_swap_last(gl.permute(x, [0, 1, 2, 3, 5, 4])), [0, 1, 2, 3, 5, 4])
    x = gl.permute(_swap_last(gl.permute(x, [0, 1, 2, 5, 4, 3])), [0, 1, 2, 5, 4, 3])
    x = gl.permute(_swap_last(gl.permute(x, [0, 1, 5, 3, 4, 2])), [0, 1, 5, 3, 4, 2])
    return gl.convert_layout(gl.reshape(x, [W, CHUNK]), v.type.layout, assert_trivial=True)


@gluon.jit
def _runs16(fe, fo, xe, xo, W: gl.constexpr, G: gl.constexpr):
    """The first half of `_scan16`: each thread's 16 positions chained in registers as four
    runs of 4 side by side. Returns the thread's total (its decay and its state from zero,
    what crosses the lanes) and what `_finish16` completes the runs from."""
    f0, f2, f4, f6, f8, f10, f12, f14 = _positions8(fe, W, G)
    f1, f3, f5, f7, f9, f11, f13, f15 = _positions8(fo, W, G)
    x0, x2, x4, x6, x8, x10, x12, x14 = _positions8(xe, W, G)
    x1, x3, x5, x7, x9, x11, x13, x15 = _positions8(xo, W, G)
    # four runs of 4: the states inside each from zero (s) and the decays from its start (r)
    s1 = f1 * x0 + x1
    s5 = f5 * x4 + x5
    s9 = f9 * x8 + x9
    s13 = f13 * x12 + x13
    s2 = f2 * s1 + x2
    s6 = f6 * s5 + x6
    s10 = f10 * s9 + x10
    s14 = f14 * s13 + x14
    s3 = f3 * s2 + x3
    s7 = f7 * s6 + x7
    s11 = f11 * s10 + x11
    s15 = f15 * s14 + x15
    r1 = f0 * f1
    r5 = f4 * f5
    r9 = f8 * f9
    r13 = f12 * f13
    r2 = r1 * f2
    r6 = r5 * f6
    r10 = r9 * f10
    r14 = r13 * f14
    r3 = r2 * f3
    r7 = r6 * f7
    r11 = r10 * f11
    r15 = r14 * f15
    # ... joined in pairs (runs 0-1, 2-3), then into the thread's total
    r01 = r3 * r7
    s01 = r7 * s3 + s7
    r23 = r11 * r15
    s23 = r15 * s11 + s15
    runs = (f0, x0, s1, r1, s2, r2, s3, r3, f4, x4, s5, r5, s6, r6, s01, r01,
            f8, x8, s9, r9, s10, r10, s11, r11, f12, x12, s13, r13, s14, r14, s15, r15)
    return r01 * r23, r23 * s01 + s23, runs


@gluon.jit
def _lanes(v, W: gl.constexpr):
    """A thread's value, (W, G), in the layout whose lanes the scan crosses (a renaming)."""
    lanes: gl.constexpr = gl.BlockedLayout([1, 1], [1, 32], [W, 1], [1, 0])
    return gl.convert_layout(v, lanes, assert_trivial=True)


@gluon.jit
def _finish16(runs, hs, W: gl.constexpr, CHUNK: gl.constexpr):
    """The second half of `_scan16`: the state entering each thread (hs, the lanes' scan,
    shifted by one lane), each run completed from the state before it. Returns h's even
    and odd positions."""
    G: gl.constexpr = CHUNK // 16
    lanes: gl.constexpr = gl.BlockedLayout([1, 1], [1, 32], [W, 1], [1, 0])
    (f0, x0, s1, r1, s2, r2, s3, r3, f4, x4, s5, r5, s6, r6, s01, r01,
     f8, x8, s9, r9, s10, r10, s11, r11, f12, x12, s13, r13, s14, r14, s15, r15) = runs
    kk = gl.arange(0, G, layout=gl.SliceLayout(0, lanes))[None, :] + gl.zeros([W, G], gl.int32,
                                                                                lanes)
    hk = gl.where(kk == 0, 0.0, gl.gather(hs, gl.maximum(kk - 1, 0), 1))
    hk = gl.convert_layout(hk, f0.type.layout, assert_trivial=True)
    h3 = s3 + r3 * hk
    h7 = s01 + r01 * hk
    h11 = s11 + r11 * h7
    he = _pack8(x0 + f0 * hk, s2 + r2 * hk, x4 + f4 * h3, s6 + r6 * h3, x8 + f8 * h7,
                s10 + r10 * h7, x12 + f12 * h11, s14 + r14 * h11)
    ho = _pack8(s1 + r1 * hk, h3, s5 + r5 * h3, h7, s9 + r9 * h7, h11, s13 + r13 * h11,
                s15 + r15 * h11)
    return gl.reshape(he, [W, CHUNK // 2]), gl.reshape(ho, [W, CHUNK // 2])


@gluon.jit
def _scan16(fe, fo, xe, xo, W: gl.constexpr, CHUNK: gl.constexpr):
    """h_t = f_t h_{t-1} + x_t along each warp's row from zero (the entering state is in x's
    first position), the rows given as their even (fe, xe) and odd (fo, xo) positions, (W,
    CHUNK // 2) each, 8 a thread: each thread's 16 positions chained in registers as four
    runs of 4 side by side, the lanes' totals scanned across the lanes, then each run
    completed from the state before it. Returns h's even and odd positions."""
    r, s, runs = _runs16(fe, fo, xe, xo, W, CHUNK // 16)
    _r, hs = gl.associative_scan((_lanes(r, W), _lanes(s, W)), 1, _pair)
    return _finish16(runs, hs, W, CHUNK)


@gluon.jit
def _scan16x2(fe, fo, xe, xo, fe2, fo2, xe2, xo2, W: gl.constexpr, CHUNK: gl.constexpr):
    """`_scan16` of two independent recurrences: one scan across the lanes shuffles both, so
    their chains of shuffles overlap."""
    r, s, runs = _runs16(fe, fo, xe, xo, W, CHUNK // 16)
    r2, s2, runs2 = _runs16(fe2, fo2, xe2, xo2, W, CHUNK // 16)
    _r, hs, _r2, hs2 = gl.associative_scan((_lanes(r, W), _lanes(s, W), _lanes(r2, W),
                                            _lanes(s2, W)), 1, _two_pairs)
    he, ho = _finish16(runs, hs, W, CHUNK)
    he2, ho2 = _finish16(runs2, hs2, W, CHUNK)
    return he, ho, he2, ho2


@gluon.jit
def _inputs(n, h_in, A_rows, Bs, Cs, dte, dto, dtue, dtuo, ke, hchan: gl.constexpr,
            hrow: gl.constexpr):
    """State n's recurrence over the chunk: its decays (even and odd positions), its inputs
    with the entering state h_in (W,) folded into the first, and C's row."""
    A2 = A_rows.index(n).load(hchan)
    Be, Bo = _widen(Bs.index(n).load(hrow))
    Ce, Co = _widen(Cs.index(n).load(hrow))
    ae = gl.exp2(dte * A2[:, None])
    ao = gl.exp2(dto * A2[:, None])
    xe = dtue * Be[None, :]
    xo = dtuo * Bo[None, :]
    xe = gl.where((ke == 0)[None, :], xe + ae * h_in[:, None], xe)
    return ae, ao, xe, xo, Ce, Co


@gluon.jit
def _outputs(n, he, ho, Ce, Co, ye, yo, ke, mid, after, has_mid, dh, D, W: gl.constexpr,
             CHUNK: gl.constexpr):
    """State n's states at the sub-chunks' ends stored (odd positions, each by the thread
    that holds it) and its share of y added to ye and yo."""
    HALF: gl.constexpr = CHUNK // 2
    half: gl.constexpr = gl.BlockedLayout([1, 8], [1, 32], [W, 1], [1, 0])
    he = gl.convert_layout(he, half, assert_trivial=True)
    ho = gl.convert_layout(ho, half, assert_trivial=True)
    gl.store(mid[:, None] + n + 0 * ke[None, :], ho,
             mask=((ke == HALF // 2 - 1) & has_mid)[None, :] & (dh < D)[:, None])
    gl.store(after[:, None] + n + 0 * ke[None, :], ho,
             mask=(ke == HALF - 1)[None, :] & (dh < D)[:, None])
    return ye + he * Ce[None, :], yo + ho * Co[None, :]


@gluon.jit
def _state(n, h_in, A_rows, Bs, Cs, dte, dto, dtue, dtuo, ye, yo, ke, mid, after, has_mid, dh,
           D, W: gl.constexpr, CHUNK: gl.constexpr, hchan: gl.constexpr, hrow: gl.constexpr):
    """State n over the chunk, entering at h_in (W,)."""
    ae, ao, xe, xo, Ce, Co = _inputs(n, h_in, A_rows, Bs, Cs, dte, dto, dtue, dtuo, ke, hchan,
                                     hrow)
    he, ho = _scan16(ae, ao, xe, xo, W, CHUNK)
    return _outputs(n, he, ho, Ce, Co, ye, yo, ke, mid, after, has_mid, dh, D, W, CHUNK)


@gluon.jit
def _states2(n, h_in, h_in2, A_rows, Bs, Cs, dte, dto, dtue, dtuo, ye, yo, ke, mid, after,
             has_mid, dh, D, W: gl.constexpr, CHUNK: gl.constexpr, hchan: gl.constexpr,
             hrow: gl.constexpr):
    """States n and n + 1 over the chunk, entering at h_in and h_in2, their scans across the
    lanes fused (`_scan16x2`)."""
    ae, ao, xe, xo, Ce, Co = _inputs(n, h_in, A_rows, Bs, Cs, dte, dto, dtue, dtuo, ke, hchan,
                                     hrow)
    ae2, ao2, xe2, xo2, Ce2, Co2 = _inputs(n + 1, h_in2, A_rows, Bs, Cs, dte, dto, dtue, dtuo,
                                           ke, hchan, hrow)
    he, ho, he2, ho2 = _scan16x2(ae, ao, xe, xo, ae2, ao2, xe2, xo2, W, CHUNK)
    ye, yo = _outputs(n, he, ho, Ce, Co, ye, yo, ke, mid, after, has_mid, dh, D, W, CHUNK)
    return _outputs(n + 1, he2, ho2, Ce2, Co2, ye, yo, ke, mid, after, has_mid, dh, D, W,
                    CHUNK)


@gluon.jit
def _stage_bc(sB, sC, B_words, C_words, wB_n, wC_n, t0, N, N_PAD: gl.constexpr,
              CHUNK: gl.constexpr, W: gl.constexpr):
    """cp.async of the chunk at t0's rows of B and C, (N_PAD, CHUNK // 2) int32 words each,
    into sB and sC, 16 bytes a copy, spread over the program's threads; one commit group."""
    stage: gl.constexpr = gl.BlockedLayout([1, 4], [1, 32], [W, 1], [1, 0])
    nn = gl.arange(0, N_PAD, layout=gl.SliceLayout(1, stage))[:, None]
    jj = gl.arange(0, CHUNK // 2, layout=gl.SliceLayout(0, stage))[None, :] + t0 // 2
    m = (nn < N) & (jj >= 0)          # rows past dstate skipped (the second test broadcasts)
    rows: gl.constexpr = spread_rows([N_PAD, CHUNK // 2])
    ac.async_copy_global_to_shared(sB._reinterpret(gl.int32, [N_PAD, CHUNK // 2], rows),
                                   B_words + nn * wB_n + jj, mask=m)
    ac.async_copy_global_to_shared(sC._reinterpret(gl.int32, [N_PAD, CHUNK // 2], rows),
                                   C_words + nn * wC_n + jj, mask=m)
    ac.commit_group()


@gluon.jit
def scan_fwd_gluon_kernel(
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, h0_ptr,
    states_ptr, ends_ptr, out_ptr,
    L, D, N, G, DG,
    su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
    sz_b, sz_d, sz_l, so_b, so_d, so_l,
    HAS_BIAS: gl.constexpr, SOFTPLUS: gl.constexpr, HAS_H0: gl.constexpr,
    HAS_D: gl.constexpr, HAS_Z: gl.constexpr, CHUNK: gl.constexpr, W: gl.constexpr,
    N_PAD: gl.constexpr, PAIRS: gl.constexpr = False, REVERSE: gl.constexpr = False,
):
    HALF: gl.constexpr = CHUNK // 2
    tile: gl.constexpr = gl.BlockedLayout([1, 16], [1, 32], [W, 1], [1, 0])     # (W, CHUNK)
    half: gl.constexpr = gl.BlockedLayout([1, 8], [1, 32], [W, 1], [1, 0])      # (W, HALF)
    chan: gl.constexpr = gl.SliceLayout(1, tile)
    hchan: gl.constexpr = gl.SliceLayout(1, half)
    hrow: gl.constexpr = gl.SliceLayout(0, half)     # a (HALF,) row, every warp all of it
    flat: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[1, 0])
    flat1: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[0])   # rows of those
    SAVE: gl.constexpr = HALF                      # the backward's chunk: rows of `states`
    sB = gl.allocate_shared_memory(gl.int32, [2, N_PAD, HALF], flat)
    sC = gl.allocate_shared_memory(gl.int32, [2, N_PAD, HALF], flat)
    sA = gl.allocate_shared_memory(gl.float32, [N_PAD, W], flat)

    pid = gl.program_id(0)
    nbd = DG // W
    g = (pid // nbd) % G
    b = (pid // (nbd * G)).to(gl.int64)
    d = g * DG + (pid % nbd) * W + gl.arange(0, W, layout=chan)          # (W,) channels
    dh = g * DG + (pid % nbd) * W + gl.arange(0, W, layout=hchan)
    dmask = d < D
    k = gl.arange(0, CHUNK, layout=gl.SliceLayout(0, tile))
    ke = gl.arange(0, HALF, layout=gl.SliceLayout(0, half))   # odd position 2 ke + 1
    NC = gl.cdiv(L, CHUNK)
    NS = gl.cdiv(L, SAVE)
    row_b = b * NS                                             # states[b, 0]

    # A log2(e) of the program's channels, (N_PAD, W), read from shared memory per state;
    # the state entering the sequence -> states[b, 0]
    an: gl.constexpr = gl.BlockedLayout([1, 1], [32 // W, W], [W, 1], [1, 0])
    na = gl.arange(0, N_PAD, layout=gl.SliceLayout(1, an))[:, None]
    wa = g * DG + (pid % nbd) * W + gl.arange(0, W, layout=gl.SliceLayout(0, an))[None, :]
    sA.store(gl.load(A_ptr + wa * N + na, mask=na < N, other=0.0) * LOG2E)
    A_rows = sA._reinterpret(gl.float32, [N_PAD, W], flat1)
    h = gl.zeros([N_PAD, W], gl.float32, an)
    if HAS_H0:
        h = gl.load(h0_ptr + (b * D + wa) * N + na, mask=na < N, other=0.0)
    if REVERSE:   # the scan enters at the sequence's end: the last row
        row_in = row_b + NS - 1
    else:
        row_in = row_b
    gl.store(states_ptr + (row_in * D + wa) * N + na, h, mask=na < N)
    Dv = gl.zeros([W], gl.float32, chan)
    if HAS_D:
        Dv = gl.load(D_ptr + d)

    i32: gl.constexpr = gl.pointer_type(gl.int32)
    B_words = (B_ptr + b * sB_b + g * sB_g).to(i32)
    C_words = (C_ptr + b * sC_b + g * sC_g).to(i32)
    # chunk i of the walk stages B's and C's rows at i CHUNK: in order those are its
    # positions, reversed they are the flipped rows' (`scan.scan_forward`)
    _stage_bc(sB.index(0), sC.index(0), B_words, C_words, sB_n // 2, sC_n // 2, 0, N, N_PAD,
              CHUNK, W)
    for i in range(0, NC):
        slot = i % 2
        if REVERSE:
            c = NC - 1 - i
        else:
            c = i
        t0 = c * CHUNK
        gl.thread_barrier()   # every warp is done with the walk's chunk before (its slot is
        #                       refilled next) and its stores of `here` are visible
        if i + 1 < NC:
            _stage_bc(sB.index(1 - slot), sC.index(1 - slot), B_words, C_words, sB_n // 2,
                      sC_n // 2, (i + 1) * CHUNK, N, N_PAD, CHUNK, W)
        else:
            ac.commit_group()   # an empty group, so that one wait serves every chunk
        ac.wait_group(1)        # this thread's copies of chunk c have landed ...
        gl.thread_barrier()     # ... and every thread's
        if REVERSE:
            # the chunk mirrored: logical position k is t0 + CHUNK - 1 - k, so k runs in scan
            # order and everything below is the in-order scan's. A thread's 16 positions are
            # 16 consecutive ones: read ascending (16-byte loads) at t, then flipped in its
            # registers (`_flip16`); y flipped back and stored at t
            t = t0 + CHUNK - 16 * (k // 16 + 1) + k % 16
        else:
            t = t0 + k
        valid = dmask[:, None] & (t < L)[None, :]
        dt, _raw = load_dt(delta_ptr, bias_ptr, b, d, t, valid, valid, dmask, sdl_b, sdl_d,
                           sdl_l, HAS_BIAS, SOFTPLUS)
        ut = load_tile(u_ptr, b, d, t, valid, su_b, su_d, su_l)
        if REVERSE:
            dt = _flip16(dt, W, CHUNK)
            ut = _flip16(ut, W, CHUNK)
        if HAS_Z:   # z's row as it comes (16 bits a position), its wait beside delta's and u's
            zraw = load_stored(z_ptr, b, d, t, valid, sz_b, sz_d, sz_l)
        dtu = dt * ut
        dte, dto = gl.split(gl.reshape(dt, [W, HALF, 2]))
        dtue, dtuo = gl.split(gl.reshape(dtu, [W, HALF, 2]))
        dte = gl.convert_layout(dte, half, assert_trivial=True)
        dto = gl.convert_layout(dto, half, assert_trivial=True)
        dtue = gl.convert_layout(dtue, half, assert_trivial=True)
        dtuo = gl.convert_layout(dtuo, half, assert_trivial=True)
        # y starts at D u (u is in registers now; after the loop it would be loaded again)
        if HAS_D:
            ye, yo = gl.split(gl.reshape(Dv[:, None] * ut, [W, HALF, 2]))
            ye = gl.convert_layout(ye, half, assert_trivial=True)
            yo = gl.convert_layout(yo, half, assert_trivial=True)
        else:
            ye = gl.zeros([W, HALF], gl.float32, half)
            yo = gl.zeros([W, HALF], gl.float32, half)
        # the saved states: states[b, j] enters the backward's chunk j (positions 256 j on)
        # in scan order; the forward's chunk c holds two, 2c and 2c + 1 (only 2c at the end
        # of an odd count, `has_mid`)
        has_mid = 2 * c + 1 < NS
        if REVERSE:   # entered at 2c + 1's end, 2c's entering state at the middle
            here = states_ptr + ((row_b + gl.minimum(2 * c + 1, NS - 1)) * D + dh) * N
            mid = states_ptr + ((row_b + 2 * c) * D + dh) * N
            if c > 0:
                after = states_ptr + ((row_b + 2 * c - 1) * D + dh) * N
            else:
                after = ends_ptr + (b * D + dh) * N              # ends[b, 0, d, :]
        else:
            here = states_ptr + ((row_b + 2 * c) * D + dh) * N       # states[b, 2c, d, :]
            mid = states_ptr + ((row_b + 2 * c + 1) * D + dh) * N   # states[b, 2c + 1]
            if c + 1 < NC:
                after = states_ptr + ((row_b + 2 * c + 2) * D + dh) * N
            else:
                after = ends_ptr + (b * D + dh) * N                  # ends[b, 0, d, :]
        # the slot's rows, one at a time (rank-1 layout: the same swizzle in each row)
        Bs = sB.index(slot)._reinterpret(gl.int32, [N_PAD, HALF], spread_rows([HALF]))
        Cs = sC.index(slot)._reinterpret(gl.int32, [N_PAD, HALF], spread_rows([HALF]))
        if PAIRS:
            # two states an iteration, one scan across the lanes for both (`_states2`);
            # the pair's entering states loaded a pair ahead
            h_nx = gl.load(here)
            h_nx1 = gl.load(here + 1)
            for n in range(0, N // 2 * 2, 2):
                h_in = h_nx
                h_in1 = h_nx1
                h_nx = gl.load(here + gl.minimum(n + 2, N - 1))
                h_nx1 = gl.load(here + gl.minimum(n + 3, N - 1))
                ye, yo = _states2(n, h_in, h_in1, A_rows, Bs, Cs, dte, dto, dtue, dtuo, ye, yo,
                                  ke, mid, after, has_mid, dh, D, W, CHUNK, hchan, hrow)
            if N % 2 == 1:
                ye, yo = _state(N - 1, gl.load(here + N - 1), A_rows, Bs, Cs, dte, dto, dtue,
                                dtuo, ye, yo, ke, mid, after, has_mid, dh, D, W, CHUNK, hchan,
                                hrow)
        else:
            # state n + 1's entering state is loaded in state n's iteration
            h_nx = gl.load(here)
            for n in range(0, N):
                h_in = h_nx
                h_nx = gl.load(here + gl.minimum(n + 1, N - 1))
                ye, yo = _state(n, h_in, A_rows, Bs, Cs, dte, dto, dtue, dtuo, ye, yo, ke, mid,
                                after, has_mid, dh, D, W, CHUNK, hchan, hrow)
        y = gl.convert_layout(gl.reshape(gl.join(ye, yo), [W, CHUNK]), tile, assert_trivial=True)
        if REVERSE:   # back to t's order, which z's row (not flipped) is in
            y = _flip16(y, W, CHUNK)
        if HAS_Z:
            zt = zraw.to(gl.float32)
            y = y * zt * sigmoid(zt)
        gl.store(out_ptr + b * so_b + d[:, None] * so_d + t[None, :] * so_l,
                 y.to(out_ptr.dtype.element_ty), mask=valid)
    ac.wait_group(0)
