"""Forward selective scan, one thread per (channel, quarter of the state), walking time.

Prototype of a second design for the forward pass (see docs/benchmarks/scan.md): instead of
scanning each state across a chunk's positions with lane shuffles, every thread owns NQ
state indices of one channel and applies h = a h + x position by position, the way the
recurrence is written. The work per (position, state) is the essential one: one exp2, the
decay's product, x = dt u B, one FMA for h and one for C h; the output's sum over the state
crosses the Q lanes of a channel (two shuffles per position). Positions come 8 at a time:
the (BLOCK_D, Q, 8) tiles of dt and u are loaded as one vector per thread and split into
8 per-position values in registers; B and C are read per position as rows of `BT`, `CT`
(batch, groups, length, dstate) float32, laid out state-contiguous for that.

One thread per channel and quarter gives batch x dim x Q threads: at batch 1 the length is
cut into segments that run in parallel, with a state-only pass and the carry pass between
(as in `scan_fwd.py`). Every CHUNK positions the state is stored in `states`, the format the
backward pass restarts from.
"""
import triton
import triton.language as tl

from .common import LOG2E, softplus


@triton.jit
def unstack8(v):
    """(..., 8) -> its 8 slices along the last axis, which a thread holds whole: split
    compiles to a renaming of registers."""
    s: tl.constexpr = v.shape
    w = tl.reshape(v, s[:-1] + (2, 2, 2))
    e, o = tl.split(w)          # lowest bit of the position
    ee, eo = tl.split(e)
    oe, oo = tl.split(o)
    v0, v4 = tl.split(ee)
    v2, v6 = tl.split(eo)
    v1, v5 = tl.split(oe)
    v3, v7 = tl.split(oo)
    return v0, v1, v2, v3, v4, v5, v6, v7


@triton.jit
def stack8(v0, v1, v2, v3, v4, v5, v6, v7):
    """The inverse of `unstack8`: 8 tensors -> (..., 8)."""
    w = tl.join(tl.join(tl.join(v0, v4), tl.join(v2, v6)),
                tl.join(tl.join(v1, v5), tl.join(v3, v7)))     # (..., i0, i1, i2): i = 4 i0 + 2 i1 + i2
    s: tl.constexpr = v0.shape
    return tl.reshape(w, s + (8,))


