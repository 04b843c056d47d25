"""Forward selective scan.

One kernel, `scan_fwd_kernel`, over a grid (batch x groups x channel blocks, segments). A
program walks its segment's chunks in scan order; for each chunk it loads the (BLOCK_D,
CHUNK) tiles of dt and u once, then for each state index n scans that state over the chunk
(see `common.py`), adds C_n * h to the output and passes the state at the chunk's end on
to the next chunk through `states` (batch, NS, dim, dstate) float32. `states` holds the
entering state of every SAVE positions (the backward's chunk, a divisor of CHUNK: the
state at each sub-chunk's end is stored by the thread that holds it) when the kernel is
done: what the backward pass restarts from; the state after the segment's last position
goes to `ends` (batch, segments, dim, dstate). The output is (C.h + D u) * silu(z).

When batch x channels alone cannot fill the GPU, the chunks are split into segments that
run in parallel: a first launch with STATE_ONLY=True runs each segment but the scan's last
from a zero state and writes only its end state (`ends`) and its summed dt (`seg_dt`; the
segment's decay is exp(A * seg_dt)); without cu_seqlens it sums each chunk into that state
rather than scanning it (`_segment_end_state`). `carry.chunk_carry_kernel` turns `ends`
into each segment's entering state; the full launch then starts each segment from there.
With one segment (the common case) the full launch is all there is.

A reverse scan runs the same code on each chunk mirrored (`common.chunk_rows`): its tiles
hold the chunk in scan order, so every scan along them runs as in order.
"""
import triton
import triton.language as tl

from .common import (LOG2E, chunk_at, chunk_masks, chunk_rows, dt_of, entering_row,
                     load_bc_row, load_chunk, pair_combine, program_place, save_point,
                     sequence_bounds, store_chunk, store_position, walk_last)


@triton.jit
def _chunk(i, c_lo, n_chunks, NC, k, b, d, dmask, L, LP, u_ptr, delta_ptr, bias_ptr,
           su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
           REVERSE: tl.constexpr, CHUNK: tl.constexpr, FROM_T0: tl.constexpr):
    """The segment's i-th chunk in scan order: its index, first position, positions in scan
    order and B/C rows' start (`chunk_rows`), masks (`chunk_masks`), and its dt and dt u
    tiles."""
    c, _c_next = chunk_at(i, c_lo, n_chunks, REVERSE)
    t0 = c * CHUNK
    t, r0 = chunk_rows(t0, k, NC, CHUNK, REVERSE)
    tmask, lmask, m, valid = chunk_masks(t, L, LP, dmask)
    dt, _raw = dt_of(load_chunk(delta_ptr, b, d, t, m, t0, LP, dmask, sdl_b, sdl_d, sdl_l,
                                CHUNK, REVERSE, FROM_T0),
                     bias_ptr, d, valid, dmask, HAS_BIAS, SOFTPLUS)
    dtu = dt * load_chunk(u_ptr, b, d, t, m, t0, LP, dmask, su_b, su_d, su_l, CHUNK, REVERSE,
                          FROM_T0)
    return c, t0, t, r0, tmask, lmask, m, valid, dt, dtu


@triton.jit
def _segment_end_state(h, u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, ends_ptr, seg_dt_ptr, seg,
                       b, g, d, dmask, m_dn, s, S, c_lo, n_chunks, NC, L, LP, D, N,
                       su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
                       HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr,
                       CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, N_PAD: tl.constexpr,
                       BC_WHOLE: tl.constexpr, BC_PAIRS: tl.constexpr, FROM_T0: tl.constexpr):
    """The state-only pass without cu_seqlens: the segment's end state from `h`, its entering
    one, -> `ends`, and its summed dt -> `seg_dt`. No state inside the segment is needed,
    so each chunk is summed, not scanned: for each state index n

        h_end = 2^(A2 dt_tot) h + sum_t 2^(A2 dt_after_t) dt_t u_t B_t

    (A2 = A log2 e; dt_tot the chunk's summed dt, dt_after_t its dt after t in scan order, so
    every factor is at most 1): one exp2 and three products a position and one sum across
    the lanes, where a scan takes two values through every step across them. The state
    stays in registers from chunk to chunk. Positions as the full pass's (`chunk_rows`)."""
    k = tl.arange(0, CHUNK)
    nn = tl.arange(0, N_PAD)
    A2 = tl.load(A_ptr + d[:, None] * N + nn[None, :], mask=m_dn, other=0.0) * LOG2E
    dt_total = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i in range(0, n_chunks):
        _c, t0, t, r0, _tmask, lmask, _m, _valid, dt, dtu = _chunk(
            i, c_lo, n_chunks, NC, k, b, d, dmask, L, LP, u_ptr, delta_ptr, bias_ptr,
            su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, HAS_BIAS, SOFTPLUS, REVERSE, CHUNK, FROM_T0)
        rmask = lmask
        if BC_WHOLE:
            rmask = None
        cum = tl.cumsum(dt, axis=1)
        tot = tl.sum(dt, axis=1)
        dt_total += tot
        after = tot[:, None] - cum
        sums = tl.zeros([BLOCK_D, N_PAD], dtype=tl.float32)
        # state n + 1's loads are issued in state n's iteration, as in the full pass
        A2_nx = tl.load(A_ptr + d * N, mask=dmask, other=0.0) * LOG2E
        B_nx = load_bc_row(B_ptr, b, g, 0, r0, rmask, LP, sB_b, sB_g, sB_n, sB_l, CHUNK,
                           BC_PAIRS)
        for n in tl.range(0, N):
            A2n, Bn = A2_nx, B_nx
            nx = tl.minimum(n + 1, N - 1)
            A2_nx = tl.load(A_ptr + d * N + nx, mask=dmask, other=0.0) * LOG2E
            B_nx = load_bc_row(B_ptr, b, g, nx, r0, rmask, LP, sB_b, sB_g, sB_n, sB_l, CHUNK,
                               BC_PAIRS)
            total = tl.sum(dtu * Bn[None, :] * tl.exp2(after * A2n[:, None]), axis=1)
            sums = tl.where(nn[None, :] == n, total[:, None], sums)
        h = h * tl.exp2(A2 * tot[:, None]) + sums
    tl.store(ends_ptr + seg, h, mask=m_dn)
    tl.store(seg_dt_ptr + (b * S + s) * D + d, dt_total, mask=dmask)


