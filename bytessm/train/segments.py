"""Segment-wise training: a (B, L) input longer than memory allows, fed in segments of
`segment_len` with each Mamba layer's state (conv window + SSM state) carried between them,
gradients flowing through the carried state within a horizon of segments (truncated BPTT).

    segments     |--s0--|--s1--|--s2--|--s3--|--s4-|      L need not divide evenly
    horizon = 2  |---window 0--|---window 1--|-w2--|      state detached between windows
    horizon None |---------------- one window -----|      exact: the full-length gradient

Memory is that of ONE segment whatever the horizon. Inside a window:

  1. a no-grad pass runs the window's segments left to right and keeps only the state
     entering each one (per layer (B, d_inner, d_conv-1) + (B, d_inner, d_state): tiny);
  2. the segments are then replayed right to left: forward from the saved entering state
     (a leaf that requires grad), the task's loss, and one backward of
         loss_sum(segment) + <state leaving the segment, dL/d(that state)>
     where dL/d(state) is the entering-state gradient handed back by the segment to its
     right. The scan's `initial_state` gradient and the conv window's make this the exact
     chain rule (Gu & Dao 2023 keep the state in float32 for the same reason).

So a window of k segments costs k-1 extra segment forwards (about +1/3 of a step for an
unlimited horizon, nothing for horizon=1), and never keeps more than one segment's graph.
This is activation checkpointing at segment granularity, with the boundaries in the state.

Contract with the task: the objective must be a sum over positions, with every
loss-bearing batch key aligned position by position with "input" (B, L, ...), e.g. a
"target" key holding the next symbol (the synthetic tasks). A task that shifts inputs
inside `loss_and_metrics` (logits[:, :-1] against input[:, 1:]) silently loses the one
prediction across each segment boundary, which cannot be detected here; a per-sequence head
(classifier) has no per-segment loss and is refused (ConfigError). Batch tensors whose first
two dimensions are (B, L) are sliced per segment; the others (per-sample labels, ...) are
passed whole.

Trainer keys (documented in docs/scale.md): `trainer.segment_len` (null: off) and
`trainer.tbptt_horizon` (segments per gradient window; null: unlimited).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager

import torch
from torch import Tensor, nn

from bytessm.nn import Mamba
from bytessm.task import ConfigError, Metrics, Task

__all__ = ["segment_bounds", "validate", "segmented_backward", "segmented_step",
           "segmented_eval"]

# (head_out, batch restricted to one segment) -> (objective to backpropagate, metrics)
LossFn = Callable[[Tensor, dict], tuple[Tensor, Metrics]]
ContextFactory = Callable[[], ContextManager]


def segment_bounds(length: int, segment_len: int) -> list[tuple[int, int]]:
    """[(start, end)) of each segment; the last one is shorter when length % segment_len."""
    return [(a, min(a + segment_len, length)) for a in range(0, length, segment_len)]


def _unwrap(model: nn.Module) -> nn.Module:
    """The SequenceModel under DDP (`.module`) and torch.compile (`._orig_mod`)."""
    while True:
        inner = getattr(model, "module", None)
        if inner is None:
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def validate(model: nn.Module, segment_len: int, horizon: int | None = None) -> None:
    """Raise ConfigError now (at setup, before any data is read) if segment-wise training
    with these settings cannot run on this model; the step functions call it too."""
    _check_args(segment_len, horizon)
    _check_model(model)


def _check_model(model: nn.Module) -> None:
    blocks = getattr(getattr(_unwrap(model), "backbone", None), "blocks", None)
    if blocks is None:
        raise ConfigError("segment-wise training (trainer.segment_len) needs a SequenceModel "
                          f"with a Backbone, got {type(_unwrap(model)).__name__}")
    others = {i: type(b.mixer).__name__ for i, b in enumerate(blocks)
              if not isinstance(b.mixer, Mamba)}
    if others:
        raise ConfigError(
            f"segment-wise training (trainer.segment_len) carries the causal Mamba state "
            f"between segments, but layers {sorted(others)} are {sorted(set(others.values()))}: "
            f"attention would only see its own segment and a bidirectional mixer the future. "
            f"Use an all-Mamba causal model or set trainer.segment_len=null")


def _check_args(segment_len: int, horizon: int | None) -> None:
    if isinstance(segment_len, bool) or not isinstance(segment_len, int) or segment_len <= 0:
        raise ConfigError(f"trainer.segment_len must be a positive integer (or null: off), "
                          f"got {segment_len!r}")
    if horizon is not None and (isinstance(horizon, bool) or not isinstance(horizon, int)
                                or horizon <= 0):
        raise ConfigError(f"trainer.tbptt_horizon must be a positive number of segments (or "
                          f"null: unlimited), got {horizon!r}")


def _slice_batch(batch: dict, a: int, b: int, batch_size: int, length: int) -> dict:
    """Per-position tensors (B, L, ...) cut to [a, b); everything else passed whole."""
    return {k: v[:, a:b] if torch.is_tensor(v) and v.dim() >= 2
            and tuple(v.shape[:2]) == (batch_size, length) else v
            for k, v in batch.items()}


def _flat(states: list) -> list[Tensor]:
    return [t for s in states for t in s]


def _rebuild(like: list, flat: list[Tensor]) -> list:
    """Inverse of `_flat` for a list of NamedTuple states (MambaState)."""
    out, i = [], 0
    for s in like:
        out.append(type(s)(*flat[i:i + len(s)]))
        i += len(s)
    return out


def _add(totals: dict, metrics: Metrics) -> None:
    for k, (s, c) in metrics.items():
        s, c = torch.as_tensor(s).detach(), torch.as_tensor(c).detach()
        if k in totals:
            totals[k] = (totals[k][0] + s, totals[k][1] + c)
        else:
            totals[k] = (s, c)


def segmented_backward(model: nn.Module, batch: dict, loss_fn: LossFn, *, segment_len: int,
                       horizon: int | None = None, autocast: ContextFactory = nullcontext,
                       no_sync: ContextFactory | None = None) -> Metrics:
    """Forward and backward `model` over `batch["input"]` (B, L[, F]) in segments.

    `loss_fn(head_out, segment_batch)` returns (objective, metrics) for one segment; the
    gradients accumulated into `.grad` are those of the SUM of the objectives over segments
    (truncated to `horizon` segments through the carried state; None: unlimited, which
    equals the full-length pass). Returns the metrics summed over segments, detached.

    `autocast()` is entered around every forward (e.g. bf16 autocast on CUDA). `no_sync()`,
    when given, wraps every forward+backward pair except the very last one, so DDP
    (`model.no_sync`) or FSDP2 (a context toggling `set_requires_gradient_sync`) reduce
    gradients once, after the last backward.
    """
    validate(model, segment_len, horizon)
    inputs = batch["input"]
    B, L = inputs.shape[:2]
    bounds = segment_bounds(L, segment_len)
    H = len(bounds) if horizon is None else horizon
    windows = [bounds[i:i + H] for i in range(0, len(bounds), H)]
    totals: dict = {}
    carried = None  # states entering the current window, detached (None: zeros)
    for w, window in enumerate(windows):
        # 1. the state entering each segment of the window, without a graph
        entering = [carried]
        with torch.no_grad():
            for a, b in window[:-1]:
                with autocast():
                    _, states = model(inputs[:, a:b], states=entering[-1], return_states=True)
                entering.append([type(s)(*(t.detach() for t in s)) for s in states])
        # 2. replay right to left, handing the entering-state gradient leftwards
        grad_out: list[Tensor] | None = None
        for k in reversed(range(len(window))):
            a, b = window[k]
            last_pair = w == len(windows) - 1 and k == 0
            state_in = entering[k]
            leaves: list[Tensor] = []
            if k > 0:  # gradients flow into this state (its producer is segment k-1)
                leaves = [t.detach().clone().requires_grad_(True) for t in _flat(state_in)]
                state_in = _rebuild(state_in, leaves)
            sync = nullcontext() if no_sync is None or last_pair else no_sync()
            with sync:
                with autocast():
                    out, states = model(inputs[:, a:b], states=state_in, return_states=True)
                    if out.dim() < 2 or out.shape[:2] != (B, b - a):
                        raise ConfigError(
                            f"segment-wise training needs a per-position head output "
                            f"(B, segment, ...) = ({B}, {b - a}, ...), got {tuple(out.shape)}: "
                            f"a per-sequence objective cannot be split into segments; set "
                            f"trainer.segment_len=null")
                    objective, metrics = loss_fn(out, _slice_batch(batch, a, b, B, L))
                if k == len(window) - 1:
                    carried = [type(s)(*(t.detach() for t in s)) for s in states]
                tensors, grads = [objective], [torch.ones_like(objective)]
                if grad_out is not None:
                    tensors += _flat(states)
                    grads += grad_out
                torch.autograd.backward(tensors, grads)
            grad_out = [t.grad if t.grad is not None else torch.zeros_like(t) for t in leaves]
            _add(totals, metrics)
    return totals


def segmented_step(model: nn.Module, task: Task, batch: dict, *, segment_len: int,
                   horizon: int | None = None, autocast: ContextFactory = nullcontext,
                   no_sync: ContextFactory | None = None) -> Metrics:
    """One micro-batch of the training loop, in segments: what the loop's

        with autocast(): out = model(batch["input"]); loss, metrics = task.loss_and_metrics(...)
        (loss * metrics["loss"][1]).backward()

    does at full length, for `trainer.segment_len` set. Backpropagates the SUMMED loss
    (loss * count per segment, like the loop), so the caller divides the gradients by the
    global count afterwards exactly as now; returns the task's metrics, (sum, count) per
    name, summed over segments. With horizon=None (`trainer.tbptt_horizon: null`) the
    gradients equal the full-length pass's; a finite horizon truncates backpropagation
    through the carried state to that many segments. Under DDP pass `no_sync=model.no_sync`
    for the micro-batch that synchronises (and wrap the whole call in `model.no_sync()` for
    the others, as now). bf16 needs no loss scaler, so there is none.
    """
    def loss_fn(out: Tensor, seg: dict) -> tuple[Tensor, Metrics]:
        loss, metrics = task.loss_and_metrics(out, seg)
        if "loss" not in metrics:
            raise ConfigError(f"{type(task).__name__}.loss_and_metrics must return a 'loss' "
                              f"(sum, count) metric; got {sorted(metrics)}")
        return loss * metrics["loss"][1], metrics

    return segmented_backward(model, batch, loss_fn, segment_len=segment_len, horizon=horizon,
                              autocast=autocast, no_sync=no_sync)


@torch.no_grad()
def segmented_eval(model: nn.Module, task: Task, batch: dict, *, segment_len: int,
                   autocast: ContextFactory = nullcontext) -> Metrics:
    """The task's metrics, (sum, count) per name, of a full-length forward computed in
    segments carrying the state (no graph: memory of one segment); equal to
    `task.loss_and_metrics(model(batch["input"]), batch)[1]` up to float rounding."""
    validate(model, segment_len)
    inputs = batch["input"]
    B, L = inputs.shape[:2]
    totals: dict = {}
    states = None
    for a, b in segment_bounds(L, segment_len):
        with autocast():
            out, states = model(inputs[:, a:b], states=states, return_states=True)
            _, metrics = task.loss_and_metrics(out, _slice_batch(batch, a, b, B, L))
        _add(totals, metrics)
    return totals
