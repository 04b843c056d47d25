"""Depthwise causal conv1d over a whole sequence (the Mamba block's short conv), forward and
backward, as `torch.library` custom ops with registered autograd.

    y = causal_conv1d_triton(x, weight, bias, reverse=False)

x (batch, dim, length) with unit stride along the length, weight (dim, width), bias (dim,)
or None; y (batch, dim, length) in x's dtype, accumulated in float32:

    y[t] = bias + sum_k weight[k] * x[t - (width - 1) + k]      (zeros before the start)
    reverse: y[t] = bias + sum_k weight[k] * x[t + (width - 1) - k]   (zeros after the end)

which is `F.conv1d(x, weight[:, None], bias, padding=width - 1, groups=dim)[..., :length]`
(reverse: the same with the weight flipped, keeping the last `length` outputs). PyTorch
runs that through its generic depthwise kernel at ~0.35 TB/s on an H200 (20% of Vim-Ti's
inference); this is one read of x and one write of y, the backward one read of the output
gradient and of x, and per-program partial sums of the weight and bias gradients, reduced
by one sum over the programs.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from .configs import cdiv

BLOCK_L = 256
BLOCK_D = 16


@triton.jit
def _shifted(ptr, b, d, t, k, L, s_b, s_d, W: tl.constexpr, REVERSE: tl.constexpr,
             dmask, BACKWARD: tl.constexpr):
    """The (BLOCK_D, BLOCK_L) tile of a (batch, dim, length) tensor that tap k touches:
    forward, the input at t -/+ (W-1-k); backward, the gradient at t +/- (W-1-k)."""
    if REVERSE != BACKWARD:
        src = t + (W - 1 - k)
    else:
        src = t - (W - 1 - k)
    m = dmask[:, None] & ((src >= 0) & (src < L))[None, :]
    return tl.load(ptr + b * s_b + d[:, None] * s_d + src[None, :], mask=m,
                   other=0.0).to(tl.float32)


@triton.jit
def _place(D, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    """Grid (length blocks, channel blocks, batch): the program's positions, channels, batch
    row and channel mask."""
    t = tl.program_id(0) * BLOCK_L + tl.arange(0, BLOCK_L)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    return t, d, tl.program_id(2).to(tl.int64), d < D


@triton.jit
def conv_fwd_kernel(x_ptr, w_ptr, bias_ptr, y_ptr, L, D, sx_b, sx_d, sy_b, sy_d,
                    W: tl.constexpr, REVERSE: tl.constexpr, HAS_BIAS: tl.constexpr,
                    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    t, d, b, dmask = _place(D, BLOCK_L, BLOCK_D)
    acc = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + d, mask=dmask, other=0.0).to(tl.float32)[:, None]
    for k in tl.static_range(W):
        wk = tl.load(w_ptr + d * W + k, mask=dmask, other=0.0).to(tl.float32)
        acc += wk[:, None] * _shifted(x_ptr, b, d, t, k, L, sx_b, sx_d, W, REVERSE, dmask,
                                      False)
    m = dmask[:, None] & (t < L)[None, :]
    tl.store(y_ptr + b * sy_b + d[:, None] * sy_d + t[None, :],
             acc.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def conv_bwd_kernel(x_ptr, w_ptr, dy_ptr, dx_ptr, dw_ptr, dbias_ptr, L, D,
                    sx_b, sx_d, sdy_b, sdy_d, sdx_b, sdx_d,
                    W: tl.constexpr, REVERSE: tl.constexpr, HAS_BIAS: tl.constexpr,
                    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    t, d, b, dmask = _place(D, BLOCK_L, BLOCK_D)
    m = dmask[:, None] & (t < L)[None, :]
    # this program's row of the (batch x length blocks, D, W) partial sums of dw and dbias
    part = b * tl.num_programs(0) + tl.program_id(0)
    dy = tl.load(dy_ptr + b * sdy_b + d[:, None] * sdy_d + t[None, :], mask=m,
                 other=0.0).to(tl.float32)
    dx = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)
    for k in tl.static_range(W):
        wk = tl.load(w_ptr + d * W + k, mask=dmask, other=0.0).to(tl.float32)
        # x[s] feeds y[s +/- (W-1-k)] through tap k
        dx += wk[:, None] * _shifted(dy_ptr, b, d, t, k, L, sdy_b, sdy_d, W, REVERSE, dmask,
                                     True)
        # dw[k] = sum over t of dy[t] * x[t -/+ (W-1-k)]
        xk = _shifted(x_ptr, b, d, t, k, L, sx_b, sx_d, W, REVERSE, dmask, False)
        tl.store(dw_ptr + (part * D + d) * W + k, tl.sum(dy * xk, axis=1), mask=dmask)
    tl.store(dx_ptr + b * sdx_b + d[:, None] * sdx_d + t[None, :],
             dx.to(dx_ptr.dtype.element_ty), mask=m)
    if HAS_BIAS:
        tl.store(dbias_ptr + part * D + d, tl.sum(dy, axis=1), mask=dmask)


def _grid(batch: int, dim: int, length: int):
    return (cdiv(length, BLOCK_L), cdiv(dim, BLOCK_D), batch)


def _check(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> None:
    if x.dim() != 3 or weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(f"causal_conv1d: x must be (batch, dim, length) and weight "
                         f"(dim, width), got x {tuple(x.shape)} and weight {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (x.shape[1],):
        raise ValueError(f"causal_conv1d: bias must be ({x.shape[1]},), got {tuple(bias.shape)}")
    if x.stride(-1) != 1:
        raise ValueError(f"causal_conv1d: x must have unit stride along the length, got "
                         f"strides {x.stride()}")


def conv_forward(x: Tensor, weight: Tensor, bias: Optional[Tensor], reverse: bool) -> Tensor:
    """Launcher of the whole-sequence conv: y (batch, dim, length) in x's dtype."""
    _check(x, weight, bias)
    batch, dim, length = x.shape
    y = torch.empty((batch, dim, length), dtype=x.dtype, device=x.device)
    w = weight.contiguous()
    conv_fwd_kernel[_grid(batch, dim, length)](
        x, w, bias, y, length, dim, x.stride(0), x.stride(1), y.stride(0), y.stride(1),
        W=w.shape[1], REVERSE=reverse, HAS_BIAS=bias is not None, BLOCK_L=BLOCK_L,
        BLOCK_D=BLOCK_D)
    return y


