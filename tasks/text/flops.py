"""How training compute is counted in the tokenization comparison.

Forward FLOPs per model symbol (byte or token), from the built model:

    matmuls     2 x (weights of every nn.Linear, LM head included; embeddings are lookups: 0)
    attention   2 x context x d_model per attention layer (QK^T and AV at the full training
                context, Kaplan et al. 2020's 2 n_layer n_ctx d_attn, no causal halving)
    SSM scan    9 x d_inner x d_state per SSM branch (discretise exp(dt*A) and dt*B*x: 3,
                state update h = A_bar*h + B_bar*x: 2, readout C.h: 2, plus 2 for the D skip
                and gate rounding up) -- small next to the matmuls
    conv1d      2 x d_inner x d_conv per SSM branch

Training FLOPs = 3 x forward (the backward pass is twice the forward) x symbols processed
(steps x batch x seq_len). A BPE model processes fewer symbols per byte, which is what
matched compute means here: the same FLOPs, whatever they buy.
"""
from __future__ import annotations

from torch import nn

from bytessm.nn import Attention, SSMBranch


def param_counts(model: nn.Module) -> dict[str, int]:
    """total, and non-embedding (without the input embedding and the LM head)."""
    total = sum(p.numel() for p in model.parameters())
    emb = sum(p.numel() for m in model.modules() if isinstance(m, nn.Embedding)
              for p in m.parameters(recurse=False))
    head = getattr(getattr(model, "head", None), "proj", None)
    head_n = head.weight.numel() if isinstance(head, nn.Linear) else 0
    return {"total": total, "non_embedding": total - emb - head_n}


def forward_flops_per_symbol(model: nn.Module, context: int) -> float:
    flops = 0.0
    for m in model.modules():
        if isinstance(m, nn.Linear):
            flops += 2 * m.weight.numel()
        elif isinstance(m, Attention):
            flops += 2 * context * m.n_heads * m.head_dim
        elif isinstance(m, SSMBranch):
            flops += 9 * m.d_inner * m.d_state + 2 * m.d_inner * m.d_conv
    return flops


def training_flops(model: nn.Module, *, context: int, symbols: int) -> float:
    return 3 * forward_flops_per_symbol(model, context) * symbols
