"""The one public entry point of the selective scan, and the only place that picks a backend.

    y = selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
                       initial_state=None, return_last_state=False, reverse=False,
                       cu_seqlens=None, backend="auto")

Shapes (mamba_ssm's, so users can swap it in):
    u, delta, z      (batch, dim, length)           float32, bfloat16 or float16
    A                (dim, dstate)                   float32 (negative real, S4D)
    B, C             (batch, dstate, length)         shared by all channels, or
                     (batch, groups, dstate, length) with dim divisible by groups
    D, delta_bias    (dim,)                          float32
    initial_state    (batch, dim, dstate)            float32; (num_seqs, ...) with cu_seqlens
    cu_seqlens       (num_seqs + 1,) int32/int64     packed sequences of a batch of 1
returns out (batch, dim, length) in u's dtype, and with `return_last_state` also
last_state (batch, dim, dstate) float32.

Backends: "reference" (chunked PyTorch, `reference.py`), "sequential" (the step-by-step
specification, for tests), "triton" (kernels in `triton/`, on CUDA, or on CPU under
TRITON_INTERPRET=1), and "auto": Triton for CUDA tensors, the reference otherwise. The
decoding steps, the sequence conv and the decode step's matrix-vector products (`gemv`)
below dispatch the same way.
"""
from __future__ import annotations

import os

import torch
from torch import Tensor

from . import reference

__all__ = ["selective_scan", "selective_state_update", "causal_conv1d", "causal_conv1d_update",
           "gemv", "BACKENDS"]

BACKENDS = ("auto", "triton", "reference", "sequential")
_FLOAT_INPUTS = (torch.float32, torch.bfloat16, torch.float16)
_MAX_INDEX = 2**31 - 1


def _shape_error(name: str, expected: str, tensor: Tensor) -> ValueError:
    return ValueError(f"selective_scan: `{name}` must have shape {expected}, "
                      f"got {tuple(tensor.shape)}")


def _validate(u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens):
    if u.dim() != 3:
        raise _shape_error("u", "(batch, dim, length)", u)
    batch, dim, length = u.shape
    dstate = A.shape[-1] if A.dim() == 2 else -1
    expect = {
        "delta": (delta, (batch, dim, length), "(batch, dim, length)"),
        "A": (A, (dim, dstate), "(dim, dstate)"),
        "z": (z, (batch, dim, length), "(batch, dim, length)"),
        "D": (D, (dim,), "(dim,)"),
        "delta_bias": (delta_bias, (dim,), "(dim,)"),
    }
    for name, (t, shape, text) in expect.items():
        if t is not None and tuple(t.shape) != shape:
            raise _shape_error(name, f"{text} = {shape}", t)
    for name, M in (("B", B), ("C", C)):
        ok = (M.dim() == 3 and tuple(M.shape) == (batch, dstate, length)) or (
            M.dim() == 4 and M.shape[0] == batch and M.shape[2:] == (dstate, length)
            and M.shape[1] > 0 and dim % M.shape[1] == 0)
        if not ok:
            raise _shape_error(name, f"(batch, dstate, length) = {(batch, dstate, length)} or "
                               f"(batch, groups, dstate, length) with groups dividing dim={dim}", M)
    if cu_seqlens is not None:
        if batch != 1:
            raise ValueError(f"selective_scan: with cu_seqlens the sequences are packed into a "
                             f"batch of 1, got batch={batch}")
        if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
            raise _shape_error("cu_seqlens", "(num_seqs + 1,)", cu_seqlens)
        # Reading the values is a host sync that torch.compile(fullgraph=True) cannot trace,
        # so they are checked in eager mode only; shapes above are checked in both.
        if not torch.compiler.is_compiling() and (
                int(cu_seqlens[0]) != 0 or int(cu_seqlens[-1]) != length
                or bool((cu_seqlens[1:] < cu_seqlens[:-1]).any())):
            raise ValueError(f"selective_scan: cu_seqlens must rise from 0 to length={length}, "
                             f"got {cu_seqlens.tolist()}")
    if initial_state is not None:
        n_seq = batch if cu_seqlens is None else cu_seqlens.numel() - 1
        if tuple(initial_state.shape) != (n_seq, dim, dstate):
            raise _shape_error("initial_state", f"{(n_seq, dim, dstate)}", initial_state)
    for name, t in (("u", u), ("delta", delta), ("B", B), ("C", C), ("z", z)):
        if t is not None and t.dtype not in _FLOAT_INPUTS:
            raise TypeError(f"selective_scan: `{name}` must be float32, bfloat16 or float16, "
                            f"got {t.dtype}")
    for name, t in (("A", A), ("D", D), ("delta_bias", delta_bias), ("initial_state", initial_state)):
        if t is not None and not t.is_floating_point():
            raise TypeError(f"selective_scan: `{name}` must be floating point, got {t.dtype}")
    for name, t in (("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z),
                    ("delta_bias", delta_bias), ("initial_state", initial_state),
                    ("cu_seqlens", cu_seqlens)):
        if t is not None and t.device != u.device:
            raise ValueError(f"selective_scan: `{name}` is on {t.device} but `u` is on {u.device}")
    if batch * dim * length > _MAX_INDEX:
        raise ValueError(f"selective_scan: batch*dim*length = {batch * dim * length} exceeds "
                         f"2^31-1 elements; split the batch or feed the sequence in segments "
                         f"with initial_state")


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if device.type == "cuda" else "reference"
    if backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 set before "
                         f"import to run the kernels on the CPU; got tensors on {device}")
    return backend


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                   D: Tensor | None = None, z: Tensor | None = None,
                   delta_bias: Tensor | None = None, delta_softplus: bool = True,
                   initial_state: Tensor | None = None, return_last_state: bool = False,
                   reverse: bool = False, cu_seqlens: Tensor | None = None,
                   backend: str = "auto"):
    """Selective scan; see the module docstring for shapes and `reference.py` for the math."""
    _validate(u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens)
    which = resolve_backend(backend, u.device)
    if which == "triton":
        from .triton import selective_scan_triton as fn
    elif which == "sequential":
        fn = reference.selective_scan_sequential
    else:
        fn = reference.selective_scan_chunked
    return fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
              initial_state=initial_state, return_last_state=return_last_state, reverse=reverse,
              cu_seqlens=cu_seqlens)


