"""Programmatic dependent launch (PDL) for the decode step's kernels, Hopper and later.

    from bytessm.kernels.triton.pdl import programmatic_launch
    with programmatic_launch():     # `generation.Decoder` wraps its step's warm-up and capture
        step()

A decode step is a chain of a few hundred small kernels (four per Mamba layer), each a
couple of microseconds (the state step 1.9 us on an H200, for a few KB). With
PDL a kernel is launched while the one before it still runs: it loads what the previous
kernel cannot have written (its weights, the layer's conv window and SSM state, A, D, the
biases) and only then waits (`griddepcontrol.wait`) for the previous kernel to finish
before it reads that kernel's output and writes anything. Right after the wait it lets the
next kernel launch (`griddepcontrol.launch_dependents`).

The contract, which is why it is opt-in and scoped: inside `programmatic_launch()` the
caller promises that the kernel launched just before a GEMV, conv-step or state-step
kernel does not write that kernel's weights, biases, states, index map or the residual a
GEMV adds to. Kernels two or more launches back need no promise: a kernel launches only
after every program of the one before it has passed its own wait, by which time the one
before that has finished. The decode step keeps that promise (a state is written by its
own step kernel only, weights never, and the residual stream by the product that closes
the branch before, at least two kernels earlier); a loop that, say, zeroes a state and
then steps it at once does not, so PDL is off by default.

Launches record the attribute into a CUDA graph captured meanwhile, so replays keep it.
Off on devices before compute capability 9.0 and under TRITON_INTERPRET=1 (the
interpreter runs programs one by one and has no inline PTX), where the kernels' PDL
branches are compiled out.
"""
from __future__ import annotations

import contextlib
import functools
import os

import torch
import triton
import triton.language as tl

_ENABLED = False


@contextlib.contextmanager
def programmatic_launch(enabled: bool = True):
    """Within the block, decode kernels on capable GPUs launch with PDL (see the module
    docstring for the promise it makes). Nests; restores the previous setting on exit."""
    global _ENABLED
    previous, _ENABLED = _ENABLED, bool(enabled)
    try:
        yield
    finally:
        _ENABLED = previous


@functools.lru_cache(maxsize=None)
def _capable(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index)[0] >= 9


def use_pdl(t: torch.Tensor) -> bool:
    """Whether a kernel on tensor t's device launches with PDL now."""
    return (_ENABLED and t.is_cuda and os.environ.get("TRITON_INTERPRET", "0") != "1"
            and _capable(t.device.index if t.device.index is not None
                         else torch.cuda.current_device()))


@triton.jit
def wait_for_previous(PDL: tl.constexpr):
    """With PDL: wait until the previous kernel has finished and its writes are visible,
    then let the next kernel launch. Every program must pass here before it reads the
    previous kernel's output or writes anything."""
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
