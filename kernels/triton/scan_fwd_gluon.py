"""Forward selective scan in Gluon: one channel per one-warp program, 16 positions a thread
(CUDA only; `scan_fwd.py` computes the same everywhere else, and is what the interpreter
runs).

The math, the saved states and the chunks are `scan_fwd.py`'s at its long tier (chunks of
512 positions, a state saved every 256); what differs is the layout. Triton gives the
(1, 512) tiles 8 positions a thread, the 16 bytes of one bf16 vector load, so a thread holds
two runs of 8 and every state's scan crosses the lanes twice (22 shuffles and 12 selects in
the loop over states, sm_90a SASS). Here a thread holds one run of 16 (two vector loads):
its positions are chained in registers (`_scan16`) and one scan of the lanes' totals
crosses the lanes.

Scope: scan order, no cu_seqlens, one segment, chunks of 512 and a saved state every 256, B
and C bf16 rows of whole chunks read as int32 words (`scan._bc_pairs`); `scan.scan_forward` picks it (`scan._gluon_forward`).
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from .common import LOG2E, load_dt, load_tile, sigmoid
from .scan_bwd_gluon import _halves, _pack8, _unpack8


@gluon.jit
def _pair(a1, x1, a2, x2):
    """The states' monoid (`common.pair_combine`)."""
    return a1 * a2, a2 * x1 + x2


@gluon.jit
def _scan16(f, x, CHUNK: gl.constexpr):
    """h_t = f_t h_{t-1} + x_t over the (1, CHUNK) row from zero (the entering state is in
    x's first position): each thread's 16 positions chained in registers, the lanes' totals
    scanned across the lanes, then each thread's positions completed from the state at the
    end of the lane before."""
    G: gl.constexpr = CHUNK // 16
    t3: gl.constexpr = gl.BlockedLayout([1, 1, 16], [1, 32, 1], [1, 1, 1], [2, 1, 0])
    lanes: gl.constexpr = gl.BlockedLayout([1, 1], [1, 32], [1, 1], [1, 0])
    fe, fo = _halves(gl.convert_layout(gl.reshape(f, [1, G, 16]), t3, assert_trivial=True))
    xe, xo = _halves(gl.convert_layout(gl.reshape(x, [1, G, 16]), t3, assert_trivial=True))
    f0, f2, f4, f6, f8, f10, f12, f14 = _unpack8(fe)
    f1, f3, f5, f7, f9, f11, f13, f15 = _unpack8(fo)
    x0, x2, x4, x6, x8, x10, x12, x14 = _unpack8(xe)
    x1, x3, x5, x7, x9, x11, x13, x15 = _unpack8(xo)
    # two runs of 8 chained side by side: the states inside each from zero (s, t) and the
    # decays from its start (r, q) ...
    s1 = f1 * x0 + x1
    t9 = f9 * x8 + x9
    s2 = f2 * s1 + x2
    t10 = f10 * t9 + x10
    s3 = f3 * s2 + x3
    t11 = f11 * t10 + x11
    s4 = f4 * s3 + x4
    t12 = f12 * t11 + x12
    s5 = f5 * s4 + x5
    t13 = f13 * t12 + x13
    s6 = f6 * s5 + x6
    t14 = f14 * t13 + x14
    s7 = f7 * s6 + x7
    t15 = f15 * t14 + x15
    r1 = f0 * f1
    q9 = f8 * f9
    r2 = r1 * f2
    q10 = q9 * f10
    r3 = r2 * f3
    q11 = q10 * f11
    r4 = r3 * f4
    q12 = q11 * f12
    r5 = r4 * f5
    q13 = q12 * f13
    r6 = r5 * f6
    q14 = q13 * f14
    r7 = r6 * f7
    q15 = q14 * f15
    # ... joined into the thread's totals, which cross the lanes
    _r, hs = gl.associative_scan((gl.convert_layout(r7 * q15, lanes, assert_trivial=True),
                                  gl.convert_layout(q15 * s7 + t15, lanes,
                                                    assert_trivial=True)), 1, _pair)
    kk = gl.arange(0, G, layout=gl.SliceLayout(0, lanes))[None, :] + gl.zeros([1, G], gl.int32,
                                                                                lanes)
    hk = gl.where(kk == 0, 0.0, gl.gather(hs, gl.maximum(kk - 1, 0), 1))
    hk = gl.convert_layout(hk, f0.type.layout, assert_trivial=True)
    h7 = s7 + r7 * hk          # the first run completed from the lane before, the second
    he = _pack8(x0 + f0 * hk, s2 + r2 * hk, s4 + r4 * hk, s6 + r6 * hk, x8 + f8 * h7,
                t10 + q10 * h7, t12 + q12 * h7, t14 + q14 * h7)
    ho = _pack8(s1 + r1 * hk, s3 + r3 * hk, s5 + r5 * hk, h7, t9 + q9 * h7, t11 + q11 * h7,
                t13 + q13 * h7, t15 + q15 * h7)
    h3 = gl.reshape(gl.join(he, ho), [1, G, 16])
    return gl.reshape(h3, [1, CHUNK])


