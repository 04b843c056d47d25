"""The decode step of a stack of Mamba blocks as one persistent kernel
(`kernels/triton/stack.py`), at batch 1. Experimental: opt-in, since it is slower so far.

    bytessm.nn.decode.DECODE_STACK = "off"     # default from BYTESSM_DECODE_STACK, else "off"

- "off" (default): each block steps on its own kernels (`Block.step`).
- "auto": a `generation.Decoder` on CUDA whose backbone is a plain stack of Mamba blocks
  (no attention, no MLP) and whose batch is 1 runs all the blocks' steps as one kernel
  (`FusedStack`). `Decoder(fused_stack=True)` asks for it whatever the switch says.
- "triton": wherever the stack qualifies (batch 1), also CPU tensors under
  TRITON_INTERPRET=1 (tests).

Why it exists: at batch 1 each of the four dependent kernels of a layer's step costs about
2.35 us on an H200 (0.50 ms a step for the 353M model), the latency of an all-to-all
exchange; one kernel needs only the two exchanges a layer the step's maths does (grid
barriers) and streams the next phase's weights while the programs wait at them. Measured
(scripts/bench_stack.py, results/bench_stack): 0.54 ms, the barriers 6 of a layer's 10 us
(docs/generation.md has the timeline and why 5x the Transformer at 16K batch 1 stays out
of reach on this GPU). Its float32 sums are added with atomics, so
its results vary from run to run in the last bits; the separate kernels' do not.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from . import decode
from .block import Block
from .mamba import Mamba, MambaState
from .norm import RMSNorm


def _structure(block: Block) -> tuple:
    """What must agree between the stacked blocks: the products' shapes, which biases exist,
    the conv width, the norm's eps."""
    m = block.mixer
    return (m.in_proj.weight.shape, m.ssm.x_proj.weight.shape, m.ssm.dt_proj.weight.shape,
            m.ssm.A_log.shape, m.ssm.d_conv, m.in_proj.bias is None, m.out_proj.bias is None,
            m.ssm.conv1d.bias is None, block.norm.eps)


def stack_blocker(blocks: Sequence[nn.Module]) -> str | None:
    """Why these blocks cannot step as one fused stack, or None if they can: every block a
    pre-norm Mamba block without MLP (RMSNorm, causal mixer), all of one shape and weight
    dtype."""
    if not blocks:
        return "no blocks"
    for i, b in enumerate(blocks):
        if not isinstance(b, Block) or not isinstance(b.mixer, Mamba) or b.mlp is not None:
            return f"block {i} is not a Mamba block without MLP"
        if not isinstance(b.norm, RMSNorm):
            return f"block {i}'s norm is {type(b.norm).__name__}, not RMSNorm"
        if _structure(b) != _structure(blocks[0]):
            return f"block {i}'s shapes differ from block 0's"
        m = b.mixer
        dtypes = {m.in_proj.weight.dtype, m.ssm.x_proj.weight.dtype, m.ssm.dt_proj.weight.dtype,
                  m.out_proj.weight.dtype, blocks[0].mixer.in_proj.weight.dtype}
        if len(dtypes) > 1:
            return f"block {i}'s products are in several dtypes {sorted(map(str, dtypes))}"
    return None


def use_fused_stack(blocks: Sequence[nn.Module], batch: int, device: torch.device) -> bool:
    """The DECODE_STACK switch's choice for a decoder of `batch` rows on `device`."""
    mode = decode.DECODE_STACK
    if mode not in decode.MODES:
        raise ValueError(f"bytessm.nn.decode.DECODE_STACK (or BYTESSM_DECODE_STACK) must be "
                         f"one of {decode.MODES}, got {mode!r}")
    if mode == "off" or batch != 1 or stack_blocker(blocks) is not None:
        return False
    return mode == "triton" or device.type == "cuda"