def selective_state_update(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                           D: Tensor | None = None, z: Tensor | None = None,
                           dt_bias: Tensor | None = None, dt_softplus: bool = True,
                           state_batch_indices: Tensor | None = None,
                           dt_proj_weight: Tensor | None = None,
                           backend: str = "auto") -> Tensor:
    """One decoding step; `state` (S, dim, dstate) is updated in place. Shapes: see
    `reference.selective_state_update_ref`; with `dt_proj_weight` (dim, R) the step takes
    dt (batch, R) and applies the dt projection itself (one kernel fewer a step)."""
    if dt_proj_weight is not None:
        batch, dim = x.shape
        if (dt_proj_weight.dim() != 2 or dt_proj_weight.shape[0] != dim or dt.dim() != 2
                or tuple(dt.shape) != (batch, dt_proj_weight.shape[1])):
            raise ValueError(f"selective_state_update: with dt_proj_weight (dim, R) = "
                             f"({dim}, R), dt must be (batch, R) = ({batch}, R); got "
                             f"dt_proj_weight {tuple(dt_proj_weight.shape)} and dt "
                             f"{tuple(dt.shape)}")
    which = resolve_backend(backend, x.device)
    if which == "triton":
        from .triton import selective_state_update_triton as fn
    else:
        fn = reference.selective_state_update_ref
    return fn(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus,
              state_batch_indices=state_batch_indices, dt_proj_weight=dt_proj_weight)


def causal_conv1d_update(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None = None,
                         activation: str | None = "silu", state_batch_indices: Tensor | None = None,
                         backend: str = "auto") -> Tensor:
    """One step of the depthwise causal conv; `conv_state` (S, dim, width-1) updated in place."""
    which = resolve_backend(backend, x.device)
    if which == "triton":
        from .triton import causal_conv1d_update_triton as fn
    else:
        fn = reference.causal_conv1d_update_ref
    return fn(x, conv_state, weight, bias=bias, activation=activation,
              state_batch_indices=state_batch_indices)


def causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, reverse: bool = False,
                  backend: str = "auto") -> Tensor:
    """The depthwise causal conv of a whole sequence from zeros (reverse: anti-causal, from
    zeros after the end): x (batch, dim, length), weight (dim, width), bias (dim,). See
    `reference.causal_conv1d_ref`; differentiable on every backend."""
    which = resolve_backend(backend, x.device)
    if which == "triton":
        from .triton import causal_conv1d_triton
        return causal_conv1d_triton(x, weight, bias, reverse)
    return reference.causal_conv1d_ref(x, weight, bias, reverse)