@gluon.jit
def _bc_words(ptr, n, t0, s_n, CHUNK: gl.constexpr):
    """Row n of B or C over the chunk at t0 as int32 words of two bf16 positions, 8 words
    (two 16-byte loads) a thread (`common.load_bc_row`'s PAIRS)."""
    words: gl.constexpr = gl.BlockedLayout([CHUNK // 64], [32], [1], [0])
    j = gl.arange(0, CHUNK // 2, layout=words)
    return gl.load((ptr + n * s_n + t0).to(gl.pointer_type(gl.int32)) + j)


@gluon.jit
def _widen(w, layout: gl.constexpr):
    """Words of `_bc_words` -> the row's float32 values in `layout`: one bit operation a
    position (bf16 is float32's upper half), where widening loaded bf16 values compiles to
    about two (a byte permute and a shift for every other position)."""
    lo = (w << 16).to(gl.float32, bitcast=True)
    hi = (w & -65536).to(gl.float32, bitcast=True)
    return gl.convert_layout(gl.reshape(gl.join(lo, hi), [2 * w.shape[0]]), layout,
                             assert_trivial=True)


@gluon.jit
def scan_fwd_gluon_kernel(
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, h0_ptr,
    states_ptr, ends_ptr, out_ptr,
    L, D, N, G, DG,
    su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
    sz_b, sz_d, sz_l, so_b, so_d, so_l,
    HAS_BIAS: gl.constexpr, SOFTPLUS: gl.constexpr, HAS_H0: gl.constexpr,
    HAS_D: gl.constexpr, HAS_Z: gl.constexpr, CHUNK: gl.constexpr,
):
    tile: gl.constexpr = gl.BlockedLayout([1, CHUNK // 32], [1, 32], [1, 1], [1, 0])
    chan: gl.constexpr = gl.SliceLayout(1, tile)
    row: gl.constexpr = gl.SliceLayout(0, tile)
    SAVE: gl.constexpr = CHUNK // 2            # the backward's chunk: rows of `states`

    pid = gl.program_id(0)
    g = (pid // DG) % G
    b = (pid // (DG * G)).to(gl.int64)
    d = g * DG + pid % DG + gl.zeros([1], gl.int32, chan)      # (1,): the channel
    dmask = d < D
    k = gl.arange(0, CHUNK, layout=row)
    NC = gl.cdiv(L, CHUNK)
    NS = gl.cdiv(L, SAVE)
    row_b = b * NS                                             # states[b, 0]

    # the state entering the sequence -> states[b, 0]
    for n in range(0, N):
        h = gl.zeros([1], gl.float32, chan)
        if HAS_H0:
            h += gl.load(h0_ptr + (b * D + d) * N + n)
        gl.store(states_ptr + (row_b * D + d) * N + n, h)
    Dv = gl.zeros([1], gl.float32, chan)
    if HAS_D:
        Dv = gl.load(D_ptr + d)

    B_base = B_ptr + b * sB_b + g * sB_g
    C_base = C_ptr + b * sC_b + g * sC_g
    for c in range(0, NC):
        t0 = c * CHUNK
        t = t0 + k
        valid = dmask[:, None] & (t < L)[None, :]
        dt, _raw = load_dt(delta_ptr, bias_ptr, b, d, t, valid, valid, dmask, sdl_b, sdl_d,
                           sdl_l, HAS_BIAS, SOFTPLUS)
        dtu = dt * load_tile(u_ptr, b, d, t, valid, su_b, su_d, su_l)
        y = gl.zeros([1, CHUNK], gl.float32, tile)
        here = states_ptr + ((row_b + 2 * c) * D + d) * N        # states[b, 2c, d, :]
        mid = states_ptr + ((row_b + 2 * c + 1) * D + d) * N     # states[b, 2c + 1]
        has_mid = 2 * c + 1 < NS
        if c + 1 < NC:
            after = states_ptr + ((row_b + 2 * c + 2) * D + d) * N
        else:
            after = ends_ptr + (b * D + d) * N                   # ends[b, 0, d, :]
        gl.thread_barrier()  # the previous chunk's stores of `here` are visible
        # state n + 1's loads are issued in state n's iteration, their latency behind its scan
        h_nx = gl.load(here)
        A_nx = gl.load(A_ptr + d * N)
        B_nx = _bc_words(B_base, 0, t0, sB_n, CHUNK)
        C_nx = _bc_words(C_base, 0, t0, sC_n, CHUNK)
        for n in range(0, N):
            h_in, A = h_nx, A_nx
            Bn, Cn = _widen(B_nx, row), _widen(C_nx, row)
            nx = gl.minimum(n + 1, N - 1)   # the last iteration loads state N - 1's again
            h_nx = gl.load(here + nx)
            A_nx = gl.load(A_ptr + d * N + nx)
            B_nx = _bc_words(B_base, nx, t0, sB_n, CHUNK)
            C_nx = _bc_words(C_base, nx, t0, sC_n, CHUNK)
            a = gl.exp2(dt * (A * LOG2E)[:, None])
            x = dtu * Bn[None, :]
            x = gl.where((k == 0)[None, :], x + a * h_in[:, None], x)
            hn = gl.convert_layout(_scan16(a, x, CHUNK), tile)
            # the states at the sub-chunks' ends, each stored by the thread that holds it
            gl.store(mid[:, None] + n + 0 * k[None, :], hn,
                     mask=dmask[:, None] & ((k == SAVE - 1) & has_mid)[None, :])
            gl.store(after[:, None] + n + 0 * k[None, :], hn,
                     mask=dmask[:, None] & (k == CHUNK - 1)[None, :])
            y += hn * Cn[None, :]
        if HAS_D:
            y += Dv[:, None] * load_tile(u_ptr, b, d, t, valid, su_b, su_d, su_l)
        if HAS_Z:
            zt = load_tile(z_ptr, b, d, t, valid, sz_b, sz_d, sz_l)
            y = y * zt * sigmoid(zt)
        gl.store(out_ptr + b * so_b + d[:, None] * so_d + t[None, :] * so_l,
                 y.to(out_ptr.dtype.element_ty), mask=valid)