class FusedStack:
    """`for block, state in zip(blocks, states): residual = block.step(residual, state)` as
    one kernel, for residual (1, d_model) float32 and the batch-1 MambaStates the kernel is
    built for (`states`, advanced in place).

    The kernel reads the layers through a table of addresses: the products' weights where
    the model keeps them, float32 copies of the small vectors (conv weights and biases, A,
    D, dt bias, norm weights; exact, and each layer's step would read them in float32
    anyway), the states themselves. The table is rebuilt when a parameter changes (storage
    or version) or other states are passed; a CUDA graph captured around a call bakes it in,
    like every other kernel argument."""

    def __init__(self, blocks: Sequence[Block], states: Sequence[MambaState]):
        why = stack_blocker(blocks)
        if why is not None:
            raise ValueError(f"these blocks cannot decode as one fused stack: {why}")
        self.blocks = list(blocks)
        self._key = None
        self._build(states)

    def _params(self) -> list[Tensor]:
        return [p for b in self.blocks for p in b.parameters()]

    def _key_of(self, states: Sequence[MambaState]) -> tuple:
        return (tuple((p.data_ptr(), p._version) for p in self._params())
                + tuple((s.conv.data_ptr(), s.ssm.data_ptr()) for s in states))

    def _build(self, states: Sequence[MambaState]) -> None:
        # imported here, like every Triton kernel (`kernels/ops.py`): TRITON_INTERPRET is
        # read when the kernel modules are imported
        from bytessm.kernels.triton import stack as k

        if len(states) != len(self.blocks):
            raise ValueError(f"{len(self.blocks)} blocks but {len(states)} states")
        device = states[0].conv.device
        keep, rows = [], []

        def addr(t: Tensor | None, *, f32: bool = False) -> int:
            """Address of t (float32 and contiguous, copied if it is not), 16-byte aligned:
            the kernel's vector loads assume it (`_addr`); a rare misaligned view is copied."""
            if t is None:
                return 0
            t = t.detach()
            t = (t.float() if f32 else t).contiguous()
            if t.data_ptr() % 16:
                t = t.clone()
            keep.append(t)
            return t.data_ptr()

        for i, (b, s) in enumerate(zip(self.blocks, states)):
            m, ssm = b.mixer, b.mixer.ssm
            for name, t in (("conv window", s.conv), ("SSM state", s.ssm)):
                want = (1, ssm.d_inner, ssm.d_conv - 1 if name == "conv window" else ssm.d_state)
                if (tuple(t.shape) != want or t.dtype != torch.float32 or not t.is_contiguous()
                        or t.device != device or t.data_ptr() % 16):
                    raise ValueError(f"layer {i}'s {name} must be a contiguous, 16-byte aligned "
                                     f"float32 {want} tensor on {device}, got "
                                     f"{tuple(t.shape)} {t.dtype} on {t.device}")
            row = [0] * k.KINDS.value
            for col, t, f32 in (
                    (k.IN_W, m.in_proj.weight, False), (k.IN_B, m.in_proj.bias, True),
                    (k.CONV_W, ssm.conv1d.weight[:, 0, :], True),
                    (k.CONV_B, ssm.conv1d.bias, True), (k.X_W, ssm.x_proj.weight, False),
                    (k.DT_W, ssm.dt_proj.weight, False), (k.DT_B, ssm.dt_proj.bias, True),
                    (k.STATE_A, ssm._step_A(), True), (k.D_SKIP, ssm.D, True),
                    (k.OUT_W, m.out_proj.weight, False), (k.OUT_B, m.out_proj.bias, True),
                    (k.NORM_W, b.norm.weight, True)):
                row[col.value] = addr(t, f32=f32)
            row[k.CONV_S.value], row[k.SSM_S.value] = s.conv.data_ptr(), s.ssm.data_ptr()
            rows.append(row)
        first = self.blocks[0]
        m0 = first.mixer
        self.layers = k.StackLayers(
            table=torch.tensor(rows, dtype=torch.int64).to(device), keep=keep,
            d_model=m0.in_proj.weight.shape[1], d_inner=m0.d_inner,
            dt_rank=m0.ssm.dt_rank, d_state=m0.ssm.d_state, d_conv=m0.ssm.d_conv,
            eps=first.norm.eps, weight_dtype=m0.in_proj.weight.dtype,
            in_bias=m0.in_proj.bias is not None, out_bias=m0.out_proj.bias is not None,
            conv_bias=m0.ssm.conv1d.bias is not None)
        self.workspace = k.StackWorkspace.new(self.layers, device)
        self._key = self._key_of(states)

    @torch.no_grad()
    def __call__(self, residual: Tensor, states: Sequence[MambaState], **launch) -> Tensor:
        """`launch`: the kernel's `num_warps` / `times` (benchmarks only)."""
        from bytessm.kernels.triton.stack import mamba_stack_step_triton
        if self._key_of(states) != self._key:
            self._build(states)
        return mamba_stack_step_triton(self.layers, residual, self.workspace, **launch)
