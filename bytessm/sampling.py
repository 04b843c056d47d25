"""Sampling a next symbol from logits: repetition penalty, temperature, top-k, top-p, min-p.

    logits (B, V) --repetition penalty(seen)--> /temperature --top-k--> --top-p--> --min-p-->
    -> greedy argmax (temperature 0) or a draw from softmax

The order is Hugging Face `generate`'s (the penalty is a logits processor, then the
warpers temperature, top-k, top-p, min-p). Every function has fixed shapes and no host
sync, so a whole decode step, sampling included, can be captured in a CUDA graph.

Randomness comes in as noise: `draw_noise` fills a (B, V) buffer of Exp(1) variables from
a seeded `torch.Generator`, and `pick` takes argmax(p / E), which is a draw from p (the
"exponential race", equivalent to Gumbel-max; gpt-fast samples this way to avoid
torch.multinomial's host sync). The noise is drawn outside any captured graph, so the
same seed gives the same samples with and without CUDA graphs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bytessm.task import ConfigError


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 = greedy. top_k 0, top_p 1, min_p 0, repetition_penalty 1 = off."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0

    def __post_init__(self):
        checks = (("temperature", self.temperature >= 0, ">= 0 (0 = greedy)"),
                  ("top_k", self.top_k >= 0 and int(self.top_k) == self.top_k,
                   "an integer >= 0 (0 = off)"),
                  ("top_p", 0 < self.top_p <= 1, "in (0, 1] (1 = off)"),
                  ("min_p", 0 <= self.min_p < 1, "in [0, 1) (0 = off)"),
                  ("repetition_penalty", self.repetition_penalty > 0, "> 0 (1 = off)"))
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"{name} must be {expected}, got {getattr(self, name)}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """CTRL's penalty (Keskar et al. 2019): symbols already seen get their logit divided by
    `penalty` when positive, multiplied when negative. logits (B, V); seen (B, V) bool."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def top_k_mask(logits: Tensor, k: int) -> Tensor:
    """-inf below the k-th largest logit of each row (ties with it are kept)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]                    # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_mask(logits: Tensor, p: float) -> Tensor:
    """Nucleus (Holtzman et al. 2020): keep the fewest most likely symbols whose probability
    sums to at least p (the most likely one always), -inf elsewhere."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)      # (B, V)
    probs = sorted_logits.softmax(-1)
    mass_before = probs.cumsum(-1) - probs             # mass of the strictly more likely ones
    drop_sorted = mass_before >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)                      # back to vocab order
    return logits.masked_fill(drop, float("-inf"))


def min_p_mask(logits: Tensor, min_p: float) -> Tensor:
    """Min-p (Nguyen et al. 2024): -inf where p < min_p * max p."""
    if min_p <= 0.0:
        return logits
    probs = logits.softmax(-1)
    threshold = min_p * probs.amax(-1, keepdim=True)                        # (B, 1)
    return logits.masked_fill(probs < threshold, float("-inf"))


def process_logits(logits: Tensor, params: SamplingParams, seen: Tensor | None = None) -> Tensor:
    """Raw logits (B, V) -> the float32 logits whose softmax is the sampling distribution
    (for greedy decoding: the penalised logits, whose argmax is the choice)."""
    logits = logits.float()
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, params.repetition_penalty)
    if params.greedy:
        return logits
    logits = logits / params.temperature
    logits = top_k_mask(logits, params.top_k)
    logits = top_p_mask(logits, params.top_p)
    return min_p_mask(logits, params.min_p)


def draw_noise(noise: Tensor, generator: torch.Generator | None) -> Tensor:
    """Fill `noise` (B, V) float32 with Exp(1) variables, in place (never exactly 0)."""
    return noise.exponential_(generator=generator).clamp_min_(torch.finfo(noise.dtype).tiny)


def pick(processed: Tensor, params: SamplingParams, noise: Tensor | None) -> Tensor:
    """processed logits (B, V) -> symbols (B,) int64: argmax when greedy, otherwise a draw
    from softmax(processed) through the exponential race with `noise`."""
    if params.greedy:
        return processed.argmax(-1)
    return (processed.softmax(-1) / noise).argmax(-1)


def sample(logits: Tensor, params: SamplingParams, *, seen: Tensor | None = None,
           generator: torch.Generator | None = None) -> Tensor:
    """Eager convenience: raw logits (B, V) -> symbols (B,)."""
    processed = process_logits(logits, params, seen)
    noise = None if params.greedy else draw_noise(torch.empty_like(processed), generator)
    return pick(processed, params, noise)
