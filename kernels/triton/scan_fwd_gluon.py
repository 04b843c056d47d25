"""Forward selective scan in Gluon: one channel per program, its state indices split over W
warps (CUDA only; `scan_fwd.py` computes the same everywhere else).

The Triton forward gives each channel one warp, which walks the N state indices one after
the other: at batch 1 the grid then holds batch x dim warps (1536 at d_inner 1536), under 3
a scheduler, too few to hide one state's dependent chain (ncu at 1x128K: an instruction
issued on 0.63 of the cycles). Here the W warps of a channel's program each take every W-th
state index, so a channel is W warps; a warp holds the chunk's 256 positions, 8 a thread
(half the Triton forward's chunk of 512, so that a thread needs about half the registers),
chains them in registers and scans the lanes' totals (`_scan_states`). The output sums the
W warps' C h rows once per chunk, through shared memory.

Scope: scan order forward, no cu_seqlens, one segment, chunks of 256 (the backward's, so
that the states saved for it are each chunk's entering state), N a multiple of W, B and C
rows of whole chunks; `scan.scan_forward` picks it (`_gluon_forward`).
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from .common import LOG2E, load_dt, load_tile, sigmoid
from .scan_bwd_gluon import _pack8, _unpack8


@gluon.jit
def _pair(a1, x1, a2, x2):
    """The states' monoid (`common.pair_combine`)."""
    return a1 * a2, a2 * x1 + x2


@gluon.jit
def _scan_states(f, x, W: gl.constexpr, CHUNK: gl.constexpr):
    """h_t = f_t h_{t-1} + x_t over each warp's (CHUNK,) row from zero (the entering state is
    in x's first position): each thread's 8 positions chained in registers, the lanes'
    totals scanned across the lanes, then each thread's positions completed from the state
    at the end of the lane before (`scan_bwd_gluon._scans`, the states half)."""
    G: gl.constexpr = CHUNK // 8
    t3: gl.constexpr = gl.BlockedLayout([1, 1, 8], [1, 32, 1], [W, 1, 1], [2, 1, 0])
    lanes: gl.constexpr = gl.BlockedLayout([1, 1], [1, 32], [W, 1], [1, 0])
    f0, f1, f2, f3, f4, f5, f6, f7 = _unpack8(gl.convert_layout(gl.reshape(f, [W, G, 8]), t3,
                                                                assert_trivial=True))
    x0, x1, x2, x3, x4, x5, x6, x7 = _unpack8(gl.convert_layout(gl.reshape(x, [W, G, 8]), t3,
                                                                assert_trivial=True))
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
    _r, hs = gl.associative_scan((gl.convert_layout(r7, lanes, assert_trivial=True),
                                  gl.convert_layout(s7, lanes, assert_trivial=True)), 1, _pair)
    kk = gl.arange(0, G, layout=gl.SliceLayout(0, lanes))[None, :] + gl.zeros([W, G], gl.int32,
                                                                                lanes)
    hk = gl.where(kk == 0, 0.0, gl.gather(hs, gl.maximum(kk - 1, 0), 1))
    hk = gl.convert_layout(hk, f0.type.layout, assert_trivial=True)
    h3 = _pack8(x0 + f0 * hk, s1 + r1 * hk, s2 + r2 * hk, s3 + r3 * hk, s4 + r4 * hk,
                s5 + r5 * hk, s6 + r6 * hk, s7 + r7 * hk)
    return gl.reshape(h3, [W, CHUNK])


