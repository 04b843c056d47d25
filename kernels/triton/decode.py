"""Decoding kernels: one step of the selective scan and of the depthwise causal conv.

Both update their state in place and take an optional `state_batch_indices` (batch,) map
from batch element to state row, for continuous batching; signatures and semantics are
those of `reference.selective_state_update_ref` and `reference.causal_conv1d_update_ref`.
One program owns BLOCK_D channels of one batch element. A step is memory bound: the state
is read and written once (batch x dim x dstate floats). Under `pdl.programmatic_launch()`
each loads its state and parameters before waiting for the previous kernel's output.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import LOG2E, softplus
from .configs import cdiv, decode_config, n_pad, next_pow2
from .pdl import use_pdl, wait_for_previous


@triton.jit
def state_update_kernel(
    state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, idx_ptr, y_ptr,
    dtw_ptr, dim, N, DG, R,
    ss_b, ss_d, ss_n, sx_b, sx_d, sdt_b, sdt_d, sA_d, sA_n, sB_b, sB_g, sB_n,
    sC_b, sC_g, sC_n, sz_b, sz_d, sy_b, sy_d, sw_d, sw_r,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, HAS_IDX: tl.constexpr, HAS_DTW: tl.constexpr,
    BLOCK_D: tl.constexpr, N_PAD: tl.constexpr, R_PAD: tl.constexpr, PDL: tl.constexpr,
    ONE_GROUP: tl.constexpr,
):
    b = tl.program_id(1)
    d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, N_PAD)
    dmask = d < dim
    m = dmask[:, None] & (n < N)[None, :]
    # what the previous kernel cannot have written (pdl.py): state, parameters
    if HAS_IDX:
        row = tl.load(idx_ptr + b).to(tl.int64)
    else:
        row = b.to(tl.int64)
    s_ptrs = state_ptr + row * ss_b + d[:, None] * ss_d + n[None, :] * ss_n
    h = tl.load(s_ptrs, mask=m, other=0.0).to(tl.float32)                    # (BD, N)
    A = tl.load(A_ptr + d[:, None] * sA_d + n[None, :] * sA_n, mask=m, other=0.0).to(tl.float32)
    if HAS_DTW:
        r = tl.arange(0, R_PAD)
        w = tl.load(dtw_ptr + d[:, None] * sw_d + r[None, :] * sw_r,
                    mask=dmask[:, None] & (r < R)[None, :], other=0.0).to(tl.float32)
    if HAS_BIAS:
        dt_bias = tl.load(bias_ptr + d, mask=dmask, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=dmask, other=0.0).to(tl.float32)
    wait_for_previous(PDL)
    # the step's inputs
    x = tl.load(x_ptr + b * sx_b + d * sx_d, mask=dmask, other=0.0).to(tl.float32)
    if HAS_DTW:  # dt is the rank-R input of dt_proj: its product, rounded as F.linear's output
        low = tl.load(dt_ptr + b * sdt_b + r * sdt_d, mask=r < R, other=0.0)
        low = low.to(dtw_ptr.dtype.element_ty).to(tl.float32)
        dt = tl.sum(w * low[None, :], axis=1).to(dtw_ptr.dtype.element_ty).to(tl.float32)
    else:
        dt = tl.load(dt_ptr + b * sdt_b + d * sdt_d, mask=dmask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dt += dt_bias
    if SOFTPLUS:
        dt = softplus(dt)
    # B and C: with one group, one row for every channel, loaded once and broadcast (the
    # tile's rows without a per-channel group division where dt_proj is fused: there the
    # broadcast row cost layout conversions through shared memory, 488 instructions
    # against 360, sm_90a)
    if ONE_GROUP and not HAS_DTW:
        Bv = tl.load(B_ptr + b * sB_b + n * sB_n, mask=n < N, other=0.0).to(tl.float32)[None, :]
        Cv = tl.load(C_ptr + b * sC_b + n * sC_n, mask=n < N, other=0.0).to(tl.float32)[None, :]
    else:
        if ONE_GROUP:
            g = tl.zeros_like(d)
        else:
            g = d // DG                                                      # each channel's group
        Bv = tl.load(B_ptr + b * sB_b + g[:, None] * sB_g + n[None, :] * sB_n, mask=m,
                     other=0.0).to(tl.float32)
        Cv = tl.load(C_ptr + b * sC_b + g[:, None] * sC_g + n[None, :] * sC_n, mask=m,
                     other=0.0).to(tl.float32)
    h = tl.exp2(dt[:, None] * A * LOG2E) * h + (dt * x)[:, None] * Bv
    y = tl.sum(h * Cv, axis=1)
    if HAS_D:
        y += Dv * x
    if HAS_Z:
        z = tl.load(z_ptr + b * sz_b + d * sz_d, mask=dmask, other=0.0).to(tl.float32)
        y = y * z * tl.sigmoid(z)
    # in place without a barrier: the store goes through the load's pointers, so each
    # element is written by the thread that read it
    tl.store(s_ptrs, h.to(state_ptr.dtype.element_ty), mask=m)
    tl.store(y_ptr + b * sy_b + d * sy_d, y.to(y_ptr.dtype.element_ty), mask=dmask)


@triton.jit
def conv_window_step(window, shifted, x, w, bias, W, SILU: tl.constexpr,
                     ROUND_TO: tl.constexpr, HAS_BIAS: tl.constexpr):
    """One step of a depthwise causal conv on tiles whose last axis is the window's W_PAD
    columns, oldest first: `window` holds the last W-1 inputs in columns 0..W-2 (column W-1
    is the new input's), `shifted` the same held inputs one column over (loaded at k+1),
    x (...) float32 the new inputs, w and bias broadcastable to the window's and x's shape.
    Returns y (...) float32, sum((window, x) * w) + bias, with SILU rounded to ROUND_TO
    first (as F.silu sees F.conv1d's output) and then SiLU'd; and the next window in
    shifted's dtype. The conv-step kernel and the GEMV's conv epilogue (`gemv.py`) both
    call it, so the fused step rounds exactly where the separate one does."""
    k = tl.arange(0, window.shape[len(window.shape) - 1])
    xk = tl.expand_dims(x, len(x.shape))
    y = tl.sum(tl.where(k == W - 1, xk, window.to(tl.float32)) * w, axis=len(x.shape))
    if HAS_BIAS:
        y += bias
    if SILU:
        y = y.to(ROUND_TO).to(tl.float32)
        y = y * tl.sigmoid(y)
    return y, tl.where(k == W - 2, xk.to(shifted.dtype), shifted)


@triton.jit
def conv_update_kernel(
    x_ptr, state_ptr, w_ptr, bias_ptr, idx_ptr, y_ptr, dim, W,
    sx_b, sx_d, ss_b, ss_d, ss_w, sw_d, sw_w, sy_b, sy_d,
    HAS_BIAS: tl.constexpr, SILU: tl.constexpr, HAS_IDX: tl.constexpr,
    BLOCK_D: tl.constexpr, W_PAD: tl.constexpr, PDL: tl.constexpr,
):
    b = tl.program_id(0)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    k = tl.arange(0, W_PAD)                                # window column, oldest first
    dmask = d < dim
    # what the previous kernel cannot have written (pdl.py): the window, the weights
    if HAS_IDX:
        row = tl.load(idx_ptr + b).to(tl.int64)
    else:
        row = b.to(tl.int64)
    s_row = state_ptr + row * ss_b + d[:, None] * ss_d
    held = dmask[:, None] & (k < W - 1)[None, :]
    window = tl.load(s_row + k[None, :] * ss_w, mask=held, other=0.0).to(tl.float32)
    # the new state is the window shifted left by one: read it again, one column over
    shifted = tl.load(s_row + (k + 1)[None, :] * ss_w,
                      mask=dmask[:, None] & (k + 1 < W - 1)[None, :], other=0.0)
    w = tl.load(w_ptr + d[:, None] * sw_d + k[None, :] * sw_w,
                mask=dmask[:, None] & (k < W)[None, :], other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=dmask, other=0.0).to(tl.float32)
    else:
        bias = 0.0
    wait_for_previous(PDL)
    x = tl.load(x_ptr + b * sx_b + d * sx_d, mask=dmask, other=0.0).to(tl.float32)
    y, shifted = conv_window_step(window, shifted, x, w, bias, W, SILU, y_ptr.dtype.element_ty,
                                  HAS_BIAS)
    tl.debug_barrier()  # in place: all reads of the old state before any write
    tl.store(s_row + k[None, :] * ss_w, shifted, mask=held)
    tl.store(y_ptr + b * sy_b + d * sy_d, y.to(y_ptr.dtype.element_ty), mask=dmask)


def selective_state_update_triton(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor,
                                  C: Tensor, D: Tensor | None = None, z: Tensor | None = None,
                                  dt_bias: Tensor | None = None, dt_softplus: bool = True,
                                  state_batch_indices: Tensor | None = None,
                                  dt_proj_weight: Tensor | None = None) -> Tensor:
    batch, dim = x.shape
    dstate = A.shape[1]
    Bg = B if B.dim() == 3 else B.unsqueeze(1)                 # (batch, groups, dstate)
    Cg = C if C.dim() == 3 else C.unsqueeze(1)
    groups = Bg.shape[1]
    if batch > 65535:  # the grid's second axis
        raise ValueError(f"selective_state_update (triton): batch up to 65535 per call, got "
                         f"{batch}; split the batch")
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    cfg = decode_config(batch, dim, dstate)
    zs = z.stride() if z is not None else (0, 0)
    rank = dt.shape[1] if dt_proj_weight is not None else 0
    ws = dt_proj_weight.stride() if dt_proj_weight is not None else (0, 0)
    state_update_kernel[(cdiv(dim, cfg.block_d), batch)](
        state, x, dt, A, Bg, Cg, D, z, dt_bias, state_batch_indices, y, dt_proj_weight,
        dim, dstate, dim // groups, rank,
        *state.stride(), *x.stride(), *dt.stride(), *A.stride(), *Bg.stride(), *Cg.stride(),
        *zs, *y.stride(), *ws,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None,
        SOFTPLUS=dt_softplus, HAS_IDX=state_batch_indices is not None,
        HAS_DTW=dt_proj_weight is not None, BLOCK_D=cfg.block_d, N_PAD=n_pad(dstate),
        R_PAD=max(next_pow2(rank), 2), PDL=use_pdl(x), num_warps=cfg.warps,
        ONE_GROUP=groups == 1, launch_pdl=use_pdl(x))
    return y


def causal_conv1d_update_triton(x: Tensor, conv_state: Tensor, weight: Tensor,
                                bias: Tensor | None = None, activation: str | None = "silu",
                                state_batch_indices: Tensor | None = None) -> Tensor:
    if activation not in ("silu", None):
        raise ValueError(f"activation must be 'silu' or None, got {activation!r}")
    batch, dim = x.shape
    width = weight.shape[1]
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    block_d = min(next_pow2(dim), 128 if batch > 1 else 64)
    conv_update_kernel[(batch, cdiv(dim, block_d))](
        x, conv_state, weight, bias, state_batch_indices, y, dim, width,
        *x.stride(), *conv_state.stride(), *weight.stride(), *y.stride(),
        HAS_BIAS=bias is not None, SILU=activation == "silu",
        HAS_IDX=state_batch_indices is not None,
        BLOCK_D=block_d, W_PAD=max(next_pow2(width), 2), PDL=use_pdl(x),
        num_warps=2, launch_pdl=use_pdl(x))
    return y
