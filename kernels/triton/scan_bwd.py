"""Backward selective scan: the state's gradient runs against the scan.

Same grid and walk as the forward (`scan_fwd.py`), with the chunks visited in the opposite
order. With g_t = dL/dh_t (the state after position t, scan order) and a', x' the scan
elements of `common.py`:

    g_t  = C_t dy_t (+ d last_state at a sequence's last position) + a'_next g_next
    dx_t = g_t,   d(a_t) * a_t = g_t * (h_t - x_t)   (= g_t a_t h_prev, h0 at a start)

For each chunk and state index n, `scan_bwd_kernel` recomputes h over the chunk from the
entering state the forward saved, scans g with the three-value monoid of `common.py` from
the gradient arriving at the chunk's end (`adj`, passed from chunk to chunk the way the
forward passes the state), and accumulates sum_n g B and sum_n g a h_prev A (and y for dz)
in registers over n; du, d delta and dz follow at the chunk's end. dB and dC (sums over
channels) are summed over the program's channels and added atomically, as mamba_ssm's CUDA
kernel adds them per channel: at one channel per program on an H200 at 1x128K the backward
takes 10.3 ms with them, 7.7 without, and the adds alone 8.2 (`scripts/bench_scan_atomics.py`;
the L2's atomic throughput sets their time), so a program holds two channels in one warp
where it can; dA (per chunk and n), dD and d delta_bias (per program)
after a sum over time. The adds are relaxed: nothing reads the sums before the kernel ends.

Segments, when there are several, need the gradient arriving at each segment's end first:
a launch with ADJ_ONLY=True scans only g through each segment but the scan's first, from
zero (no recompute of h), and writes what reaches the segment's start (`ends`) and its
summed dt; the carry pass, run against the scan, turns that into what arrives at each
segment's end.
"""
import triton
import triton.language as tl

from .common import (LOG2E, adjoint_combine, chunk_at, chunk_handover, chunk_masks,
                     load_bc_row, load_dt, load_tile, pair_combine, program_place,
                     reverse_adjoint_scan, reverse_pair_scan, sequence_bounds,
                     store_chunk_grads, store_position, walk_last)