@triton.jit
def scan_fwd_kernel(
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, h0_ptr, seq_ptr,
    states_ptr, ends_ptr, seg_dt_ptr, out_ptr, last_ptr,
    L, LP, D, N, G, DG, CPS,
    su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
    sz_b, sz_d, sz_l, so_b, so_d, so_l,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_H0: tl.constexpr,
    HAS_CU: tl.constexpr, REVERSE: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    STATE_ONLY: tl.constexpr, HAS_ENTER: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, N_PAD: tl.constexpr, UNROLL: tl.constexpr,
    BC_WHOLE: tl.constexpr, BC_PAIRS: tl.constexpr, SAVE: tl.constexpr,
    GROUP_STORE: tl.constexpr, FROM_T0: tl.constexpr,
):
    b, g, d, dmask, s, c_lo, n_chunks, scan_first, NC = program_place(
        L, DG, G, CPS, CHUNK, BLOCK_D, REVERSE)
    S = tl.num_programs(1)
    if STATE_ONLY:
        if walk_last(s, S, REVERSE):   # the scan's last segment: nothing reads its end state
            return
    NS = tl.cdiv(L, SAVE)                                      # rows of `states`
    R: tl.constexpr = CHUNK // SAVE                            # sub-chunks per chunk
    row_b = b * NS                                             # batch row b's first state row
    k = tl.arange(0, CHUNK)      # the chunk's positions in scan order (`chunk_rows`)
    begin = k == 0
    nn = tl.arange(0, N_PAD)
    m_dn = dmask[:, None] & (nn < N)[None, :]
    seg = ((b * S + s) * D + d[:, None]) * N + nn[None, :]                   # (BD, N_PAD)

    # the state entering the segment -> states[b, the row its first chunk enters by]
    h = tl.zeros([BLOCK_D, N_PAD], dtype=tl.float32)
    if HAS_ENTER:
        h = tl.load(ends_ptr + seg, mask=m_dn, other=0.0)
    if HAS_H0 and not HAS_CU:
        if scan_first:
            h += tl.load(h0_ptr + (b * D + d[:, None]) * N + nn[None, :], mask=m_dn, other=0.0)
    if STATE_ONLY and not HAS_CU:
        _segment_end_state(h, u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, ends_ptr, seg_dt_ptr,
                           seg, b, g, d, dmask, m_dn, s, S, c_lo, n_chunks, NC, L, LP, D, N,
                           su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
                           HAS_BIAS, SOFTPLUS, REVERSE, CHUNK, BLOCK_D, N_PAD, BC_WHOLE,
                           BC_PAIRS, FROM_T0)
        return
    c0, _c1 = chunk_at(0, c_lo, n_chunks, REVERSE)
    row0 = entering_row(c0, NS, R, REVERSE)
    tl.store(states_ptr + ((row_b + row0) * D + d[:, None]) * N + nn[None, :], h, mask=m_dn)

    dt_total = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i in range(0, n_chunks):
        c, t0, t, r0, tmask, lmask, m, valid, dt, dtu = _chunk(
            i, c_lo, n_chunks, NC, k, b, d, dmask, L, LP, u_ptr, delta_ptr, bias_ptr,
            su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, HAS_BIAS, SOFTPLUS, REVERSE, CHUNK, FROM_T0)
        rmask = lmask
        if BC_WHOLE:  # B's and C's rows hold every chunk whole: they load unmasked
            rmask = None
        if STATE_ONLY:
            dt_total += tl.sum(dt, axis=1)
        if HAS_CU:
            seq, first, last = sequence_bounds(seq_ptr, t, tmask, L, REVERSE)
        # where the chunk's state enters from
        here = states_ptr + ((row_b + entering_row(c, NS, R, REVERSE)) * D + d) * N  # (BD,)
        y = tl.zeros([BLOCK_D, CHUNK], dtype=tl.float32)
        tl.debug_barrier()  # the previous chunk's stores of `here` are visible
        # state n's loads are issued one iteration ahead, so their latency hides behind a scan
        # (mostly: ncu finds 17% of the loop's samples waiting on them at 1x128K, yet two
        # iterations ahead or an L1 prefetch measured slower; docs/benchmarks/scan.md)
        h_nx = tl.load(here, mask=dmask, other=0.0)
        A2_nx = tl.load(A_ptr + d * N, mask=dmask, other=0.0) * LOG2E
        B_nx = load_bc_row(B_ptr, b, g, 0, r0, rmask, LP, sB_b, sB_g,
                           sB_n, sB_l, CHUNK, BC_PAIRS)
        if not STATE_ONLY:
            C_nx = load_bc_row(C_ptr, b, g, 0, r0, rmask, LP, sC_b, sC_g,
                               sC_n, sC_l, CHUNK, BC_PAIRS)
        for n in tl.range(0, N, loop_unroll_factor=UNROLL):
            h_in, A2, Bn = h_nx, A2_nx, B_nx
            if not STATE_ONLY:
                Cn = C_nx
            # the last iteration loads state N-1's again rather than testing n + 1 < N
            nx = tl.minimum(n + 1, N - 1)
            h_nx = tl.load(here + nx, mask=dmask, other=0.0)
            A2_nx = tl.load(A_ptr + d * N + nx, mask=dmask, other=0.0) * LOG2E
            B_nx = load_bc_row(B_ptr, b, g, nx, r0, rmask, LP, sB_b, sB_g,
                               sB_n, sB_l, CHUNK, BC_PAIRS)
            if not STATE_ONLY:
                C_nx = load_bc_row(C_ptr, b, g, nx, r0, rmask, LP, sC_b, sC_g,
                                   sC_n, sC_l, CHUNK, BC_PAIRS)
            a = tl.exp2(dt * A2[:, None])
            x = dtu * Bn[None, :]
            if HAS_CU:
                if HAS_H0:
                    m0 = first[None, :] & dmask[:, None]
                    h0 = tl.load(h0_ptr + (seq[None, :].to(tl.int64) * D + d[:, None]) * N + n,
                                 mask=m0, other=0.0)
                    x += a * h0
                a = tl.where(first[None, :], 0.0, a)
            # the state entering the chunk joins at its first position: h = x's scan alone.
            # `begin` is one position, so only the registers that can hold it select (the
            # compiler folds the test to false elsewhere) and the scan's products of a
            # go unused past the lanes' totals
            x = tl.where(begin[None, :], x + a * h_in[:, None], x)
            _a_cum, hn = tl.associative_scan((a, x), axis=1, combine_fn=pair_combine)
            # the states at the sub-chunks' ends (scan order), each stored by the thread
            # that holds it
            for r in tl.static_range(R):
                pos, nxt, ok, seg_last = save_point(c, r, c_lo, n_chunks, NS, SAVE, R,
                                                    REVERSE)
                to = tl.where(seg_last, ends_ptr + ((b * S + s) * D + d) * N,
                              states_ptr + ((row_b + nxt) * D + d) * N)
                store_position(to + n, hn, pos, ok, dmask, True, GROUP_STORE)
            if not STATE_ONLY:
                y += hn * Cn[None, :]
                if HAS_CU:
                    m_last = last[None, :] & dmask[:, None]
                    tl.store(last_ptr + (seq[None, :].to(tl.int64) * D + d[:, None]) * N + n,
                             hn, mask=m_last)
        if not STATE_ONLY:
            if HAS_D:  # u again (an L1/L2 hit) rather than held in registers over the n loop
                u = load_chunk(u_ptr, b, d, t, m, t0, LP, dmask, su_b, su_d, su_l, CHUNK,
                               REVERSE, FROM_T0)
                y += tl.load(D_ptr + d, mask=dmask, other=0.0)[:, None] * u
            if HAS_Z:
                zt = load_chunk(z_ptr, b, d, t, valid, t0, L, dmask, sz_b, sz_d, sz_l, CHUNK,
                                REVERSE, FROM_T0)
                y = y * zt * tl.sigmoid(zt)
            store_chunk(out_ptr, y, b, d, t, valid, t0, L, dmask, so_b, so_d, so_l, CHUNK,
                        REVERSE, FROM_T0)
    if STATE_ONLY:
        tl.store(seg_dt_ptr + (b * S + s) * D + d, dt_total, mask=dmask)
