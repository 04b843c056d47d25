"""Prototype: the forward scan with a channel's states split over SPLIT warps of one program.

Rows of the (SPLIT, CHUNK) tiles are halves (quarters) of the state indices of ONE channel:
warp r scans states r*NH .. r*NH+NH-1 over the chunk; y is summed over the rows once per
chunk (shared memory, one barrier). At batch 1, D=1536 that is SPLIT x 1536 warps of fewer
registers (8 positions per lane at chunk 256) instead of 1536 one-warp programs held to 12
per SM by 144 registers. Benchmark workload only: shared B/C, bf16 u/delta/z/B/C, softplus
with bias, D, z; forward direction; L a multiple of CHUNK; no cu_seqlens, no segments.
`states` gets the entering state of every chunk (what the backward restarts from).
"""
import torch
import triton
import triton.language as tl

from bytessm.kernels.triton.common import LOG2E, _group_end, pair_combine, softplus


@triton.jit
def split_fwd_kernel(u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, out_ptr,
                     states_ptr, L, D, N: tl.constexpr, SPLIT: tl.constexpr,
                     CHUNK: tl.constexpr, PREFETCH: tl.constexpr):
    NH: tl.constexpr = N // SPLIT
    pid = tl.program_id(0)
    b = pid // D
    d = pid % D
    NC = L // CHUNK
    rr = tl.arange(0, SPLIT)
    k = tl.arange(0, CHUNK)
    row = (b * D + d).to(tl.int64) * L
    zero_r = (rr * 0)[:, None]
    bias = tl.load(bias_ptr + d)
    Dv = tl.load(D_ptr + d)
    begin = (k == 0)[None, :]
    last = (k == CHUNK - 1)[None, :] & (rr >= 0)[:, None]
    bc_base = (b * N).to(tl.int64) * L
    gi = tl.arange(0, SPLIT * (CHUNK // 8))
    for c in range(0, NC):
        t = c * CHUNK + k
        raw = tl.load(delta_ptr + row + t[None, :] + zero_r).to(tl.float32)
        dt = softplus(raw + bias)
        dtu = dt * tl.load(u_ptr + row + t[None, :] + zero_r).to(tl.float32)
        here = states_ptr + ((b * (NC + 1) + c) * D + d) * N
        nxt = states_ptr + ((b * (NC + 1) + c + 1) * D + d) * N
        y = tl.zeros([SPLIT, CHUNK], dtype=tl.float32)
        tl.debug_barrier()
        if PREFETCH:
            nr = rr * NH
            h_nx = tl.load(here + nr)
            A_nx = tl.load(A_ptr + d * N + nr) * LOG2E
            B_nx = tl.load(B_ptr + bc_base + nr[:, None] * L + t[None, :]).to(tl.float32)
            C_nx = tl.load(C_ptr + bc_base + nr[:, None] * L + t[None, :]).to(tl.float32)
        for n in tl.range(0, NH):
            nr = n + rr * NH
            if PREFETCH:
                h_in, A2, Bn, Cn = h_nx, A_nx, B_nx, C_nx
                nn = tl.minimum(n + 1, NH - 1) + rr * NH
                h_nx = tl.load(here + nn)
                A_nx = tl.load(A_ptr + d * N + nn) * LOG2E
                B_nx = tl.load(B_ptr + bc_base + nn[:, None] * L + t[None, :]).to(tl.float32)
                C_nx = tl.load(C_ptr + bc_base + nn[:, None] * L + t[None, :]).to(tl.float32)
            else:
                h_in = tl.load(here + nr)
                A2 = tl.load(A_ptr + d * N + nr) * LOG2E
                Bn = tl.load(B_ptr + bc_base + nr[:, None] * L + t[None, :]).to(tl.float32)
                Cn = tl.load(C_ptr + bc_base + nr[:, None] * L + t[None, :]).to(tl.float32)
            a = tl.exp2(dt * A2[:, None])
            x = dtu * Bn
            x = tl.where(begin, x + a * h_in[:, None], x)
            _a, hn = tl.associative_scan((a, x), axis=1, combine_fn=pair_combine)
            # the chunk's last position of each row, stored by the lane that holds it: the
            # rows' groups of 8 flattened to one dimension, so the store keeps their layout
            w = tl.reshape(_group_end(tl.reshape(hn, (SPLIT, CHUNK // 8, 8)), True),
                           (SPLIT * (CHUNK // 8),))
            rows = gi // (CHUNK // 8)
            tl.store(nxt + n + rows * NH, w, mask=gi % (CHUNK // 8) == CHUNK // 8 - 1)
            y += hn * Cn
        ys = tl.sum(y, axis=0)
        uu = tl.load(u_ptr + row + t).to(tl.float32)
        zz = tl.load(z_ptr + row + t).to(tl.float32)
        ys = (ys + Dv * uu) * zz * tl.sigmoid(zz)
        tl.store(out_ptr + row + t, ys.to(out_ptr.dtype.element_ty))


def split_forward(u, delta, A, B, C, D, z, delta_bias, *, split=2, chunk=256, prefetch=True,
                  maxnreg=None):
    batch, dim, L = u.shape
    N = A.shape[1]
    assert L % chunk == 0 and N % split == 0 and B.dim() == 3
    out = torch.empty_like(u)
    states = torch.zeros(batch, L // chunk + 1, dim, N, device=u.device, dtype=torch.float32)
    kw = {} if maxnreg is None else {"maxnreg": maxnreg}
    split_fwd_kernel[(batch * dim,)](u, delta, delta_bias, A, B, C, D, z, out, states, L, dim,
                                     N=N, SPLIT=split, CHUNK=chunk, PREFETCH=prefetch,
                                     num_warps=split, **kw)
    return out, states[:, -1]