@triton.jit
def scan_bwd_kernel(
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, h0_ptr, seq_ptr,
    states_ptr, adj_ptr, ends_ptr, seg_dt_ptr, dout_ptr, dlast_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    L, LP, D, N, G, DG, CPS,
    su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
    sz_b, sz_d, sz_l, sdo_b, sdo_d, sdo_l,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_H0: tl.constexpr,
    HAS_DLAST: tl.constexpr, HAS_CU: tl.constexpr, REVERSE: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, ADJ_ONLY: tl.constexpr, HAS_ENTER: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, N_PAD: tl.constexpr, UNROLL: tl.constexpr,
    BC_WHOLE: tl.constexpr,
):
    # the walk runs against the scan: flip the direction for the chunk order
    b, g, d, dmask, s, c_lo, n_chunks, scan_first, NC = program_place(
        L, DG, G, CPS, CHUNK, BLOCK_D, not REVERSE)
    S = tl.num_programs(1)
    if ADJ_ONLY:
        if walk_last(s, S, not REVERSE):   # the scan's first segment: nothing reads its result
            return
    k = tl.arange(0, CHUNK)
    START: tl.constexpr = CHUNK - 1 if REVERSE else 0    # a chunk's first position in scan order
    start = k == START
    nn = tl.arange(0, N_PAD)
    m_dn = dmask[:, None] & (nn < N)[None, :]
    seg = ((b * S + s) * D + d[:, None]) * N + nn[None, :]

    # the gradient arriving at the segment's end -> adj[b, its last chunk]
    gin = tl.zeros([BLOCK_D, N_PAD], dtype=tl.float32)
    if HAS_ENTER:
        gin = tl.load(ends_ptr + seg, mask=m_dn, other=0.0)
    if HAS_DLAST and not HAS_CU:
        # `program_place` was asked about the reversed walk: its first segment is the scan's last
        if scan_first:
            gin += tl.load(dlast_ptr + (b * D + d[:, None]) * N + nn[None, :], mask=m_dn,
                           other=0.0)
    c0, _c1 = chunk_at(0, c_lo, n_chunks, not REVERSE)
    tl.store(adj_ptr + ((b * NC + c0) * D + d[:, None]) * N + nn[None, :], gin, mask=m_dn)
    Dv = tl.zeros([BLOCK_D], dtype=tl.float32)
    if not ADJ_ONLY:
        if HAS_D:
            Dv = tl.load(D_ptr + d, mask=dmask, other=0.0)
            dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        if HAS_BIAS:
            dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)

    dt_total = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i in range(0, n_chunks):
        c, c_next = chunk_at(i, c_lo, n_chunks, not REVERSE)
        t0 = c * CHUNK
        t = t0 + k
        tmask, lmask, m, valid = chunk_masks(t, L, LP, dmask)
        rmask = lmask
        if BC_WHOLE:  # B's and C's rows hold every chunk whole: they load unmasked
            rmask = None
        # Only dt, dt * u, dy and three accumulators live through the loop over states; what
        # the chunk's end needs besides (delta, dout, z, u) is loaded again there (L2 hits)
        # rather than held in registers, which the backward has none to spare of
        dt, _raw = load_dt(delta_ptr, bias_ptr, b, d, t, m, valid, dmask, sdl_b, sdl_d,
                           sdl_l, HAS_BIAS, SOFTPLUS)
        if ADJ_ONLY:
            dt_total += tl.sum(dt, axis=1)
        dy = load_tile(dout_ptr, b, d, t, m, sdo_b, sdo_d, sdo_l)
        if HAS_Z:
            zt = load_tile(z_ptr, b, d, t, m, sz_b, sz_d, sz_l)
            dy = dy * zt * tl.sigmoid(zt)
        if not ADJ_ONLY:
            dtu = dt * load_tile(u_ptr, b, d, t, m, su_b, su_d, su_l)
            gB = tl.zeros([BLOCK_D, CHUNK], dtype=tl.float32)     # sum over n of g B
            gHA = tl.zeros([BLOCK_D, CHUNK], dtype=tl.float32)    # ... of g a h_prev A
            y = tl.zeros([BLOCK_D, CHUNK], dtype=tl.float32)      # ... of h C, where HAS_Z
        if HAS_CU:
            seq, first, last = sequence_bounds(seq_ptr, t, tmask, L, REVERSE)
        here, edge = chunk_handover(adj_ptr, ends_ptr, b, s, c, c_next, i + 1 == n_chunks,
                                    NC, S, D, N, d)
        h_enter = states_ptr + ((b * NC + c) * D + d) * N
        tl.debug_barrier()  # the previous chunk's stores of `here` are visible
        # state n's loads are issued one iteration ahead, so their latency hides behind a scan
        g_nx = tl.load(here, mask=dmask, other=0.0)
        A_nx = tl.load(A_ptr + d * N, mask=dmask, other=0.0)
        if not ADJ_ONLY:
            h_nx = tl.load(h_enter, mask=dmask, other=0.0)
            B_nx = load_bc_row(B_ptr, b, g, 0, t0, rmask, LP, sB_b, sB_g,
                               sB_n, sB_l, CHUNK, False)
        C_nx = load_bc_row(C_ptr, b, g, 0, t0, rmask, LP, sC_b, sC_g,
                           sC_n, sC_l, CHUNK, False)
        for n in tl.range(0, N, loop_unroll_factor=UNROLL):
            g_in, A, Cn = g_nx, A_nx, C_nx
            if not ADJ_ONLY:
                h_in, Bn = h_nx, B_nx
            # the last iteration loads state N-1's again rather than testing n + 1 < N
            nx = tl.minimum(n + 1, N - 1)
            g_nx = tl.load(here + nx, mask=dmask, other=0.0)
            A_nx = tl.load(A_ptr + d * N + nx, mask=dmask, other=0.0)
            if not ADJ_ONLY:
                h_nx = tl.load(h_enter + nx, mask=dmask, other=0.0)
                B_nx = load_bc_row(B_ptr, b, g, nx, t0, rmask, LP, sB_b, sB_g,
                                   sB_n, sB_l, CHUNK, False)
            C_nx = load_bc_row(C_ptr, b, g, nx, t0, rmask, LP, sC_b, sC_g,
                               sC_n, sC_l, CHUNK, False)
            a = tl.exp2(dt * (A * LOG2E)[:, None])
            a_cut = a
            if HAS_CU:
                a_cut = tl.where(first[None, :], 0.0, a)
            beta = dy * Cn[None, :]
            if HAS_DLAST and HAS_CU:
                m_last = last[None, :] & dmask[:, None]
                beta += tl.load(dlast_ptr + (seq[None, :].to(tl.int64) * D + d[:, None]) * N + n,
                                mask=m_last, other=0.0)
            if REVERSE:
                ones = tl.full(beta.shape, 1.0, tl.float32)
                q, p, _f = tl.associative_scan((beta, ones, a_cut), axis=1,
                                               combine_fn=adjoint_combine)
                gr = q + p * g_in[:, None]                                      # (BD, T)
            else:
                gr = reverse_adjoint_scan(beta, a_cut, g_in, BLOCK_D, CHUNK)
            # what reaches the chunk's entering state, stored by the thread that holds it
            store_position(edge + n, a_cut * gr, START, True, dmask, REVERSE, False)
            if not ADJ_ONLY:
                # recompute the states of the chunk from its saved entering state
                x = dtu * Bn[None, :]
                x_in = x
                if HAS_CU:
                    if HAS_H0:
                        m0 = first[None, :] & dmask[:, None]
                        h0p = h0_ptr + (seq[None, :].to(tl.int64) * D + d[:, None]) * N + n
                        x_in = x + a * tl.load(h0p, mask=m0, other=0.0)
                        tl.store(dh0_ptr + (seq[None, :].to(tl.int64) * D + d[:, None]) * N + n,
                                 a * gr, mask=m0)
                # the saved entering state joins at the chunk's first position (as forward)
                x_in = tl.where(start[None, :], x_in + a_cut * h_in[:, None], x_in)
                if REVERSE:
                    _a_cum, hn = reverse_pair_scan(a_cut, x_in, BLOCK_D, CHUNK)
                else:
                    _a_cum, hn = tl.associative_scan((a_cut, x_in), axis=1,
                                                     combine_fn=pair_combine)
                if HAS_Z:
                    y += hn * Cn[None, :]
                ghx = gr * (hn - x)                       # g a h_prev (a h0 at starts)
                gB += gr * Bn[None, :]
                gHA += ghx * A[:, None]
                tl.atomic_add(dA_ptr + d * N + n, tl.sum(ghx * dt, axis=1), mask=dmask,
                              sem="relaxed")
                # dB, dC: summed over the program's channels, then added to the row
                bc = ((b * G + g) * N + n) * LP + t         # dB, dC: rows of LP positions
                tl.atomic_add(dB_ptr + bc, tl.sum(gr * dtu, axis=0), mask=lmask, sem="relaxed")
                tl.atomic_add(dC_ptr + bc, tl.sum(hn * dy, axis=0), mask=lmask, sem="relaxed")
        if not ADJ_ONLY:
            dD_c, dbias_c = store_chunk_grads(
                gB, gHA, y, dt, dy, Dv, b, d, t, m, valid, dmask, L, D, u_ptr, delta_ptr,
                bias_ptr, z_ptr, dout_ptr, du_ptr, ddelta_ptr, dz_ptr, su_b, su_d, su_l, sdl_b,
                sdl_d, sdl_l, sz_b, sz_d, sz_l, sdo_b, sdo_d, sdo_l, HAS_BIAS, SOFTPLUS, HAS_D,
                HAS_Z, EXP2_SIGMOID=False)
            if HAS_D:
                dD_acc += dD_c
            if HAS_BIAS:
                dbias_acc += dbias_c
    if ADJ_ONLY:
        tl.store(seg_dt_ptr + (b * S + s) * D + d, dt_total, mask=dmask)
    else:
        if HAS_D:
            tl.atomic_add(dD_ptr + d, dD_acc, mask=dmask, sem="relaxed")
        if HAS_BIAS:
            tl.atomic_add(dbias_ptr + d, dbias_acc, mask=dmask, sem="relaxed")
