"""The backbone: encoder -> N residual blocks -> final RMSNorm, and the model around it.

    inputs (B, L) int symbols  --ByteEmbedding-->  (B, L, D)
    inputs (B, L, F) float     --Linear-------->  (B, L, D)   (continuous features)
    or any encoder a task supplies (patch embeddings with a class token, ...)

Which layers are attention is a list of indices (`attn_layers`, Jamba uses 1 in 8); the
others are Mamba (causal) or BiMamba (`bidirectional=True`). Blocks can be activation-
checkpointed one by one. `SequenceModel` adds the task's head: the model returns what the
head returns, the task turns that into a loss.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .nn import MLP, Attention, BiMamba, Block, Mamba, RMSNorm
from .nn.heads import head_step


class ByteEmbedding(nn.Embedding):
    """256 byte values plus a task's special symbols (mask, pad, ...): vocab = 256 + extra."""


class Backbone(nn.Module):
    def __init__(self, *, d_model: int, n_layer: int, vocab_size: int | None = None,
                 input_dim: int | None = None, encoder: nn.Module | None = None,
                 bidirectional: bool = False, attn_layers: Sequence[int] | str = (),
                 attn_heads: int = 8, attn_mlp_ratio: float = 0.0, d_state: int = 16,
                 d_conv: int = 4, expand: int = 2, dt_rank: int | str = "auto",
                 norm_eps: float = 1e-5, checkpoint_blocks: bool = False,
                 scan_backend: str = "auto"):
        super().__init__()
        for key, value in (("d_model", d_model), ("n_layer", n_layer), ("d_state", d_state),
                           ("d_conv", d_conv), ("expand", expand)):
            if value <= 0:
                raise ValueError(f"model.{key} must be positive, got {value}")
        if attn_layers == "all":
            attn_layers = range(n_layer)
        bad = [i for i in attn_layers if not 0 <= i < n_layer]
        if bad:
            raise ValueError(f"model.attn_layers {bad} out of range for n_layer={n_layer}")
        self.d_model, self.n_layer = d_model, n_layer
        self.bidirectional = bidirectional
        self.checkpoint_blocks = checkpoint_blocks
        if encoder is not None:
            self.encoder = encoder
        elif vocab_size is not None:
            self.encoder = ByteEmbedding(vocab_size, d_model)
        elif input_dim is not None:
            self.encoder = nn.Linear(input_dim, d_model)
        else:
            raise ValueError("Backbone needs vocab_size (symbols), input_dim (vectors) or an encoder")

        mixer_kw = dict(d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank,
                        scan_backend=scan_backend)
        attn = set(attn_layers)
        blocks = []
        for i in range(n_layer):
            if i in attn:
                mixer = Attention(d_model, n_heads=attn_heads, causal=not bidirectional)
                hidden = int(attn_mlp_ratio * d_model)
                mlp = MLP(d_model, hidden=hidden) if hidden > 0 else None
            else:
                mixer = (BiMamba if bidirectional else Mamba)(d_model, **mixer_kw)
                mlp = None
            blocks.append(Block(d_model, mixer, mlp=mlp, norm_eps=norm_eps))
        self.blocks = nn.ModuleList(blocks)
        self.norm_f = RMSNorm(d_model, eps=norm_eps)
        self.apply(self._init_weights)
        self._rescale_residual_projections()

    def _init_weights(self, module: nn.Module) -> None:
        """mamba_ssm's init: N(0, 0.02) embeddings, zero biases (except dt_proj's)."""
        if isinstance(module, nn.Linear):
            if module.bias is not None and not getattr(module.bias, "_no_reinit", False):
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def _rescale_residual_projections(self) -> None:
        """Each residual branch's output projection scaled down by sqrt(n_layer), so the
        residual stream's variance does not grow with depth (GPT-2; mamba_ssm's
        rescale_prenorm_residual)."""
        for block in self.blocks:
            for proj in (block.mixer.out_proj, getattr(block.mlp, "out_proj", None)):
                if proj is None:
                    continue
                nn.init.kaiming_uniform_(proj.weight, a=math.sqrt(5))
                with torch.no_grad():
                    proj.weight /= math.sqrt(self.n_layer)

    @property
    def causal(self) -> bool:
        return not self.bidirectional

    def forward(self, inputs: Tensor, states: list | None = None, return_states: bool = False):
        """inputs (B, L) or (B, L, F) -> hidden (B, L, D) [, per-layer states after L]."""
        residual = self.encoder(inputs).float()                             # (B, L, D)
        new_states = []
        for i, block in enumerate(self.blocks):
            state = None if states is None else states[i]
            if return_states or state is not None:
                residual, s = block(residual, state=state, return_state=True)
                new_states.append(s)
            elif self.checkpoint_blocks and self.training and torch.is_grad_enabled():
                # a block draws no random numbers (no dropout): no RNG state to restore for
                # the recomputation, and reading it would fail under CUDA graph capture
                residual = checkpoint(block, residual, use_reentrant=False,
                                      preserve_rng_state=False)
            else:
                residual = block(residual)
        hidden = self.norm_f(residual)
        return (hidden, new_states) if return_states else hidden

    def step(self, symbol: Tensor, states: list, block_step=None, stack_step=None) -> Tensor:
        """One position: symbol (B,) or (B, F) -> hidden (B, D); states advance in place.
        `block_step(block, residual, state)` replaces `Block.step` (the decoder passes a
        torch.compile'd one: compiled once, reused by every block of the same structure);
        `stack_step(residual, states)` replaces the whole loop over the blocks (the decoder
        passes a `bytessm.nn.stack.FusedStack`: every block in one kernel)."""
        if self.bidirectional:
            raise RuntimeError("a bidirectional model sees the whole sequence and cannot "
                               "generate step by step")
        residual = self.encoder(symbol).float()
        if stack_step is not None:
            return self.norm_f(stack_step(residual, states))
        for block, state in zip(self.blocks, states):
            residual = block.step(residual, state) if block_step is None \
                else block_step(block, residual, state)
        return self.norm_f(residual)

    def new_states(self, batch: int, device, max_len: int = 4096) -> list:
        """Zero inference states: Mamba (conv window, SSM state); attention a KV cache."""
        return [b.mixer.new_state(batch, device, max_len=max_len) for b in self.blocks]


class SequenceModel(nn.Module):
    """backbone + task head: inputs -> head(hidden). Ties the LM head to the embedding when
    asked and the shapes agree."""

    def __init__(self, backbone: nn.Module, head: nn.Module, *, tie_embeddings: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = head
        if tie_embeddings:
            emb = getattr(backbone, "encoder", None)
            w = getattr(head, "weight", None)
            if not isinstance(emb, nn.Embedding) or w is None or w.shape != emb.weight.shape:
                raise ValueError("model.tie_embeddings=true needs a symbol embedding and an LM "
                                 "head of the same (vocab, d_model) shape")
            head.proj.weight = emb.weight

    def forward(self, inputs: Tensor, states: list | None = None, return_states: bool = False):
        out = self.backbone(inputs, states=states, return_states=return_states)
        if return_states:
            hidden, new_states = out
            return self.head(hidden), new_states
        return self.head(out)

    def step(self, symbol: Tensor, states: list) -> Tensor:
        """One decoding position -> head output for it, e.g. logits (B, vocab)."""
        return head_step(self.head, self.backbone.step(symbol, states))
