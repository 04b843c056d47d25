"""A SaShiMi-style pooled U-Net of Mamba blocks (Goel et al. 2022; the Mamba paper's SC09
model, Gu & Dao 2023 sec. 4.4), causal, as a drop-in for `bytessm.backbone.Backbone`.

    inputs (B, L) --embedding--> x0 (B, L, D)
      x1 = DownPool(x0)   (B, L/4, 2D)      x2 = DownPool(x1)   (B, L/16, 4D)
      c  = Mamba blocks(x2)                                     center, width 4D
      y1 = Mamba blocks(x1 + UpPool(c))     (B, L/4, 2D)
      y0 = Mamba blocks(x0 + UpPool(y1))    (B, L, D)  --RMSNorm--> hidden (B, L, D)

with `pool=[4, 4]`, `pool_expand=2` and `n_layer` pre-norm residual Mamba blocks at each
resolution. This is SaShiMi's non-"unet" variant (blocks on the up path and in the center;
state-spaces/s4 `models/sashimi/sashimi.py`) with each S4 + FF pair replaced by a Mamba
block; SaShiMi adds the stage input again after its residual blocks, ours are residual
already.

Causality. DownPool folds positions [4t, 4t+3] into pooled position t, so pooled t already
knows inputs up to 4t+3: handed straight back up, position 4t would see its three
successors (the classic pooling leak). As SaShiMi does, UpPool shifts its output right by
one pooled step (zeros first), so fine positions [4t, 4t+3] receive pooled t-1, which
depends on inputs <= 4t-1 only. Each level shifts, so the whole stack is causal; the
residual path carries position t itself. Lengths that are not a multiple of prod(pool)
are zero-padded on the right and trimmed, which a causal model cannot notice.

Decoding. `step` is exact (the same function as `forward`, one position at a time): each
level buffers its last inputs until a pooled position is complete, runs the level below
once, and hands out that level's up-pooled outputs over the next `pool` positions. The
buffers are fixed tensors updated in place and the only Python-side state is how many
inputs each level holds, a function of the position modulo prod(pool) (`decode_phase`):
so one step per phase can be captured as a CUDA graph (`generation.Decoder` captures
`decode_period` graphs and replays them in turn).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .block import Block
from .mamba import Mamba, MambaState
from .norm import RMSNorm


class DownPool(nn.Module):
    """(B, L, W) -> (B, L / pool, W * expand): each group of `pool` positions, linearly."""

    def __init__(self, width: int, *, pool: int, expand: int):
        super().__init__()
        self.pool = pool
        self.linear = nn.Linear(width * pool, width * expand)

    def forward(self, x: Tensor) -> Tensor:
        x = rearrange(x, "b (l s) w -> b l (s w)", s=self.pool)           # (B, L/s, s*W)
        return self.linear(x).float()

    def step(self, group: Tensor) -> Tensor:
        """`pool` inputs (B, pool, W), oldest first -> the pooled position (B, W * expand)."""
        return self.linear(rearrange(group, "b s w -> b (s w)")).float()


class UpPool(nn.Module):
    """(B, L', W * expand) -> (B, L' * pool, W), shifted right by one pooled step."""

    def __init__(self, width: int, *, pool: int, expand: int):
        super().__init__()
        self.pool = pool
        self.linear = nn.Linear(width * expand, width * pool)

    def forward(self, x: Tensor) -> Tensor:
        y = self.linear(x).float()                                          # (B, L', s*W)
        y = F.pad(y[:, :-1], (0, 0, 1, 0))          # pooled t -> t+1, zeros first: causal
        return rearrange(y, "b l (s w) -> b (l s) w", s=self.pool)          # (B, L, W)

    def step(self, x: Tensor) -> Tensor:
        """A pooled position (B, W * expand) -> the next `pool` fine outputs (B, pool, W)."""
        return rearrange(self.linear(x).float(), "b (s w) -> b s w", s=self.pool)


@dataclass
class StageState:
    """Decoding state of one resolution level; advanced in place by `Stage.step`. With
    pooling, `down` (B, pool, W) holds the inputs of the pending pooled position in its
    first `filled` slots, and `up` (B, pool, W) the up-pooled outputs, slot `filled` next."""
    blocks: list[MambaState]
    down: Tensor | None = None
    up: Tensor | None = None
    filled: int = 0
    inner: "StageState | None" = None


class Stage(nn.Module):
    """One resolution level: [DownPool -> inner Stage -> UpPool, added to the input], then
    `n_layer` residual Mamba blocks. The innermost level has no pooling."""

    def __init__(self, width: int, *, pools: Sequence[int], pool_expand: int, n_layer: int,
                 norm_eps: float, mamba_kw: dict):
        super().__init__()
        self.width = width
        self.pool = pools[0] if pools else None
        if self.pool is not None:
            self.down = DownPool(width, pool=self.pool, expand=pool_expand)
            self.inner = Stage(width * pool_expand, pools=pools[1:], pool_expand=pool_expand,
                               n_layer=n_layer, norm_eps=norm_eps, mamba_kw=mamba_kw)
            self.up = UpPool(width, pool=self.pool, expand=pool_expand)
        self.blocks = nn.ModuleList(Block(width, Mamba(width, **mamba_kw), norm_eps=norm_eps)
                                    for _ in range(n_layer))

    def forward(self, x: Tensor, checkpoint_blocks: bool = False) -> Tensor:
        """x (B, L, W) float32, L a multiple of the pools below -> (B, L, W) float32."""
        if self.pool is not None:
            x = x + self.up(self.inner(self.down(x), checkpoint_blocks))
        for block in self.blocks:
            if checkpoint_blocks and self.training and torch.is_grad_enabled():
                # no random numbers in a block: no RNG state to keep (see Backbone.forward)
                x = checkpoint(block, x, use_reentrant=False, preserve_rng_state=False)
            else:
                x = block(x)
        return x

    def step(self, x: Tensor, state: StageState, block_step=None) -> Tensor:
        """One position: x (B, W) -> (B, W); `state` advances in place. `block_step(block,
        residual, state)` replaces `Block.step` (`PooledUNet.step`)."""
        if self.pool is not None:
            i = state.filled
            y = x + state.up[:, i]
            state.down[:, i] = x
            state.filled = (i + 1) % self.pool
            if state.filled == 0:  # a pooled position is complete: run the level below
                inner_out = self.inner.step(self.down.step(state.down), state.inner,
                                            block_step)
                state.up.copy_(self.up.step(inner_out))
        else:
            y = x
        for block, block_state in zip(self.blocks, state.blocks):
            y = block.step(y, block_state) if block_step is None \
                else block_step(block, y, block_state)
        return y

    def prefill(self, x: Tensor, state: StageState) -> Tensor:
        """The next L inputs x (B, L, W) float32 at once, from `state` at fill 0 (and every
        level below too) -> outputs (B, L, W), `state` advanced in place to after them, as
        L calls of `step` would leave it. The level below runs over the L // pool complete
        groups in parallel; a trailing partial group only fills `down`."""
        L = x.shape[1]
        if self.pool is not None:
            if state.filled:
                raise RuntimeError("Stage.prefill starts at a pooling boundary (fill 0), got "
                                   f"fill {state.filled}")
            p, G = self.pool, L // self.pool
            if G:
                inner_out = self.inner.prefill(self.down(x[:, :G * p]), state.inner)  # (B,G,2W)
                up = rearrange(self.up.linear(inner_out).float(), "b g (s w) -> b g s w", s=p)
                # group g receives the up-pooled outputs of group g-1; group 0 the state's
                given = torch.cat([state.up[:, None], up[:, :-1]], 1)             # (B, G, p, W)
                add = torch.cat([rearrange(given, "b g s w -> b (g s) w"),
                                 up[:, -1, :L - G * p]], 1)                       # (B, L, W)
                state.up.copy_(up[:, -1])
            else:
                add = state.up[:, :L]
            y = x + add
            if L >= p:  # slot s holds the latest input at a position = s (mod p)
                state.down.copy_(torch.roll(x[:, L - p:], shifts=L % p, dims=1))
            else:
                state.down[:, :L] = x
            state.filled = L % p
        else:
            y = x
        for block, block_state in zip(self.blocks, state.blocks):
            y, new = block(y, state=block_state, return_state=True)
            block_state.conv.copy_(new.conv)
            block_state.ssm.copy_(new.ssm)
        return y

    def new_state(self, batch: int, device) -> StageState:
        state = StageState([b.mixer.new_state(batch, device) for b in self.blocks])
        if self.pool is not None:
            state.down = torch.zeros(batch, self.pool, self.width, device=device)
            state.up = torch.zeros(batch, self.pool, self.width, device=device)
            state.inner = self.inner.new_state(batch, device)
        return state


class PooledUNet(nn.Module):
    """Embedding -> multi-resolution causal Mamba U-Net -> RMSNorm; Backbone's interface."""

    def __init__(self, *, d_model: int, n_layer: int, vocab_size: int | None = None,
                 input_dim: int | None = None, encoder: nn.Module | None = None,
                 pool: Sequence[int] = (4, 4), pool_expand: int = 2, d_state: int = 16,
                 d_conv: int = 4, expand: int = 2, dt_rank: int | str = "auto",
                 norm_eps: float = 1e-5, checkpoint_blocks: bool = False,
                 bidirectional: bool = False, scan_backend: str = "auto"):
        super().__init__()
        for key, value in (("d_model", d_model), ("n_layer", n_layer), ("pool_expand", pool_expand),
                           ("d_state", d_state), ("d_conv", d_conv), ("expand", expand)):
            if value <= 0:
                raise ValueError(f"model.{key} must be positive, got {value}")
        pool = [int(p) for p in pool]
        if any(p < 2 for p in pool):
            raise ValueError(f"model.pool factors must be >= 2, got {pool}")
        if bidirectional:
            raise ValueError("the pooled U-Net is a causal model (its UpPool shift exists for "
                             "causality); use the flat Backbone for bidirectional models")
        self.d_model, self.n_layer, self.pools = d_model, n_layer, pool
        self.checkpoint_blocks = checkpoint_blocks
        if encoder is not None:
            self.encoder = encoder
        elif vocab_size is not None:
            self.encoder = nn.Embedding(vocab_size, d_model)
        elif input_dim is not None:
            self.encoder = nn.Linear(input_dim, d_model)
        else:
            raise ValueError("PooledUNet needs vocab_size (symbols), input_dim (vectors) or an encoder")
        mamba_kw = dict(d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank,
                        scan_backend=scan_backend)
        self.stage = Stage(d_model, pools=pool, pool_expand=pool_expand, n_layer=n_layer,
                           norm_eps=norm_eps, mamba_kw=mamba_kw)
        self.norm_f = RMSNorm(d_model, eps=norm_eps)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """As Backbone: N(0, 0.02) embeddings, zero biases (but dt_proj's), residual output
        projections scaled down by sqrt(n_layer)."""
        if isinstance(module, nn.Linear):
            if module.bias is not None and not getattr(module.bias, "_no_reinit", False):
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, Block):
            nn.init.kaiming_uniform_(module.mixer.out_proj.weight, a=math.sqrt(5))
            with torch.no_grad():
                module.mixer.out_proj.weight /= math.sqrt(self.n_layer)

    @property
    def causal(self) -> bool:
        return True

    @property
    def stride(self) -> int:
        """Lengths are padded to a multiple of this (the product of the pool factors)."""
        return math.prod(self.pools)

    def forward(self, inputs: Tensor, states: list | None = None, return_states: bool = False):
        """inputs (B, L) or (B, L, F) -> hidden (B, L, D) [, states after L].

        With `states` or `return_states` (prefill for decoding) the states advance in place:
        up to the next multiple of `decode_period` positions by `step`, the rest in parallel
        (`Stage.prefill`: each level's blocks through the scan with its state)."""
        if states is not None or return_states:
            if states is None:
                states = self.new_states(inputs.shape[0], inputs.device)
            lead = min(-self.decode_phase(states) % self.decode_period, inputs.shape[1])
            hidden = [self.step(inputs[:, t], states)[:, None] for t in range(lead)]
            if inputs.shape[1] > lead:
                x = self.encoder(inputs[:, lead:]).float()
                hidden.append(self.norm_f(self.stage.prefill(x, states[0])))
            hidden = torch.cat(hidden, 1) if hidden else inputs.new_zeros(
                (inputs.shape[0], 0, self.d_model), dtype=torch.float32)    # (B, L, D)
            return (hidden, states) if return_states else hidden
        x = self.encoder(inputs).float()                                     # (B, L, D)
        L = x.shape[1]
        pad = -L % self.stride
        x = F.pad(x, (0, 0, 0, pad))                                         # (B, L+pad, D)
        x = self.stage(x, self.checkpoint_blocks)[:, :L]                     # (B, L, D)
        return self.norm_f(x)

    def step(self, symbol: Tensor, states: list, block_step=None) -> Tensor:
        """One position: symbol (B,) or (B, F) -> hidden (B, D); states advance in place.
        `block_step(block, residual, state)` replaces `Block.step` (the decoder passes a
        torch.compile'd one, compiled once per block width and batch)."""
        return self.norm_f(self.stage.step(self.encoder(symbol).float(), states[0], block_step))

    def new_states(self, batch: int, device, max_len: int | None = None) -> list:
        """[the root StageState]: per level its blocks' Mamba states and pooling buffers."""
        return [self.stage.new_state(batch, device)]

    @property
    def decode_period(self) -> int:
        """Steps after which every level's buffers are in the same phase again."""
        return self.stride

    def decode_phase(self, states: list) -> int:
        """Positions decoded so far, modulo `decode_period`: the levels' fill counts read as
        the digits of a mixed-radix number, the outermost level least significant."""
        n, scale, state, stage = 0, 1, states[0], self.stage
        while stage.pool is not None:
            n += state.filled * scale
            scale *= stage.pool
            state, stage = state.inner, stage.inner
        return n

    def set_decode_phase(self, states: list, n: int) -> None:
        """Set the levels' fill counts to those after n positions (the buffers' contents are
        the caller's): how a Decoder selects the CUDA graph of a phase."""
        state, stage = states[0], self.stage
        while stage.pool is not None:
            state.filled = n % stage.pool
            n //= stage.pool
            state, stage = state.inner, stage.inner
