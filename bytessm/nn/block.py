"""Pre-norm residual block: residual = residual + mixer(norm(residual)) [+ mlp(norm(...))].

The residual stream is kept in float32 (as mamba_ssm's `residual_in_fp32`), so bf16
autocast only touches the mixer's matmuls.
"""
from __future__ import annotations

from torch import Tensor, nn
import torch.nn.functional as F

from .decode import residual_step
from .norm import RMSNorm


def swiglu(a: Tensor, b: Tensor) -> Tensor:
    """silu(a) * b in float32, rounded once to a's dtype. Eager PyTorch would round silu(a)
    to bf16 before the product and inductor does not (it fuses both in float32), so the
    compiled decode step and the eager parallel forward would differ (1.9e-3 relative in
    bf16); computing in float32 explicitly makes both round at the same single point."""
    return (F.silu(a.float()) * b.float()).to(a.dtype)


class MLP(nn.Module):
    """SwiGLU feed-forward (Shazeer 2020), for attention blocks of Transformer baselines."""

    def __init__(self, d_model: int, *, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(d_model, 2 * hidden, bias=False)
        self.out_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.fc1(x).chunk(2, dim=-1)
        return self.out_proj(swiglu(a, b))

    def step_residual(self, residual: Tensor, norm: nn.Module) -> Tensor:
        """`residual + self(norm(residual))` at a decode step, residual (B, D) float32, with
        the norm inside fc1's product and the add inside out_proj's on the decode GEMV
        (`decode.residual_step`)."""
        return residual_step(residual, norm, self.fc1,
                             lambda h, *_: swiglu(*h.chunk(2, dim=-1)), self.out_proj)


class Block(nn.Module):
    def __init__(self, d_model: int, mixer: nn.Module, *, mlp: nn.Module | None = None,
                 norm_eps: float = 1e-5):
        super().__init__()
        self.norm = RMSNorm(d_model, eps=norm_eps)
        self.mixer = mixer
        self.mlp = mlp
        self.norm2 = RMSNorm(d_model, eps=norm_eps) if mlp is not None else None

    def forward(self, residual: Tensor, state=None, return_state: bool = False):
        """residual (B, L, D) float32 -> (B, L, D) float32 [, mixer state]."""
        out = self.mixer(self.norm(residual), state=state, return_state=return_state)
        y, new_state = out if return_state else (out, None)
        residual = residual + y.float()
        if self.mlp is not None:
            residual = residual + self.mlp(self.norm2(residual)).float()
        return (residual, new_state) if return_state else residual

    def step(self, residual: Tensor, state) -> Tensor:
        """residual (B, D) float32 at one position; the mixer's state advances in place.
        `residual + y` with y in bf16 promotes inside the add kernel: the same float32 sum as
        forward's `residual + y.float()`, without the separate cast kernel. A mixer with a
        `step_residual` (Mamba, Attention), and the MLP, take the norm and the add
        themselves, to fuse them into their products (`bytessm.nn.decode`)."""
        step_residual = getattr(self.mixer, "step_residual", None)
        if step_residual is not None:
            residual = step_residual(residual, self.norm, state)
        else:
            residual = residual + self.mixer.step(self.norm(residual), state)
        if self.mlp is not None:
            residual = self.mlp.step_residual(residual, self.norm2)
        return residual
