"""Pieces shared by the selective-scan kernels: the scan monoids, the program's place in the
grid, and the per-chunk tile loads.

The scan is parallel over time the way mamba_ssm's CUDA kernel is: a program owns BLOCK_D
channels and walks their positions a chunk of CHUNK at a time, and for each state index n
scans the chunk's (BLOCK_D, CHUNK) tile of that one state along its time axis with
`tl.associative_scan` (each thread scans the positions it holds in registers; warp shuffles
and shared memory join the threads). The state never goes to memory per step: only each
chunk's entering state (BLOCK_D x N floats) is written, and read back when the program
moves on to the next chunk. Two monoids do all the work:

- `pair_combine`, for the state recurrence h_t = a_t * h_prev + x_t (scan order). An
  element is (a, x); combining `first` then `second` gives (a1*a2, a2*x1 + x2). The
  identity is (1, 0), so padding positions past the end are given a = 1, x = 0.
- `adjoint_combine`, for the gradient of the state, which flows the other way:
  g_t = beta_t + a_next * g_next, where a_next is the decay of the position after t in scan
  order. Pairing beta_t with a_t would need a shifted copy of a; instead an element carries
  (Q, P, F): for a segment [i..j] of the *scan* order, Q = its adjoint at i from inside the
  segment, P = product of a over i+1..j, F = a_i. The adjoint visits j first, so
  `adjoint_combine(first=[m+1..j], second=[i..m])` = (Q2 + P2*F1*Q1, P2*F1*P1, F2).
  A single position is (beta_t, 1, a_t); the adjoint at t of a chunk whose end receives
  gradient G from outside is Q_t + P_t * G.

`tl.associative_scan(..., reverse=True)` calls `combine(acc, x)` with `acc` the elements
already visited (higher indices), the same "first, then second" convention, so one combine
function serves both directions (tests cover both directions on the interpreter and on CUDA).
The kernels do not call it with reverse=True, though: Triton lowers a reverse scan by moving
every value to the mirrored lane and back (five shuffles each way), so `reverse_pair_scan`
and `reverse_adjoint_scan` scan groups of 8 positions in registers and let only the groups'
totals cross lanes.

Sequences begin where the recurrence begins: position 0 of a batch row, each packed
sequence's first position (`cu_seqlens`), and the *last* positions for `reverse=True`.
Without `cu_seqlens` that is the first chunk, which simply starts from the initial state;
with it, the decay is cut (a' = 0) at each start and the sequence's initial state enters
through the input: x' = x + a * h0. The state's gradient never crosses a start either,
since it is carried by the same a'.
"""
import os

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)
# set before the kernels are imported (tests/conftest.py does so when there is no GPU)
IN_INTERPRETER = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")


@triton.jit
def pair_combine(a1, x1, a2, x2):
    return a1 * a2, a2 * x1 + x2


@triton.jit
def adjoint_combine(q1, p1, f1, q2, p2, f2):
    pf = p2 * f1
    return q2 + pf * q1, pf * p1, f2


@triton.jit
def _groups_excl(a, x):
    """Reverse exclusive pair scan along axis 1 of (BLOCK_D, G) tiles: what the groups after
    each one in position order (visited before it) compose to, (1, 0) for the last group.

    The groups are put in reverse order with `tl.gather`, scanned forward, and gathered back
    one group over: within a warp a gather is a shuffle per register it may come from,
    where Triton's reverse scan moves every value to the mirrored lane and back through
    five, and an exclusive scan would carry four values instead of two."""
    G: tl.constexpr = a.shape[1]
    k = tl.arange(0, G)[None, :] + tl.zeros(a.shape, tl.int32)
    rev = G - 1 - k
    ia, ix = tl.associative_scan((tl.gather(a, rev, axis=1), tl.gather(x, rev, axis=1)),
                                 axis=1, combine_fn=pair_combine)
    # the groups after k are the reversed order's first G-1-k: its inclusive scan at G-2-k
    src = tl.maximum(rev - 1, 0)
    last = k == G - 1
    return (tl.where(last, 1.0, tl.gather(ia, src, axis=1)),
            tl.where(last, 0.0, tl.gather(ix, src, axis=1)))


