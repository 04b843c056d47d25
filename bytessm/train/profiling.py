"""`trainer.profile`: a torch.profiler trace of a few training steps, and what it says.

    bytessm train ... trainer.profile.start=20 trainer.profile.steps=3

profiles steps 20, 21 and 22 (1-based, as logged) on every rank and writes, under
`<out_dir>/profile/`:

- `rank<R>.json`: the Chrome trace (open in chrome://tracing or Perfetto);
- `rank<R>_summary.json`: per profiled step, the wall time, the time the GPU was busy
  (union of kernel and copy intervals: concurrent kernels count once; user annotations such
  as "DistributedDataParallel.forward" are ranges, not work, and are left out), the summed
  kernel time, the collective-communication kernels' share (NCCL) and the top kernels.

Why the busy time: a step that takes longer on N GPUs than on one, with the same work per
GPU, is either waiting (host launches, synchronisation: the GPU idles) or doing more (copies,
collectives, slower kernels next to NCCL's: the GPU is busy longer). The two numbers tell
which. On a CPU-only run the trace holds CPU operators and the GPU fields are null.
"""
from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from bytessm.io import atomic_write


def _is_collective(name: str) -> bool:
    low = name.lower()
    return "nccl" in low or "allreduce" in low or "reducescatter" in low or "allgather" in low


def busy_time_us(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals (microseconds)."""
    total, end_so_far = 0.0, -float("inf")
    for start, end in sorted(intervals):
        if end <= end_so_far:
            continue
        total += end - max(start, end_so_far)
        end_so_far = end
    return total


def summarize(events, steps: int, wall_s: float, top: int = 15) -> dict:
    """The summary of `rank<R>_summary.json` from a profiler's events (FunctionEvents with
    `device_type` and `time_range`); times in ms per profiled step."""
    # GPU-side events, without the user annotations the profiler also puts on the GPU
    # timeline (DDP's forward, NCCL's "nccl:all_reduce", the optimizer step): those are
    # ranges spanning kernels and gaps, not work
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA
               and not getattr(e, "is_user_annotation", False)]
    per_step = lambda us: us / 1e3 / steps  # noqa: E731
    summary = {"steps": steps, "wall_ms_per_step": wall_s * 1e3 / steps}
    if not kernels:
        return {**summary, "device_busy_ms_per_step": None, "kernel_ms_per_step": None,
                "collective_ms_per_step": None, "top_kernels": []}
    spans = [(e.time_range.start, e.time_range.end) for e in kernels]
    by_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for e in kernels:
        acc = by_name[e.name]
        acc[0] += e.time_range.end - e.time_range.start
        acc[1] += 1
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]
    return {**summary,
            "device_busy_ms_per_step": per_step(busy_time_us(spans)),
            "kernel_ms_per_step": per_step(sum(end - start for start, end in spans)),
            "collective_ms_per_step": per_step(sum(end - start for e, (start, end)
                                                   in zip(kernels, spans)
                                                   if _is_collective(e.name))),
            "top_kernels": [{"name": name[:120], "ms_per_step": per_step(us),
                             "calls_per_step": n / steps} for name, (us, n) in ranked]}


class StepProfiler:
    """Profiles steps [start, start + steps) (1-based) of the training loop: call `before(s)`
    with the step about to run and `after(s)` with the step just finished."""

    def __init__(self, start: int | None, steps: int, out_dir: Path, rank: int,
                 device: torch.device):
        self.start, self.steps = (int(start) if start else None), int(steps)
        self.out_dir, self.rank, self.device = Path(out_dir) / "profile", rank, device
        self.prof, self.t0 = None, 0.0

    @property
    def last(self) -> int | None:
        return None if self.start is None else self.start + self.steps - 1

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def before(self, step: int) -> None:
        if step != self.start:
            return
        activities = [ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self._sync()
        self.prof = profile(activities=activities)
        self.prof.__enter__()
        self.t0 = time.perf_counter()

    def after(self, step: int) -> dict | None:
        """Stops and writes the files after the last profiled step; returns the summary."""
        if self.prof is None or step != self.last:
            return None
        self._sync()
        wall = time.perf_counter() - self.t0
        self.prof.__exit__(None, None, None)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        trace = self.out_dir / f"rank{self.rank}.json"
        tmp = trace.with_name(trace.name + f".tmp{os.getpid()}")
        self.prof.export_chrome_trace(str(tmp))
        os.replace(tmp, trace)
        summary = {"rank": self.rank, "first_step": self.start,
                   **summarize(self.prof.events(), self.steps, wall)}
        atomic_write(self.out_dir / f"rank{self.rank}_summary.json",
                     json.dumps(summary, indent=2))
        self.prof = None
        return summary
