"""Mamba mixers: the causal Mamba-1 mixer and the bidirectional (Vision Mamba v2) mixer.

    x (B, L, d_model) -> in_proj -> [x_in, z] (B, d_inner, L) each
      x_in -> causal depthwise conv1d -> SiLU -> x_proj -> [dt_low, B, C]
      dt = dt_proj.weight @ dt_low           (dt_proj.bias is the scan's delta_bias)
      y = selective_scan(x_in, dt, A, B, C, D, z, delta_bias, softplus)
    -> out_proj -> (B, L, d_model)

Defaults and initialisation follow mamba_ssm's `Mamba` (Gu & Dao 2023): d_state 16,
d_conv 4, expand 2, dt_rank ceil(d_model / 16), dt drawn log-uniform in [dt_min, dt_max]
and stored through the inverse softplus in dt_proj.bias, A = -exp(A_log) with the
S4D-real init A_log[d, n] = log(n + 1), kept in float32 like D.

Inference state per layer: the last d_conv-1 inputs of the conv (B, d_inner, d_conv-1) and
the SSM state (B, d_inner, d_state), both float32. `forward(x, state=...)` starts from a
state and returns the state after the sequence (prefill, speculative verification,
segment-wise training; differentiable); `step` advances one position in place (decoding).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from bytessm.kernels import (causal_conv1d, causal_conv1d_update, selective_scan,
                             selective_state_update)
from bytessm.kernels.ops import resolve_backend

from .decode import ConvStep, gemv_backend, residual_step, step_linear


# The scan's loads are vectorised (16 bytes, 8 bf16 positions) and its chunk is scanned in
# registers, 8 positions a thread, only when Triton can prove that every row of u, delta, z, B
# and C starts 16-byte aligned and that the `t < length` mask is constant over 8 positions:
# it can when the length and the row strides are multiples of 16 (the divisibility it
# specialises integer arguments on). Otherwise each thread holds scattered positions and the
# chunk takes eight warp scans instead of one. At other lengths (Vision Mamba's 197 or 6085
# tokens) the mixers therefore run on the sequence padded to a multiple of ALIGN and drop the
# padding's outputs. Measured on an H200, the forward scan at 126 x 384 channels takes
# 0.67 ms at length 197, 0.35 ms with row strides padded to 208 and 0.28 ms at length 208.
# (The scan's launcher now copies such rows into padded ones itself, `scan.row_length`, for
# any caller; the mixers still pad the sequence, which is faster and needs no copies.)
ALIGN = 16


TRITON_CONV_TRAIN_FROM = 1 << 17  # see SSMBranch._triton_conv

# The Triton layout's projections run as `position_linear`'s strided-batched GEMMs from this
# many positions on. Measured on an H200 (bf16 autocast training steps): Caduceus-PS 6x256
# at 2^20 bases (batch 2 inside) took 1023 ms a step against 1579 with the (d_out, B*L)
# products and F.linear, whose transposed copies of whole activations it drops; Vim-Ti
# training (eager) took 1.28x the time at 224x224 (batch 126 x 208 tokens) and 1.04x at
# 1024x1024 (6 x 4112): per-call costs, at short lengths more than the copies they save.
POSITION_GEMM_FROM = 1 << 17


def position_gemms(lengthwise: bool, length: int) -> bool:
    """Whether the projections of rows of `length` positions (padded) in the given layout
    run as `position_linear`'s GEMMs."""
    return lengthwise and length >= POSITION_GEMM_FROM


def _batched(weight: Tensor, batch: int) -> Tensor:
    """weight (m, n) as a (batch, m, n) view of stride 0 along the batch (no copy)."""
    return weight.expand(batch, *weight.shape)