@triton.jit
def _flip8_split_join(v):
    """(BLOCK_D, G, 8) -> each group's 8 positions reversed, by flipping the three bits of
    the position one at a time with split / join: what `tl.flip(v, 2)` computes, for the
    interpreter (which runs tl.flip's xor reductions one element at a time in Python)."""
    BD: tl.constexpr = v.shape[0]
    G: tl.constexpr = v.shape[1]
    w = tl.reshape(v, (BD, G, 2, 2, 2))
    lo, hi = tl.split(w)                                          # lowest bit
    w = tl.join(hi, lo)
    lo, hi = tl.split(tl.permute(w, (0, 1, 2, 4, 3)))             # middle bit
    w = tl.permute(tl.join(hi, lo), (0, 1, 2, 4, 3))
    lo, hi = tl.split(tl.permute(w, (0, 1, 4, 3, 2)))             # highest bit
    w = tl.permute(tl.join(hi, lo), (0, 1, 4, 3, 2))
    return tl.reshape(w, (BD, G, 8))


@triton.jit
def flip_groups(v):
    """(BLOCK_D, G, 8): each group's positions in reverse order. On the GPU `tl.flip` along
    an axis a thread holds compiles to a renaming of registers (split / join and permutes
    compile to shuffles there); the interpreter gets the same permutation by split / join."""
    if IN_INTERPRETER and v.shape[2] == 8:
        return _flip8_split_join(v)
    else:
        return tl.flip(v, 2)


@triton.jit
def _grouped_flipped(v, BLOCK_D: tl.constexpr, G: tl.constexpr, R: tl.constexpr):
    """(BLOCK_D, G * R) -> (BLOCK_D, G, R), each group's positions in reverse order."""
    return flip_groups(tl.reshape(v, (BLOCK_D, G, R)))


@triton.jit
def _group_end(v, LAST: tl.constexpr):
    """(BLOCK_D, G, 8) -> (BLOCK_D, G): each group's first (LAST: last) position, by split (a
    choice of registers on the GPU; a sum of v with zeros costs an add per position there)."""
    tl.static_assert(v.shape[2] == 8)
    w = tl.reshape(v, (v.shape[0], v.shape[1], 2, 2, 2))
    for _ in tl.static_range(3):
        lo, hi = tl.split(w)
        if LAST:
            w = hi
        else:
            w = lo
    return w


