"""Evaluation over a split: (sum, count) totals over batches and ranks, then the task's summary."""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from bytessm.task import Task

from .data import eval_loader
from .distributed import World
from .logging import progress
from .totals import MetricSums


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()}


def bf16_autocast(device: torch.device, precision: str) -> bool:
    """Whether trainer.precision means bf16 autocast on `device` (auto: on CUDA)."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast(device: torch.device, precision: str, cache_enabled: bool = True):
    """bf16 autocast where `bf16_autocast` says so, else nothing. `cache_enabled=False` for a
    step captured in a CUDA graph (graphs.py): a cast cache filled during capture would hold
    the graph's memory."""
    if bf16_autocast(device, precision):
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache_enabled)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, dataset, *, batch_size: int, device: torch.device,
             world: World, precision: str = "auto", max_batches: int | None = None,
             num_workers: int = 0, loader=None, show_progress: bool = False,
             desc: str = "eval") -> dict[str, float]:
    """`loader`: `data.eval_loader(dataset, ...)` with this batch size and world, kept by a
    caller that evaluates repeatedly (its workers persist); built here otherwise.
    `show_progress`: a progress bar of the batches (`desc`), cleared when done."""
    was_training = model.training
    model.eval()
    sums = MetricSums(device)   # on the device: no wait for the GPU per batch
    if loader is None:
        loader = eval_loader(dataset, batch_size=batch_size, rank=world.rank,
                             world_size=world.size, num_workers=num_workers)
    # Every rank runs the same number of forwards (FSDP all-gathers inside each one): a rank
    # whose share is one batch shorter repeats its first batch without counting it.
    n_steps = math.ceil(math.ceil(len(dataset) / world.size) / batch_size)
    if max_batches is not None:
        n_steps = min(n_steps, max_batches)
    it, first = iter(loader), None
    bar = progress(n_steps, 0, show_progress, desc=desc, unit="batch", leave=False)
    for _ in range(n_steps):
        batch = next(it, None)
        counted = batch is not None
        if counted:
            batch = to_device(batch, device)
            first = batch if first is None else first
        elif first is None:
            break
        else:
            batch = first
        with autocast(device, precision):
            out = model(batch["input"])
        bar.update(1)
        if not counted:
            continue
        sums.add(task.loss_and_metrics(out, batch)[1])
    bar.close()
    keys, flat = sums.flat(world)
    totals = MetricSums.totals(keys, flat.tolist())
    model.train(was_training)
    return task.summarize(totals) if totals else {}