def aligned_length(length: int) -> int:
    return -(-length // ALIGN) * ALIGN


def pad_length(x: Tensor, length: int) -> Tensor:
    """x (B, L, d) -> (B, length, d), zeros after position L."""
    return x if x.shape[1] == length else F.pad(x, (0, 0, 0, length - x.shape[1]))


class _PositionLinear(torch.autograd.Function):
    """out = weight @ x at every position, x and out each (B, channels, L) ("channels
    first", rows along the length) or (B, L, channels). Every product, forward and
    backward, is one strided-batched GEMM (the weight expanded over the batch, stride 0)
    that reads its operands through their strides and copies none of them, and each
    gradient comes out in its input's layout.

    F.linear over a (B, L, d) view of channels-first rows copies x for B > 1 (its reshape
    to (B*L, d) cannot be a view), and so did the gradient of one (d_out, B*L) product
    viewed as (B, d_out, L): transposed copies of whole activations, which at 2^20
    positions took 3.4 ms each on an H200, a third of a Caduceus-PS step (batch 2 inside).
    Autograd's own bmm backward would give a channels-first gradient to a (B, L, d) input
    (and the reverse), for the next op to copy."""

    @staticmethod
    def forward(ctx, x, weight, x_first: bool, out_first: bool):
        ctx.save_for_backward(x, weight)
        ctx.x_first, ctx.out_first = x_first, out_first
        xc = x if x_first else x.mT                                          # (B, d, L)
        if out_first:
            return torch.bmm(_batched(weight, x.shape[0]), xc)               # (B, e, L)
        return torch.bmm(xc.mT, _batched(weight.t(), x.shape[0]))            # (B, L, e)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        batch = x.shape[0]
        gc = grad if ctx.out_first else grad.mT                              # (B, e, L)
        xc = x if ctx.x_first else x.mT                                      # (B, d, L)
        gx = gw = None
        if ctx.needs_input_grad[0]:
            if ctx.x_first:
                gx = torch.bmm(_batched(weight.t(), batch), gc)              # (B, d, L)
            else:
                gx = torch.bmm(gc.mT, _batched(weight, batch))               # (B, L, d)
        if ctx.needs_input_grad[1]:
            gw = torch.bmm(gc, xc.mT).sum(0)
        return gx, gw, None, None


def position_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, *,
                    x_first: bool, out_first: bool) -> Tensor:
    """`weight` (e, d) (and `bias`) at every position of x: (B, d, L) if `x_first` else
    (B, L, d), into (B, e, L) if `out_first` else (B, L, e), contiguous (`_PositionLinear`).
    Under autocast x and the weight are cast first, as F.linear casts them. Channels-first
    to channels-first (x_proj, dt_proj) is autograd's bmm, whose gradients already come in
    their inputs' layouts; the others, autograd's Python `_PositionLinear` (host time)."""
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
    if x_first and out_first:  # autograd's bmm gives x's gradient channels-first already
        out = torch.bmm(_batched(weight, x.shape[0]), x)
    else:
        out = _PositionLinear.apply(x, weight, x_first, out_first)
    if bias is not None:
        out = out + (bias.to(out.dtype)[:, None] if out_first else bias.to(out.dtype))
    return out


def linear_channels_first(linear: nn.Linear, x: Tensor, lengthwise: bool = True) -> Tensor:
    """`linear(x)` for x (B, L, d_in), as (B, d_out, L).

    lengthwise: with unit stride along L, as mamba_ssm computes its in_proj and dt_proj: the
    Triton scan loads its inputs along the length, and a transposed (B, L, d_out) result
    would give it a stride of d_out there, so that every load touches a separate cache line
    (`position_linear` from POSITION_GEMM_FROM positions, below them one (d_out, B*L)
    product viewed as (B, d_out, L)). Otherwise the transposed view of `linear(x)`, which
    the reference scan (CPU) reads time-major without a copy: the tiny default model trained
    at 8.1-9.5K symbols/s on two CPU cores that way, against 4.8-5.7K with the copy."""
    if not lengthwise:
        return rearrange(linear(x), "b l e -> b e l")
    if position_gemms(lengthwise, x.shape[1]):
        return position_linear(x, linear.weight, linear.bias, x_first=False, out_first=True)
    y = linear.weight @ rearrange(x, "b l d -> d (b l)")
    if linear.bias is not None:
        y = y + linear.bias.to(y.dtype)[:, None]
    return rearrange(y, "e (b l) -> b e l", b=x.shape[0])


