"""Launchers of the selective-scan kernels: tensors in, tensors out, no autograd.

    out, last_state, states, dtsum = scan_forward(u, delta, A, B, C, D, z, delta_bias,
                                                  initial_state, cu_seqlens, softplus, reverse)
    du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state = scan_backward(
        dout, dlast_state, <the forward's inputs>, states, dtsum, softplus, reverse)

Shapes are those of `ops.selective_scan`; u, delta, z, B, C may have any strides (a unit
stride along the length is what makes the loads coalesce). `states` (batch, chunks, dim,
dstate) and `dtsum` (batch, chunks, dim), float32, are the forward's saved chunk entering
states and per-chunk summed dt. Gradients of absent optional inputs are empty tensors.
"""
from __future__ import annotations

import torch
import triton
from torch import Tensor

from .carry import chunk_carry_kernel
from .configs import n_pad, scan_config, splits
from .scan_bwd import chunk_scan_bwd_kernel, chunk_state_bwd_kernel
from .scan_fwd import chunk_scan_fwd_kernel, chunk_state_fwd_kernel

f32 = torch.float32


def num_chunks(length: int, dstate: int) -> int:
    return triton.cdiv(length, scan_config(dstate).chunk)


def _grouped(M: Tensor) -> Tensor:
    """B or C as a (batch, groups, dstate, length) view."""
    return M if M.dim() == 4 else M.unsqueeze(1)


def _sequences(cu_seqlens: Tensor | None, batch: int, length: int, chunk: int, reverse: bool):
    """Per position: the index of its packed sequence (int32, or None without cu_seqlens);
    per chunk: 1.0 if the carry crosses it, 0.0 if a sequence starts inside it."""
    if cu_seqlens is None:
        return None, None, batch
    dev = cu_seqlens.device
    pos = torch.arange(length, device=dev)
    seq = torch.searchsorted(cu_seqlens[1:].contiguous().long(), pos, right=True).to(torch.int32)
    c = torch.arange(triton.cdiv(length, chunk), device=dev)
    if reverse:  # scan-last position of chunk c is its lowest, the one before it in scan order its highest + 1
        last, before = c * chunk, ((c + 1) * chunk).clamp(max=length - 1)
    else:
        last, before = (c * chunk + chunk - 1).clamp(max=length - 1), (c * chunk - 1).clamp(min=0)
    keep = (seq[last] == seq[before]).to(f32)
    return seq, keep, cu_seqlens.numel() - 1


def _carry(values: Tensor, dtsum: Tensor, A: Tensor, keep: Tensor | None, backwards: bool, cfg):
    batch, nc, dim, dstate = values.shape
    grid = (triton.cdiv(dim * dstate, cfg.block_dn), batch)
    chunk_carry_kernel[grid](values, dtsum, A, keep, nc, dim, dstate,
                             HAS_KEEP=keep is not None, BACKWARDS=backwards,
                             BLOCK_DN=cfg.block_dn, BLOCK_C=cfg.block_c,
                             num_warps=cfg.warps_carry)


def scan_forward(u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens,
                 softplus: bool, reverse: bool):
    batch, dim, length = u.shape
    dstate = A.shape[1]
    Bg, Cg = _grouped(B), _grouped(C)
    groups = Bg.shape[1]
    cfg = scan_config(dstate)
    nc = triton.cdiv(length, cfg.chunk)
    A = A.to(f32).contiguous()
    seq, keep, nseq = _sequences(cu_seqlens, batch, length, cfg.chunk, reverse)
    h0 = None if initial_state is None else initial_state.to(f32).contiguous()
    out = torch.empty((batch, dim, length), device=u.device, dtype=u.dtype)
    last = h0.clone() if h0 is not None else u.new_zeros((nseq, dim, dstate), dtype=f32)
    states = torch.empty((batch, nc, dim, dstate), device=u.device, dtype=f32)
    dtsum = torch.empty((batch, nc, dim), device=u.device, dtype=f32)
    if length == 0:
        return out, last, states, dtsum

    dg = dim // groups
    s = splits(dg, cfg.block_d, batch * groups, nc, cfg.programs)
    ds = triton.cdiv(triton.cdiv(dg, s), cfg.block_d) * cfg.block_d
    grid = (nc, batch * groups * s)
    common = dict(HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus, HAS_H0=h0 is not None,
                  HAS_CU=seq is not None, REVERSE=reverse, CHUNK=cfg.chunk,
                  BLOCK_D=cfg.block_d, N_PAD=n_pad(dstate), num_warps=cfg.warps)
    chunk_state_fwd_kernel[grid](
        u, delta, delta_bias, A, Bg, h0, seq, states, dtsum,
        length, dim, dstate, groups, s, dg, ds,
        *u.stride(), *delta.stride(), *Bg.stride(), **common)
    _carry(states, dtsum, A, keep, reverse, cfg)
    zs = z.stride() if z is not None else (0, 0, 0)
    chunk_scan_fwd_kernel[grid](
        u, delta, delta_bias, A, Bg, Cg, D, z, h0, seq, states, out, last,
        length, dim, dstate, groups, s, dg, ds,
        *u.stride(), *delta.stride(), *Bg.stride(), *Cg.stride(), *zs, *out.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, **common)
    return out, last, states, dtsum


