"""Forward selective scan in Gluon, one lane per (channel, state index) walking the positions
(CUDA only: Gluon kernels do not run in Triton's interpreter, where `scan_fwd.py` computes
the same outputs).

`scan_fwd.py` lays a chunk's positions across the 32 lanes of a warp and loops over the
state index: every state costs a scan across the lanes, its fix-up and its selects, about
21 instructions per (position, state) against the recurrence's 5 (sm_90a SASS). Here the
lanes hold the state index instead: a warp holds 32 // N_PAD channels of N_PAD states, a
lane one (channel, state), and each lane applies h = exp2(dt A) h + dt u B to TP positions
it holds in registers, in order (`gl.associative_scan` along an axis inside the thread: a
chain of FMAs, no shuffles). What crosses lanes is the output's sum over the state, once
per position and channel (a layout change through shared memory, then a sum inside each
thread), and dt, dt u, which every lane of a channel reads. B and C arrive as float32 blocks
of TP positions laid out so that a warp's loads of them are contiguous (`blocked_rows`).

At batch 1 and 1536 channels of 16 states the grid holds 768 warps, under 1.5 a scheduler,
with a long dependent chain per block of positions: the next block's inputs are loaded while
this one's are scanned. The saved states (`states`, every SAVE positions, what the backward
restarts from) and the last state are those of `scan_fwd.py`: the backward is the same.
Scope: scan order forward, no cu_seqlens, one segment, N_PAD <= 32 states, rows of u,
delta and z with a unit stride along the length; `scan.scan_forward` uses the Triton kernel
otherwise.
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy as ac

from .common import LOG2E, sigmoid, softplus


@gluon.jit
def _chain(a1, x1, a2, x2):
    """`pair_combine` with the FMA on the recurrence's chain: a2 * x1 + x2 written as such
    let LLVM fuse x2's own product instead, two dependent instructions per position."""
    return a1 * a2, gl.fma(a2, x1, x2)