def _check_gemv(x: Tensor, weight: Tensor, bias, residual, norm_weight) -> None:
    if weight.dim() != 2:
        raise ValueError(f"gemv: `weight` must have shape (N, K), got {tuple(weight.shape)}")
    N, K = weight.shape
    if x.dim() != 2 or x.shape[1] != K:
        raise ValueError(f"gemv: `x` must have shape (M, K) with K = weight.shape[1] = {K}, "
                         f"got {tuple(x.shape)}")
    M = x.shape[0]
    for name, t, shape in (("bias", bias, (N,)), ("residual", residual, (M, N)),
                           ("norm_weight", norm_weight, (K,))):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"gemv: `{name}` must have shape {shape}, got {tuple(t.shape)}")
    for name, t in (("x", x), ("weight", weight)):
        if t.dtype not in _FLOAT_INPUTS:
            raise TypeError(f"gemv: `{name}` must be float32, bfloat16 or float16, got {t.dtype}")
    if residual is not None and residual.dtype != torch.float32:
        raise TypeError(f"gemv: `residual` (the residual stream) must be float32, got "
                        f"{residual.dtype}")
    for name, t in (("weight", weight), ("bias", bias), ("residual", residual),
                    ("norm_weight", norm_weight)):
        if t is not None and t.device != x.device:
            raise ValueError(f"gemv: `{name}` is on {t.device} but `x` is on {x.device}")


def _check_gemv_conv(x: Tensor, weight: Tensor, residual, conv_state, conv_weight,
                     conv_bias) -> None:
    if conv_state is None:
        if conv_weight is not None or conv_bias is not None:
            raise ValueError("gemv: `conv_weight` / `conv_bias` need `conv_state`")
        return
    if residual is not None:
        raise ValueError("gemv: a conv step (`conv_state`) and a `residual` add are exclusive")
    if conv_weight is None or conv_weight.dim() != 2:
        raise ValueError(f"gemv: `conv_weight` must have shape (C, width), got "
                         f"{None if conv_weight is None else tuple(conv_weight.shape)}")
    C, width = conv_weight.shape
    M, N = x.shape[0], weight.shape[0]
    if C > N or width < 2:
        raise ValueError(f"gemv: `conv_weight` (C, width) needs C <= N = {N} and width >= 2, "
                         f"got {tuple(conv_weight.shape)}")
    if tuple(conv_state.shape) != (M, C, width - 1):
        raise ValueError(f"gemv: `conv_state` must have shape {(M, C, width - 1)}, got "
                         f"{tuple(conv_state.shape)}")
    if conv_state.stride(-1) != 1:
        raise ValueError(f"gemv: `conv_state` is updated in place and needs unit stride along "
                         f"its last dimension, got strides {conv_state.stride()}")
    if conv_bias is not None and tuple(conv_bias.shape) != (C,):
        raise ValueError(f"gemv: `conv_bias` must have shape {(C,)}, got {tuple(conv_bias.shape)}")
    for name, t in (("conv_state", conv_state), ("conv_weight", conv_weight),
                    ("conv_bias", conv_bias)):
        if t is not None and t.device != x.device:
            raise ValueError(f"gemv: `{name}` is on {t.device} but `x` is on {x.device}")


def gemv(x: Tensor, weight: Tensor, bias: Tensor | None = None, *, residual: Tensor | None = None,
         norm_weight: Tensor | None = None, norm_eps: float = 1e-5,
         conv_state: Tensor | None = None, conv_weight: Tensor | None = None,
         conv_bias: Tensor | None = None, backend: str = "auto") -> Tensor:
    """`residual + linear(rmsnorm(x))` for the few rows of a decode step, inference only.

    x (M, K); weight (N, K) as nn.Linear stores it; bias (N,); norm_weight (K,) fuses an
    RMSNorm of x (eps `norm_eps`) before the product; residual (M, N) float32 fuses the
    residual add after it. Returns (M, N): float32 with a residual, else weight's dtype (x
    is cast to weight's dtype first, as `cast_for_inference`'s input hooks do).

    conv_state (M, C, width-1), conv_weight (C, width), conv_bias (C,) (no residual): the
    first C outputs go on through a depthwise causal conv step and SiLU, exactly
    `causal_conv1d_update(y[:, :C], conv_state, conv_weight, conv_bias, "silu")`, with
    conv_state updated in place (the Mamba mixer's in_proj and conv in one kernel).

    Rounding and maths: `reference.gemv_ref`; the kernel: `triton/gemv.py` ("triton";
    "auto" picks it for CUDA tensors, the reference otherwise)."""
    _check_gemv(x, weight, bias, residual, norm_weight)
    _check_gemv_conv(x, weight, residual, conv_state, conv_weight, conv_bias)
    if resolve_backend(backend, x.device) == "triton":
        from .triton.gemv import gemv_triton
        return gemv_triton(x, weight, bias, residual, norm_weight, norm_eps, conv_state,
                           conv_weight, conv_bias)
    y = reference.gemv_ref(x, weight, bias, residual, norm_weight, norm_eps)
    if conv_state is None:
        return y
    C = conv_weight.shape[0]
    xc = reference.causal_conv1d_update_ref(y[:, :C], conv_state, conv_weight, conv_bias, "silu")
    return torch.cat([xc, y[:, C:]], dim=1)