def conv_backward(dy: Tensor, x: Tensor, weight: Tensor, has_bias: bool, reverse: bool
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """Launcher of the conv's backward: dx, dweight (weight's dtype), dbias (float32)."""
    batch, dim, length = x.shape
    dy = dy if dy.stride(-1) == 1 else dy.contiguous()
    dx = torch.empty((batch, dim, length), dtype=x.dtype, device=x.device)
    w = weight.contiguous()
    grid = _grid(batch, dim, length)
    # Per-program partial sums of the weight and bias gradients, reduced afterwards: atomic
    # adds from every batch row's programs into the same few weights serialised (the
    # backward took 9x the forward's time at Vim's 126 x 384 x 208).
    parts = batch * grid[0]
    dw = torch.empty((parts, dim, w.shape[1]), dtype=torch.float32, device=x.device)
    dbias = torch.empty((parts, dim) if has_bias else (0, 0), dtype=torch.float32,
                        device=x.device)
    conv_bwd_kernel[grid](
        x, w, dy, dx, dw, dbias, length, dim, x.stride(0), x.stride(1), dy.stride(0),
        dy.stride(1), dx.stride(0), dx.stride(1), W=w.shape[1], REVERSE=reverse,
        HAS_BIAS=has_bias, BLOCK_L=BLOCK_L, BLOCK_D=BLOCK_D)
    return dx, dw.sum(0).to(weight.dtype), dbias.sum(0)


@torch.library.custom_op("bytessm::causal_conv1d_fwd", mutates_args=())
def causal_conv1d_fwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], reverse: bool) -> Tensor:
    return conv_forward(x, weight, bias, reverse)


@causal_conv1d_fwd.register_fake
def _(x, weight, bias, reverse):
    return x.new_empty(x.shape)


@torch.library.custom_op("bytessm::causal_conv1d_bwd", mutates_args=())
def causal_conv1d_bwd(dy: Tensor, x: Tensor, weight: Tensor, has_bias: bool, reverse: bool
                      ) -> tuple[Tensor, Tensor, Tensor]:
    return conv_backward(dy, x, weight, has_bias, reverse)


@causal_conv1d_bwd.register_fake
def _(dy, x, weight, has_bias, reverse):
    return (x.new_empty(x.shape), weight.new_empty(weight.shape),
            x.new_empty(x.shape[1] if has_bias else 0, dtype=torch.float32))


def _setup_context(ctx, inputs, output):
    x, weight, bias, reverse = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias, ctx.reverse = bias is not None, reverse
    ctx.bias_dtype = None if bias is None else bias.dtype


def _grads(bwd, ctx, dy):
    x, weight = ctx.saved_tensors
    dx, dw, dbias = bwd(dy, x, weight, ctx.has_bias, ctx.reverse)
    return dx, dw, (dbias.to(ctx.bias_dtype) if ctx.has_bias else None), None


def _backward(ctx, dy):
    return _grads(torch.ops.bytessm.causal_conv1d_bwd, ctx, dy)


causal_conv1d_fwd.register_autograd(_backward, setup_context=_setup_context)


class _EagerConv(torch.autograd.Function):
    """The custom ops' forward and backward without the dispatcher, for eager mode (as the
    scan's `autograd._EagerScan`); torch.compile traces the custom ops."""

    @staticmethod
    def forward(ctx, x, weight, bias, reverse):
        y = conv_forward(x, weight, bias, reverse)
        _setup_context(ctx, (x, weight, bias, reverse), y)
        return y

    @staticmethod
    def backward(ctx, dy):
        return _grads(conv_backward, ctx, dy)


def causal_conv1d_triton(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                         reverse: bool = False) -> Tensor:
    """The depthwise causal (reverse: anti-causal) conv of a whole sequence from zeros."""
    if torch.compiler.is_compiling():
        return torch.ops.bytessm.causal_conv1d_fwd(x, weight, bias, reverse)
    return _EagerConv.apply(x, weight, bias, reverse)
