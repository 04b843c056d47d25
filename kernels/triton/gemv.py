"""Matrix-vector products of the decode step, `y = x @ W.T (+ bias)` for a few rows of x,
as a `torch.library` custom op (inference only: no autograd).

    y = gemv_triton(x, weight, bias=None, residual=None, norm_weight=None, norm_eps=1e-5)

x (M, K) with unit stride along K, M small (the decode batch, 1..16; any M works);
weight (N, K) row-major as `nn.Linear` stores it, float32, bfloat16 or float16; bias (N,);
returns y (M, N) in weight's dtype, accumulated in float32:

    xn  = x * rsqrt(mean_k(x^2) + eps) * norm_weight        (with norm_weight: RMSNorm of x)
    y   = round_w(round_w(xn) @ W.T + bias)                  round_w: to weight's dtype
    out = residual + y                                      (with residual: float32, (M, N))

With `conv_state` (M, C, W-1) float32, `conv_weight` (C, W) and `conv_bias` (C,) instead
of a residual, the first C outputs of each row go on through the Mamba mixer's depthwise
causal conv step and its SiLU (`causal_conv1d_update` with activation "silu" on y[:, :C]),
the window updated in place: in_proj's output channels are the conv's, one to one, so the
program that computes a channel can run its conv too, and the step saves a kernel a layer.

`residual + linear(norm(x))` is what the decode step computes with the layers
(`Block.step`, `RMSNorm`, `cast_for_inference`'s input hooks): the Linear's input is cast
to its weight's dtype, its output stays in that dtype, and only then is it added to the
float32 residual. The kernel rounds at those same points, so fusing the norm and the
residual add changes no rounding, only float32 summation order. A bias is added in float32
before the output is rounded, as F.linear's fused bias epilogue does.

Why: at batch 1 a decode step's products read each weight once and do two flops per
weight, so they are bound by how fast W streams from memory. cuBLAS ran the 353M model's
in_proj (4096 x 1024, bf16, 8 MB) at 0.67 TB/s on an H200 (~4.5 TB/s attainable), 54% of the
step's kernel time. Here every program owns BLOCK_N rows of W and streams them in
(BLOCK_N, BLOCK_K) tiles of 16-byte loads, with enough programs and bytes per program that
all of W is in flight at once (`default_config`); all M rows of x are handled by the same
program, so W is read once whatever M. Two ways to multiply a tile:

- M == 1 (BLOCK_M = 1): element-wise products accumulated in a (BLOCK_N, BLOCK_K) float32
  tile, summed over K once at the end (no reduction inside the loop); BLOCK_M = 2..8 rows
  the same way in a (BLOCK_N, BLOCK_M, BLOCK_K) tile (not a default: for the sweep);
- a few rows (DOT, BLOCK_M = 16 with the rows past M masked): `tl.dot(W_tile, x_tile.T)`
  on the tensor cores, W as the left operand (the "swap AB" form of skinny GEMMs, so the
  16-row minimum of an MMA falls on x's rows, not on N). Float32 weights use "ieee"
  precision: no TF32 rounding, as F.linear does by default.

When N / BLOCK_N gives too few programs to keep the SMs streaming, K is split as well
(SPLIT_K > 1): each program writes its float32 partial sums to a (SPLIT_K, M, N) buffer and
a second kernel adds them in a fixed order and applies the bias / rounding / residual
epilogue. That keeps results deterministic; float32 atomics would need the output zeroed
first and, for a bf16 output or a residual, a final pass anyway, so they would save no kernel.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from .configs import cdiv, next_pow2
from .decode import conv_window_step
from .pdl import use_pdl, wait_for_previous

MAX_TILE_BYTES = 8192   # bytes of W one program loads per loop iteration by default
INTERPRETER_SMS = 8     # SMs assumed under TRITON_INTERPRET: few programs, which it runs one by one


@triton.jit
def _load_conv(cs_ptr, cw_ptr, cb_ptr, n, m, M, C, scs_m, scs_c, scw_c,
               HAS_CBIAS: tl.constexpr, CONV_W: tl.constexpr, W_PAD: tl.constexpr):
    """What the conv epilogue needs besides the product, for output rows n < C and rows m
    of x: each (n, m)'s window of the last CONV_W - 1 inputs (oldest first; column
    CONV_W - 1 is left for the new input), the window shifted by one (the next state, but
    for its last column), the conv weights (BLOCK_N, W_PAD) and bias. Loaded before the
    wait for the previous kernel, like W: the window is written only by this layer's own
    product, one step earlier."""
    k = tl.arange(0, W_PAD)
    rows = (n < C)[:, None, None] & (m < M)[None, :, None]                   # (BN, BM, 1)
    ptrs = (cs_ptr + m[None, :, None].to(tl.int64) * scs_m + n[:, None, None] * scs_c
            + k[None, None, :])                                              # unit stride along k
    window = tl.load(ptrs, mask=rows & (k < CONV_W - 1)[None, None, :], other=0.0)
    shifted = tl.load(ptrs + 1, mask=rows & (k < CONV_W - 2)[None, None, :], other=0.0)
    cw = tl.load(cw_ptr + n[:, None] * scw_c + k[None, :],
                 mask=(n < C)[:, None] & (k < CONV_W)[None, :], other=0.0).to(tl.float32)
    if HAS_CBIAS:
        cb = tl.load(cb_ptr + n, mask=n < C, other=0.0).to(tl.float32)
    else:
        cb = tl.zeros_like(n).to(tl.float32)    # not added (HAS_CBIAS): a tile to index
    return ptrs, window, shifted, cw, cb


@triton.jit
def _conv_silu(y, n, m, M, C, ptrs, window, shifted, cw, cb, HAS_CBIAS: tl.constexpr,
               CONV_W: tl.constexpr, W_PAD: tl.constexpr):
    """The depthwise causal conv step and SiLU on output rows n < C of y (BLOCK_N, BLOCK_M),
    y already rounded to the weight's dtype: `decode.conv_window_step`, the conv-step
    kernel's own arithmetic, on the Linear's output. Writes the next window back (in place)
    and returns y with those rows replaced."""
    k = tl.arange(0, W_PAD)
    out, new = conv_window_step(window, shifted, y.to(tl.float32), cw[:, None, :], cb[:, None],
                                CONV_W, True, y.dtype, HAS_CBIAS)
    tl.debug_barrier()  # in place: every read of the old window before any write
    tl.store(ptrs, new, mask=(n < C)[:, None, None] & (m < M)[None, :, None]
             & (k < CONV_W - 1)[None, None, :])
    return tl.where((n < C)[:, None], out.to(y.dtype), y)


@triton.jit
def _load_epilogue(n, m, N, M, bias_ptr, res_ptr, sr_m,
                   HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr):
    """The bias (BLOCK_N,) and residual (BLOCK_N, BLOCK_M) tiles of `_finish`, float32 (zeros
    without them), loaded before the wait for the previous kernel: the residual stream a
    block adds to was written by the block before it, several kernels back (`pdl.py`)."""
    if HAS_BIAS:
        bias = tl.load(bias_ptr + n, mask=n < N, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros_like(n).to(tl.float32)
    if HAS_RESIDUAL:
        res = tl.load(res_ptr + m[None, :] * sr_m + n[:, None],
                      mask=(n < N)[:, None] & (m < M)[None, :], other=0.0).to(tl.float32)
    else:
        res = tl.zeros([n.shape[0], m.shape[0]], dtype=tl.float32)
    return bias, res


@triton.jit
def _finish(acc, n, m, N, M, bias, res, out_ptr, so_m,
            HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ROUND_TO: tl.constexpr,
            C, conv_ptrs, window, shifted, cw, cb, HAS_CONV: tl.constexpr,
            HAS_CBIAS: tl.constexpr, CONV_W: tl.constexpr, W_PAD: tl.constexpr):
    """Epilogue on a (BLOCK_N, BLOCK_M) tile of float32 sums: + bias, rounded to the
    weight's dtype (the Linear's output); with a residual `residual + y` in float32; with
    a conv (HAS_CONV, tiles from `_load_conv`) the conv step and SiLU on rows n < C. The
    bias and residual tiles come from `_load_epilogue`."""
    mask = (n < N)[:, None] & (m < M)[None, :]
    if HAS_BIAS:
        acc += bias[:, None]
    y = acc.to(ROUND_TO)
    if HAS_CONV:
        y = _conv_silu(y, n, m, M, C, conv_ptrs, window, shifted, cw, cb, HAS_CBIAS, CONV_W,
                       W_PAD)
    if HAS_RESIDUAL:
        y = res + y.to(tl.float32)
    tl.store(out_ptr + m[None, :] * so_m + n[:, None], y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rstd(x_rows, m_ok, K, eps, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """1 / rms of each row of x (BLOCK_M,), as RMSNorm: rsqrt(mean(x^2) + eps) in float32.
    Every program recomputes it: K is d_model (~1K floats a row, read from L2)."""
    ss = tl.zeros([BLOCK_M], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_rows + k[None, :], mask=m_ok[:, None] & (k < K)[None, :],
                    other=0.0).to(tl.float32)
        ss += tl.sum(x * x, axis=1)
    return tl.math.rsqrt(ss / K + eps)


@triton.jit
def _load_w(w_rows, n, k, N, K, EVEN: tl.constexpr):
    """A (BLOCK_N, BLOCK_K) tile of W, masked unless every tile is full."""
    if EVEN:
        w = tl.load(w_rows + k[None, :])
    else:
        w = tl.load(w_rows + k[None, :], mask=(n < N)[:, None] & (k < K)[None, :], other=0.0)
    return w


@triton.jit
def _multiply(acc, w, x, DOT: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr):
    """acc += the tile w (BLOCK_N, BLOCK_K) times x (BLOCK_M, BLOCK_K), already in w's dtype."""
    if DOT:
        acc = tl.dot(w, tl.trans(x), acc, input_precision=PRECISION)
    elif BLOCK_M == 1:
        acc += w.to(tl.float32) * x.to(tl.float32)
    else:
        acc += w.to(tl.float32)[:, None, :] * x.to(tl.float32)[None, :, :]
    return acc


