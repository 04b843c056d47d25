"""One training step, as the eager loop runs it and as `graphs.GraphedStep` captures it:
the micro-batches' forward and backward, their metric totals (summed over ranks), the
gradients scaled to the mean loss of the global batch, clipping, the optimizer's step.

Nothing here waits for the GPU. The metrics' sums and counts stay on the device as float64
scalars (`totals.MetricSums`), are all-reduced there in one tensor, and come back to the
host in one asynchronous copy per step (`StepResult`), which the loop reads once it has
queued the next step (loop.py): the host does not wait for the GPU between steps, where a
`float(loss)` per micro-batch would wait for each one.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable, ContextManager

import torch
from torch import Tensor, nn

from bytessm.task import Task

from .distributed import World
from .evaluate import autocast, to_device
from .segments import segmented_step
from .totals import MetricSums, Totals


class StepResult:
    """A training step's metric totals and gradient norm, `result()` -> (totals, grad_norm),
    from `train_step`'s (keys, flat) copied to pinned host memory behind the step: `result()`
    waits for that copy alone, so asking for a step's result after queuing the next one
    costs no wait."""

    def __init__(self, keys: list[str], flat: Tensor):
        self._keys, self._event = keys, None
        if flat.device.type == "cuda":
            self._host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
            self._host.copy_(flat, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._host = flat.detach().clone()

    def result(self) -> tuple[Totals, float]:
        if self._event is not None:
            self._event.synchronize()
        values = self._host.tolist()
        return MetricSums.totals(self._keys, values), values[-1]


def train_step(model: nn.Module, task: Task, optimizer: torch.optim.Optimizer,
               micro: list[dict], *, device: torch.device, precision: str,
               max_norm: float = math.inf, params: list[Tensor] | None = None,
               world: World | None = None,
               pause: Callable[[], ContextManager] | None = None,
               segment_len: int | None = None, horizon: int | None = None,
               cache_enabled: bool = True) -> tuple[list[str], Tensor]:
    """Micro-batches (host or device) -> metric totals over ranks -> gradients of the global
    batch's mean loss, clipped to `max_norm` -> `optimizer.step()`. The caller zeroes the
    gradients. Returns the metric names and one float64 tensor on the device: each metric's
    sum and count (`MetricSums.flat`), then the gradient norm before clipping.

    Each micro-batch backpropagates its loss *sum*; the summed gradient is divided by the
    global count afterwards. `pause` (`distributed.gradient_sync_pause`) keeps every
    micro-batch but the last from reducing its gradients across ranks; with `segment_len`
    a micro-batch runs in segments carrying the state (`segments.segmented_step`);
    `cache_enabled=False` for a capture (graphs.py)."""
    params = params if params is not None else [p for p in model.parameters()
                                                if p.requires_grad]
    sums = MetricSums(device)
    for m, batch in enumerate(micro):
        batch = to_device(batch, device)
        last = m == len(micro) - 1
        # gradients are reduced across ranks once per step, by the last backward
        with pause() if pause is not None and not last else nullcontext():
            if segment_len:  # long inputs: segments carrying the state (TBPTT)
                metrics = segmented_step(
                    model, task, batch, segment_len=segment_len, horizon=horizon,
                    autocast=lambda: autocast(device, precision),
                    no_sync=pause if last else None)
            else:
                with autocast(device, precision, cache_enabled=cache_enabled):
                    out = model(batch["input"])
                    loss, metrics = task.loss_and_metrics(out, batch)
                (loss * metrics["loss"][1]).backward()  # the sum; / the count below
        sums.add(metrics)
    keys, flat = sums.flat(world)
    count = flat[2 * keys.index("loss") + 1].clamp(min=1.0)
    grads = [p.grad for p in params if p.grad is not None]
    if grads:  # ranks averaged their gradients: undo, then the mean. One multi-tensor
        # launch, not one kernel per parameter (~530 at 353M)
        ranks = world.size if world is not None else 1
        torch._foreach_mul_(grads, (ranks / count).float())
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    if hasattr(norm, "full_tensor"):  # FSDP2: a replicated DTensor
        norm = norm.full_tensor()
    optimizer.step()
    return keys, torch.cat([flat, norm.reshape(1).to(torch.float64)])


__all__ = ["StepResult", "train_step"]
