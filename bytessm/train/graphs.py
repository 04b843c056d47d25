"""`trainer.cuda_graph=true`: the whole training step captured once in a CUDA graph, replayed.

A small model at a short length is bound by the host, not the GPU: each of a step's
hundreds of kernels costs microseconds of Python, dispatch and launch for less of GPU work.
Replaying a graph of the step (the micro-batches' forward, loss and backward, the gradient
scaling, the clipping and the optimizer step) costs one launch. On an H200 the default job
(tiny model, batch 32 x 64) went from 189K to 1.40M symbols/s, 7.43x (10.8 to 1.46 ms a
step; `scripts/bench_train_step.py`, `results/bench_train_step/`). As PyTorch's
"whole-network capture" recipe prescribes:

- a few eager steps on a side stream first (kernel compilation, cuBLAS workspaces, the
  optimizer's state), then one capture; each later step copies its batch from pinned host
  memory straight into the captured input tensors and replays;
- autocast without its weight-cast cache (a cache filled during capture would hold the
  graph's memory);
- AdamW with `capturable=True` and the learning rate as a tensor on the device, which the
  scheduler updates in place (a float would be frozen into the graph);
- the metrics' sums and counts stay on the device and come back in one asynchronous copy
  per step (`step.StepResult`, as in the eager loop), which the loop reads one step late,
  after it has queued the next step: the host never waits for the GPU between steps,
  except where it logs, evaluates or saves;
- the capture is thread-local (`capture_error_mode="thread_local"`): the loader's
  pin-memory thread allocates pinned memory meanwhile, which a global capture counts as
  its own error.

A batch whose shapes, dtypes or keys differ from the captured ones (the sequence-length
warmup's new length) drops the graph and captures again after one eager step. The step
must not synchronise with the host: data-dependent shapes (`torch.bincount`,
`nonzero`) or `.item()` in a task's loss cannot be captured. The warm-up steps run with
`torch.cuda.set_sync_debug_mode("error")`, so such a step fails there with one message,
before a capture could fail. One process only: DDP, FSDP, segments and torch.compile are
refused in the config.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bytessm.task import ConfigError, Task

from .evaluate import to_device
from .step import StepResult, train_step

CANNOT_CAPTURE = ("trainer.cuda_graph: the training step cannot be captured in a CUDA graph: "
                  "something in it waits for the host (data-dependent shapes such as "
                  "torch.bincount or nonzero, .item(), a copy from host memory); run with "
                  "trainer.cuda_graph=false.")


def make_capturable(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Prepare an AdamW (fresh or just resumed) for capture on `device` (CUDA): the
    learning rate of every group as its own float32 tensor there (the scheduler fills it in
    place), the state's step counters there, and `capturable=True`."""
    for group in optimizer.param_groups:
        group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)
        group["capturable"] = True
    for state in optimizer.state.values():
        step = state.get("step")
        if torch.is_tensor(step) and step.device != device:
            state["step"] = step.to(device)


class GraphedStep:
    """Runs training steps: `step(micro_batches)` updates the weights and returns a
    `StepResult`; `micro_batches` are the step's batches (grad_accum of them).

    Totals are the (sum, count) of every metric over the micro-batches, as the eager loop
    reports them. With `capture=False` (the CPU, the tests) every step runs eagerly through
    the same code as the captured one."""

    def __init__(self, model: nn.Module, task: Task, optimizer: torch.optim.Optimizer, *,
                 device: torch.device, precision: str, grad_clip: float | None,
                 capture: bool = True, warmup_steps: int = 3):
        if capture and device.type != "cuda":
            raise ConfigError(f"trainer.cuda_graph=true replays the step as a CUDA graph: it "
                              f"needs a CUDA device, got {device}")
        self.model, self.task, self.optimizer = model, task, optimizer
        self.device, self.precision, self.capture = device, precision, capture
        self.max_norm = float(grad_clip) if grad_clip else math.inf
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.warmup_steps = warmup_steps
        self.graphs = 0  # captures made (a new one per batch signature)
        self._signature = None
        self._eager_left = warmup_steps
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static: list[dict] | None = None
        self._out: Tensor | None = None
        self._keys: list[str] = []
        if capture:
            make_capturable(optimizer, device)

    def step(self, micro: list[dict]) -> StepResult:
        """One training step on `micro` (on the host, pinned, or on the device), queued on
        the GPU; nothing here waits for it."""
        signature = _signature(micro)
        if signature != self._signature:
            self._drop()
            self._signature = signature   # a first capture after the warm-up, a new one
            self._eager_left = 1 if self.graphs else self.warmup_steps  # after one step
        if not self.capture or self._eager_left > 0:
            self._eager_left -= 1
            flat = self._eager([to_device(b, self.device) for b in micro])
        elif self._graph is None:
            flat = self._capture([to_device(b, self.device) for b in micro])
        else:   # the host's (pinned) batch straight into the captured inputs
            for static, batch in zip(self._static, micro):
                for k, v in batch.items():
                    if torch.is_tensor(v):
                        static[k].copy_(v, non_blocking=True)
            self._graph.replay()
            flat = self._out
        return StepResult(self._keys, flat)

    # -- the step ----------------------------------------------------------------------------
    def _body(self, micro: list[dict]) -> Tensor:
        """The step as captured (`step.train_step`, without autocast's weight-cast cache)."""
        self._keys, flat = train_step(self.model, self.task, self.optimizer, micro,
                                      device=self.device, precision=self.precision,
                                      max_norm=self.max_norm, params=self.params,
                                      cache_enabled=False)
        return flat

    def _eager(self, micro: list[dict]) -> Tensor:
        """A step run eagerly: every step on the CPU; on CUDA the warm-up steps before a
        capture, on a side stream and with synchronising CUDA calls made errors, so that a
        step that waits for the host fails here, named, rather than in the capture (whose
        failure leaves the process's CUDA random-number state unusable)."""
        self.optimizer.zero_grad(set_to_none=True)
        if not self.capture:
            return self._body(micro)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        mode = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")
        try:
            with torch.cuda.stream(side):
                flat = self._body(micro)
        except RuntimeError as e:
            if "synchronizing" not in str(e):
                raise
            raise RuntimeError(CANNOT_CAPTURE + f" It synchronised: {e}") from e
        finally:
            torch.cuda.set_sync_debug_mode(mode)
        torch.cuda.current_stream(self.device).wait_stream(side)
        return flat

    def _capture(self, micro: list[dict]) -> Tensor:
        self._static = [{k: v.clone() if torch.is_tensor(v) else v for k, v in b.items()}
                        for b in micro]
        self.optimizer.zero_grad(set_to_none=True)  # the graph's backward allocates them
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: the loader's pin-memory thread allocates and queries pinned
            # host memory while this thread captures, which the default ("global") mode
            # counts as an error in the capture
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self._out = self._body(self._static)
        except RuntimeError as e:
            self._drop()
            raise RuntimeError(CANNOT_CAPTURE + f" Capture error: {e}") from e
        self._graph = graph
        self.graphs += 1
        graph.replay()   # capturing ran nothing: this step's update
        return self._out

    def _drop(self) -> None:
        """Forget the graph (a new batch signature): its gradients and memory go with it."""
        if self._graph is not None:
            self.optimizer.zero_grad(set_to_none=True)
        self._graph = self._static = self._out = None


def _signature(micro: list[dict]) -> tuple:
    return tuple(tuple(sorted((k, (tuple(v.shape), v.dtype) if torch.is_tensor(v)
                               else repr(v)) for k, v in b.items())) for b in micro)


__all__ = ["GraphedStep", "make_capturable"]