def linear_lengths_first(linear: nn.Linear, y: Tensor, length: int,
                         lengthwise: bool = True) -> Tensor:
    """`linear` at the first `length` positions of y (B, d_in, Lp), as (B, length, d_out):
    the out_proj.

    lengthwise (y's rows run along L, as the Triton scan writes them), from
    POSITION_GEMM_FROM positions (of Lp, as in_proj decides): `position_linear`, no copy of
    y, and its gradient channels-first, the layout the scan's backward reads along.
    Otherwise F.linear of y's transposed view: no copy of the reference scan's time-major
    output, a copy of the Triton scan's for B > 1."""
    gemms = position_gemms(lengthwise, y.shape[-1])
    y = y[..., :length]
    if gemms:
        return position_linear(y, linear.weight, linear.bias, x_first=True, out_first=False)
    return linear(rearrange(y, "b d l -> b l d"))


def lengthwise_layout(scan_backend: str, x: Tensor) -> bool:
    """Whether the scan's inputs should run contiguous along the length: for the Triton
    kernels (GPU, or the interpreter's tests), not for the reference."""
    return resolve_backend(scan_backend, x.device) == "triton"


# -- decode-step kernels as custom ops, so that torch.compile treats them as opaque calls
# (fullgraph) instead of tracing the Triton launchers; eager decoding calls them directly.

@torch.library.custom_op("bytessm::mamba_conv_step", mutates_args=("conv_state",))
def _conv_step_op(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None,
                  backend: str) -> Tensor:
    return causal_conv1d_update(x, conv_state, weight, bias, activation="silu", backend=backend)


@_conv_step_op.register_fake
def _(x, conv_state, weight, bias, backend):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("bytessm::mamba_state_step", mutates_args=("state",))
def _state_step_op(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                   D: Tensor, z: Tensor, dt_bias: Tensor, dt_proj_weight: Tensor,
                   backend: str) -> Tensor:
    return selective_state_update(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias,
                                  dt_softplus=True, dt_proj_weight=dt_proj_weight,
                                  backend=backend)


@_state_step_op.register_fake
def _(state, x, dt, A, B, C, D, z, dt_bias, dt_proj_weight, backend):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _conv_step(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None,
               backend: str) -> Tensor:
    """Depthwise conv step and SiLU: x (B, D) -> (B, D) in x's dtype; window in place. The
    SiLU acts on the conv output rounded to x's dtype, as in the parallel forward."""
    if torch.compiler.is_compiling():
        return _conv_step_op(x, conv_state, weight, bias, backend)
    return causal_conv1d_update(x, conv_state, weight, bias, activation="silu", backend=backend)


def _state_step(state, x, dt, A, B, C, D, z, dt_bias, dt_proj_weight, backend: str) -> Tensor:
    """Selective-state step with the dt projection inside (dt (B, R) @ dt_proj_weight.T, then
    softplus of it + dt_bias): y (B, D) in x's dtype; state in place."""
    if torch.compiler.is_compiling():
        return _state_step_op(state, x, dt, A, B, C, D, z, dt_bias, dt_proj_weight, backend)
    return selective_state_update(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias,
                                  dt_softplus=True, dt_proj_weight=dt_proj_weight,
                                  backend=backend)


class MambaState(NamedTuple):
    conv: Tensor  # (B, d_inner, d_conv - 1) float32, oldest input first
    ssm: Tensor   # (B, d_inner, d_state) float32


