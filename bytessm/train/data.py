"""Deterministic, resumable sampling: global sample k of training is a pure function of k.

For a finite training set of N samples, epoch e = k // N reads permutation(seed, e) of the
indices; virtual on-the-fly sets (N >= 2^24: synthetic tasks, random windows) are read in
index order, each index being an independent random sample. Step s consumes global
samples [s*G, (s+1)*G), G = trainer.batch_size; rank r, micro-batch m take their slice.
Resume needs only the step. The samples do not depend on the loader's worker processes
(`trainer.num_workers`, `loader_workers`): each is a pure function of its index.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from bytessm.task import ConfigError

_VIRTUAL = 2**24


class ResumableBatchSampler(Sampler[list[int]]):
    def __init__(self, n: int, *, seed: int, global_batch: int, micro_batch: int, rank: int,
                 world_size: int, start_step: int = 0):
        if n <= 0:
            raise ValueError("the training set is empty")
        self.n, self.seed, self.G, self.b = n, seed, global_batch, micro_batch
        self.rank, self.world, self.start_step = rank, world_size, start_step
        self._perm_epoch, self._perm = -1, None

    def _index(self, k: int) -> int:
        if self.n >= _VIRTUAL:
            return k % self.n
        epoch, i = divmod(k, self.n)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g), epoch
        return int(self._perm[i])

    def __iter__(self) -> Iterator[list[int]]:
        per_rank = self.G // self.world
        step = self.start_step
        while True:
            base = step * self.G + self.rank * per_rank
            for m in range(0, per_rank, self.b):
                yield [self._index(base + m + j) for j in range(self.b)]
            step += 1


def check_workers(setting, key: str = "trainer.num_workers") -> None:
    """A ConfigError naming `key` unless `setting` is auto or a count >= 0."""
    if setting != "auto" and (isinstance(setting, bool) or not isinstance(setting, int)
                              or setting < 0):
        raise ConfigError(f"{key} must be auto or an integer >= 0, got {setting!r}")


# A batch made in this process in less time than this goes without workers under `auto`
# (H200, graphed default job, whose batch of 32 takes 0.54 ms: 1.95M symbols/s without
# workers, 1.15M with 8; MQAR at batch 256, 9.0 ms a batch: 1.49M without, 5.84M with 8)
AUTO_BATCH_S = 2e-3


def batch_seconds(ds: Dataset, batch_size: int, tries: int = 3) -> float:
    """Seconds to make one batch of `ds` in this process (its first `batch_size` indices,
    collated): the fastest of `tries` after one untimed try, so that opening files and the
    like is not counted, nor a moment when another process had the core."""
    idx = range(min(batch_size, len(ds)))
    default_collate([ds[i] for i in idx])
    best = math.inf
    for _ in range(tries):
        start = time.perf_counter()
        default_collate([ds[i] for i in idx])
        best = min(best, time.perf_counter() - start)
    return best


def loader_workers(setting, device: torch.device, local_world_size: int | None = None, *,
                   batch_s: float | None = None, key: str = "trainer.num_workers") -> int:
    """`trainer.num_workers` -> worker processes per loader. `auto`: none on the CPU, where
    they would take cores from the model, nor where a batch takes less than AUTO_BATCH_S to
    make in this process (`batch_s`, from `batch_seconds`): there the workers measured slower
    (see AUTO_BATCH_S), and a graphed step makes its next batch while the GPU runs.
    Otherwise one per core the process can have beside its own (torchrun's LOCAL_WORLD_SIZE
    processes share the machine's cores), at most 8."""
    check_workers(setting, key)
    if setting == "auto":
        if device.type == "cpu" or (batch_s is not None and batch_s < AUTO_BATCH_S):
            return 0
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
        if local_world_size is None:
            local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        return max(0, min(8, cores // max(local_world_size, 1) - 1))
    return setting


def workers_for(ds: Dataset, setting, device: torch.device, batch_size: int, *,
                key: str = "trainer.num_workers") -> tuple[int, float | None]:
    """(worker processes, seconds a batch took to make here or None) for loaders of `ds`:
    under `auto` on a GPU one batch of `batch_size` is timed first (`loader_workers`)."""
    batch_s = None
    if setting == "auto" and device.type == "cuda":
        batch_s = batch_seconds(ds, batch_size)
    return loader_workers(setting, device, batch_s=batch_s, key=key), batch_s


def train_loader(ds: Dataset, *, seed: int, global_batch: int, grad_accum: int, rank: int,
                 world_size: int, start_step: int, num_workers: int,
                 pin_memory: bool = False) -> DataLoader:
    micro = global_batch // (world_size * grad_accum)
    sampler = ResumableBatchSampler(len(ds), seed=seed, global_batch=global_batch,
                                    micro_batch=micro, rank=rank, world_size=world_size,
                                    start_step=start_step)
    return DataLoader(ds, batch_sampler=sampler, num_workers=num_workers,
                      pin_memory=pin_memory, persistent_workers=False)


def eval_loader(ds: Dataset, *, batch_size: int, rank: int, world_size: int,
                num_workers: int, pin_memory: bool = False) -> DataLoader:
    """Rank r reads indices r, r+W, ... in order; every index is read once overall. Its
    workers persist between evaluations (a run evaluates every `eval_every` steps)."""
    idx = list(range(rank, len(ds), world_size))
    return DataLoader(torch.utils.data.Subset(ds, idx), batch_size=batch_size, shuffle=False,
                      num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=num_workers > 0)
