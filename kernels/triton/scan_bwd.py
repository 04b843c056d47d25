"""Backward selective scan: the state's gradient runs against the scan, chunk-parallel too.

Same grid and tiles as the forward (`scan_fwd.py`). With g_t = dL/dh_t (the state after
position t, scan order) and a', x' the scan elements of `common.py`:

    g_t  = C_t dy_t (+ d last_state at a sequence's last position) + a'_next g_next
    dx_t = g_t,   d(a_t) * a_t = g_t * (h_t - x_t)   (= g_t a_t h_prev, h0 at a start)

1. `chunk_state_bwd_kernel`: each chunk's gradient w.r.t. its entering state from inside
   the chunk alone (a'_first * g_first, with zero gradient arriving at the chunk's end).
2. `carry.chunk_carry_kernel`, run against the scan: the gradient arriving at each
   chunk's end from later chunks.
3. `chunk_scan_bwd_kernel`: recompute h inside the chunk from the saved entering state,
   g from the arriving gradient, and every input gradient. A program covers all channels
   of its (batch, group, split), so dB and dC (sums over channels) stay in registers and
   are written once per split; dA, dD and d delta_bias (sums over time) are added
   atomically once per (chunk, channel block).
"""
import triton
import triton.language as tl

from .common import (adjoint_combine, load_bc, load_decay, load_dt, pair_combine,
                     sequence_bounds, state_tile_ptrs)
from .scan_fwd import _program_channels, _tile_elements


@triton.jit
def _output_grad(dout_ptr, z_ptr, b, d, t, m, sdo_b, sdo_d, sdo_l, sz_b, sz_d, sz_l,
                 HAS_Z: tl.constexpr):
    """dy = dout * silu(z) (dout without a gate), plus z and sigmoid(z) for dz."""
    dout = tl.load(dout_ptr + b * sdo_b + t[:, None] * sdo_l + d[None, :] * sdo_d, mask=m,
                   other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_ptr + b * sz_b + t[:, None] * sz_l + d[None, :] * sz_d, mask=m,
                    other=0.0).to(tl.float32)
        sig = tl.sigmoid(z)
        return dout * z * sig, dout, z, sig
    else:
        return dout, dout, dout, dout