@gluon.jit
def scan_fwd_gluon_kernel(
    u_ptr, delta_ptr, bias_ptr, A_ptr, Bk_ptr, Ck_ptr, D_ptr, z_ptr, h0_ptr,
    states_ptr, ends_ptr, seg_dt_ptr, out_ptr,
    L, LP, D, N, G, DG, NS, NBLK, BPS,
    su_b, su_d, sdl_b, sdl_d, sz_b, sz_d, so_b, so_d,
    HAS_BIAS: gl.constexpr, SOFTPLUS: gl.constexpr, HAS_H0: gl.constexpr,
    HAS_D: gl.constexpr, HAS_Z: gl.constexpr, STATE_ONLY: gl.constexpr,
    HAS_ENTER: gl.constexpr,
    N_PAD: gl.constexpr, SPL: gl.constexpr, TP: gl.constexpr, W: gl.constexpr,
    SAVE: gl.constexpr, STAGES: gl.constexpr,
):
    NQ: gl.constexpr = N_PAD // SPL         # lanes per channel, SPL states each
    CW: gl.constexpr = 32 // NQ             # channels per warp
    BD: gl.constexpr = CW * W               # channels per program
    # (channel, lane of the channel, state of the lane, position): TP positions of SPL
    # states in each lane's registers
    L4: gl.constexpr = gl.BlockedLayout([1, 1, SPL, TP], [CW, NQ, 1, 1], [W, 1, 1, 1],
                                        [3, 2, 1, 0])
    # the lanes' partial sums of C h, a thread per (channel, TP // NQ positions) holding
    # every lane's: the sum over the states ends in the thread
    LR: gl.constexpr = gl.BlockedLayout([1, NQ, TP // NQ], [CW, 1, NQ], [W, 1, 1], [2, 1, 0])
    LY: gl.constexpr = gl.SliceLayout(1, LR)                       # (BD, TP)
    LDT: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(2, L4))   # (BD, TP) in every lane
    LBC: gl.constexpr = gl.SliceLayout(0, L4)                      # (NQ, SPL, TP)
    LS: gl.constexpr = gl.SliceLayout(3, L4)                       # (BD, NQ, SPL)
    # the copies into shared memory: B's and C's blocks as they lie in memory, 16 bytes a
    # thread; the (BD, TP) tiles of delta and u, 4 positions a thread
    LCB: gl.constexpr = gl.BlockedLayout([1, 1, 4], [32 // N_PAD, N_PAD, 1], [W, 1, 1],
                                         [2, 1, 0])
    LCT: gl.constexpr = gl.BlockedLayout([1, 4], [32 // (TP // 4), TP // 4], [W, 1], [1, 0])
    flat3: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[2, 1, 0])   # per stage
    flat2: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[1, 0])
    sB = gl.allocate_shared_memory(gl.float32, [STAGES, TP // 4, N_PAD, 4], flat3)
    if not STATE_ONLY:
        sC = gl.allocate_shared_memory(gl.float32, [STAGES, TP // 4, N_PAD, 4], flat3)
    sdl = gl.allocate_shared_memory(delta_ptr.dtype.element_ty, [STAGES, BD, TP], flat2)
    su = gl.allocate_shared_memory(u_ptr.dtype.element_ty, [STAGES, BD, TP], flat2)

    pid = gl.program_id(0)
    seg = gl.program_id(1)
    S = gl.num_programs(1)
    nbd = DG // BD
    g = (pid // nbd) % G
    b = (pid // (nbd * G)).to(gl.int64)
    d0 = g * DG + (pid % nbd) * BD
    blo = seg * BPS
    nb = gl.minimum(BPS, NBLK - blo)     # this segment's blocks

    dS = d0 + gl.arange(0, BD, layout=gl.SliceLayout(1, gl.SliceLayout(2, LS)))
    qS = gl.arange(0, NQ, layout=gl.SliceLayout(0, gl.SliceLayout(2, LS)))
    sS = gl.arange(0, SPL, layout=gl.SliceLayout(0, gl.SliceLayout(1, LS)))
    nS = gl.expand_dims(qS[None, :], 2) * SPL + gl.expand_dims(sS[None, :], 1)   # (1, NQ, SPL)
    m_dn = (gl.expand_dims(dS[:, None], 2) < D) & (nS < N)
    dn = gl.expand_dims(dS[:, None], 2) * N + nS                                 # (BD, NQ, SPL)
    A2 = gl.load(A_ptr + dn, mask=m_dn, other=0.0) * LOG2E
    seg_row = ends_ptr + (b * S + seg) * D * N + dn
    h = gl.zeros([BD, NQ, SPL], gl.float32, LS)
    if HAS_ENTER:
        h = gl.load(seg_row, mask=m_dn, other=0.0)
    if HAS_H0:
        if seg == 0:
            h += gl.load(h0_ptr + b * D * N + dn, mask=m_dn, other=0.0)
    rows = states_ptr + b * NS * D * N + dn      # row r of `states`: + r D N
    if not STATE_ONLY:   # the state entering the segment (its start is a multiple of SAVE)
        gl.store(rows + (blo * TP // SAVE) * D * N, h, mask=m_dn)

    dy = d0 + gl.arange(0, BD, layout=gl.SliceLayout(1, LY))
    ky = gl.arange(0, TP, layout=gl.SliceLayout(0, LY))
    if HAS_BIAS:
        bias = gl.load(bias_ptr + dy).to(gl.float32)[:, None]
    if HAS_D:
        Dv = gl.load(D_ptr + dy).to(gl.float32)[:, None]
    if HAS_Z:
        z_row = z_ptr + b * sz_b + dy[:, None] * sz_d + ky[None, :]
    o_row = out_ptr + b * so_b + dy[:, None] * so_d + ky[None, :]
    dt_total = gl.zeros([BD], gl.float32, gl.SliceLayout(1, LY))

    # where the copies read: B, C blocked (`blocked_rows`: block k of TP positions is
    # (TP // 4, N_PAD, 4) floats), delta and u as (BD, TP) tiles of their rows
    j3 = gl.arange(0, TP // 4, layout=gl.SliceLayout(1, gl.SliceLayout(2, LCB)))
    n3 = gl.arange(0, N_PAD, layout=gl.SliceLayout(0, gl.SliceLayout(2, LCB)))
    i3 = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, LCB)))
    blk = (gl.expand_dims(gl.expand_dims(j3, 1), 2) * N_PAD + gl.expand_dims(n3[None, :], 2)) * 4 \
        + gl.expand_dims(i3[None, :], 1)
    B_src = Bk_ptr + (b * G + g) * NBLK * (TP * N_PAD) + blk
    C_src = Ck_ptr + (b * G + g) * NBLK * (TP * N_PAD) + blk
    dc = d0 + gl.arange(0, BD, layout=gl.SliceLayout(1, LCT))
    kc = gl.arange(0, TP, layout=gl.SliceLayout(0, LCT))
    dl_src = delta_ptr + b * sdl_b + dc[:, None] * sdl_d + kc[None, :]
    u_src = u_ptr + b * su_b + dc[:, None] * su_d + kc[None, :]

    kb = gl.arange(0, TP, layout=gl.SliceLayout(0, gl.SliceLayout(0, LBC)))
    k4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(kb, 0), 0), 0) \
        + gl.zeros([BD, NQ, SPL, TP], gl.int32, L4)
    first = k4 == 0
    last = k4 == TP - 1

    # a ring of STAGES blocks in shared memory, STAGES - 1 in flight ahead of the scan
    for st in gl.static_range(STAGES - 1):
        q = blo + gl.minimum(st, nb - 1)
        ac.async_copy_global_to_shared(sB.index(st), B_src + q * (TP * N_PAD))
        if not STATE_ONLY:
            ac.async_copy_global_to_shared(sC.index(st), C_src + q * (TP * N_PAD))
        mq = (q * TP + kc < LP)[None, :]
        ac.async_copy_global_to_shared(sdl.index(st), dl_src + q * TP, mask=mq)
        ac.async_copy_global_to_shared(su.index(st), u_src + q * TP, mask=mq)
        ac.commit_group()
    for i in range(0, nb):
        t0 = (blo + i) * TP
        ac.wait_group(STAGES - 2)   # block i is in (this thread's copies) ...
        gl.thread_barrier()         # ... everyone's, and slot (i - 1) % STAGES is read
        q = blo + gl.minimum(i + STAGES - 1, nb - 1)   # past the end: the last block again
        nxt = (i + STAGES - 1) % STAGES
        ac.async_copy_global_to_shared(sB.index(nxt), B_src + q * (TP * N_PAD))
        if not STATE_ONLY:
            ac.async_copy_global_to_shared(sC.index(nxt), C_src + q * (TP * N_PAD))
        mq = (q * TP + kc < LP)[None, :]
        ac.async_copy_global_to_shared(sdl.index(nxt), dl_src + q * TP, mask=mq)
        ac.async_copy_global_to_shared(su.index(nxt), u_src + q * TP, mask=mq)
        ac.commit_group()

        slot = i % STAGES
        valid = (t0 + ky < L)[None, :] & (dy < D)[:, None]
        raw = sdl.index(slot).load(LY).to(gl.float32)
        u = su.index(slot).load(LY).to(gl.float32)
        Bt = sB.index(slot).permute([1, 0, 2]).reshape([NQ, SPL, TP]).load(LBC)
        if HAS_BIAS:
            raw += bias
        dt = raw
        if SOFTPLUS:
            dt = softplus(raw)
        dt = gl.where(valid, dt, 0.0)     # past the sequence: a = 1, x = 0
        if STATE_ONLY:
            dt_total += gl.sum(dt, axis=1)
        dtu = dt * u
        dt4 = gl.expand_dims(gl.expand_dims(gl.convert_layout(dt, LDT), 1), 2)   # (BD,1,1,TP)
        dtu4 = gl.expand_dims(gl.expand_dims(gl.convert_layout(dtu, LDT), 1), 2)
        a = gl.exp2(dt4 * gl.expand_dims(A2, 3))
        x = dtu4 * gl.expand_dims(Bt, 0)
        x = gl.where(first, x + a * gl.expand_dims(h, 3), x)      # the entering state
        _a, hs = gl.associative_scan((a, x), 3, _chain)
        h = gl.sum(gl.where(last, hs, -0.0), axis=3)              # the block's last state
        if not STATE_ONLY:
            Ct = sC.index(slot).permute([1, 0, 2]).reshape([NQ, SPL, TP]).load(LBC)
            part = gl.sum(hs * gl.expand_dims(Ct, 0), axis=2)     # (BD, NQ, TP): a lane's
            y = gl.sum(gl.convert_layout(part, LR), axis=1)       # (BD, TP) LY
            if HAS_D:
                y += Dv * u
            if HAS_Z:
                zt = gl.load(z_row + t0, mask=valid, other=0.0).to(gl.float32)
                y = y * zt * sigmoid(zt)
            gl.store(o_row + t0, y.to(out_ptr.dtype.element_ty), mask=valid)
            # the state entering row (t0 + TP) / SAVE; the next segment stores its own
            if ((t0 + TP) % SAVE == 0) & (i < nb - 1):
                r = (t0 + TP) // SAVE
                gl.store(rows + r * D * N, h, mask=m_dn)
    ac.wait_group(0)
    gl.store(seg_row, h, mask=m_dn)     # the segment's end state
    if STATE_ONLY:
        gl.store(seg_dt_ptr + (b * S + seg) * D + dy, dt_total)
