"""Selective scan in plain PyTorch: the specification, and a chunked version fast enough for CPUs.

The recurrence (Gu & Dao, "Mamba", arXiv:2312.00752, Algorithm 2 with the zero-order-hold
discretisation of A and the Euler one of B, as in mamba_ssm's `selective_scan_ref`):

    dt[b,d,t]   = softplus(delta[b,d,t] + delta_bias[d])           (softplus optional)
    h[b,d,n,t]  = exp(dt[b,d,t] * A[d,n]) * h[b,d,n,t-1]  +  dt[b,d,t] * B[b,g(d),n,t] * u[b,d,t]
    y[b,d,t]    = sum_n C[b,g(d),n,t] * h[b,d,n,t]  +  D[d] * u[b,d,t]
    out[b,d,t]  = y[b,d,t] * silu(z[b,d,t])                           (gate optional)

with h[..., -1] = initial_state (zeros when absent), g(d) = d // (dim / groups), and for
`reverse=True` the same recurrence run from t = L-1 down to 0 (h[t] depends on h[t+1]).
`last_state` is the state after the last position processed (t = L-1 forward, t = 0 reverse).

Two implementations share that contract:

- `selective_scan_sequential`: one Python step per position. Slow; it is the ground truth.
- `selective_scan_chunked`: splits the length into chunks of `chunk_size`; a chunk's decays
  and inputs are computed in one shot, then its positions are stepped through vectorised
  over (batch, dim, dstate), and the state is carried to the next chunk. Each chunk is
  recomputed in the backward pass (activation checkpointing), so memory is
  O(batch*dim*(length + dstate*length/chunk)), never O(batch*dim*dstate*length). (A closed
  form inside chunks, exp(S[t]-S[s]) over all pairs, costs chunk times more arithmetic and
  was ~10x slower on CPUs at training sizes; the Triton kernels parallelise differently.)

Both run the state and all arithmetic in float32 and return `out` in u's dtype.
Variable-length packed batches (`cu_seqlens`) run each sequence on its own slice.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from einops import rearrange
from torch.utils.checkpoint import checkpoint

__all__ = [
    "selective_scan_sequential",
    "selective_scan_chunked",
    "selective_state_update_ref",
    "causal_conv1d_update_ref",
    "gemv_ref",
    "DEFAULT_CHUNK",
]

DEFAULT_CHUNK = 64


def _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """Upcast to float32 and expand grouped B/C to one row per channel.

    Returns u, dt (after bias and softplus), A, B, C as float32 with B, C of shape
    (batch, dim, dstate, length); D, z float32 or None.
    """
    batch, dim, length = u.shape
    u32 = u.float()
    dt = delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()[None, :, None]
    if delta_softplus:
        dt = F.softplus(dt)

    def per_channel(M: Tensor) -> Tensor:  # -> (batch, dim, dstate, length)
        M = M.float()
        if M.dim() == 3:  # (batch, dstate, length): shared by every channel
            return M[:, None].expand(batch, dim, M.shape[1], length)
        groups = M.shape[1]  # (batch, groups, dstate, length)
        return M.repeat_interleave(dim // groups, dim=1)

    return (u32, dt, A.float(), per_channel(B), per_channel(C),
            None if D is None else D.float(), None if z is None else z.float())


def _finish(y: Tensor, u32: Tensor, D, z, out_dtype) -> Tensor:
    if D is not None:
        y = y + D[None, :, None] * u32
    if z is not None:
        y = y * F.silu(z)
    return y.to(out_dtype)


def _varlen(fn, u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
            return_last_state, reverse, cu_seqlens, **kw):
    """Run `fn` on each packed sequence of a (1, dim, total) batch."""
    outs, lasts = [], []
    bounds = cu_seqlens.tolist()
    for i, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
        h0 = None if initial_state is None else initial_state[i : i + 1]
        sl = lambda t: None if t is None else t[..., s:e]  # noqa: E731
        o, h = fn(sl(u), sl(delta), A, sl(B), sl(C), D, sl(z), delta_bias, delta_softplus,
                  initial_state=h0, return_last_state=True, reverse=reverse, **kw)
        outs.append(o)
        lasts.append(h)
    out = torch.cat(outs, dim=-1)
    return (out, torch.cat(lasts, dim=0)) if return_last_state else out


def selective_scan_sequential(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                              delta_softplus=True, initial_state=None, return_last_state=False,
                              reverse=False, cu_seqlens=None):
    """The recurrence in the module docstring, one position at a time (float32 state)."""
    if cu_seqlens is not None:
        return _varlen(selective_scan_sequential, u, delta, A, B, C, D, z, delta_bias,
                       delta_softplus, initial_state, return_last_state, reverse, cu_seqlens)
    batch, dim, length = u.shape
    u32, dt, A32, Bc, Cc, D32, z32 = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    h = (u32.new_zeros(batch, dim, A.shape[1]) if initial_state is None
         else initial_state.float())
    ys = [None] * length
    order = range(length - 1, -1, -1) if reverse else range(length)
    for t in order:
        dA = torch.exp(dt[:, :, t, None] * A32)                          # (B, D, N)
        h = dA * h + (dt[:, :, t] * u32[:, :, t])[..., None] * Bc[..., t]
        ys[t] = (h * Cc[..., t]).sum(-1)                                  # (B, D)
    y = torch.stack(ys, dim=-1) if length else u32.new_zeros(batch, dim, 0)
    out = _finish(y, u32, D32, z32, u.dtype)
    return (out, h) if return_last_state else out


def _chunk_scan(h0: Tensor, dt: Tensor, u: Tensor, A: Tensor, B: Tensor, C: Tensor):
    """One chunk of T positions, channels split into G groups of Dg = D / G.

    h0 (Bt, G, Dg, N); dt, u (T, Bt, G, Dg); A (G, Dg, N); B, C (T, Bt, G, N), time-major so
    that each step reads contiguous memory. The chunk's decays and inputs are computed in
    one shot, then its positions are stepped through, vectorised over (Bt, G, Dg, N).
    Returns y (T, Bt, G, Dg) and the state after the chunk.
    """
    dA = torch.exp(dt[..., None] * A)                                    # (T, Bt, G, Dg, N)
    x = (dt * u)[..., None] * B[:, :, :, None, :]                        # (T, Bt, G, Dg, N)
    h, ys = h0, []
    # unbind, not dA[t]: the backward of one unbind is one stack, that of T selects is T
    # zero-filled full-size gradients
    for dA_t, x_t, C_t in zip(dA.unbind(0), x.unbind(0), C.unbind(0)):
        h = dA_t * h + x_t
        ys.append(torch.einsum("bgdn,bgn->bgd", h, C_t))
    return torch.stack(ys), h


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                           delta_softplus=True, initial_state=None, return_last_state=False,
                           reverse=False, cu_seqlens=None, chunk_size: int = DEFAULT_CHUNK):
    """Same contract as `selective_scan_sequential`, vectorised inside chunks of `chunk_size`."""
    if cu_seqlens is not None:
        return _varlen(selective_scan_chunked, u, delta, A, B, C, D, z, delta_bias,
                       delta_softplus, initial_state, return_last_state, reverse, cu_seqlens,
                       chunk_size=chunk_size)
    batch, dim, length = u.shape
    dstate = A.shape[1]
    u32, dt = u.float(), delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()[None, :, None]
    if delta_softplus:
        dt = F.softplus(dt)
    Bg = B.float() if B.dim() == 4 else B.float()[:, None]               # (Bt, G, N, L)
    Cg = C.float() if C.dim() == 4 else C.float()[:, None]
    G = Bg.shape[1]
    # time-major layouts: (L, Bt, G, Dg) and (L, Bt, G, N)
    tm = lambda x: rearrange(x, "b (g d) l -> l b g d", g=G)  # noqa: E731
    dt_t, u_t = tm(dt), tm(u32)
    B_t, C_t = (rearrange(M, "b g n l -> l b g n") for M in (Bg, Cg))
    if reverse:  # the reference may flip; the Triton kernels walk backwards instead
        dt_t, u_t, B_t, C_t = (x.flip(0) for x in (dt_t, u_t, B_t, C_t))
    A_g = rearrange(A.float(), "(g d) n -> g d n", g=G)
    h = (u32.new_zeros(batch, G, dim // G, dstate) if initial_state is None
         else rearrange(initial_state.float(), "b (g d) n -> b g d n", g=G))
    need_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, delta_bias, initial_state))
    ys = []
    for s in range(0, length, chunk_size):
        args = (h, dt_t[s:s + chunk_size], u_t[s:s + chunk_size], A_g,
                B_t[s:s + chunk_size], C_t[s:s + chunk_size])
        if need_grad and length > chunk_size:
            y, h = checkpoint(_chunk_scan, *args, use_reentrant=False)
        else:
            y, h = _chunk_scan(*args)
        ys.append(y)
    y = torch.cat(ys) if ys else u32.new_zeros(0, batch, G, dim // G)
    if reverse:
        y = y.flip(0)
    y = rearrange(y, "l b g d -> b (g d) l")
    h = rearrange(h, "b g d n -> b (g d) n")
    D32 = None if D is None else D.float()
    z32 = None if z is None else z.float()
    out = _finish(y, u32, D32, z32, u.dtype)
    return (out, h) if return_last_state else out


def selective_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None,
                               dt_softplus=True, state_batch_indices=None, dt_proj_weight=None):
    """One decoding step of the recurrence; `state` is updated in place and y returned.

    state (S, dim, dstate) float32, S >= batch; x, dt, z (batch, dim); A (dim, dstate);
    B, C (batch, dstate) or (batch, groups, dstate); D, dt_bias (dim,);
    state_batch_indices (batch,) int: row of `state` that batch element i uses
    (continuous batching); identity when None. Returns y (batch, dim) in x's dtype.
    With dt_proj_weight (dim, R), dt is (batch, R), the input of the Mamba block's dt_proj:
    the step's dt is `F.linear(dt, dt_proj_weight)` in the weight's dtype (bias: dt_bias).
    """
    batch, dim = x.shape
    rows = (torch.arange(batch, device=x.device) if state_batch_indices is None
            else state_batch_indices.long())
    if dt_proj_weight is not None:
        dt = F.linear(dt.to(dt_proj_weight.dtype), dt_proj_weight)
    d = dt.float()
    if dt_bias is not None:
        d = d + dt_bias.float()
    if dt_softplus:
        d = F.softplus(d)

    def per_channel(M):  # -> (batch, dim, dstate)
        M = M.float()
        if M.dim() == 2:
            return M[:, None, :].expand(batch, dim, M.shape[-1])
        return M.repeat_interleave(dim // M.shape[1], dim=1)

    h = state[rows].float()
    h = torch.exp(d[..., None] * A.float()) * h + (d * x.float())[..., None] * per_channel(B)
    state[rows] = h.to(state.dtype)
    y = (h * per_channel(C)).sum(-1)
    if D is not None:
        y = y + D.float() * x.float()
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(x.dtype)


def causal_conv1d_update_ref(x, conv_state, weight, bias=None, activation: str | None = "silu",
                             state_batch_indices=None):
    """One step of a depthwise causal conv; `conv_state` holds the previous width-1 inputs.

    x (batch, dim); conv_state (S, dim, width-1), oldest first, updated in place;
    weight (dim, width); bias (dim,). Returns (batch, dim) in x's dtype. The SiLU sees the
    conv output rounded to x's dtype, as `F.silu(F.conv1d(x, ...))` does in the parallel
    forward (a no-op for float32).
    """
    batch = x.shape[0]
    rows = (torch.arange(batch, device=x.device) if state_batch_indices is None
            else state_batch_indices.long())
    window = torch.cat([conv_state[rows].float(), x.float()[..., None]], dim=-1)  # (B, D, W)
    out = (window * weight.float()).sum(-1)
    if bias is not None:
        out = out + bias.float()
    if activation == "silu":
        out = F.silu(out.to(x.dtype).float())
    elif activation is not None:
        raise ValueError(f"activation must be 'silu' or None, got {activation!r}")
    conv_state[rows] = window[..., 1:].to(conv_state.dtype)
    return out.to(x.dtype)


def causal_conv1d_ref(x, weight, bias=None, reverse: bool = False):
    """Depthwise causal conv of a whole sequence from zeros: x (B, D, L), weight (D, W),
    bias (D,) -> (B, D, L); y[t] = bias + sum_k weight[k] x[t - (W-1) + k]. `reverse`: the
    anti-causal conv, y[t] = bias + sum_k weight[k] x[t + (W-1) - k]."""
    W = weight.shape[-1]
    w = weight.flip(-1) if reverse else weight
    y = F.conv1d(x, w[:, None, :].to(x.dtype), None if bias is None else bias.to(x.dtype),
                 padding=W - 1, groups=x.shape[1])
    return y[..., W - 1:] if reverse else y[..., : x.shape[-1]]


def gemv_ref(x, weight, bias=None, residual=None, norm_weight=None, norm_eps: float = 1e-5):
    """`residual + linear(rmsnorm(x))` as the decode step computes it with the layers, in
    float32 with the layers' rounding points (the contract of `triton/gemv.py`):

    x (M, K); weight (N, K); bias (N,); norm_weight (K,): x is first RMS-normalised in
    float32 (`bytessm.nn.norm.RMSNorm`); the Linear's input is rounded to weight's dtype
    (`cast_for_inference`'s input hook) and its output y (M, N) too; with residual (M, N)
    float32 the result is residual + y in float32, else y in weight's dtype.
    """
    x32 = x.float()
    if norm_weight is not None:
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + norm_eps) * norm_weight.float()
    x32 = x32.to(weight.dtype).float()
    y = F.linear(x32, weight.float(), None if bias is None else bias.float()).to(weight.dtype)
    return y if residual is None else residual + y.float()