@triton.jit
def _accumulate(acc, w, x_rows, m_ok, k, K, nw_ptr, rstd, HAS_NORM: tl.constexpr,
                DOT: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr):
    """acc += the tile w times the matching columns k of x's rows (normed with HAS_NORM)."""
    x = tl.load(x_rows + k[None, :], mask=m_ok[:, None] & (k < K)[None, :],
                other=0.0).to(tl.float32)                                    # (BLOCK_M, BLOCK_K)
    if HAS_NORM:
        nw = tl.load(nw_ptr + k, mask=k < K, other=0.0).to(tl.float32)
        x = x * rstd[:, None] * nw[None, :]
    return _multiply(acc, w, x.to(w.dtype), DOT, PRECISION, BLOCK_M)     # the Linear's input


@triton.heuristics({
    "EVEN_N": lambda a: a["N"] % a["BLOCK_N"] == 0,
    "EVEN_K": lambda a: a["K"] % (a["K_TILES"] * a["BLOCK_K"]) == 0,   # every split's tiles full
    "ONE_TILE": lambda a: a["K"] <= a["BLOCK_K"],   # all of K in one tile (batch 1, K <= 4096)
})
@triton.jit
def gemv_kernel(x_ptr, w_ptr, bias_ptr, res_ptr, nw_ptr, out_ptr, cs_ptr, cw_ptr, cb_ptr,
                M, N, K, K_TILES, C, sx_m, sw_n, sr_m, so_s, so_m, scs_m, scs_c, scw_c, eps,
                HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, HAS_NORM: tl.constexpr,
                HAS_CONV: tl.constexpr, HAS_CBIAS: tl.constexpr, CONV_W: tl.constexpr,
                W_PAD: tl.constexpr,
                SPLIT: tl.constexpr, DOT: tl.constexpr, PRECISION: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                EVEN_N: tl.constexpr, EVEN_K: tl.constexpr, ONE_TILE: tl.constexpr,
                PDL: tl.constexpr):
    """Grid (N blocks, K splits, M blocks): rows n of W times rows m of x over this split's
    K_TILES tiles of BLOCK_K columns. With SPLIT, `out` is the float32 (SPLIT_K, M, N)
    buffer of partial sums; otherwise the epilogue runs here (with the conv step on rows
    n < C: HAS_CONV). Before the wait for the previous kernel (`pdl.py`) it loads what that
    kernel cannot be writing: the first tile of W (at batch 1 all of this program's W,
    streamed while the previous kernel still runs), the conv windows, the bias, the
    residual and, when all of K fits in one tile, the norm weight; after it, x's rows, read
    once in that case."""
    pid_n, pid_k, pid_m = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = m < M
    w_rows = w_ptr + n[:, None].to(tl.int64) * sw_n                     # (BLOCK_N, 1)
    x_rows = x_ptr + m[:, None].to(tl.int64) * sx_m                     # (BLOCK_M, 1)
    k_lo = pid_k * K_TILES * BLOCK_K
    k = k_lo + tl.arange(0, BLOCK_K)
    w = _load_w(w_rows, n, k, N, K, EVEN_N and EVEN_K)
    if HAS_CONV and not SPLIT:
        conv_ptrs, window, shifted, cw, cb = _load_conv(cs_ptr, cw_ptr, cb_ptr, n, m, M, C,
                                                        scs_m, scs_c, scw_c, HAS_CBIAS,
                                                        CONV_W, W_PAD)
    else:
        conv_ptrs, window, shifted, cw, cb = cs_ptr, 0.0, 0.0, 0.0, 0.0
    if not SPLIT:
        bias, res = _load_epilogue(n, m, N, M, bias_ptr, res_ptr, sr_m, HAS_BIAS, HAS_RESIDUAL)
    if ONE_TILE and HAS_NORM:
        nw = tl.load(nw_ptr + k, mask=k < K, other=0.0).to(tl.float32)
    wait_for_previous(PDL)
    if DOT:
        acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    elif BLOCK_M == 1:
        acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    else:
        acc = tl.zeros([BLOCK_N, BLOCK_M, BLOCK_K], dtype=tl.float32)
    if ONE_TILE:  # x's rows are read once: the RMSNorm's sum of squares from the same tile
        x = tl.load(x_rows + k[None, :], mask=m_ok[:, None] & (k < K)[None, :],
                    other=0.0).to(tl.float32)                                # (BLOCK_M, BLOCK_K)
        if HAS_NORM:
            rstd = tl.math.rsqrt(tl.sum(x * x, axis=1) / K + eps)
            x = x * rstd[:, None] * nw[None, :]
        acc = _multiply(acc, w, x.to(w.dtype), DOT, PRECISION, BLOCK_M)
    else:
        if HAS_NORM:
            rstd = _rstd(x_rows, m_ok, K, eps, BLOCK_M, BLOCK_K)
        else:
            rstd = tl.full([BLOCK_M], 1.0, dtype=tl.float32)
        acc = _accumulate(acc, w, x_rows, m_ok, k, K, nw_ptr, rstd, HAS_NORM, DOT, PRECISION,
                          BLOCK_M)
        for i in range(1, K_TILES):
            k = k_lo + i * BLOCK_K + tl.arange(0, BLOCK_K)
            w = _load_w(w_rows, n, k, N, K, EVEN_N and EVEN_K)
            acc = _accumulate(acc, w, x_rows, m_ok, k, K, nw_ptr, rstd, HAS_NORM, DOT,
                              PRECISION, BLOCK_M)
    if DOT:
        y = acc                                                              # (BLOCK_N, BLOCK_M)
    elif BLOCK_M == 1:
        y = tl.sum(acc, axis=1)[:, None]
    else:
        y = tl.sum(acc, axis=2)
    if SPLIT:
        tl.store(out_ptr + pid_k * so_s + m[None, :] * so_m + n[:, None], y,
                 mask=(n < N)[:, None] & m_ok[None, :])
    else:
        _finish(y, n, m, N, M, bias, res, out_ptr, so_m,
                HAS_BIAS, HAS_RESIDUAL, w_ptr.dtype.element_ty,
                C, conv_ptrs, window, shifted, cw, cb, HAS_CONV, HAS_CBIAS, CONV_W, W_PAD)


