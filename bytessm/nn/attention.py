"""Multi-head self-attention mixer through torch SDPA, for hybrid stacks and Transformer baselines.

Rotary position embeddings (Su et al. 2021) on q and k; causal or not. The decoding state is
a preallocated KV cache (B, H, max_len, head_dim) and the number of positions filled:
`KVCache` counts them in a Python int (prefill, verification, eager steps that attend to
the filled prefix only); `StaticKVCache` counts them in a 0-d device tensor, so a step has
the same shapes and no host sync at every position and can be captured in a CUDA graph
(it attends over the whole cache with the unfilled positions masked out).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .decode import gemv_backend, residual_step, step_linear


def rotary(x: Tensor, pos: Tensor, base: float = 10000.0) -> Tensor:
    """Rotate pairs of x (B, H, L, hd) by angles pos[l] * base^(-2i/hd); pos (L,)."""
    hd = x.shape[-1]
    inv = base ** (-torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd)
    ang = pos.float()[:, None] * inv[None, :]                              # (L, hd/2)
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x.float()[..., 0::2], x.float()[..., 1::2]
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.flatten(-2).to(x.dtype)


@dataclass
class KVCache:
    k: Tensor    # (B, H, max_len, hd)
    v: Tensor    # (B, H, max_len, hd)
    length: int  # positions filled


@dataclass
class StaticKVCache:
    k: Tensor    # (B, H, max_len, hd)
    v: Tensor    # (B, H, max_len, hd)
    pos: Tensor  # () int64 on the cache's device: positions filled = the next position

    @classmethod
    def from_cache(cls, cache: KVCache) -> "StaticKVCache":
        return cls(cache.k, cache.v, torch.tensor(cache.length, device=cache.k.device))

    def to_cache(self) -> KVCache:
        return KVCache(self.k, self.v, int(self.pos))


class Attention(nn.Module):
    def __init__(self, d_model: int, *, n_heads: int = 8, causal: bool = True, bias: bool = False,
                 rope_base: float = 10000.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads, self.head_dim, self.causal = n_heads, d_model // n_heads, causal
        self.rope_base = rope_base
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _qkv(self, x: Tensor, pos: Tensor):
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d",
                            three=3, h=self.n_heads)
        return rotary(q, pos, self.rope_base), rotary(k, pos, self.rope_base), v

    def forward(self, x: Tensor, state: KVCache | None = None, return_state: bool = False):
        """x (B, L, D). With `state`, the cache's positions are the prefix (prefill / verify)."""
        L = x.shape[1]
        start = 0 if state is None else state.length
        q, k, v = self._qkv(x, torch.arange(start, start + L, device=x.device))
        if state is not None:
            state.k[:, :, start:start + L] = k.to(state.k.dtype)
            state.v[:, :, start:start + L] = v.to(state.v.dtype)
            k = state.k[:, :, : start + L].to(q.dtype)
            v = state.v[:, :, : start + L].to(q.dtype)
            state = KVCache(state.k, state.v, start + L)
        if self.causal and start > 0:  # queries at start.. see keys 0..start+i
            mask = torch.ones(L, start + L, dtype=torch.bool, device=x.device).tril(start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        y = self.out_proj(rearrange(y, "b h l d -> b l (h d)"))
        return (y, state) if return_state else y

    def step(self, x: Tensor, state: KVCache | StaticKVCache) -> Tensor:
        """x (B, D) at the cache's next position; appends to the cache in place. The
        projections run on the decode GEMV where `decode.gemv_backend` says so."""
        backend = gemv_backend(x)
        y = self._attend_step(step_linear(self.qkv, x, backend), state)
        return step_linear(self.out_proj, y, backend)

    def step_residual(self, residual: Tensor, norm: nn.Module,
                      state: KVCache | StaticKVCache) -> Tensor:
        """The pre-norm block's step, `residual + self.step(norm(residual), state)`, with the
        norm and the add inside the qkv and output products on the decode GEMV
        (`decode.residual_step`)."""
        return residual_step(residual, norm, self.qkv,
                             lambda qkv, *_: self._attend_step(qkv, state), self.out_proj)

    def _attend_step(self, qkv: Tensor, state: KVCache | StaticKVCache) -> Tensor:
        """qkv (B, 3D) of one position -> attention output (B, D) before out_proj; the
        position's k, v are appended to the cache."""
        q, k, v = rearrange(qkv, "b (three h d) -> three b h 1 d", three=3, h=self.n_heads)
        if isinstance(state, StaticKVCache):
            return self._attend_static(q, k, v, state)
        if state.length >= state.k.shape[2]:
            raise RuntimeError(f"KV cache full: max_len={state.k.shape[2]}")
        pos = torch.tensor([state.length], device=qkv.device)
        q, k = rotary(q, pos, self.rope_base), rotary(k, pos, self.rope_base)
        state.k[:, :, state.length] = k[:, :, 0].to(state.k.dtype)
        state.v[:, :, state.length] = v[:, :, 0].to(state.v.dtype)
        state.length += 1
        kk = state.k[:, :, : state.length].to(q.dtype)
        vv = state.v[:, :, : state.length].to(q.dtype)
        y = F.scaled_dot_product_attention(q, kk, vv)                      # (B, H, 1, hd)
        return rearrange(y, "b h l d -> b (l h d)")

    def _attend_static(self, q: Tensor, k: Tensor, v: Tensor, state: StaticKVCache) -> Tensor:
        """At position state.pos; fixed shapes, no host sync (CUDA-graph safe). The caller
        keeps pos < max_len (an index past the cache is a device-side error)."""
        pos = state.pos.reshape(1)                                           # (1,)
        q, k = rotary(q, pos, self.rope_base), rotary(k, pos, self.rope_base)
        state.k.index_copy_(2, pos, k.to(state.k.dtype))
        state.v.index_copy_(2, pos, v.to(state.v.dtype))
        max_len = state.k.shape[2]
        visible = torch.arange(max_len, device=q.device) <= pos              # (max_len,)
        y = F.scaled_dot_product_attention(q, state.k.to(q.dtype), state.v.to(q.dtype),
                                           attn_mask=visible[None, None, None, :])
        state.pos.add_(1)
        return rearrange(y, "b h l d -> b (l h d)")

    def new_state(self, batch: int, device, max_len: int = 4096, dtype=torch.float32) -> KVCache:
        shape = (batch, self.n_heads, max_len, self.head_dim)
        return KVCache(torch.zeros(shape, device=device, dtype=dtype),
                       torch.zeros(shape, device=device, dtype=dtype), 0)
