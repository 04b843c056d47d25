"""Reverse-complement equivariance by parameter sharing (Caduceus-PS, Schiff et al. 2024).

DNA is double-stranded: a sequence x and its reverse complement RC(x) carry the same
information, so a model should treat them alike. Caduceus-PS builds that in with shared
weights instead of hoping augmentation teaches it. Here the sharing is over the whole
backbone: one inner backbone of width D/2 reads x and RC(x), and the two outputs are
aligned to x's positions and concatenated:

    h(x)  = inner(x)                      (B, L, D/2)
    f(x)  = [ h(x) | flip_L h(RC(x)) ]    (B, L, D)

RC acts on hidden states as "flip the length axis and swap the two channel halves"
(`rc_hidden`); then f(RC(x)) = rc_hidden(f(x)) exactly, for any inner backbone. Heads keep
the property:

- `RCLMHead`: logits = W h1 + P W h2, P the complement permutation of the vocabulary, so
  the per-position logits are RC-equivariant (RC of logits: flip L, permute by P) — the
  masked-pretraining head (Caduceus' RC-equivariant LM head).
- `RCPositionClassifier`: per-position class logits W h1 + W h2 are flip-equivariant, so
  their mean over positions is RC-invariant: the species label does not depend on the
  strand.

Select it with model._target_=bytessm.tasks.genomics.rc.RCPSBackbone (the other model keys
are the Backbone's; model.d_model is the width after concatenation, so it must be even).
It sees both strands of the whole input at every position, so it cannot serve a causal
(next-base) objective; the tasks refuse that combination.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from bytessm.backbone import Backbone

from .alphabet import complement_table


def rc_hidden(h: Tensor) -> Tensor:
    """RC on hidden states (B, L, D): flip the length axis, swap the channel halves."""
    a, b = h.flip(1).chunk(2, dim=-1)
    return torch.cat([b, a], dim=-1)


class RCPSBackbone(nn.Module):
    """f(x) = [inner(x) | flip_L inner(RC x)], inner a `Backbone` of width d_model / 2.
    Takes the Backbone's keyword arguments; inputs (B, L) symbols -> hidden (B, L, d_model)."""

    def __init__(self, *, d_model: int, vocab_size: int | None = None, **backbone_kwargs):
        super().__init__()
        if d_model % 2:
            raise ValueError(f"model.d_model must be even for the RC-equivariant model (two "
                             f"halves of d_model/2), got {d_model}")
        if vocab_size is None or "encoder" in backbone_kwargs or "input_dim" in backbone_kwargs:
            raise ValueError("RCPSBackbone reads DNA symbols: it needs vocab_size and no "
                             "encoder/input_dim")
        self.d_model = d_model
        self.inner = Backbone(d_model=d_model // 2, vocab_size=vocab_size, **backbone_kwargs)
        self.register_buffer("complement", complement_table(vocab_size), persistent=False)

    @property
    def bidirectional(self) -> bool:
        return True

    @property
    def causal(self) -> bool:
        return False

    @property
    def blocks(self) -> nn.ModuleList:
        return self.inner.blocks

    def forward(self, inputs: Tensor, states: list | None = None,
                return_states: bool = False) -> Tensor:
        if states is not None or return_states:
            raise RuntimeError("the RC-equivariant model reads both strands of the whole "
                               "input; it has no recurrent state to carry")
        rc = self.complement[inputs.flip(-1)]                               # (B, L)
        both = self.inner(torch.cat([inputs, rc], dim=0))                   # (2B, L, D/2)
        fwd, rev = both.chunk(2, dim=0)                                     # (B, L, D/2) x2
        return torch.cat([fwd, rev.flip(1)], dim=-1)                        # (B, L, D)

    def step(self, symbol: Tensor, states: list) -> Tensor:
        raise RuntimeError("the RC-equivariant model is bidirectional and cannot generate "
                           "step by step")


class RCLMHead(nn.Module):
    """hidden (B, L, D) -> logits (B, L, V) = W h1 + P W h2: RC-equivariant (see module)."""

    def __init__(self, d_model: int, vocab_size: int):
        super().__init__()
        self.proj = nn.Linear(d_model // 2, vocab_size, bias=False)
        self.register_buffer("complement", complement_table(vocab_size), persistent=False)

    def forward(self, hidden: Tensor) -> Tensor:
        h1, h2 = hidden.chunk(2, dim=-1)                                    # (B, L, D/2) x2
        return self.proj(h1) + self.proj(h2)[..., self.complement]          # (B, L, V)


class RCPositionClassifier(nn.Module):
    """hidden (B, L, D) -> per-position class logits (B, L, C) = W h1 + W h2; their mean
    over positions is RC-invariant."""

    def __init__(self, d_model: int, num_classes: int):
        super().__init__()
        self.proj = nn.Linear(d_model // 2, num_classes)

    def forward(self, hidden: Tensor) -> Tensor:
        h1, h2 = hidden.chunk(2, dim=-1)                                    # (B, L, D/2) x2
        return self.proj(h1) + self.proj(h2)                                # (B, L, C)


def is_rc_model(model_cfg) -> bool:
    """Whether a model config selects RCPSBackbone (by its `_target_`)."""
    target = str(model_cfg.get("_target_", "")) if model_cfg is not None else ""
    return target.rsplit(".", 1)[-1] == RCPSBackbone.__name__
