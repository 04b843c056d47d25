"""AdamW with weight-decay groups, and the warmup + cosine learning-rate schedule."""
from __future__ import annotations

import math

import torch
from torch import nn


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of the parameters that take no weight decay: biases, norm gains and the SSM
    parameters marked `_no_weight_decay` (A_log, D, dt bias; as mamba_ssm). Read them before
    FSDP shards the model: sharding replaces the parameters and drops such marks."""
    return {n for n, p in model.named_parameters()
            if p.dim() < 2 or getattr(p, "_no_weight_decay", False)}


def _plain(name: str) -> str:  # DDP and torch.compile prefix the names
    for prefix in ("module.", "_orig_mod."):
        name = name.replace(prefix, "")
    return name


def param_groups(model: nn.Module, weight_decay: float,
                 no_decay: set[str] | None = None) -> list[dict]:
    """Two AdamW groups: decayed matrices, and the `no_decay_names` (tied weights once)."""
    no_decay = no_decay_names(model) if no_decay is None else no_decay
    decay, keep, seen = [], [], set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (keep if _plain(name) in no_decay else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": keep, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float, betas,
                    no_decay: set[str] | None = None, fused: bool = False) -> torch.optim.AdamW:
    """AdamW over `param_groups`; `fused`: PyTorch's fused kernels (a few launches for all
    parameters, where the default multi-tensor path takes several per group and step)."""
    return torch.optim.AdamW(param_groups(model, weight_decay, no_decay), lr=lr,
                             betas=tuple(betas), fused=fused or None)


def use_fused(setting, device: torch.device) -> bool:
    """trainer.fused_optimizer: "auto" is fused on CUDA, the multi-tensor path elsewhere."""
    if setting == "auto":
        return device.type == "cuda"
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"trainer.fused_optimizer must be auto, true or false, got {setting!r}")


def keep_implementation(optimizer: torch.optim.Optimizer, fused: bool) -> None:
    """After `load_state_dict`: its param groups carry the saved run's fused / foreach flags,
    so a run resumed with another setting (or on another device) would silently take the
    old implementation; put this run's back."""
    for group in optimizer.param_groups:
        group["fused"] = fused or None
        group["foreach"] = None


def warmup_cosine(step: int, *, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak lr: linear warmup over `warmup_steps`, then cosine down to
    `min_lr_ratio` at `max_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
