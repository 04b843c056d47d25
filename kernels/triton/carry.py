"""The carry pass: from each segment's local contribution to each segment's entering value.

When a row's chunks are split into segments that run in parallel (`scan.py`), both
directions of the scan need the same first-order recurrence over those segments (called
chunks below: the kernel does not care how long they are),

    enter[c_0] = 0,    enter[c_{k+1}] = decay[c_k] * enter[c_k] + local[c_k]

with c_0, c_1, ... the chunks in the order the carry travels, decay[c] = exp(A * dtsum[c])
(zero for a chunk in which a packed sequence starts: nothing crosses it), and `local` the
chunk's result from a zero start. The last chunk's `local` and `decay` reach nothing,
and are not read. The forward pass runs it with the scan (local = end
state, enter = state before the chunk); the backward pass runs it against the scan
(local = gradient reaching the chunk's entering state from inside, enter = gradient
reaching the chunk's end from later chunks).

A program owns BLOCK_DN of the (dim*dstate) states of one batch row and walks the chunks
BLOCK_C at a time, scanning each (BLOCK_C, BLOCK_DN) block along its chunk axis (axis 0, so
that it stays inside each thread) with `tl.associative_scan`; `values` is overwritten in
place with `enter`.
"""
import triton
import triton.language as tl

from .common import LOG2E, pair_combine


@triton.jit
def chunk_carry_kernel(
    values_ptr, dtsum_ptr, A_ptr, keep_ptr, NC, D, N,
    HAS_KEEP: tl.constexpr, BACKWARDS: tl.constexpr,
    BLOCK_DN: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid_dn = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    dn = pid_dn * BLOCK_DN + tl.arange(0, BLOCK_DN)
    dnmask = dn < D * N
    A2 = tl.load(A_ptr + dn, mask=dnmask, other=0.0) * LOG2E                  # (DN,)
    k = tl.arange(0, BLOCK_C)                                                # carry order
    base = values_ptr + b * NC * D * N
    carry = tl.zeros([BLOCK_DN], dtype=tl.float32)
    for i in range(0, tl.cdiv(NC, BLOCK_C)):
        if BACKWARDS:
            c0 = NC - 1 - i * BLOCK_C
            c = c0 - k.to(tl.int64)
            step = -1
        else:
            c0 = i * BLOCK_C
            c = c0 + k.to(tl.int64)
            step = 1
        cmask = (c >= 0) & (c < NC)
        m = cmask[:, None] & dnmask[None, :]
        # the last chunk's values reach no chunk's entering value: they are not read (its
        # pass-only launch skipped it, and left them unwritten)
        if BACKWARDS:
            read = m & (c > 0)[:, None]
        else:
            read = m & (c < NC - 1)[:, None]
        local = tl.load(base + c[:, None] * (D * N) + dn[None, :], mask=read, other=0.0)
        dtsum = tl.load(dtsum_ptr + (b * NC + c[:, None]) * D + dn[None, :] // N, mask=read,
                        other=0.0)
        decay = tl.exp2(A2[None, :] * dtsum)                                 # (C, DN)
        if HAS_KEEP:
            decay *= tl.load(keep_ptr + c, mask=cmask, other=1.0)[:, None]
        decay = tl.where(m, decay, 1.0)
        a_cum, x_cum = tl.associative_scan((decay, local), axis=0, combine_fn=pair_combine)
        after = a_cum * carry[None, :] + x_cum              # value after chunk c_k, (C, DN)
        # in place: every thread's loads of this block before any thread's stores into it
        tl.debug_barrier()
        # enter[c_k] = after[c_{k-1}]: store each block shifted by one, its first from carry
        tl.store(base + (c[:, None] + step) * (D * N) + dn[None, :], after,
                 mask=m & ((k < BLOCK_C - 1) & (c + step >= 0) & (c + step < NC))[:, None])
        tl.store(base + c0.to(tl.int64) * (D * N) + dn, carry, mask=dnmask)
        carry = tl.sum(tl.where((k == BLOCK_C - 1)[:, None], after, 0.0), axis=0)
