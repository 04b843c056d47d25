"""Which matrix-vector products of the decode step run on the Triton GEMV (`kernels.gemv`).

    bytessm.nn.decode.DECODE_GEMV = "auto"     # default from BYTESSM_DECODE_GEMV, else "auto"

- "auto": on CUDA, steps of at most MAX_ROWS rows (the decode batch) run the Mamba,
  attention and MLP branches' input products (with the block's RMSNorm fused in), x_proj,
  their output products (with the residual add fused in) and an LM head's projection on
  the GEMV kernel; other devices and larger batches use F.linear.
- "off": F.linear and the layers' own norm and add everywhere (what the benchmark compares
  against).
- "triton": the GEMV for every step, also CPU tensors under TRITON_INTERPRET=1 (tests).

Only the decode step asks (`residual_step`, which the Mamba, attention and MLP branches use,
`SSMBranch.step`, `LMHead.step`); training and the parallel forward never do. The compiled
block step reads the switch while tracing, so Dynamo guards on it: changing it recompiles
instead of reusing a stale graph.
"""
from __future__ import annotations

import os
from typing import Callable, NamedTuple

from torch import Tensor, nn

from bytessm.kernels import gemv

from .norm import RMSNorm

MODES = ("auto", "off", "triton")
MAX_ROWS = 16
DECODE_GEMV = os.environ.get("BYTESSM_DECODE_GEMV", "auto")
# whether a Decoder steps a plain Mamba stack as one kernel (`bytessm.nn.stack`, same modes;
# "off" by default: slower than the blocks' own kernels so far, 0.72 vs 0.50 ms on an H200)
DECODE_STACK = os.environ.get("BYTESSM_DECODE_STACK", "off")


def gemv_backend(x: Tensor) -> str | None:
    """"triton" when a decode step with input x (rows, features) runs its products on the
    GEMV kernel, None when it uses F.linear."""
    mode = DECODE_GEMV
    if mode not in MODES:
        raise ValueError(f"bytessm.nn.decode.DECODE_GEMV (or BYTESSM_DECODE_GEMV) must be one "
                         f"of {MODES}, got {mode!r}")
    if mode == "triton":
        return "triton"
    if mode == "auto" and x.is_cuda and x.shape[0] <= MAX_ROWS:
        return "triton"
    return None


def step_linear(linear: nn.Linear, x: Tensor, backend: str | None) -> Tensor:
    """`linear(x)` at a decode step, x (rows, in_features): the module call (its input-cast
    hook included) without a backend, else the GEMV, which casts x to the weight's dtype
    itself."""
    if backend is None:
        return linear(x)
    return gemv(x, linear.weight, linear.bias, backend=backend)


class ConvStep(NamedTuple):
    """A depthwise causal conv step (with SiLU) that a branch runs first on the first C
    outputs of its input product, as Mamba's on in_proj's x half: window (rows, C, width-1)
    updated in place, weight (C, width), bias (C,) or None."""
    state: Tensor
    weight: Tensor
    bias: Tensor | None


def residual_step(residual: Tensor, norm: nn.Module, first: nn.Linear,
                  inner: Callable[[Tensor, str | None, bool], Tensor], last: nn.Linear,
                  conv: ConvStep | None = None) -> Tensor:
    """A pre-norm residual branch at a decode step, `residual + last(inner(first(norm(
    residual))))`, residual (rows, d_model) float32; `inner(h, backend, conv_done)` is the
    branch's middle (the SSM step, the attention, SwiGLU). On the GEMV the RMSNorm runs
    inside `first`'s product and the add inside `last`'s, at the layers' rounding points
    (the normalised input cast to first's weight dtype, last's output rounded to its dtype
    before the float32 add); otherwise the layers run as they are. With `conv`, the fused
    path runs that conv step inside first's product too (`kernels.gemv`'s conv epilogue)
    and calls inner with conv_done=True; otherwise conv_done is False and inner runs it."""
    backend = gemv_backend(residual)
    if backend is None or not isinstance(norm, RMSNorm):
        h = step_linear(first, norm(residual), backend)
        return residual + step_linear(last, inner(h, backend, False), backend)
    conv_args = {} if conv is None else dict(conv_state=conv.state, conv_weight=conv.weight,
                                             conv_bias=conv.bias)
    h = gemv(residual, first.weight, first.bias, norm_weight=norm.weight, norm_eps=norm.eps,
             backend=backend, **conv_args)
    return gemv(inner(h, backend, conv is not None), last.weight, last.bias, residual=residual,
                backend=backend)