class SSMBranch(nn.Module):
    """conv1d -> x_proj -> dt_proj -> selective scan, for one scan direction.

    Works on the inner layout (B, d_inner, L). With `reverse=True` the conv looks at the
    current and the next d_conv-1 positions and the scan runs right to left, so the branch
    is the causal branch applied to the time-reversed sequence, without flipping copies.
    """

    def __init__(self, d_inner: int, *, d_state: int, d_conv: int, dt_rank: int,
                 dt_min: float, dt_max: float, dt_init_floor: float, conv_bias: bool,
                 reverse: bool, scan_backend: str):
        super().__init__()
        if d_state <= 0 or d_conv <= 0 or dt_rank <= 0:
            raise ValueError(f"d_state, d_conv and dt_rank must be positive, got "
                             f"{d_state}, {d_conv}, {dt_rank}")
        self.d_inner, self.d_state, self.d_conv, self.dt_rank = d_inner, d_state, d_conv, dt_rank
        self.reverse = reverse
        self.scan_backend = scan_backend
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, bias=conv_bias)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)

        # dt_proj: weights keep the variance of the low-rank input; the bias holds
        # softplus^-1(dt) with dt log-uniform in [dt_min, dt_max] (mamba_ssm's init).
        nn.init.uniform_(self.dt_proj.weight, -dt_rank**-0.5, dt_rank**-0.5)
        dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True

        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)  # (D, N)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(d_inner))
        for p in (self.A_log, self.D, self.dt_proj.bias):
            p._no_weight_decay = True

    def _triton_conv(self, x: Tensor) -> bool:
        """Whether the zero-window conv runs on the Triton kernel rather than F.conv1d. Measured
        on an H200 (docs/benchmarks/conv.md): 4-5x less GPU time forward+backward at every
        tested shape, but at Vim's 126 x 384 x 208 the eager call costs more host time than
        F.conv1d's (custom-op dispatch, autograd node, Triton launch), and Vim-Ti's eager
        training is host-bound: no gain measured there. So training uses it from
        TRITON_CONV_TRAIN_FROM positions on, inference always."""
        if resolve_backend(self.scan_backend, x.device) != "triton":
            return False
        training = torch.is_grad_enabled() and (x.requires_grad or self.conv1d.weight.requires_grad)
        return not training or x.shape[-1] >= TRITON_CONV_TRAIN_FROM

    def _conv(self, x: Tensor, window: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Depthwise conv of x (B, D, L) with the previous window; returns (y, new window).
        Without a window (zeros before the sequence, or after it when reversed) the conv pads
        by itself, and there is no window to return."""
        W = self.d_conv
        if window is None:
            backend = "triton" if self._triton_conv(x) else "reference"       # F.conv1d
            return causal_conv1d(x, self.conv1d.weight[:, 0, :], self.conv1d.bias,
                                 reverse=self.reverse, backend=backend), None
        if self.reverse:  # anti-causal: future inputs on the right, kernel mirrored
            padded = torch.cat([x, window.to(x.dtype)], dim=-1)
            y = F.conv1d(padded, self.conv1d.weight.flip(-1), self.conv1d.bias, groups=self.d_inner)
            new_window = padded[..., : W - 1]
        else:
            padded = torch.cat([window.to(x.dtype), x], dim=-1)
            y = F.conv1d(padded, self.conv1d.weight, self.conv1d.bias, groups=self.d_inner)
            new_window = padded[..., padded.shape[-1] - (W - 1):]
        return y, new_window.float()

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, D, L) after the conv -> delta (B, D, L), B and C (B, N, L), each with unit
        stride along L for the Triton scan (its loads run along it); from
        POSITION_GEMM_FROM positions B and C are rows of x_proj's (B, R+2N, L) product,
        which the scan reads through their strides."""
        sizes = [self.dt_rank, self.d_state, self.d_state]
        lengthwise = lengthwise_layout(self.scan_backend, x)
        if position_gemms(lengthwise, x.shape[-1]):
            x_dbl = position_linear(x, self.x_proj.weight, x_first=True, out_first=True)
            dt, B, C = torch.split(x_dbl, sizes, dim=1)                     # (B, ., L) each
            delta = position_linear(dt, self.dt_proj.weight, x_first=True, out_first=True)
            return delta, B, C                                              # bias in the scan
        x_dbl = self.x_proj(rearrange(x, "b d l -> b l d"))                  # (B, L, R+2N)
        dt, B, C = torch.split(x_dbl, sizes, dim=-1)
        B, C = rearrange(B, "b l n -> b n l"), rearrange(C, "b l n -> b n l")
        if not lengthwise:  # the reference reads time-major
            return rearrange(dt @ self.dt_proj.weight.t(), "b l d -> b d l"), B, C
        delta = rearrange(self.dt_proj.weight @ rearrange(dt, "b l r -> r (b l)"),
                          "d (b l) -> b d l", b=x.shape[0])                  # bias in the scan
        return delta, B.contiguous(), C.contiguous()

    def A(self) -> Tensor:
        return -torch.exp(self.A_log.float())                                 # (D, N)

    def forward(self, x: Tensor, z: Tensor | None, state: MambaState | None = None,
                return_state: bool = False, valid: int | None = None):
        """x, z (B, d_inner, L) -> y (B, d_inner, L) [, MambaState after the sequence].

        `valid` < L: the positions from `valid` on are padding (zero input, no state in or
        out) whose outputs are to be dropped. The forward scan reaches them last; the reverse
        scan first, so its input there is zeroed and the state it carries stays zero."""
        padded = valid is not None and valid < x.shape[-1]
        if padded and (state is not None or return_state):
            raise ValueError("padded positions would enter the recurrent state: pass "
                             "valid=None together with a state or return_state")
        if return_state and state is None:
            state = self.new_state(x.shape[0], x.device)
        x, window = self._conv(x, None if state is None else state.conv)
        x = F.silu(x)
        if padded and self.reverse:
            x = x.masked_fill(torch.arange(x.shape[-1], device=x.device) >= valid, 0.0)
        delta, B, C = self._project(x)
        out = selective_scan(
            x, delta, self.A(), B, C, D=self.D.float(), z=z,
            delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
            initial_state=None if state is None else state.ssm,
            return_last_state=return_state, reverse=self.reverse, backend=self.scan_backend)
        if return_state:
            y, ssm = out
            return y, MambaState(window, ssm)
        return out

    def step(self, x: Tensor, z: Tensor, state: MambaState,
             gemv_backend: str | None = None, conv_done: bool = False) -> Tensor:
        """One causal position: x, z (B, d_inner); `state` updated in place. With
        `conv_done`, x is already the conv step's output (in_proj's GEMV ran it, `conv_step`)
        and the window already advanced.

        Rounds where `forward` rounds, so that decoding and the parallel forward agree in
        bf16 too: the conv output is rounded to x's dtype before the SiLU (F.conv1d does so),
        and the SiLU's output again, both inside the conv-step kernel. Kernels: conv step
        with its SiLU, x_proj, state step with dt_proj inside (its output rounded to the
        weight's dtype, as F.linear's); B and C are strided views of x_proj's output (the
        step kernel takes strides) and A is computed once per value of A_log (`_step_A`).
        x_proj runs on the GEMV kernel when `gemv_backend` is given (`decode.gemv_backend`)."""
        if self.reverse:
            raise RuntimeError("a reverse (anti-causal) branch cannot decode step by step")
        if not conv_done:
            x = _conv_step(x, *self.conv_step(state), self.scan_backend)             # (B, D)
        x_dbl = step_linear(self.x_proj, x, gemv_backend)                          # (B, R+2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        return _state_step(state.ssm, x, dt, self._step_A(), B, C, self.D.float(), z,
                           self.dt_proj.bias.float(), self.dt_proj.weight, self.scan_backend)

    def conv_step(self, state: MambaState) -> ConvStep:
        """The conv step's window, weights (d_inner, d_conv) and bias, for `step` or for a
        product that runs it in its epilogue (`decode.residual_step`)."""
        return ConvStep(state.conv, self.conv1d.weight[:, 0, :], self.conv1d.bias)

    def _step_A(self) -> Tensor:
        """A = -exp(A_log) (D, N) for `step`, cached: two kernels a layer a step otherwise.
        The cache is keyed by A_log's storage and version counter (an optimizer step or a
        `.to()` changes one of them). Under torch.compile the cached tensor is used as a
        constant when present (the Decoder fills the caches eagerly before compiling)."""
        cached = self.__dict__.get("_A_cache")
        if torch.compiler.is_compiling():
            return self.A() if cached is None else cached[1]
        key = (self.A_log.data_ptr(), self.A_log._version, self.A_log.dtype)
        if cached is None or cached[0] != key:
            cached = (key, self.A().detach())
            self.__dict__["_A_cache"] = cached  # a plain attribute: not a buffer, not saved
        return cached[1]

    def new_state(self, batch: int, device) -> MambaState:
        return MambaState(torch.zeros(batch, self.d_inner, self.d_conv - 1, device=device),
                          torch.zeros(batch, self.d_inner, self.d_state, device=device))


