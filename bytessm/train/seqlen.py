"""Sequence-length warmup: train short first, then double the length in equal-step stages.

    seq_len_at(step, start=1024, target=8192, warmup_steps=300)
      steps   0..99  -> 1024      stage 0
            100..199 -> 2048      stage 1
            200..299 -> 4096      stage 2
            300..    -> 8192      the target, for the rest of training

Geometric (doubling) rather than linear, for three reasons:
- it is the schedule long-sequence DNA models were trained with (HyenaDNA's sequence length
  warmup, Nguyen et al. 2023, reused for the Mamba paper's DNA length-scaling runs): the
  model sees each scale, from local to global, for the same number of steps, while a linear
  ramp from 2^10 to 2^20 spends almost all its steps above 2^19;
- there are only log2(target / start) distinct lengths, and every change of length costs
  the trainer a rebuilt data stream (and, under torch.compile or Triton autotuning, new
  kernels); a linear ramp changes length nearly every step;
- lengths stay powers of two times `start`, which the chunked kernels like.

A pure function of the step, so resume needs nothing but the step.
"""
from __future__ import annotations

from bytessm.task import ConfigError

__all__ = ["seq_len_at", "seq_len_stages"]


def _check(start: int, target: int, warmup_steps: int, multiple: int) -> None:
    for key, value in (("trainer.seq_len_warmup.start", start), ("trainer.seq_len", target),
                       ("multiple", multiple)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ConfigError(f"trainer.seq_len_warmup.steps must be an integer >= 0, got "
                          f"{warmup_steps!r}")


def _n_stages(start: int, target: int) -> int:
    """Lengths start, 2 start, 4 start, ... below target: the number of warmup stages."""
    n, length = 0, start
    while length < target:
        n, length = n + 1, 2 * length
    return n


def seq_len_at(step: int, *, start: int, target: int, warmup_steps: int,
               multiple: int = 1) -> int:
    """The training length at `step` (0-based): start * 2^k in stage k of n equal stages over
    `warmup_steps`, n = the number of doublings of `start` below `target`; `target` from
    step `warmup_steps` on (and always when start >= target or warmup_steps == 0).

    Warmup lengths are capped at `target` and rounded down to a multiple of `multiple`
    (never below `multiple`), e.g. a patch size or a kernel chunk; `target` itself is
    returned as configured.
    """
    _check(start, target, warmup_steps, multiple)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    n = _n_stages(start, target)
    if n == 0 or step >= warmup_steps:
        return target
    stage = step * n // warmup_steps                   # 0 .. n-1, each ~warmup_steps/n steps
    length = min(start << stage, target)
    return max(multiple, length // multiple * multiple)


def seq_len_stages(*, start: int, target: int, warmup_steps: int,
                   multiple: int = 1) -> list[tuple[int, int]]:
    """The schedule as (first step, length) pairs, for logging and docs."""
    _check(start, target, warmup_steps, multiple)
    n = _n_stages(start, target)
    if n == 0 or warmup_steps == 0:
        return [(0, target)]
    # first step of stage k: the smallest s with s * n // warmup_steps >= k
    firsts = [-(-k * warmup_steps // n) for k in range(n)] + [warmup_steps]
    stages: list[tuple[int, int]] = []
    for s in firsts:
        length = seq_len_at(s, start=start, target=target, warmup_steps=warmup_steps,
                            multiple=multiple)
        if not stages or stages[-1][1] != length:
            if stages and stages[-1][0] == s:
                stages.pop()
            stages.append((s, length))
    return stages
