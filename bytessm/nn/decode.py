"""Which matrix-vector products of the decode step run on the Triton GEMV (`kernels.gemv`).

    bytessm.nn.decode.DECODE_GEMV = "auto"     # default from BYTESSM_DECODE_GEMV, else "auto"

- "auto": on CUDA, steps of at most MAX_ROWS rows (the decode batch) run in_proj (with the
  block's RMSNorm fused in), x_proj, out_proj (with the residual add fused in) and
  an LM head's projection on the GEMV kernel; other devices and larger batches use F.linear.
- "off": F.linear and the layers' own norm and add everywhere (what the benchmark compares
  against).
- "triton": the GEMV for every step, also CPU tensors under TRITON_INTERPRET=1 (tests).

Only the decode step asks (`Mamba.step_residual`, `SSMBranch.step`, `LMHead.step`);
training and the parallel forward never do. The compiled block step reads the switch while
tracing, so Dynamo guards on it: changing it recompiles instead of reusing a stale graph.
"""
from __future__ import annotations

import os

from torch import Tensor, nn

from bytessm.kernels import gemv

MODES = ("auto", "off", "triton")
MAX_ROWS = 16
DECODE_GEMV = os.environ.get("BYTESSM_DECODE_GEMV", "auto")


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
