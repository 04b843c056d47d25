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
- `selective_scan_chunked`: splits the length into chunks of `chunk_size`; inside a chunk the
  recurrence is solved in closed form, h[t] = exp(S[t] - S[s]) summed over s <= t with
  S the cumulative sum of dt*A (differences are taken before the exp, so nothing overflows);
  between chunks the state is carried. Each chunk is recomputed in the backward pass
  (activation checkpointing), so memory is O(batch*dim*(length + dstate*length/chunk)) and
  never O(batch*dim*dstate*length).

Both run the state and all arithmetic in float32 and return `out` in u's dtype.
Variable-length packed batches (`cu_seqlens`) run each sequence on its own slice.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

__all__ = [
    "selective_scan_sequential",
    "selective_scan_chunked",
    "selective_state_update_ref",
    "causal_conv1d_update_ref",
    "DEFAULT_CHUNK",
]

DEFAULT_CHUNK = 32


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


def _chunk_scan(h0: Tensor, dt: Tensor, u: Tensor, A: Tensor, Bc: Tensor, Cc: Tensor):
    """One chunk in closed form. h0 (B, D, N); dt, u (B, D, T); A (D, N); Bc, Cc (B, D, N, T).

    Returns y (B, D, T) and the state after the chunk (B, D, N).
    """
    T = dt.shape[-1]
    S = torch.cumsum(dt[:, :, None, :] * A[None, :, :, None], dim=-1)   # (B, D, N, T)
    seg = S[..., :, None] - S[..., None, :]                              # (B, D, N, T, T): S[t]-S[s]
    causal = torch.ones(T, T, dtype=torch.bool, device=dt.device).tril()
    decay = torch.exp(seg.masked_fill(~causal, float("-inf")))          # 0 where s > t
    x = Bc * (dt * u)[:, :, None, :]                                     # (B, D, N, T)
    h = torch.einsum("bdnts,bdns->bdnt", decay, x) + torch.exp(S) * h0[..., None]
    y = (h * Cc).sum(2)                                                  # (B, D, T)
    return y, h[..., -1]


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                           delta_softplus=True, initial_state=None, return_last_state=False,
                           reverse=False, cu_seqlens=None, chunk_size: int = DEFAULT_CHUNK):
    """Same contract as `selective_scan_sequential`, vectorised inside chunks of `chunk_size`."""
    if cu_seqlens is not None:
        return _varlen(selective_scan_chunked, u, delta, A, B, C, D, z, delta_bias,
                       delta_softplus, initial_state, return_last_state, reverse, cu_seqlens,
                       chunk_size=chunk_size)
    batch, dim, length = u.shape
    u32, dt, A32, Bc, Cc, D32, z32 = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if reverse:  # the reference may flip; the Triton kernels walk backwards instead
        u_s, dt_s, B_s, C_s = (t.flip(-1) for t in (u32, dt, Bc, Cc))
    else:
        u_s, dt_s, B_s, C_s = u32, dt, Bc, Cc
    h = (u32.new_zeros(batch, dim, A.shape[1]) if initial_state is None
         else initial_state.float())
    need_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, delta_bias, initial_state))
    ys = []
    for s in range(0, length, chunk_size):
        e = min(s + chunk_size, length)
        args = (h, dt_s[..., s:e], u_s[..., s:e], A32, B_s[..., s:e], C_s[..., s:e])
        if need_grad:
            y, h = checkpoint(_chunk_scan, *args, use_reentrant=False)
        else:
            y, h = _chunk_scan(*args)
        ys.append(y)
    y = torch.cat(ys, dim=-1) if ys else u32.new_zeros(batch, dim, 0)
    if reverse:
        y = y.flip(-1)
    out = _finish(y, u32, D32, z32, u.dtype)
    return (out, h) if return_last_state else out


def selective_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None,
                               dt_softplus=True, state_batch_indices=None):
    """One decoding step of the recurrence; `state` is updated in place and y returned.

    state (S, dim, dstate) float32, S >= batch; x, dt, z (batch, dim); A (dim, dstate);
    B, C (batch, dstate) or (batch, groups, dstate); D, dt_bias (dim,);
    state_batch_indices (batch,) int: row of `state` that batch element i uses
    (continuous batching); identity when None. Returns y (batch, dim) in x's dtype.
    """
    batch, dim = x.shape
    rows = (torch.arange(batch, device=x.device) if state_batch_indices is None
            else state_batch_indices.long())
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
    weight (dim, width); bias (dim,). Returns (batch, dim) in x's dtype.
    """
    batch = x.shape[0]
    rows = (torch.arange(batch, device=x.device) if state_batch_indices is None
            else state_batch_indices.long())
    window = torch.cat([conv_state[rows].float(), x.float()[..., None]], dim=-1)  # (B, D, W)
    out = (window * weight.float()).sum(-1)
    if bias is not None:
        out = out + bias.float()
    if activation == "silu":
        out = F.silu(out)
    elif activation is not None:
        raise ValueError(f"activation must be 'silu' or None, got {activation!r}")
    conv_state[rows] = window[..., 1:].to(conv_state.dtype)
    return out.to(x.dtype)