def scan_backward(dout, dlast, u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens,
                  states, dtsum, softplus: bool, reverse: bool):
    batch, dim, length = u.shape
    dstate = A.shape[1]
    Bg, Cg = _grouped(B), _grouped(C)
    groups = Bg.shape[1]
    cfg = scan_config(dstate)
    nc = states.shape[1]
    A32 = A.to(f32).contiguous()
    seq, keep, nseq = _sequences(cu_seqlens, batch, length, cfg.chunk, reverse)
    h0 = None if initial_state is None else initial_state.to(f32).contiguous()
    dlast = None if dlast is None else dlast.to(f32).contiguous()
    dev = u.device

    du = torch.empty((batch, dim, length), device=dev, dtype=u.dtype)
    ddelta = torch.empty((batch, dim, length), device=dev, dtype=delta.dtype)
    def empty():  # a distinct placeholder each: custom-op outputs may not alias
        return u.new_empty(0)

    dz = torch.empty((batch, dim, length), device=dev, dtype=z.dtype) if z is not None else empty()
    dA = torch.zeros((dim, dstate), device=dev, dtype=f32)
    dD = torch.zeros(dim, device=dev, dtype=f32) if D is not None else empty()
    dbias = torch.zeros(dim, device=dev, dtype=f32) if delta_bias is not None else empty()
    if h0 is not None:
        dh0 = dlast.clone() if dlast is not None else torch.zeros_like(h0)
    else:
        dh0 = empty()
    dg = dim // groups
    s = splits(dg, cfg.block_d_bwd, batch * groups, nc, cfg.programs)
    ds = triton.cdiv(triton.cdiv(dg, s), cfg.block_d_bwd) * cfg.block_d_bwd
    dBp = torch.empty((s, batch, groups, dstate, length), device=dev, dtype=f32)
    dCp = torch.empty((s, batch, groups, dstate, length), device=dev, dtype=f32)
    if length > 0:
        grid = (nc, batch * groups * s)
        flags = dict(HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus,
                     HAS_DLAST=dlast is not None, HAS_CU=seq is not None, REVERSE=reverse,
                     HAS_Z=z is not None, CHUNK=cfg.chunk, BLOCK_D=cfg.block_d_bwd,
                     N_PAD=n_pad(dstate), num_warps=cfg.warps_bwd)
        zs = z.stride() if z is not None else (0, 0, 0)
        adj = torch.empty_like(states)
        chunk_state_bwd_kernel[grid](
            delta, delta_bias, A32, Cg, dout, z, dlast, seq, adj,
            length, dim, dstate, groups, s, dg, ds,
            *delta.stride(), *Cg.stride(), *dout.stride(), *zs, **flags)
        _carry(adj, dtsum, A32, keep, not reverse, cfg)
        chunk_scan_bwd_kernel[grid](
            u, delta, delta_bias, A32, Bg, Cg, D, z, h0, seq, states, adj, dout, dlast,
            du, ddelta, dz, dBp, dCp, dA, dD, dbias, dh0,
            length, dim, dstate, groups, s, dg, ds,
            *u.stride(), *delta.stride(), *Bg.stride(), *Cg.stride(), *zs, *dout.stride(),
            HAS_H0=h0 is not None, HAS_D=D is not None, **flags)
    dB = (dBp[0] if s == 1 else dBp.sum(0)).view(B.shape).to(B.dtype)
    dC = (dCp[0] if s == 1 else dCp.sum(0)).view(C.shape).to(C.dtype)
    return (du, ddelta, dA.to(A.dtype), dB, dC,
            dD.to(D.dtype) if D is not None else dD, dz,
            dbias.to(delta_bias.dtype) if delta_bias is not None else dbias,
            dh0.to(initial_state.dtype) if initial_state is not None else dh0)
