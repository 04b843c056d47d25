"""Metric totals: (sum, count) per name, kept on the device while a step or an evaluation
runs, summed over ranks there, read back once."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from bytessm.task import Metrics

from .distributed import World

Totals = dict[str, tuple[float, float]]


class MetricSums:
    """(sum, count) per metric name as float64 scalars on `device`: a task's metrics may be
    tensors there or Python numbers (filled in on the device, not copied from the host, so
    that a CUDA graph's capture accepts them)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, tuple[Tensor, Tensor]] = {}

    def add(self, metrics: Metrics) -> None:
        for k, pair in metrics.items():
            s, c = (self._scalar(x) for x in pair)
            acc = self.sums.get(k)
            self.sums[k] = (s, c) if acc is None else (acc[0] + s, acc[1] + c)

    def _scalar(self, x) -> Tensor:
        if torch.is_tensor(x) and x.device.type == self.device.type:
            return x.detach().reshape(()).to(torch.float64)
        return torch.full((), float(x), dtype=torch.float64, device=self.device)

    def flat(self, world: World | None = None) -> tuple[list[str], Tensor]:
        """The names (sorted) and one tensor of their sums and counts, [s0, c0, s1, c1, ...],
        summed over the ranks of `world`."""
        keys = sorted(self.sums)
        if not keys:
            return keys, torch.zeros(0, dtype=torch.float64, device=self.device)
        flat = torch.stack([x for k in keys for x in self.sums[k]])
        if world is not None and world.distributed:
            dist.all_reduce(flat)
        return keys, flat

    @staticmethod
    def totals(keys: list[str], values: list[float]) -> Totals:
        return {k: (values[2 * i], values[2 * i + 1]) for i, k in enumerate(keys)}


__all__ = ["MetricSums", "Totals"]