@gluon.jit
def scan_fwd_gluon_kernel(
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, h0_ptr,
    states_ptr, ends_ptr, out_ptr,
    L, LP, D, N, DG,
    su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
    sz_b, sz_d, sz_l, so_b, so_d, so_l,
    HAS_BIAS: gl.constexpr, SOFTPLUS: gl.constexpr, HAS_H0: gl.constexpr,
    HAS_D: gl.constexpr, HAS_Z: gl.constexpr, CHUNK: gl.constexpr, W: gl.constexpr,
):
    # (W, CHUNK): warp w holds a state index's row, CHUNK // 32 positions a thread
    tile: gl.constexpr = gl.BlockedLayout([1, CHUNK // 32], [1, 32], [W, 1], [1, 0])
    # (W, CHUNK) read back from shared memory: each thread all W rows of CHUNK // (32 W)
    # positions, and after their sum the chunk's positions split over the warps
    cols: gl.constexpr = gl.BlockedLayout([W, CHUNK // (32 * W)], [1, 32], [1, W], [1, 0])
    flat: gl.constexpr = gl.SliceLayout(0, cols)
    st: gl.constexpr = gl.SliceLayout(1, tile)                 # (W,): warp w's state index
    smem: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[1, 0])
    buf_y = gl.allocate_shared_memory(gl.float32, [W, CHUNK], smem)

    pid = gl.program_id(0)
    b = (pid // D).to(gl.int64)
    d = pid % D
    g = d // DG
    dv = d + gl.zeros([1], gl.int32, st)                       # (1,): the channel, for the tiles
    dmask = dv < D
    k = gl.arange(0, CHUNK, layout=gl.SliceLayout(0, tile))
    kf = gl.arange(0, CHUNK, layout=flat)
    w = gl.arange(0, W, layout=st)
    NC = gl.cdiv(L, CHUNK)
    row = (b * NC * D + d) * N                                  # states[b, 0, d, :]

    # the state entering the sequence -> states[b, 0]
    for n0 in range(0, N, W):
        h = gl.zeros([W], gl.float32, st)
        if HAS_H0:
            h += gl.load(h0_ptr + (b * D + d) * N + n0 + w)
        gl.store(states_ptr + row + n0 + w, h)
    if HAS_D:
        Dv = gl.load(D_ptr + d)

    B_base = B_ptr + b * sB_b + g * sB_g
    C_base = C_ptr + b * sC_b + g * sC_g
    for c in range(0, NC):
        t0 = c * CHUNK
        t = t0 + k
        m = (t < LP)[None, :]
        valid = (t < L)[None, :]
        dt, _raw = load_dt(delta_ptr, bias_ptr, b, dv, t, m, valid, dmask, sdl_b, sdl_d, sdl_l,
                           HAS_BIAS, SOFTPLUS)                  # (1, CHUNK), every warp
        dtu = dt * load_tile(u_ptr, b, dv, t, m, su_b, su_d, su_l)
        y = gl.zeros([W, CHUNK], gl.float32, tile)
        here = states_ptr + row + c * D * N                     # states[b, c, d, :]
        if c + 1 < NC:
            after = here + D * N                                # states[b, c + 1, d, :]
        else:
            after = ends_ptr + (b * D + d) * N                  # ends[b, 0, d, :]
        gl.thread_barrier()  # the previous chunk's stores of `here` are visible
        # the next group of states' loads are issued one iteration ahead
        h_nx = gl.load(here + w)
        A_nx = gl.load(A_ptr + d * N + w)
        B_nx = gl.load(B_base + w[:, None] * sB_n + t[None, :] * sB_l)
        C_nx = gl.load(C_base + w[:, None] * sC_n + t[None, :] * sC_l)
        for n0 in range(0, N, W):
            h_in, A, Bn, Cn = h_nx, A_nx, B_nx.to(gl.float32), C_nx.to(gl.float32)
            nx = gl.minimum(n0 + W, N - W) + w   # the last group loads its own again
            h_nx = gl.load(here + nx)
            A_nx = gl.load(A_ptr + d * N + nx)
            B_nx = gl.load(B_base + nx[:, None] * sB_n + t[None, :] * sB_l)
            C_nx = gl.load(C_base + nx[:, None] * sC_n + t[None, :] * sC_l)
            a = gl.exp2(dt * (A * LOG2E)[:, None])
            x = dtu * Bn
            x = gl.where((k == 0)[None, :], x + a * h_in[:, None], x)
            hn = gl.convert_layout(_scan_states(a, x, W, CHUNK), tile)
            # the state at the chunk's end: the next chunk's entering state, stored by the
            # thread that holds it
            gl.store(after + (n0 + w)[:, None] + 0 * k[None, :], hn,
                     mask=(w >= 0)[:, None] & (k == CHUNK - 1)[None, :])
            y += hn * Cn
        # the W warps' rows summed through shared memory, each position once
        buf_y.store(y)
        gl.thread_barrier()
        ys = gl.sum(buf_y.load(cols), axis=0)
        tf = t0 + kf
        if HAS_D:
            ys += Dv * gl.load(u_ptr + b * su_b + d * su_d + tf * su_l, mask=tf < LP,
                               other=0.0).to(gl.float32)
        if HAS_Z:
            zt = gl.load(z_ptr + b * sz_b + d * sz_d + tf * sz_l, mask=tf < L,
                         other=0.0).to(gl.float32)
            ys = ys * zt * sigmoid(zt)
        gl.store(out_ptr + b * so_b + d * so_d + tf * so_l, ys.to(out_ptr.dtype.element_ty),
                 mask=tf < L)
