"""Pieces shared by the selective-scan kernels: the scan monoids and the per-chunk tile loads.

A chunk is CHUNK consecutive positions; a program holds one chunk of BLOCK_D channels in
registers as a time-major (CHUNK, BLOCK_D, N_PAD) tile and scans it along axis 0 with
`tl.associative_scan`. Time-major matters: Triton spreads a tile's threads over its last
axes first, so with BLOCK_D * N_PAD >= 32 * num_warps every thread owns whole time columns
and the scan runs sequentially in registers (a scan along a lane-spread axis costs five
shuffle rounds per element, and was measured ~20x slower). Two monoids do all the work:

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

Sequences begin where the recurrence begins: position 0 of a batch row, each packed
sequence's first position (`cu_seqlens`), and the *last* positions for `reverse=True`.
There the decay is cut (a' = 0) and the sequence's initial state enters through the input:
x' = x + a * h0. The state's gradient never crosses a start either, since it is carried by
the same a'.
"""
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def pair_combine(a1, x1, a2, x2):
    return a1 * a2, a2 * x1 + x2


@triton.jit
def adjoint_combine(q1, p1, f1, q2, p2, f2):
    pf = p2 * f1
    return q2 + pf * q1, pf * p1, f2


@triton.jit
def softplus(x):
    # log(1 + e^x), linear past 20 like torch.nn.functional.softplus
    return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))), x)


@triton.jit
def load_dt(delta_ptr, bias_ptr, b, d, t, dmask, tmask, sdl_b, sdl_d, sdl_l,
            HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """dt (after bias and softplus) and the pre-softplus delta + bias, (CHUNK, BLOCK_D) fp32.

    Padding positions get dt = 0, so a = 1 and x = 0 there: the scan's identity."""
    m = tmask[:, None] & dmask[None, :]
    raw = tl.load(delta_ptr + b * sdl_b + t[:, None] * sdl_l + d[None, :] * sdl_d, mask=m,
                  other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw += tl.load(bias_ptr + d, mask=dmask, other=0.0).to(tl.float32)[None, :]
    dt = raw
    if SOFTPLUS:
        dt = softplus(raw)
    return tl.where(m, dt, 0.0), raw


@triton.jit
def load_decay(A_ptr, d, n, dmask, nmask, dt, N):
    """A (BLOCK_D, N_PAD) and the decays a = exp(dt * A), (CHUNK, BLOCK_D, N_PAD)."""
    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=dmask[:, None] & nmask[None, :],
                other=0.0)
    return A, tl.exp2(dt[:, :, None] * (A * LOG2E)[None, :, :])


@triton.jit
def load_bc(ptr, b, g, n, t, nmask, tmask, s_b, s_g, s_n, s_l):
    """One (CHUNK, N_PAD) fp32 tile of B or C for batch b, group g."""
    m = tmask[:, None] & nmask[None, :]
    return tl.load(ptr + b * s_b + g * s_g + t[:, None] * s_l + n[None, :] * s_n, mask=m,
                   other=0.0).to(tl.float32)


@triton.jit
def sequence_bounds(seq_ptr, b, t, tmask, L, HAS_CU: tl.constexpr, REVERSE: tl.constexpr):
    """For each position of the chunk: its sequence index, whether the recurrence starts
    there (`first`) and whether it ends there (`last`), in scan order."""
    if HAS_CU:
        seq = tl.load(seq_ptr + t, mask=tmask, other=-1)
        prev = tl.load(seq_ptr + t - 1, mask=tmask & (t > 0), other=-1)
        nxt = tl.load(seq_ptr + t + 1, mask=tmask & (t + 1 < L), other=-1)
        mem_start = tmask & (seq != prev)
        mem_end = tmask & (seq != nxt)
    else:
        seq = tl.zeros_like(t) + b
        mem_start = t == 0
        mem_end = t == L - 1
    if REVERSE:
        return seq, mem_end, mem_start
    else:
        return seq, mem_start, mem_end


@triton.jit
def state_tile_ptrs(ptr, seq, d, n, D, N):
    """Pointers into a (num_seqs, D, N) state tensor, shaped (CHUNK, BLOCK_D, N_PAD)."""
    return ptr + seq[:, None, None] * (D * N) + d[None, :, None] * N + n[None, None, :]