@triton.jit
def gemv_reduce_kernel(part_ptr, bias_ptr, res_ptr, out_ptr, cs_ptr, cw_ptr, cb_ptr,
                       M, N, SPLIT_K, C, sp_s, sr_m, so_m, scs_m, scs_c, scw_c,
                       HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
                       HAS_CONV: tl.constexpr, HAS_CBIAS: tl.constexpr, CONV_W: tl.constexpr,
                       W_PAD: tl.constexpr, ROUND_TO: tl.constexpr, BLOCK_N: tl.constexpr,
                       PDL: tl.constexpr):
    """Grid (N blocks, M): the SPLIT_K partial sums of one row, added in split order (so the
    result does not depend on which program finished first), then the epilogue."""
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.program_id(1) + tl.arange(0, 1)
    if HAS_CONV:
        conv_ptrs, window, shifted, cw, cb = _load_conv(cs_ptr, cw_ptr, cb_ptr, n, m, M, C,
                                                        scs_m, scs_c, scw_c, HAS_CBIAS,
                                                        CONV_W, W_PAD)
    else:
        conv_ptrs, window, shifted, cw, cb = cs_ptr, 0.0, 0.0, 0.0, 0.0
    bias, res = _load_epilogue(n, m, N, M, bias_ptr, res_ptr, sr_m, HAS_BIAS, HAS_RESIDUAL)
    wait_for_previous(PDL)
    mask = (n < N)[:, None]
    acc = tl.zeros([BLOCK_N, 1], dtype=tl.float32)
    for s in range(SPLIT_K):
        acc += tl.load(part_ptr + s * sp_s + m[None, :] * N + n[:, None], mask=mask, other=0.0)
    _finish(acc, n, m, N, M, bias, res, out_ptr, so_m,
            HAS_BIAS, HAS_RESIDUAL, ROUND_TO,
            C, conv_ptrs, window, shifted, cw, cb, HAS_CONV, HAS_CBIAS, CONV_W, W_PAD)