@triton.jit
def scan_fwd_seq_kernel(
    u_ptr, delta_ptr, bias_ptr, A_ptr, BT_ptr, CT_ptr, D_ptr, z_ptr, h0_ptr,
    states_ptr, ends_ptr, seg_dt_ptr, out_ptr,
    L, D, N, G, DG, SEG,
    su_b, su_d, sdl_b, sdl_d, sz_b, sz_d, so_b, so_d,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_H0: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    STATE_ONLY: tl.constexpr, HAS_ENTER: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, Q: tl.constexpr, NQ: tl.constexpr,
    NP: tl.constexpr,
):
    pid_bd = tl.program_id(0)
    pid_s = tl.program_id(1)
    S = tl.num_programs(1)
    nbd = tl.cdiv(DG, BLOCK_D)
    g = (pid_bd // nbd) % G
    b = (pid_bd // (nbd * G)).to(tl.int64)
    dg = (pid_bd % nbd) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = dg < DG
    d = g * DG + dg                                                          # (BD,)
    NC = tl.cdiv(L, CHUNK)
    q = tl.arange(0, Q)
    n3 = q[None, :, None] * NQ + tl.arange(0, NQ)[None, None, :]             # (1, Q, NQ)
    nmask = n3 < N
    m_dn = dmask[:, None, None] & nmask                                      # (BD, Q, NQ)
    dn = (b * D + d[:, None, None]) * N + n3
    a2 = tl.load(A_ptr + d[:, None, None] * N + n3, mask=m_dn, other=0.0) * LOG2E
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=dmask, other=0.0).to(tl.float32)[:, None, None]
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=dmask, other=0.0).to(tl.float32)[:, None]
    LP = tl.cdiv(L, 8) * 8   # B^T, C^T: (batch, groups, LP, NP), zero past L and N
    BT = BT_ptr + (b * G + g) * LP * NP
    CT = CT_ptr + (b * G + g) * LP * NP

    h = tl.zeros([BLOCK_D, Q, NQ], dtype=tl.float32)
    if HAS_ENTER:
        h = tl.load(ends_ptr + ((b * S + pid_s) * D + d[:, None, None]) * N + n3, mask=m_dn,
                    other=0.0)
    if HAS_H0:
        if pid_s == 0:
            h += tl.load(h0_ptr + dn, mask=m_dn, other=0.0)
    j8 = tl.arange(0, 8)
    t_lo = pid_s * SEG
    t_hi = tl.minimum(t_lo + SEG, L)
    dt_total = tl.zeros([BLOCK_D, Q], dtype=tl.float32)
    for t0 in range(t_lo, t_hi, 8):
        if not STATE_ONLY:
            if t0 % CHUNK == 0:   # the state entering chunk t0 / CHUNK, for the backward
                tl.store(states_ptr + ((b * NC + t0 // CHUNK) * D + d[:, None, None]) * N + n3,
                         h, mask=m_dn)
        # dt and u, 8 positions: each of a channel's Q lanes takes 8 / Q of them for the
        # softplus, then every lane gets all 8 (BD, Q, 8)
        tq = t0 + q[None, :, None] * (8 // Q) + tl.arange(0, 8 // Q)[None, None, :]
        mq = dmask[:, None, None] & (tq < L)                                 # (BD, Q, 8/Q)
        raw = tl.load(delta_ptr + b * sdl_b + d[:, None, None] * sdl_d + tq, mask=mq,
                      other=0.0).to(tl.float32)
        if HAS_BIAS:
            raw += bias
        dtq = raw
        if SOFTPLUS:
            dtq = softplus(raw)
        dtq = tl.where(mq, dtq, 0.0)
        uq = tl.load(u_ptr + b * su_b + d[:, None, None] * su_d + tq, mask=mq,
                     other=0.0).to(tl.float32)
        dt2 = tl.reshape(dtq, (BLOCK_D, 8))
        dtu2 = tl.reshape(dtq * uq, (BLOCK_D, 8))
        dt = tl.broadcast_to(dt2[:, None, :], (BLOCK_D, Q, 8))              # (BD, Q, 8)
        dtu = tl.broadcast_to(dtu2[:, None, :], (BLOCK_D, Q, 8))
        if STATE_ONLY:
            dt_total += tl.sum(dtq, axis=2)
        dts = unstack8(dt)
        dtus = unstack8(dtu)
        ys = ()
        for j in tl.static_range(8):
            h = tl.exp2(dts[j][:, :, None] * a2) * h + dtus[j][:, :, None] * tl.load(BT + (t0 + j) * NP + n3)
            if not STATE_ONLY:
                ys = ys + (tl.sum(tl.sum(tl.load(CT + (t0 + j) * NP + n3) * h, axis=2), axis=1),)
        if not STATE_ONLY:
            y = stack8(*ys)                       # (BD, 8)
            t = t0 + j8
            m2 = dmask[:, None] & (t < L)[None, :]
            if HAS_D:
                y += Dv * tl.load(u_ptr + b * su_b + d[:, None] * su_d + t[None, :], mask=m2,
                                  other=0.0).to(tl.float32)
            if HAS_Z:
                zt = tl.load(z_ptr + b * sz_b + d[:, None] * sz_d + t[None, :], mask=m2,
                             other=0.0).to(tl.float32)
                y = y * zt * tl.sigmoid(zt)
            tl.store(out_ptr + b * so_b + d[:, None] * so_d + t[None, :],
                     y.to(out_ptr.dtype.element_ty), mask=m2)
    tl.store(ends_ptr + ((b * S + pid_s) * D + d[:, None, None]) * N + n3, h, mask=m_dn)
    if STATE_ONLY:
        tl.store(seg_dt_ptr + (b * S + pid_s) * D + d, tl.sum(dt_total, axis=1), mask=dmask)
