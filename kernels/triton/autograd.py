"""The scan as two `torch.library` custom ops with fake (meta) kernels and registered autograd.

    bytessm::selective_scan_fwd  -> out, last_state, states
    bytessm::selective_scan_bwd  -> du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state

Being opaque custom ops, they trace into `torch.compile(fullgraph=True)` graphs as single
nodes (the fake kernels give the output shapes without running anything), and autograd
calls the backward op with the forward's saved chunk states. In eager mode the same
launchers run through a plain `torch.autograd.Function` (`_EagerScan`), which skips the
dispatcher's per-call host work. `selective_scan_triton` has the
signature of `reference.selective_scan_sequential`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import scan

f32 = torch.float32


@torch.library.custom_op("bytessm::selective_scan_fwd", mutates_args=())
def selective_scan_fwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                       D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
                       initial_state: Optional[Tensor], cu_seqlens: Optional[Tensor],
                       delta_softplus: bool, reverse: bool
                       ) -> tuple[Tensor, Tensor, Tensor]:
    return scan.scan_forward(u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens,
                             delta_softplus, reverse)


@selective_scan_fwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens, delta_softplus, reverse):
    batch, dim, length = u.shape
    dstate = A.shape[1]
    nseq = batch if cu_seqlens is None else cu_seqlens.shape[0] - 1
    nc = scan.num_saved(length, int(dstate))
    return (u.new_empty((batch, dim, length)), u.new_empty((nseq, dim, dstate), dtype=f32),
            u.new_empty((batch, nc, dim, dstate), dtype=f32))


@torch.library.custom_op("bytessm::selective_scan_bwd", mutates_args=())
def selective_scan_bwd(dout: Tensor, dlast: Optional[Tensor], u: Tensor, delta: Tensor,
                       A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor], z: Optional[Tensor],
                       delta_bias: Optional[Tensor], initial_state: Optional[Tensor],
                       cu_seqlens: Optional[Tensor], states: Tensor,
                       delta_softplus: bool, reverse: bool
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                  Tensor]:
    return scan.scan_backward(dout, dlast, u, delta, A, B, C, D, z, delta_bias, initial_state,
                              cu_seqlens, states, delta_softplus, reverse)


@selective_scan_bwd.register_fake
def _(dout, dlast, u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens, states,
      delta_softplus, reverse):
    def like(t):
        if t is None:
            return u.new_empty(0)
        return torch.empty_like(t, memory_format=torch.contiguous_format)
    return (like(u), like(delta), like(A), like(B), like(C), like(D), like(z), like(delta_bias),
            like(initial_state))


def _setup_context(ctx, inputs, output):
    (u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens, softplus, reverse) = inputs
    _, _, states = output
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens,
                          states)
    ctx.softplus, ctx.reverse = softplus, reverse
    # an output the loss does not use gets None, not zeros: the usual last state is then not
    # read (HAS_DLAST off) and no zero tensor is made for it
    ctx.set_materialize_grads(False)


def _grads(bwd, ctx, dout, dlast):
    """The gradients of the forward's 12 inputs, from `bwd` (the backward op, or in eager
    mode its launcher)."""
    u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens, states = ctx.saved_tensors
    if dout is None:  # only the last state reaches the loss
        dout = u.new_zeros(()).expand(u.shape)
    grads = bwd(dout, dlast, u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens,
                states, ctx.softplus, ctx.reverse)
    du, ddelta, dA, dB, dC, dD, dz, dbias, dh0 = grads
    present = lambda g, t: None if t is None else g  # noqa: E731
    return (du, ddelta, dA, dB, dC, present(dD, D), present(dz, z), present(dbias, delta_bias),
            present(dh0, initial_state), None, None, None)


def _backward(ctx, dout, dlast, _dstates):
    return _grads(torch.ops.bytessm.selective_scan_bwd, ctx, dout, dlast)


selective_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


class _EagerScan(torch.autograd.Function):
    """The same forward and backward as the custom ops, without the dispatcher: in eager mode
    the ops' wrappers (schema defaults, the outputs' aliasing check, the dynamo guard) cost
    host time that small shapes feel (the H200 machine's host, 8x2K: 0.37 ms per forward
    through the op against 0.22 this way, 1.59 against 1.33 per forward+backward, where the
    kernels take 1.44 ms). Under torch.compile the custom ops are what is traced."""

    @staticmethod
    def forward(ctx, *inputs):
        out, last, states = scan.scan_forward(*inputs)
        _setup_context(ctx, inputs, (out, last, states))
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        return _grads(scan.scan_backward, ctx, dout, dlast)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=True, initial_state=None, return_last_state=False,
                          reverse=False, cu_seqlens=None):
    """The scan on the Triton kernels; same contract as `reference.selective_scan_sequential`."""
    args = (u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens, delta_softplus,
            reverse)
    if torch.compiler.is_compiling():
        out, last, _ = torch.ops.bytessm.selective_scan_fwd(*args)
    else:
        out, last = _EagerScan.apply(*args)
    return (out, last) if return_last_state else out