# -- configuration -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GemvConfig:
    block_m: int      # rows of x per program: 1..8 element-wise, >= 16 with dot
    block_n: int      # rows of W per program
    block_k: int      # columns per loop iteration
    split_k: int = 1  # programs along K (> 1: partial sums + reduction kernel)
    num_warps: int = 4
    num_stages: int = 2
    dot: bool = False  # tensor-core tl.dot (needs block_m, block_n, block_k >= 16)


@functools.lru_cache(maxsize=None)
def num_sms(device_index: int | None) -> int:
    if device_index is None:
        return INTERPRETER_SMS
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _pow2_floor(v: int) -> int:
    return 1 << (max(v, 1).bit_length() - 1)


def default_config(M: int, N: int, K: int, elem_bytes: int, sms: int = INTERPRETER_SMS
                   ) -> GemvConfig:
    """Launch configuration by reasoning, not tuning (`scripts/bench_gemv.py --sweep` checks it).

    Streaming W at full bandwidth needs several MB in flight on an H200 (~4.8 TB/s times
    ~1 us of loaded memory latency), so each program loads a tile of MAX_TILE_BYTES
    (8 KB: at 4 warps, four 16-byte loads per thread) per iteration and the grid has at
    least one program per SM where N allows; with ~6 such programs resident per SM all of
    an 8 MB matrix is requested at once.

    M == 1: BLOCK_K covers K up to the tile (one iteration for K <= 4096 bf16) and BLOCK_N
    fills the rest of the tile, fewer rows when that would leave SMs idle: in_proj 4096 x
    1024 bf16 -> 4 x 1024 (1024 programs), out_proj 1024 x 2048 -> 2 x 2048 (512), x_proj
    96 x 2048 -> 1 x 2048 (96), dt_proj 2048 x 64 -> 8 x 64 (256), a float32 byte head
    256 x 1024 -> 1 x 1024 (256). No split is needed at these shapes: every program's
    loads go out in one iteration.

    M > 1: tl.dot with BLOCK_M = 16 (up to 16 rows in one MMA column block), BLOCK_N 32
    rows of W (16 when N / 32 would leave more than half the SMs idle), BLOCK_K filling
    the 8 KB tile, 3 pipeline stages; K split when the N blocks alone would leave more than
    half the SMs idle, since the split's reduction kernel costs about a launch gap (out_proj
    at M=16: 64 N blocks x 4 splits; in_proj's 128 N blocks are not split).
    """
    sms = max(sms, 1)
    if M == 1:
        tile = MAX_TILE_BYTES // elem_bytes
        block_k = min(next_pow2(K), tile)
        block_n = max(1, min(tile // block_k, _pow2_floor(N // sms)))
        num_warps = max(1, min(4, block_n * block_k * elem_bytes // 2048))
        block_m, dot, stages = 1, False, 2
    else:
        block_m = min(max(16, next_pow2(M)), 64)
        block_n = 32 if cdiv(N, 32) >= sms // 2 else 16
        block_k = max(16, min(next_pow2(K), MAX_TILE_BYTES // (elem_bytes * block_n)))
        num_warps = max(1, min(8, block_n * block_m // 128))
        dot, stages = True, 3
    programs = cdiv(N, block_n) * cdiv(M, block_m)
    k_tiles = cdiv(K, block_k)
    split = 1  # a split costs a second kernel (~a launch gap): only when half the SMs would idle
    if programs < sms // 2 and k_tiles > 1:
        split = min(_pow2_floor(k_tiles), next_pow2(cdiv(sms, programs)))
    return GemvConfig(block_m=block_m, block_n=block_n, block_k=block_k, split_k=split,
                      num_warps=num_warps, num_stages=stages, dot=dot)


# -- launcher and custom op --------------------------------------------------------------

def gemv_launch(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                residual: Optional[Tensor] = None, norm_weight: Optional[Tensor] = None,
                norm_eps: float = 1e-5, config: Optional[GemvConfig] = None,
                conv_state: Optional[Tensor] = None, conv_weight: Optional[Tensor] = None,
                conv_bias: Optional[Tensor] = None) -> Tensor:
    """Run the kernels with `config` (default: `default_config`); shapes are assumed checked
    (`ops.gemv` checks them). The benchmark's sweep calls this directly. With conv_state
    (M, C, W-1), unit stride along its last dimension, updated in place: output rows n < C
    are the conv step and SiLU of the product (`_conv_silu`)."""
    M, K = x.shape
    N = weight.shape[0]
    out_dtype = torch.float32 if residual is not None else weight.dtype
    out = torch.empty((M, N), dtype=out_dtype, device=x.device)
    if M == 0:
        return out
    x = x if x.stride(-1) == 1 else x.contiguous()
    weight = weight if weight.stride(-1) == 1 else weight.contiguous()
    if residual is not None and residual.stride(-1) != 1:
        residual = residual.contiguous()
    if conv_state is not None:
        conv_weight = conv_weight if conv_weight.stride(-1) == 1 else conv_weight.contiguous()
        C, width = conv_weight.shape
        conv = dict(C=C, scs_m=conv_state.stride(0), scs_c=conv_state.stride(1),
                    scw_c=conv_weight.stride(0), HAS_CONV=True, HAS_CBIAS=conv_bias is not None,
                    CONV_W=width, W_PAD=max(next_pow2(width), 2))
    else:
        conv = dict(C=0, scs_m=0, scs_c=0, scw_c=0, HAS_CONV=False, HAS_CBIAS=False,
                    CONV_W=2, W_PAD=2)
    if config is None:
        sms = num_sms(x.device.index if x.is_cuda else None)
        config = default_config(M, N, K, weight.element_size(), sms)
    c = config
    k_tiles = cdiv(K, c.block_k)
    tiles = cdiv(k_tiles, c.split_k)                   # per split
    split = cdiv(k_tiles, tiles)                       # no empty splits
    part = (torch.empty((split, M, N), dtype=torch.float32, device=x.device) if split > 1
            else out)
    grid = (cdiv(N, c.block_n), split, cdiv(M, c.block_m))
    pdl = use_pdl(x)
    gemv_kernel[grid](
        x, weight, bias, residual, norm_weight, part, conv_state, conv_weight, conv_bias,
        M, N, K, tiles, conv["C"], x.stride(0), weight.stride(0),
        0 if residual is None else residual.stride(0), M * N, part.stride(-2),
        conv["scs_m"], conv["scs_c"], conv["scw_c"], norm_eps,
        HAS_BIAS=bias is not None, HAS_RESIDUAL=residual is not None,
        HAS_NORM=norm_weight is not None, HAS_CONV=conv["HAS_CONV"],
        HAS_CBIAS=conv["HAS_CBIAS"], CONV_W=conv["CONV_W"], W_PAD=conv["W_PAD"],
        SPLIT=split > 1, DOT=c.dot,
        PRECISION="ieee" if weight.dtype == torch.float32 else "tf32",
        BLOCK_M=c.block_m, BLOCK_N=c.block_n, BLOCK_K=c.block_k, PDL=pdl,
        num_warps=c.num_warps, num_stages=c.num_stages, launch_pdl=pdl)
    if split > 1:
        block = min(next_pow2(N), 1024)
        gemv_reduce_kernel[(cdiv(N, block), M)](
            part, bias, residual, out, conv_state, conv_weight, conv_bias, M, N, split,
            conv["C"], M * N, 0 if residual is None else residual.stride(0), out.stride(0),
            conv["scs_m"], conv["scs_c"], conv["scw_c"],
            HAS_BIAS=bias is not None, HAS_RESIDUAL=residual is not None,
            HAS_CONV=conv["HAS_CONV"], HAS_CBIAS=conv["HAS_CBIAS"], CONV_W=conv["CONV_W"],
            W_PAD=conv["W_PAD"], ROUND_TO=_TL_DTYPE[weight.dtype], BLOCK_N=block, PDL=pdl,
            num_warps=4, launch_pdl=pdl)
    return out


_TL_DTYPE = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


@torch.library.custom_op("bytessm::gemv", mutates_args=())
def gemv_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], residual: Optional[Tensor],
            norm_weight: Optional[Tensor], norm_eps: float) -> Tensor:
    return gemv_launch(x, weight, bias, residual, norm_weight, norm_eps)


@gemv_op.register_fake
def _(x, weight, bias, residual, norm_weight, norm_eps):
    dtype = torch.float32 if residual is not None else weight.dtype
    return x.new_empty((x.shape[0], weight.shape[0]), dtype=dtype)


@torch.library.custom_op("bytessm::gemv_conv", mutates_args=("conv_state",))
def gemv_conv_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], norm_weight: Optional[Tensor],
                 norm_eps: float, conv_state: Tensor, conv_weight: Tensor,
                 conv_bias: Optional[Tensor]) -> Tensor:
    return gemv_launch(x, weight, bias, None, norm_weight, norm_eps, conv_state=conv_state,
                       conv_weight=conv_weight, conv_bias=conv_bias)


@gemv_conv_op.register_fake
def _(x, weight, bias, norm_weight, norm_eps, conv_state, conv_weight, conv_bias):
    return x.new_empty((x.shape[0], weight.shape[0]), dtype=weight.dtype)


def gemv_triton(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                residual: Optional[Tensor] = None, norm_weight: Optional[Tensor] = None,
                norm_eps: float = 1e-5, conv_state: Optional[Tensor] = None,
                conv_weight: Optional[Tensor] = None,
                conv_bias: Optional[Tensor] = None) -> Tensor:
    """`residual + linear(rmsnorm(x))` for a few rows, or with a conv state the conv step on
    the first rows of `linear(rmsnorm(x))`; see the module docstring."""
    if conv_state is not None:
        return torch.ops.bytessm.gemv_conv(x, weight, bias, norm_weight, float(norm_eps),
                                           conv_state, conv_weight, conv_bias)
    return torch.ops.bytessm.gemv(x, weight, bias, residual, norm_weight, float(norm_eps))
