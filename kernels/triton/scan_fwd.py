"""Forward selective scan: chunk-local end states, then the scan with the carried-in states.

Two kernels, each over a grid (chunks, batch x groups x channel-splits); a program loops
over its channels BLOCK_D at a time and holds one chunk of them as a (CHUNK, BLOCK_D, N)
tile (see `common.py` for the scan monoids and sequence starts):

1. `chunk_state_fwd_kernel`: scan the chunk from a zero state; write its end state to
   `states[b, c]` and the chunk's summed dt to `dtsum[b, c]` (its decay is exp(A * dtsum)).
2. `carry.chunk_carry_kernel` turns `states` in place into each chunk's entering state.
3. `chunk_scan_fwd_kernel`: scan the chunk again from its entering state, write
   out = (C.h + D u) * silu(z), and the state at each sequence's last position.

`states` (batch, chunks, dim, dstate) float32 is what the backward pass restarts from.
"""
import triton
import triton.language as tl

from .common import load_bc, load_decay, load_dt, pair_combine, sequence_bounds, state_tile_ptrs


@triton.jit
def _program_channels(pid, G, S, DG, DS):
    """Program axis 1 enumerates (batch, group, split): its batch, group and channel range."""
    s = pid % S
    g = (pid // S) % G
    b = pid // (S * G)
    d_lo = g * DG + s * DS
    d_hi = tl.minimum(d_lo + DS, (g + 1) * DG)
    return b, g, d_lo, d_hi


@triton.jit
def _tile_elements(u_ptr, delta_ptr, bias_ptr, A_ptr, h0_ptr, b, d, n, t, dmask, nmask, tmask,
                   Bt, first, seq, D, N, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l,
                   HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_H0: tl.constexpr):
    """The scan elements of one tile: decay a' (cut at sequence starts) and input x' (with
    the initial state entering at starts), plus what the backward pass reuses."""
    m = tmask[:, None] & dmask[None, :]
    u = tl.load(u_ptr + b * su_b + t[:, None] * su_l + d[None, :] * su_d, mask=m,
                other=0.0).to(tl.float32)                                    # (T, BD)
    dt, raw = load_dt(delta_ptr, bias_ptr, b, d, t, dmask, tmask, sdl_b, sdl_d, sdl_l,
                      HAS_BIAS, SOFTPLUS)                                    # (T, BD)
    A, a = load_decay(A_ptr, d, n, dmask, nmask, dt, N)                      # (T, BD, N)
    x = (dt * u)[:, :, None] * Bt[:, None, :]                                # (T, BD, N)
    is_first = first[:, None, None]
    x_in = x
    if HAS_H0:
        m0 = is_first & dmask[None, :, None] & nmask[None, None, :]
        h0 = tl.load(state_tile_ptrs(h0_ptr, seq, d, n, D, N), mask=m0, other=0.0)
        x_in = x + a * h0
    a_cut = tl.where(is_first, 0.0, a)
    return u, dt, raw, A, a, a_cut, x, x_in


@triton.jit
def chunk_state_fwd_kernel(
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, h0_ptr, seq_ptr, states_ptr, dtsum_ptr,
    L, D, N, G, S, DG, DS,
    su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_H0: tl.constexpr,
    HAS_CU: tl.constexpr, REVERSE: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, N_PAD: tl.constexpr,
):
    pid_c = tl.program_id(0)
    b, g, d_lo, d_hi = _program_channels(tl.program_id(1), G, S, DG, DS)
    NC = tl.cdiv(L, CHUNK)
    t = pid_c * CHUNK + tl.arange(0, CHUNK)
    tmask = t < L
    n = tl.arange(0, N_PAD)
    nmask = n < N
    Bt = load_bc(B_ptr, b, g, n, t, nmask, tmask, sB_b, sB_g, sB_n, sB_l)    # (T, N)
    seq, first, _last = sequence_bounds(seq_ptr, b, t, tmask, L, HAS_CU, REVERSE)
    # the chunk's last position in scan order; padding past L is the scan's identity
    if REVERSE:
        end = tl.arange(0, CHUNK)[:, None, None] == 0
    else:
        end = tl.arange(0, CHUNK)[:, None, None] == CHUNK - 1
    row = (b.to(tl.int64) * NC + pid_c) * D
    for d0 in range(d_lo, d_hi, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        dmask = d < d_hi
        _, dt, _, _, _, a_cut, _, x_in = _tile_elements(
            u_ptr, delta_ptr, bias_ptr, A_ptr, h0_ptr, b, d, n, t, dmask, nmask, tmask,
            Bt, first, seq, D, N, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l,
            HAS_BIAS, SOFTPLUS, HAS_H0)
        _, h = tl.associative_scan((a_cut, x_in), axis=0, combine_fn=pair_combine,
                                   reverse=REVERSE)
        h_end = tl.sum(tl.where(end, h, 0.0), axis=0)                        # (BD, N)
        m = dmask[:, None] & nmask[None, :]
        tl.store(states_ptr + (row + d[:, None]) * N + n[None, :], h_end, mask=m)
        tl.store(dtsum_ptr + row + d, tl.sum(dt, axis=0), mask=dmask)


@triton.jit
def chunk_scan_fwd_kernel(
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, h0_ptr, seq_ptr,
    states_ptr, out_ptr, last_ptr,
    L, D, N, G, S, DG, DS,
    su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
    sz_b, sz_d, sz_l, so_b, so_d, so_l,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_H0: tl.constexpr,
    HAS_CU: tl.constexpr, REVERSE: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, N_PAD: tl.constexpr,
):
    pid_c = tl.program_id(0)
    b, g, d_lo, d_hi = _program_channels(tl.program_id(1), G, S, DG, DS)
    NC = tl.cdiv(L, CHUNK)
    t = pid_c * CHUNK + tl.arange(0, CHUNK)
    tmask = t < L
    n = tl.arange(0, N_PAD)
    nmask = n < N
    Bt = load_bc(B_ptr, b, g, n, t, nmask, tmask, sB_b, sB_g, sB_n, sB_l)    # (T, N)
    Ct = load_bc(C_ptr, b, g, n, t, nmask, tmask, sC_b, sC_g, sC_n, sC_l)    # (T, N)
    seq, first, last = sequence_bounds(seq_ptr, b, t, tmask, L, HAS_CU, REVERSE)
    row = (b.to(tl.int64) * NC + pid_c) * D
    for d0 in range(d_lo, d_hi, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        dmask = d < d_hi
        m2 = dmask[:, None] & nmask[None, :]
        u, _, _, _, _, a_cut, _, x_in = _tile_elements(
            u_ptr, delta_ptr, bias_ptr, A_ptr, h0_ptr, b, d, n, t, dmask, nmask, tmask,
            Bt, first, seq, D, N, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l,
            HAS_BIAS, SOFTPLUS, HAS_H0)
        a_cum, x_cum = tl.associative_scan((a_cut, x_in), axis=0, combine_fn=pair_combine,
                                           reverse=REVERSE)
        h_enter = tl.load(states_ptr + (row + d[:, None]) * N + n[None, :], mask=m2, other=0.0)
        h = a_cum * h_enter[None, :, :] + x_cum                              # (T, BD, N)
        y = tl.sum(h * Ct[:, None, :], axis=2)                               # (T, BD)
        if HAS_D:
            y += tl.load(D_ptr + d, mask=dmask, other=0.0)[None, :] * u
        m = tmask[:, None] & dmask[None, :]
        if HAS_Z:
            z = tl.load(z_ptr + b * sz_b + t[:, None] * sz_l + d[None, :] * sz_d, mask=m,
                        other=0.0).to(tl.float32)
            y = y * z * tl.sigmoid(z)
        tl.store(out_ptr + b * so_b + t[:, None] * so_l + d[None, :] * so_d,
                 y.to(out_ptr.dtype.element_ty), mask=m)
        m_last = last[:, None, None] & m2[None, :, :]
        tl.store(state_tile_ptrs(last_ptr, seq, d, n, D, N), h, mask=m_last)