@triton.jit
def chunk_state_bwd_kernel(
    delta_ptr, bias_ptr, A_ptr, C_ptr, dout_ptr, z_ptr, dlast_ptr, seq_ptr, adj_ptr,
    L, D, N, G, S, DG, DS,
    sdl_b, sdl_d, sdl_l, sC_b, sC_g, sC_n, sC_l, sdo_b, sdo_d, sdo_l, sz_b, sz_d, sz_l,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_DLAST: tl.constexpr,
    HAS_CU: tl.constexpr, REVERSE: tl.constexpr, HAS_Z: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, N_PAD: tl.constexpr,
):
    pid_c = tl.program_id(0)
    b, g, d_lo, d_hi = _program_channels(tl.program_id(1), G, S, DG, DS)
    NC = tl.cdiv(L, CHUNK)
    t = pid_c * CHUNK + tl.arange(0, CHUNK)
    tmask = t < L
    n = tl.arange(0, N_PAD)
    nmask = n < N
    Ct = load_bc(C_ptr, b, g, n, t, nmask, tmask, sC_b, sC_g, sC_n, sC_l)    # (T, N)
    seq, first, last = sequence_bounds(seq_ptr, b, t, tmask, L, HAS_CU, REVERSE)
    # the chunk's first position in scan order (the last valid one when scanning backwards)
    if REVERSE:
        start = tl.arange(0, CHUNK)[:, None, None] == tl.minimum(CHUNK, L - pid_c * CHUNK) - 1
    else:
        start = tl.arange(0, CHUNK)[:, None, None] == 0
    row = (b.to(tl.int64) * NC + pid_c) * D
    for d0 in range(d_lo, d_hi, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        dmask = d < d_hi
        m = tmask[:, None] & dmask[None, :]
        m2 = dmask[:, None] & nmask[None, :]
        dt, _ = load_dt(delta_ptr, bias_ptr, b, d, t, dmask, tmask, sdl_b, sdl_d, sdl_l,
                        HAS_BIAS, SOFTPLUS)
        _, a = load_decay(A_ptr, d, n, dmask, nmask, dt, N)
        a_cut = tl.where(first[:, None, None], 0.0, a)
        dy, _, _, _ = _output_grad(dout_ptr, z_ptr, b, d, t, m, sdo_b, sdo_d, sdo_l,
                                   sz_b, sz_d, sz_l, HAS_Z)
        beta = Ct[:, None, :] * dy[:, :, None]                               # (T, BD, N)
        if HAS_DLAST:
            m_last = last[:, None, None] & m2[None, :, :]
            beta += tl.load(state_tile_ptrs(dlast_ptr, seq, d, n, D, N), mask=m_last, other=0.0)
        q, _, f = tl.associative_scan((beta, tl.full(beta.shape, 1.0, tl.float32), a_cut),
                                      axis=0, combine_fn=adjoint_combine, reverse=not REVERSE)
        into_enter = tl.sum(tl.where(start, f * q, 0.0), axis=0)             # (BD, N)
        tl.store(adj_ptr + (row + d[:, None]) * N + n[None, :], into_enter, mask=m2)


@triton.jit
def chunk_scan_bwd_kernel(
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, h0_ptr, seq_ptr,
    states_ptr, adj_ptr, dout_ptr, dlast_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    L, D, N, G, S, DG, DS,
    su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
    sz_b, sz_d, sz_l, sdo_b, sdo_d, sdo_l,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_H0: tl.constexpr,
    HAS_DLAST: tl.constexpr, HAS_CU: tl.constexpr, REVERSE: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, N_PAD: tl.constexpr,
):
    pid_c = tl.program_id(0)
    pid = tl.program_id(1)
    b, g, d_lo, d_hi = _program_channels(pid, G, S, DG, DS)
    NC = tl.cdiv(L, CHUNK)
    t = pid_c * CHUNK + tl.arange(0, CHUNK)
    tmask = t < L
    n = tl.arange(0, N_PAD)
    nmask = n < N
    Bt = load_bc(B_ptr, b, g, n, t, nmask, tmask, sB_b, sB_g, sB_n, sB_l)    # (T, N)
    Ct = load_bc(C_ptr, b, g, n, t, nmask, tmask, sC_b, sC_g, sC_n, sC_l)    # (T, N)
    seq, first, last = sequence_bounds(seq_ptr, b, t, tmask, L, HAS_CU, REVERSE)
    row = (b.to(tl.int64) * NC + pid_c) * D
    dB_acc = tl.zeros([CHUNK, N_PAD], dtype=tl.float32)
    dC_acc = tl.zeros([CHUNK, N_PAD], dtype=tl.float32)
    for d0 in range(d_lo, d_hi, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        dmask = d < d_hi
        m = tmask[:, None] & dmask[None, :]
        m2 = dmask[:, None] & nmask[None, :]
        u, dt, raw, A, a, a_cut, x, x_in = _tile_elements(
            u_ptr, delta_ptr, bias_ptr, A_ptr, h0_ptr, b, d, n, t, dmask, nmask, tmask,
            Bt, first, seq, D, N, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l,
            HAS_BIAS, SOFTPLUS, HAS_H0)
        # recompute the states of the chunk from its saved entering state
        a_cum, x_cum = tl.associative_scan((a_cut, x_in), axis=0, combine_fn=pair_combine,
                                           reverse=REVERSE)
        h_enter = tl.load(states_ptr + (row + d[:, None]) * N + n[None, :], mask=m2, other=0.0)
        h = a_cum * h_enter[None, :, :] + x_cum                              # (T, BD, N)
        # output gate and skip
        dy, dout, z, sig = _output_grad(dout_ptr, z_ptr, b, d, t, m, sdo_b, sdo_d, sdo_l,
                                        sz_b, sz_d, sz_l, HAS_Z)
        offs = (b * D + d[None, :]) * L + t[:, None]       # du, ddelta, dz: contiguous
        if HAS_D:
            Dv = tl.load(D_ptr + d, mask=dmask, other=0.0)
        if HAS_Z:
            y = tl.sum(h * Ct[:, None, :], axis=2)
            if HAS_D:
                y += Dv[None, :] * u
            dz = dout * y * sig * (1.0 + z * (1.0 - sig))
            tl.store(dz_ptr + offs, dz.to(dz_ptr.dtype.element_ty), mask=m)
        # gradient of the state, from the end of the chunk backwards (in scan order)
        beta = Ct[:, None, :] * dy[:, :, None]
        if HAS_DLAST:
            m_last = last[:, None, None] & m2[None, :, :]
            beta += tl.load(state_tile_ptrs(dlast_ptr, seq, d, n, D, N), mask=m_last, other=0.0)
        q, p, _ = tl.associative_scan((beta, tl.full(beta.shape, 1.0, tl.float32), a_cut),
                                      axis=0, combine_fn=adjoint_combine, reverse=not REVERSE)
        g_arrive = tl.load(adj_ptr + (row + d[:, None]) * N + n[None, :], mask=m2, other=0.0)
        gr = q + p * g_arrive[None, :, :]                                    # (T, BD, N)
        # input gradients
        hx = h - x                                             # a * h_prev (a * h0 at starts)
        gB = gr * Bt[:, None, :]
        ddt = tl.sum(gr * hx * A[None, :, :], axis=2) + tl.sum(gB, axis=2) * u
        du = tl.sum(gB, axis=2) * dt
        if HAS_D:
            du += Dv[None, :] * dy
            tl.atomic_add(dD_ptr + d, tl.sum(tl.where(m, dy * u, 0.0), axis=0), mask=dmask)
        dB_acc += tl.sum(gr * (dt * u)[:, :, None], axis=1)
        dC_acc += tl.sum(h * dy[:, :, None], axis=1)
        tl.atomic_add(dA_ptr + d[:, None] * N + n[None, :],
                      tl.sum(gr * hx * dt[:, :, None], axis=0), mask=m2)
        if SOFTPLUS:
            ddt = tl.where(raw <= 20.0, ddt * tl.sigmoid(raw), ddt)
        ddt = tl.where(m, ddt, 0.0)
        if HAS_BIAS:
            tl.atomic_add(dbias_ptr + d, tl.sum(ddt, axis=0), mask=dmask)
        tl.store(du_ptr + offs, du.to(du_ptr.dtype.element_ty), mask=m)
        tl.store(ddelta_ptr + offs, ddt.to(ddelta_ptr.dtype.element_ty), mask=m)
        if HAS_H0:
            m_first = first[:, None, None] & m2[None, :, :]
            tl.store(state_tile_ptrs(dh0_ptr, seq, d, n, D, N), a * gr, mask=m_first)
    # dB, dC partials of this split: (S, batch, groups, N, L) float32
    mt = tmask[:, None] & nmask[None, :]
    part = ((pid.to(tl.int64) % S) * (tl.num_programs(1) // S) + pid // S) * N
    tl.store(dB_ptr + (part + n[None, :]) * L + t[:, None], dB_acc, mask=mt)
    tl.store(dC_ptr + (part + n[None, :]) * L + t[:, None], dC_acc, mask=mt)