def _dt_rank(d_model: int, dt_rank) -> int:
    return math.ceil(d_model / 16) if dt_rank in ("auto", None) else int(dt_rank)


class Mamba(nn.Module):
    """Causal Mamba-1 mixer: (B, L, d_model) -> (B, L, d_model)."""

    causal = True

    def __init__(self, d_model: int, *, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, conv_bias: bool = True, bias: bool = False,
                 scan_backend: str = "auto"):
        super().__init__()
        self.d_inner = expand * d_model
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.ssm = SSMBranch(self.d_inner, d_state=d_state, d_conv=d_conv,
                             dt_rank=_dt_rank(d_model, dt_rank), dt_min=dt_min, dt_max=dt_max,
                             dt_init_floor=dt_init_floor, conv_bias=conv_bias, reverse=False,
                             scan_backend=scan_backend)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def forward(self, x: Tensor, state: MambaState | None = None, return_state: bool = False):
        length = x.shape[1]
        if not return_state:  # padding comes after every output; a returned state must not
            x = pad_length(x, aligned_length(length))
        lengthwise = lengthwise_layout(self.ssm.scan_backend, x)
        x_in, z = linear_channels_first(self.in_proj, x, lengthwise).chunk(2, dim=1)
        out = self.ssm(x_in, z, state=state, return_state=return_state)
        y, new_state = out if return_state else (out, None)
        y = linear_lengths_first(self.out_proj, y, length, lengthwise)
        return (y, new_state) if return_state else y

    def step(self, x: Tensor, state: MambaState) -> Tensor:
        """x (B, d_model) -> (B, d_model); `state` advanced in place."""
        backend = gemv_backend(x)
        x_in, z = step_linear(self.in_proj, x, backend).chunk(2, dim=-1)     # (B, Di) each
        return step_linear(self.out_proj, self.ssm.step(x_in, z, state, backend), backend)

    def step_residual(self, residual: Tensor, norm: nn.Module, state: MambaState) -> Tensor:
        """The pre-norm block's step, `residual + self.step(norm(residual), state)`, for
        residual (B, d_model) float32; `state` advanced in place. On the decode GEMV the norm
        and the add run inside in_proj's and out_proj's products, and the conv step inside
        in_proj's too (`decode.residual_step`): 4 kernels a step (in_proj + conv, x_proj,
        the state step with dt_proj, out_proj + add)."""
        return residual_step(
            residual, norm, self.in_proj,
            lambda xz, backend, conv_done: self.ssm.step(*xz.chunk(2, dim=-1), state, backend,
                                                        conv_done),
            self.out_proj, conv=self.ssm.conv_step(state))

    def new_state(self, batch: int, device, **_) -> MambaState:
        return self.ssm.new_state(batch, device)


