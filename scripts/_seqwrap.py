import torch, triton
from bytessm.kernels.triton.scan_fwd_seq import scan_fwd_seq_kernel
from bytessm.kernels.triton.carry import chunk_carry_kernel
f32 = torch.float32

def fwd_seq(u, delta, A, B, C, D=None, z=None, delta_bias=None, initial_state=None, softplus=True,
            chunk=32, seg=None, block_d=None, warps=1, Qw=2):
    block_d = block_d or 32 // min(Qw, A.shape[1]) * warps
    batch, dim, L = u.shape
    N = A.shape[1]
    Bg = B if B.dim() == 4 else B.unsqueeze(1)
    Cg = C if C.dim() == 4 else C.unsqueeze(1)
    G = Bg.shape[1]
    Q = min(Qw, N)
    npad = max(triton.next_power_of_2(N), Q)
    LP = triton.cdiv(L, 8) * 8
    BT = u.new_zeros((batch, G, LP, npad), dtype=f32); BT[:, :, :L, :N] = Bg.transpose(-1, -2)
    CT = u.new_zeros((batch, G, LP, npad), dtype=f32); CT[:, :, :L, :N] = Cg.transpose(-1, -2)
    NQ = npad // Q
    nc = triton.cdiv(L, chunk)
    seg = seg or nc * chunk
    nseg = triton.cdiv(L, seg)
    A32 = A.to(f32).contiguous()
    out = torch.empty_like(u)
    states = torch.empty((batch, nc, dim, N), device=u.device, dtype=f32)
    ends = torch.empty((batch, nseg, dim, N), device=u.device, dtype=f32)
    seg_dt = torch.empty((batch, nseg, dim), device=u.device, dtype=f32)
    h0 = None if initial_state is None else initial_state.to(f32).contiguous()
    dg = dim // G
    grid = (batch * G * triton.cdiv(dg, block_d), nseg)
    zs = (z.stride(0), z.stride(1)) if z is not None else (0, 0)
    args = (u, delta, delta_bias, A32, BT, CT, D, z, h0, states, ends, seg_dt, out,
            L, dim, N, G, dg, seg, u.stride(0), u.stride(1), delta.stride(0), delta.stride(1),
            *zs, out.stride(0), out.stride(1))
    fl = dict(HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus, HAS_H0=h0 is not None,
              HAS_D=D is not None, HAS_Z=z is not None, CHUNK=chunk, BLOCK_D=block_d, Q=Q, NQ=NQ, NP=npad,
              num_warps=warps)
    if nseg > 1:
        scan_fwd_seq_kernel[grid](*args, STATE_ONLY=True, HAS_ENTER=False, **fl)
        chunk_carry_kernel[(triton.cdiv(dim * N, 128), batch)](ends, seg_dt, A32, None, nseg, dim, N,
            HAS_KEEP=False, BACKWARDS=False, BLOCK_DN=128, BLOCK_C=16, num_warps=4)
        if h0 is not None:
            pass
    scan_fwd_seq_kernel[grid](*args, STATE_ONLY=False, HAS_ENTER=nseg > 1, **fl)
    return out, ends[:, -1].clone(), states