@triton.jit
def store_position(ptrs, v, pos, ok, dmask, LAST: tl.constexpr, BY_GROUP: tl.constexpr):
    """Store v[:, pos] of a (BLOCK_D, CHUNK) tile at `ptrs` (BLOCK_D,), where `ok`: a saved
    state, an adjoint handed over. `pos` is the first (or LAST) position of a group of 8.

    A store of the whole tile masked to one position gets a layout of one position per
    thread from Triton, and the tile's conversion to it goes through shared memory and a
    barrier, once per state index (10 instructions and the barrier of the forward's 259 per
    state at chunk 512; sm_90a SASS). BY_GROUP stores instead each group of 8 positions'
    first (LAST) position, a choice of registers where the tiles load as 16-byte vectors
    (8 positions a thread): the loop has no barrier. The forward stores so at both its
    chunks (at 512 only with its cap of 144 registers, `configs.ScanConfig`); the
    backward's hand-over measured slower so and keeps the masked tile."""
    if BY_GROUP:
        w = _group_end(tl.reshape(v, (v.shape[0], v.shape[1] // 8, 8)), LAST)
        kg = tl.arange(0, v.shape[1] // 8)
        tl.store(ptrs[:, None] + 0 * kg[None, :], w,
                 mask=dmask[:, None] & ((kg == pos // 8) & ok)[None, :])
    else:
        k = tl.arange(0, v.shape[1])
        tl.store(ptrs[:, None] + 0 * k[None, :], v,
                 mask=dmask[:, None] & ((k == pos) & ok)[None, :])


@triton.jit
def reverse_pair_scan(a, x, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr):
    """`tl.associative_scan((a, x), axis=1, combine_fn=pair_combine, reverse=True)` on
    (BLOCK_D, CHUNK) tiles, in two levels: each group of R positions (the 8 a thread holds
    when the loads are vectorised) is scanned in registers, and only the groups' totals
    cross threads. Triton lowers a reverse scan across threads by moving every value to the
    mirrored lane and back, five shuffles a value each way (160 shuffles per (a, x) tile of
    one warp); here only one value per operand and thread crosses lanes."""
    R: tl.constexpr = 8
    G: tl.constexpr = CHUNK // R
    la, lx = tl.associative_scan(
        (_grouped_flipped(a, BLOCK_D, G, R), _grouped_flipped(x, BLOCK_D, G, R)),
        axis=2, combine_fn=pair_combine)
    la, lx = flip_groups(la), flip_groups(lx)
    ea, ex = _groups_excl(_group_end(la, False), _group_end(lx, False))
    a_cum = ea[:, :, None] * la                           # the groups after, then the group's own
    x_cum = la * ex[:, :, None] + lx
    return tl.reshape(a_cum, (BLOCK_D, CHUNK)), tl.reshape(x_cum, (BLOCK_D, CHUNK))


@triton.jit
def reverse_adjoint_scan(beta, f, g_end, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr):
    """The adjoint g = Q + P * g_end over (BLOCK_D, CHUNK) tiles, where (Q, P) are those of
    `tl.associative_scan((beta, 1, f), axis=1, combine_fn=adjoint_combine, reverse=True)`
    and g_end (BLOCK_D,) is what arrives at the chunk's end, in two levels like
    `reverse_pair_scan`. Across groups the adjoint needs no shifted decay: what leaves group
    k through its first position is out_k = F_k (Q_k + P_k out_{k+1}) (Q_k, P_k at its first
    position, F_k the decay there), a pair recurrence whose exclusive scan (E_a, E_x) gives
    what enters each group from inside the chunk, so E_x + E_a g_end enters it in all, and
    g = Q_local + P_local (E_x + E_a g_end): one multiply-add per position."""
    R: tl.constexpr = 8
    G: tl.constexpr = CHUNK // R
    fg = _grouped_flipped(f, BLOCK_D, G, R)
    lq, lp, _lf = tl.associative_scan(
        (_grouped_flipped(beta, BLOCK_D, G, R), tl.full(fg.shape, 1.0, tl.float32), fg),
        axis=2, combine_fn=adjoint_combine)
    lq, lp = flip_groups(lq), flip_groups(lp)
    f0 = _group_end(tl.reshape(f, (BLOCK_D, G, R)), False)
    ea, ex = _groups_excl(f0 * _group_end(lp, False), f0 * _group_end(lq, False))
    enter = ex + ea * g_end[:, None]                                  # (BLOCK_D, G)
    return tl.reshape(lq + lp * enter[:, :, None], (BLOCK_D, CHUNK))


@triton.jit
def _log2_approx(x):
    if IN_INTERPRETER:
        return tl.log2(x)
    else:  # lg2.approx (2^-22 relative error), not libdevice's polynomial
        return tl.inline_asm_elementwise("lg2.approx.f32 $0, $1;", "=r,r", [x],
                                         dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _rcp_approx(x):
    if IN_INTERPRETER:
        return 1.0 / x
    else:  # rcp.approx.ftz (1 ulp): one MUFU.RCP, without div.full's range checks
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [x],
                                         dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def sigmoid(x):
    """1 / (1 + e^-x) through exp2 and an approximate reciprocal. Through exp2 with `1.0 /`:
    48 fewer SASS instructions in the Gluon backward than tl.sigmoid in the same place
    (twenty-second session); with the reciprocal instead of div.full's range checks (never
    needed: 1 + e^-x >= 1; past 2^126 the result flushes to 0, as the exact one nearly does)
    and the sign folded into the constant, 80 fewer again in the Gluon forward and 120 in
    the backward (thirtieth session). Saturates to 0 and 1, NaN in NaN out."""
    return _rcp_approx(1.0 + tl.exp2(x * -LOG2E))


@triton.jit
def softplus(x):
    """log(1 + e^x), linear past 20 like torch.nn.functional.softplus, from one ex2 and one
    lg2; below -8, e^x - e^2x / 2 (where 1 + e^x would round e^x away). The outer test is
    `x <= 20` so that NaN takes the last branch, x itself: on the GPU tl.minimum(NaN, 20)
    is 20 (PTX min.f32 returns the operand that is a number)."""
    y = tl.exp2(tl.minimum(x, 20.0) * LOG2E)
    small = y - 0.5 * y * y
    return tl.where(x <= 20.0, tl.where(x < -8.0, small, _log2_approx(1.0 + y) * LN2), x)


@triton.jit
def program_place(L, DG, G, CPS, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr,
                  REVERSE: tl.constexpr):
    """Grid: axis 0 enumerates (batch, group, channel block), axis 1 the segments of CPS
    chunks. Returns the batch row (int64), group, channels and their mask, the segment's
    chunks [c_lo, c_lo + n_chunks), whether the segment is the first one in scan order, and
    the number of chunks NC of the whole sequence."""
    pid = tl.program_id(0)
    s = tl.program_id(1)
    S = tl.num_programs(1)
    nbd = tl.cdiv(DG, BLOCK_D)
    blk = pid % nbd
    g = (pid // nbd) % G
    b = (pid // (nbd * G)).to(tl.int64)
    dg = blk * BLOCK_D + tl.arange(0, BLOCK_D)
    d = g * DG + dg
    NC = tl.cdiv(L, CHUNK)
    c_lo = s * CPS
    n_chunks = tl.minimum(CPS, NC - c_lo)
    if REVERSE:
        scan_first = s == S - 1
    else:
        scan_first = s == 0
    return b, g, d, dg < DG, s, c_lo, n_chunks, scan_first, NC


@triton.jit
def walk_last(s, S, BACKWARDS: tl.constexpr):
    """Whether segment s of S is the last a walk over them visits (BACKWARDS: from S - 1
    down to 0). A pass-only launch skips that segment: the carry pass never reads its
    result (`carry.py`)."""
    if BACKWARDS:
        last = s == 0
    else:
        last = s == S - 1
    return last


@triton.jit
def chunk_at(i, c_lo, n_chunks, REVERSE: tl.constexpr):
    """The segment's i-th chunk in scan order, and the one after it."""
    if REVERSE:
        c = c_lo + n_chunks - 1 - i
        return c, c - 1
    else:
        c = c_lo + i
        return c, c + 1


@triton.jit
def chunk_handover(buf_ptr, ends_ptr, b, s, c, c_next, last, NC, S, D, N, d):
    """Where the backward's chunk c reads the adjoint carried into it and writes the one it
    hands on (the forward's saves are `save_point`): its row of `buf` (batch, chunks, dim,
    dstate), and the next chunk's row, or the segment's row of `ends` (batch, segments,
    dim, dstate) after its `last` chunk. Returns (BLOCK_D,) pointers to dstate 0."""
    here = buf_ptr + ((b * NC + c) * D + d) * N
    if last:
        there = ends_ptr + ((b * S + s) * D + d) * N
    else:
        there = buf_ptr + ((b * NC + c_next) * D + d) * N
    return here, there


@triton.jit
def entering_row(c, NS, R: tl.constexpr, REVERSE: tl.constexpr):
    """The forward saves the entering state of every SAVE positions (the backward's chunk,
    which divides the forward's chunk into R sub-chunks) in rows of `states` (see
    `scan_fwd.py`): the row the forward's chunk c enters by (its scan-first sub-chunk that
    exists)."""
    if REVERSE:
        return tl.minimum(c * R + R - 1, NS - 1)
    else:
        return c * R


@triton.jit
def chunk_rows(t0, k, NC, CHUNK: tl.constexpr, REVERSE: tl.constexpr):
    """The forward holds a chunk (positions t0 + [0, CHUNK)) in its tiles in scan order:
    index k is position t (returned), t0 + k, or for a reverse scan t0 + CHUNK - 1 - k, the
    chunk mirrored. Every scan then runs along the tiles as in order: the same loop over
    states, 242 sm_90a instructions a state and 16 positions a lane either way, where the
    two-level reverse scan across the lanes (`reverse_pair_scan`) took the reverse forward
    1.19-1.23x the in-order one's time on an H200. A reverse scan's B and C come flipped, in
    rows of NC whole chunks (`scan.scan_forward`), where the mirrored chunk starts at r0
    (returned) and reads ascending: the rows loaded per state stay vector loads. The tiles
    loaded once a chunk load by groups of 8 (`load_chunk`)."""
    if REVERSE:
        return t0 + CHUNK - 1 - k, (NC - 1) * CHUNK - t0
    else:
        return t0 + k, t0


@triton.jit
def save_point(c, r: tl.constexpr, c_lo, n_chunks, NS, SAVE: tl.constexpr,
               R: tl.constexpr, REVERSE: tl.constexpr):
    """Sub-chunk r of the forward's chunk c (sub-chunk j = c R + r of the sequence): the
    index in the chunk's tiles (scan order, `chunk_rows`) of the position whose state is
    saved (the sub-chunk's scan-last), the row it is saved into (the next sub-chunk's: j + 1,
    or j - 1 for reverse), whether the sub-chunk exists, and whether it is the segment's
    scan-last, whose state goes to `ends` instead. All scalars: each save is one store
    through one pointer per thread."""
    j = c * R + r
    if REVERSE:   # the sub-chunk's lowest position, index (R - r) SAVE - 1 of the mirror
        return (R - r) * SAVE - 1, j - 1, j < NS, j == c_lo * R
    else:
        seg_end = tl.minimum((c_lo + n_chunks) * R, NS)
        return r * SAVE + SAVE - 1, j + 1, j < NS, j == seg_end - 1


@triton.jit
def chunk_masks(t, L, LP, dmask):
    """Masks of a chunk's positions t (CHUNK,): the sequence's (t < L) and its rows' (t < LP,
    their padded length: see `scan.py`), and the (BLOCK_D, CHUNK) tiles' where they are read
    (the rows') and where they are written (the sequence's)."""
    tmask = t < L
    lmask = t < LP
    return tmask, lmask, dmask[:, None] & lmask[None, :], dmask[:, None] & tmask[None, :]


@triton.jit
def load_tile(ptr, b, d, t, m, s_b, s_d, s_l):
    """A (BLOCK_D, CHUNK) float32 tile of a (batch, dim, length) tensor."""
    return load_stored(ptr, b, d, t, m, s_b, s_d, s_l).to(tl.float32)


@triton.jit
def load_stored(ptr, b, d, t, m, s_b, s_d, s_l):
    """`load_tile` in the tensor's own dtype (16 bits a position for bf16: what a kernel holds
    over a loop for later, widened where it is used)."""
    return tl.load(ptr + b * s_b + d[:, None] * s_d + t[None, :] * s_l, mask=m, other=0.0)


@triton.jit
def _mirrored(ptr, b, d, dmask, t0, bound, s_b, s_d, s_l, CHUNK: tl.constexpr):
    """(BLOCK_D, CHUNK) pointers and mask of the chunk at t0 with its groups of 8 positions
    in reverse order, each group's positions ascending: index 8 q + j is position
    t0 + CHUNK - 8 (q + 1) + j (16-byte loads and stores where aligned); positions from
    `bound` on are masked. Flipping each group in registers then mirrors the chunk."""
    k = tl.arange(0, CHUNK)
    pos = t0 + CHUNK - 8 - 8 * (k // 8) + k % 8
    return (ptr + b * s_b + d[:, None] * s_d + pos[None, :] * s_l,
            dmask[:, None] & (pos < bound)[None, :])


@triton.jit
def _flip_each_group(v, CHUNK: tl.constexpr):
    BD: tl.constexpr = v.shape[0]
    return tl.reshape(flip_groups(tl.reshape(v, (BD, CHUNK // 8, 8))), (BD, CHUNK))


@triton.jit
def _in_order(ptr, b, d, dmask, t0, bound, s_b, s_d, s_l, CHUNK: tl.constexpr):
    """(BLOCK_D, CHUNK) pointers and mask of the chunk at t0 in position order, positions
    from `bound` on masked, computed from t0 itself rather than from the positions and masks
    the chunk's scan uses (`chunk_rows`, `chunk_masks`): the same values, but LLVM then
    recomputes them after the loop over states instead of keeping them live across it."""
    k = tl.arange(0, CHUNK)
    return (ptr + b * s_b + t0 * s_l + d[:, None] * s_d + k[None, :] * s_l,
            dmask[:, None] & (k < bound - t0)[None, :])


@triton.jit
def load_chunk(ptr, b, d, t, m, t0, bound, dmask, s_b, s_d, s_l, CHUNK: tl.constexpr,
               MIRROR: tl.constexpr, FROM_T0: tl.constexpr):
    """A (BLOCK_D, CHUNK) float32 tile of the chunk at t0 of a (batch, dim, length) tensor,
    held as `chunk_rows` holds it, positions from `bound` on masked (zeros).

    In order, at the chunk's positions t (`chunk_rows`), masked by `m` (equal to positions
    below `bound`), or with FROM_T0 at addresses and a mask computed from t0 (`_in_order`).
    The latter frees about 11 registers across the forward's loop over states (the row's
    address, four saved predicates): under the cap of 144 the in-order forward then takes
    128 instead of 144, with its next state's B/C loads still issued 162-231 instructions
    ahead (0.89-0.95x the time at 8x2K, 8x4K and 16x8K on an H200). Under the caps of 112
    (short lengths) and 168 (cu_seqlens) it was 1.05-1.06x slower (twenty-seventh session).

    MIRROR (the chunk mirrored): t's addresses descend along the tile, which Triton loads
    one position a lane (the tile then in a layout the scans convert from: 224 shuffles in
    the forward's loop); loaded instead by groups of 8 ascending positions (`_mirrored`),
    each group then flipped in registers (`flip_groups`), it keeps the in-order tiles'
    layout."""
    if MIRROR:
        ptrs, mask = _mirrored(ptr, b, d, dmask, t0, bound, s_b, s_d, s_l, CHUNK)
        return _flip_each_group(tl.load(ptrs, mask=mask, other=0.0).to(tl.float32), CHUNK)
    elif FROM_T0:
        ptrs, mask = _in_order(ptr, b, d, dmask, t0, bound, s_b, s_d, s_l, CHUNK)
        return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
    else:
        return load_tile(ptr, b, d, t, m, s_b, s_d, s_l)


@triton.jit
def store_chunk(ptr, v, b, d, t, m, t0, bound, dmask, s_b, s_d, s_l, CHUNK: tl.constexpr,
                MIRROR: tl.constexpr, FROM_T0: tl.constexpr):
    """Store a (BLOCK_D, CHUNK) tile of the chunk at t0 as `load_chunk` loads it, in the
    pointer's type, at positions below `bound` (`m`)."""
    v = v.to(ptr.dtype.element_ty)
    if MIRROR:
        ptrs, mask = _mirrored(ptr, b, d, dmask, t0, bound, s_b, s_d, s_l, CHUNK)
        tl.store(ptrs, _flip_each_group(v, CHUNK), mask=mask)
    elif FROM_T0:
        ptrs, mask = _in_order(ptr, b, d, dmask, t0, bound, s_b, s_d, s_l, CHUNK)
        tl.store(ptrs, v, mask=mask)
    else:
        tl.store(ptr + b * s_b + d[:, None] * s_d + t[None, :] * s_l, v, mask=m)


@triton.jit
def load_dt(delta_ptr, bias_ptr, b, d, t, m, valid, dmask, s_b, s_d, s_l,
            HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """dt (after bias and softplus) and the pre-softplus delta + bias, (BLOCK_D, CHUNK), read
    where `m` allows (up to the rows' padded length, see `scan.py`).

    Positions past the sequence (not `valid`) get dt = 0, so a = 1 and x = 0 there: the
    scan's identity, whatever the padding holds."""
    return dt_of(load_tile(delta_ptr, b, d, t, m, s_b, s_d, s_l), bias_ptr, d, valid, dmask,
                 HAS_BIAS, SOFTPLUS)


@triton.jit
def dt_of(raw, bias_ptr, d, valid, dmask, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """`load_dt` of a loaded tile of delta."""
    if HAS_BIAS:
        raw += tl.load(bias_ptr + d, mask=dmask, other=0.0).to(tl.float32)[:, None]
    dt = raw
    if SOFTPLUS:
        dt = softplus(raw)
    return tl.where(valid, dt, 0.0), raw


@triton.jit
def store_chunk_grads(gB, gHA, y, dt, dy, Dv, b, d, t, m, valid, dmask, L, D,
                      u_ptr, delta_ptr, bias_ptr, z_ptr, dout_ptr, du_ptr, ddelta_ptr, dz_ptr,
                      su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sz_b, sz_d, sz_l,
                      sdo_b, sdo_d, sdo_l, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                      HAS_D: tl.constexpr, HAS_Z: tl.constexpr, EXP2_SIGMOID: tl.constexpr):
    """A backward chunk's du, ddelta and dz, stored, from its sums over the states (gB: of g
    B, gHA: of g a h_prev A, y: of h C, the output before D and the gate; dy: the gradient
    reaching y). Returns the chunk's dD and ddelta_bias terms per channel, which the
    caller adds up where HAS_D / HAS_BIAS (unused, they compile away). Shared by the
    Triton and the Gluon backward: their chunks end alike. EXP2_SIGMOID takes the sigmoids
    through `sigmoid` (48 fewer instructions in the Gluon kernel) rather than tl.sigmoid,
    which the Triton kernel keeps: with the exp2 form it spilled 40 bytes instead of 12 at
    1x16K in 4 sequences and took 1.04-1.05x the time (H200, twenty-second session)."""
    # x = dt u B: d dt gets u * sum g B, du gets dt * sum g B
    u = load_tile(u_ptr, b, d, t, m, su_b, su_d, su_l)
    ddt = gHA + gB * u
    du = gB * dt
    if HAS_D:
        du += Dv[:, None] * dy
    offs = (b * D + d[:, None]) * L + t[None, :]      # du, ddelta, dz: contiguous
    if HAS_Z:
        if HAS_D:
            y += Dv[:, None] * u
        zt = load_tile(z_ptr, b, d, t, m, sz_b, sz_d, sz_l)
        sig = sigmoid(zt) if EXP2_SIGMOID else tl.sigmoid(zt)
        dout = load_tile(dout_ptr, b, d, t, m, sdo_b, sdo_d, sdo_l)
        dz = dout * y * sig * (1.0 + zt * (1.0 - sig))
        tl.store(dz_ptr + offs, dz.to(dz_ptr.dtype.element_ty), mask=valid)
    if SOFTPLUS:
        _dt, raw = load_dt(delta_ptr, bias_ptr, b, d, t, m, valid, dmask, sdl_b, sdl_d, sdl_l,
                           HAS_BIAS, False)
        sr = sigmoid(raw) if EXP2_SIGMOID else tl.sigmoid(raw)
        ddt = tl.where(raw <= 20.0, ddt * sr, ddt)
    ddt = tl.where(valid, ddt, 0.0)
    tl.store(du_ptr + offs, du.to(du_ptr.dtype.element_ty), mask=valid)
    tl.store(ddelta_ptr + offs, ddt.to(ddelta_ptr.dtype.element_ty), mask=valid)
    return tl.sum(dy * u, axis=1), tl.sum(ddt, axis=1)


@triton.jit
def load_bc_row(ptr, b, g, n, t0, tmask, L, s_b, s_g, s_n, s_l, CHUNK: tl.constexpr,
                PAIRS: tl.constexpr):
    """Row n of B or C over the chunk's positions t0 + [0, CHUNK), (CHUNK,) float32, read
    where `tmask` allows, or everywhere with tmask None (L: the rows' length).

    PAIRS (bf16 rows with a unit stride, an even length and every row start 4-byte aligned,
    which the launcher checks): the row is read as int32 words of two positions and widened
    by bit operations, one per position (bf16 is float32's upper half), where the widening
    of loaded bf16 values compiles to about two."""
    if PAIRS:
        j = tl.arange(0, CHUNK // 2)
        words = (ptr + b * s_b + g * s_g + n * s_n + t0).to(tl.pointer_type(tl.int32)) + j
        if tmask is None:
            w = tl.load(words)
        else:
            w = tl.load(words, mask=t0 + 2 * j < L, other=0)
        lo = (w << 16).to(tl.float32, bitcast=True)
        hi = (w & -65536).to(tl.float32, bitcast=True)
        return tl.reshape(tl.join(lo, hi), (CHUNK,))
    p = ptr + b * s_b + g * s_g + n * s_n + (t0 + tl.arange(0, CHUNK)) * s_l
    if tmask is None:
        return tl.load(p).to(tl.float32)
    else:
        return tl.load(p, mask=tmask, other=0.0).to(tl.float32)


@triton.jit
def sequence_bounds(seq_ptr, t, tmask, L, REVERSE: tl.constexpr):
    """Packed sequences: for each position of the chunk its sequence index, whether the
    recurrence starts there (`first`) and whether it ends there (`last`), in scan order."""
    seq = tl.load(seq_ptr + t, mask=tmask, other=-1)
    prev = tl.load(seq_ptr + t - 1, mask=tmask & (t > 0), other=-1)
    nxt = tl.load(seq_ptr + t + 1, mask=tmask & (t + 1 < L), other=-1)
    mem_start = tmask & (seq != prev)
    mem_end = tmask & (seq != nxt)
    if REVERSE:
        return seq, mem_end, mem_start
    else:
        return seq, mem_start, mem_end