class BiMamba(nn.Module):
    """Bidirectional mixer (Vision Mamba "v2", Zhu et al. 2024): shared in/out projections,
    one SSM branch per direction (own conv, x_proj, dt_proj, A, D); the backward branch is
    the reverse scan. out = out_proj((y_fwd + y_bwd) / 2), each gated by silu(z).
    """

    causal = False

    def __init__(self, d_model: int, *, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, conv_bias: bool = True, bias: bool = False,
                 scan_backend: str = "auto"):
        super().__init__()
        self.d_inner = expand * d_model
        kw = dict(d_state=d_state, d_conv=d_conv, dt_rank=_dt_rank(d_model, dt_rank),
                  dt_min=dt_min, dt_max=dt_max, dt_init_floor=dt_init_floor,
                  conv_bias=conv_bias, scan_backend=scan_backend)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.fwd = SSMBranch(self.d_inner, reverse=False, **kw)
        self.bwd = SSMBranch(self.d_inner, reverse=True, **kw)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def forward(self, x: Tensor, state=None, return_state: bool = False):
        if state is not None or return_state:
            raise RuntimeError("a bidirectional mixer sees the whole sequence: it has no "
                               "recurrent state to carry")
        length = x.shape[1]
        lengthwise = lengthwise_layout(self.fwd.scan_backend, x)
        x_in, z = linear_channels_first(
            self.in_proj, pad_length(x, aligned_length(length)), lengthwise).chunk(2, dim=1)
        if self.in_proj.bias is not None:  # the padding's input must be zero, as for the conv
            x_in = x_in.masked_fill(torch.arange(x_in.shape[-1], device=x.device) >= length, 0.0)
        y = 0.5 * (self.fwd(x_in, z, valid=length) + self.bwd(x_in, z, valid=length))
        return linear_lengths_first(self.out_proj, y, length, lengthwise)
