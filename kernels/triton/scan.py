"""Launchers of the selective-scan kernels: tensors in, tensors out, no autograd.

    out, last_state, states = scan_forward(u, delta, A, B, C, D, z, delta_bias,
                                           initial_state, cu_seqlens, softplus, reverse)
    du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state = scan_backward(
        dout, dlast_state, <the forward's inputs>, states, softplus, reverse)

Shapes are those of `ops.selective_scan`; u, delta, z, B, C may have any strides (a unit
stride along the length is what makes the loads coalesce). `states` (batch, chunks, dim,
dstate) float32 are the forward's saved chunk entering states. Gradients of absent
optional inputs are empty tensors.

The kernels read their inputs' rows up to `row_length(length)`, the length rounded up to a
multiple of 16. Where that is past the length, the inputs are copied into rows of that
length, zero-padded (`_pad`): the rows then start 16-element aligned and the masks of the
loads are constant over 16 positions, so each thread loads its positions as 16-byte
vectors, and the scan runs in that layout. Read unaligned, the loads are one position per
thread and the loop over states runs in that layout: at 197 positions (Vision Mamba's
tokens) the forward's loop had 112 warp shuffles instead of 12, and the forward took 2.43
ms at 128x197 against 1.21 padded (H200, `bench_scan_ab.py`). The outputs are written
straight into unpadded tensors (masked stores, once per chunk). B and C are padded
further, to whole chunks (`bc_row_length`), so that their rows load unmasked. The forward
reads z once per chunk, after its loop over states, so z is not copied for it (its loop
compiles to 246 instructions against 242 with z padded; with z unpadded and `_pad`'s copies
instead of F.pad's, the forward at 1x131071 took 0.83x the time). The copies cost memory
(forward+backward at 1x131071: 4.68 GiB against 3.45 for mamba_ssm's CUDA scan, before the
Gluon backward read its rows unpadded; 3.17 GiB since) and time:
0.24 ms per (1, 1536, 131071) bf16 tensor with `pad.pad_rows_kernel` against 0.20 for a
clone, 0.46 for the strided `copy_` into an empty tensor used before it and 0.59 for F.pad
(the forward at 1x131071 took 0.88x the time with the kernel, twenty-third session);
`BYTESSM_SCAN_CONFIG='{"pad_rows": false}'` reads the rows as they are (`_padded`). The
Gluon backward (`scan_bwd_gluon.py`), whose layouts are explicit, reads u, delta, z and
dout unpadded: without those four copies the backward took 0.86x the time at 8x2047 and
0.88x at 1x131071 (H200, twenty-third session, `bench_scan_ab.py`); B and C are padded
still, and dB and dC come out of rows of `row_length`.
"""
from __future__ import annotations

import dataclasses
import functools
import os

import torch
from torch import Tensor

from .carry import chunk_carry_kernel
from .configs import bwd_chunk, cdiv, n_pad, scan_config, segments
from .gemv import num_sms
from .pad import pad_rows_kernel
from .scan_bwd import scan_bwd_kernel
from .scan_bwd_gluon import scan_bwd_gluon_kernel
from .scan_fwd import scan_fwd_kernel
from .scan_fwd_gluon import scan_fwd_gluon_kernel

f32 = torch.float32


def num_saved(length: int, dstate: int) -> int:
    """Rows of the forward's saved states: one per backward chunk."""
    return cdiv(length, bwd_chunk(scan_config(dstate, length)))


def row_length(length: int, dstate: int = 16) -> int:
    """The length the kernels read rows at: `length` rounded up to a multiple of 16 (Triton
    specialises integer arguments on divisibility by 16), or `length` itself where the
    configuration has `pad_rows` off."""
    return cdiv(length, 16) * 16 if scan_config(dstate, length).pad_rows else length


def bc_row_length(length: int, dstate: int = 16) -> int:
    """The length of B's and C's rows as the kernels get them: `length` rounded up to whole
    forward chunks (the backward's divide them), so that the rows load unmasked in every
    chunk (a masked row of int32 pairs loads one word per instruction: 305 instructions in
    the forward's loop over states at 1x131071 against 254 unmasked); `length` itself with
    `pad_rows` off. B and C are dstate rows per batch row, against dim rows of u: their
    copies are small."""
    cfg = scan_config(dstate, length)
    return cdiv(length, cfg.chunk) * cfg.chunk if cfg.pad_rows else length


def _pad(x: Tensor | None, lp: int) -> Tensor | None:
    """`x` (..., length) as zero-padded rows of `lp` positions (itself where lp = length).
    On CUDA, a (batch, dim, length) tensor in one pass of `pad_rows_kernel` (`pad.py`);
    otherwise an empty tensor whose tail is zeroed and head copied into."""
    if x is None or x.shape[-1] == lp:
        return x
    length = x.shape[-1]
    out = x.new_empty((*x.shape[:-1], lp))
    if x.is_cuda and x.dim() == 3:
        block = 1024
        pad_rows_kernel[(x.shape[0] * x.shape[1] * cdiv(lp, block),)](
            x, out, x.shape[1], length, lp, *x.stride(), BLOCK=block, num_warps=4)
        return out
    out[..., length:].zero_()
    out[..., :length].copy_(x)
    return out


def _padded(length: int, dstate: int, B: Tensor, C: Tensor, *tiles: Tensor | None):
    """The rows as the kernels read them: the row lengths (`row_length`, `bc_row_length`),
    B and C as (batch, groups, dstate, lbc) and each (batch, dim, length) tile padded to lp."""
    lp, lbc = row_length(length, dstate), bc_row_length(length, dstate)
    return (lp, lbc, _pad(_grouped(B), lbc), _pad(_grouped(C), lbc),
            [_pad(x, lp) for x in tiles])


def _grouped(M: Tensor) -> Tensor:
    """B or C as a (batch, groups, dstate, length) view."""
    return M if M.dim() == 4 else M.unsqueeze(1)


def _sequences(cu_seqlens: Tensor | None, length: int, span: int, reverse: bool):
    """Per position: the index of its packed sequence (int32, or None without cu_seqlens);
    per segment of `span` positions: 1.0 if the carry crosses it, 0.0 if a sequence starts
    inside it."""
    if cu_seqlens is None:
        return None, None
    dev = cu_seqlens.device
    pos = torch.arange(length, device=dev)
    seq = torch.searchsorted(cu_seqlens[1:].contiguous().long(), pos, right=True).to(torch.int32)
    c = torch.arange(cdiv(length, span), device=dev)
    # the scan-last position of segment c; for reverse its lowest, and the one before it in
    # scan order its highest + 1
    if reverse:
        last, before = c * span, ((c + 1) * span).clamp(max=length - 1)
    else:
        last, before = (c * span + span - 1).clamp(max=length - 1), (c * span - 1).clamp(min=0)
    keep = (seq[last] == seq[before]).to(f32)
    return seq, keep


def _plan(batch: int, dim: int, groups: int, length: int, dstate: int, backward: bool,
          packed: bool = False):
    """Configuration, chunks, chunks per segment and segments of one call (`packed`: with
    cu_seqlens). Cached per shape, BYTESSM_SCAN_CONFIG and TRITON_INTERPRET (what
    `configs.scan_config` reads): a training step asks the same question every call, and the
    answer's dataclass copies cost host time that small shapes feel."""
    return _plan_for(os.environ.get("BYTESSM_SCAN_CONFIG", ""),
                     os.environ.get("TRITON_INTERPRET") == "1", batch, dim, groups, length,
                     dstate, backward, packed)


@functools.lru_cache(maxsize=1024)
def _plan_for(_overrides: str, _interpret: bool, batch: int, dim: int, groups: int, length: int,
              dstate: int, backward: bool, packed: bool):
    cfg = scan_config(dstate, length)
    if backward:  # the backward's chunk is its own, its programs `block_d_bwd` channels ...
        block_d, cap = cfg.block_d_bwd, cfg.maxnreg_bwd
        if batch * groups * cdiv(dim // groups, block_d) < cfg.bwd_fill:
            # ... or one, where that grid would leave the GPU underfilled
            block_d = 1
            cap = (cfg.maxnreg_cu if packed else 0) or cfg.maxnreg_bwd_one
        cfg = dataclasses.replace(cfg, chunk=bwd_chunk(cfg), block_d=block_d, maxnreg_bwd=cap)
    elif packed and cfg.maxnreg_cu and length >= cfg.long_from:
        cfg = dataclasses.replace(cfg, maxnreg=cfg.maxnreg_cu)
    nc = cdiv(length, cfg.chunk)
    rows = batch * groups * cdiv(dim // groups, cfg.block_d)
    programs = cfg.programs
    if backward and cfg.block_d > 1 and cfg.bwd_fill:
        programs = min(programs, cfg.bwd_fill)  # the wide backward's programs fit half as many
    nseg = segments(rows, nc, programs, cfg.seg_chunks)
    cps = max(cdiv(nc, nseg), 1)
    return cfg, nc, cps, cdiv(nc, cps) if nc else 1


def _bc_pairs(Bg: Tensor, Cg: Tensor, length: int) -> bool:
    """Whether the kernels may read the rows of B and C as int32 words of two bf16 positions
    (`common.load_bc_row`'s PAIRS): bf16, unit stride along the length, an even length, and
    every row start 4-byte aligned."""
    return length % 2 == 0 and all(
        M.dtype == torch.bfloat16 and M.stride(-1) == 1 and M.data_ptr() % 4 == 0
        and all(s % 2 == 0 for s in M.stride()[:-1]) for M in (Bg, Cg))


def _strides(x: Tensor | None) -> tuple:
    """A (batch, dim, length) tile's strides as kernel arguments; zeros for an absent one."""
    return x.stride() if x is not None else (0, 0, 0)


def _maxnreg(limit: int) -> dict:
    """ptxas's register cap as a launch option (0: none). Not for the interpreter."""
    return {"maxnreg": limit} if limit and os.environ.get("TRITON_INTERPRET") != "1" else {}


def _gluon_backward(cfg, u: Tensor, reverse: bool, packed: bool, lbc: int, dg: int) -> int:
    """Channels per program of the Gluon backward where it applies, else 0: on CUDA (not the
    interpreter), either scan order, no cu_seqlens, chunks of 256 (its layouts' 32 lanes of
    8 positions) whose B and C rows load whole, channels per group (`dg`) a multiple of its
    warps (`gluon_bwd`, or `gluon_bwd_reverse` on reverse scans; halved down to 2 until they
    divide `dg`), and at least 1024 warps (a channel each) once split into
    `_gluon_segments`."""
    w = cfg.gluon_bwd_reverse if reverse and cfg.gluon_bwd_reverse else cfg.gluon_bwd
    while w > 2 and dg % w:
        w //= 2
    ok = (w and u.is_cuda and os.environ.get("TRITON_INTERPRET") != "1"
          and not packed and cfg.chunk == 256 and lbc % cfg.chunk == 0 and dg % w == 0)
    batch, dim, length = u.shape
    return w if ok and batch * dim * _gluon_segments(cfg, batch * dim // w, length, w) >= 1024 \
        else 0


def _gluon_forward(cfg, u: Tensor, reverse: bool, packed: bool, nseg: int, lbc: int,
                   pairs: bool, dg: int, dstate: int) -> bool:
    """Whether the forward's full pass runs in Gluon (`scan_fwd_gluon.py`, `gluon_fwd`
    channels per program): on CUDA (not the interpreter) with cp.async and the shared memory
    its B and C rows take (`_staging_fits`), in scan order or reversed (`gluon_fwd_reverse`),
    without cu_seqlens, in one segment, at chunks of 512, twice the backward's, whose B and C
    rows load whole as words of two bf16 positions (`pairs`: `_bc_pairs`), with channels per
    group (`dg`) a multiple of its channels per program, and dstate up to 16 (what was
    measured)."""
    w = cfg.gluon_fwd
    return bool(w and u.is_cuda and os.environ.get("TRITON_INTERPRET") != "1"
                and (not reverse or cfg.gluon_fwd_reverse) and not packed and nseg == 1
                and dg % w == 0
                and cfg.chunk == 512 and bwd_chunk(cfg) == cfg.chunk // 2
                and lbc % cfg.chunk == 0 and pairs and dstate <= 16
                and _staging_fits(u.device.index, cfg.chunk, n_pad(dstate)))


@functools.lru_cache(maxsize=None)
def _staging_fits(device_index: int | None, chunk: int, npad: int) -> bool:
    """Whether the GPU has cp.async (NVIDIA, compute capability 8.0 on: the kernel copies with
    Gluon's Ampere async copies) and room in one SM's shared memory for two programs of the
    Gluon forward: two chunks' B and C rows each (4 x npad x chunk bf16, 64 KB at 16 x 512;
    an H200 holds three)."""
    props = torch.cuda.get_device_properties(device_index)
    return (torch.version.hip is None and props.major >= 8
            and props.shared_memory_per_multiprocessor >= 2 * 8 * npad * chunk)


def _gluon_segments(cfg, rows: int, length: int, w: int) -> int:
    """Segments of the Gluon backward over `rows` programs of `w` channels: as many as keep
    the grid within the `programs` warps the Triton kernels fill the GPU with (1x128K at
    d_inner 1536: 768 programs of two warps, one segment; at 512, three)."""
    return segments(rows, cdiv(length, cfg.chunk), cfg.programs // w, cfg.seg_chunks)


def _waves(programs: int, warps: int, cap: int, sms: int) -> int:
    """Waves of a grid of `programs` programs of `warps` warps under a cap of `cap` registers
    a thread, on `sms` multiprocessors of 64K registers each."""
    return cdiv(programs, sms * (65536 // (32 * warps * cap)))


def _gluon_cap(cfg, programs: int, w: int, sms: int) -> int:
    """The Gluon backward's register cap: `maxnreg_gluon` where its grid of `programs`
    W-warp programs takes no more waves (`_waves`) than at `maxnreg_bwd_one`. More
    registers per thread fit fewer programs at once; at one wave either way (1x128K: 768
    two-warp programs) the higher cap is free."""
    hi, lo = cfg.maxnreg_gluon, cfg.maxnreg_bwd_one
    return hi if hi and lo and _waves(programs, w, hi, sms) <= _waves(programs, w, lo, sms) \
        else lo


def _carry(values: Tensor, seg_dt: Tensor, A: Tensor, keep: Tensor | None, backwards: bool, cfg):
    batch, nseg, dim, dstate = values.shape
    grid = (cdiv(dim * dstate, cfg.block_dn), batch)
    chunk_carry_kernel[grid](values, seg_dt, A, keep, nseg, dim, dstate,
                             HAS_KEEP=keep is not None, BACKWARDS=backwards,
                             BLOCK_DN=cfg.block_dn, BLOCK_C=cfg.block_c,
                             num_warps=cfg.warps_carry)


def scan_forward(u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens,
                 softplus: bool, reverse: bool):
    batch, dim, length = u.shape
    dstate = A.shape[1]
    lp, lbc, Bg, Cg, (u, delta) = _padded(length, dstate, B, C, u, delta)
    groups = Bg.shape[1]
    cfg, _nc, cps, nseg = _plan(batch, dim, groups, length, dstate, backward=False,
                                packed=cu_seqlens is not None)
    A = A.to(f32).contiguous()
    seq, keep = _sequences(cu_seqlens, length, cps * cfg.chunk, reverse)
    nseq = batch if cu_seqlens is None else cu_seqlens.numel() - 1
    h0 = None if initial_state is None else initial_state.to(f32).contiguous()
    out = torch.empty((batch, dim, length), device=u.device, dtype=u.dtype)
    states = torch.empty((batch, num_saved(length, dstate), dim, dstate), device=u.device,
                         dtype=f32)

    def entering():  # per sequence, the state entering it: `last` where a sequence is empty
        return h0.clone() if h0 is not None else u.new_zeros((nseq, dim, dstate), dtype=f32)
    if length == 0:
        return out, entering(), states
    dg = dim // groups
    if _gluon_forward(cfg, u, reverse, seq is not None, nseg, lbc, _bc_pairs(Bg, Cg, lbc), dg,
                      dstate):
        # one segment: the kernel writes the last state straight into `last` (its `ends`,
        # (batch, 1, dim, dstate), is the same memory)
        last = torch.empty((batch, dim, dstate), device=u.device, dtype=f32)
        if reverse:  # flipped (rows of whole chunks already), which the kernel stages ascending
            Bg, Cg = Bg.flip(-1), Cg.flip(-1)
        scan_fwd_gluon_kernel[(batch * dim // cfg.gluon_fwd,)](
            u, delta, delta_bias, A, Bg, Cg, D, z, h0, states, last, out, length, dim, dstate,
            groups, dg, *u.stride(), *delta.stride(), *Bg.stride(), *Cg.stride(),
            *_strides(z), *out.stride(), HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus,
            HAS_H0=h0 is not None, HAS_D=D is not None, HAS_Z=z is not None, CHUNK=cfg.chunk,
            W=cfg.gluon_fwd, N_PAD=n_pad(dstate), PAIRS=cfg.gluon_fwd_pairs, REVERSE=reverse,
            num_warps=cfg.gluon_fwd, **_maxnreg(cfg.maxnreg_gluon_fwd or cfg.maxnreg))
        return out, last, states
    # with cu_seqlens the kernel writes each sequence's last state into `last`; without, it
    # is taken from `ends` below
    last = entering() if seq is not None else None
    ends = torch.empty((batch, nseg, dim, dstate), device=u.device, dtype=f32)
    seg_dt = torch.empty((batch, nseg, dim), device=u.device, dtype=f32) if nseg > 1 else None
    grid = (batch * groups * cdiv(dg, cfg.block_d), nseg)
    if reverse:  # flipped, in rows of whole chunks: the kernel mirrors each chunk
        lbc = cdiv(length, cfg.chunk) * cfg.chunk                 # (`common.chunk_rows`)
        Bg, Cg = (_pad(M, lbc).flip(-1) for M in (Bg, Cg))
    args = (u, delta, delta_bias, A, Bg, Cg, D, z, h0, seq, states, ends, seg_dt, out, last,
            length, lp, dim, dstate, groups, dg, cps, *u.stride(), *delta.stride(),
            *Bg.stride(), *Cg.stride(), *_strides(z), *out.stride())
    flags = dict(HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus, HAS_H0=h0 is not None,
                 HAS_CU=seq is not None, REVERSE=reverse, HAS_D=D is not None,
                 HAS_Z=z is not None, CHUNK=cfg.chunk, BLOCK_D=cfg.block_d,
                 N_PAD=n_pad(dstate), UNROLL=cfg.unroll, BC_WHOLE=lbc % cfg.chunk == 0,
                 BC_PAIRS=_bc_pairs(Bg, Cg, lbc), SAVE=bwd_chunk(cfg),
                 GROUP_STORE=cfg.chunk <= cfg.group_store_chunk,
                 FROM_T0=seq is None and cfg.from_t0,
                 num_warps=cfg.warps, **_maxnreg(cfg.maxnreg))
    if nseg > 1:
        scan_fwd_kernel[grid](*args, STATE_ONLY=True, HAS_ENTER=False, **flags)
        _carry(ends, seg_dt, A, keep, reverse, cfg)
    scan_fwd_kernel[grid](*args, STATE_ONLY=False, HAS_ENTER=nseg > 1, **flags)
    if cu_seqlens is None:
        last = ends[:, 0 if reverse else nseg - 1].clone()
    return out, last, states


def scan_backward(dout, dlast, u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens,
                  states, softplus: bool, reverse: bool):
    batch, dim, length = u.shape
    dstate = A.shape[1]
    lp, lbc, Bg, Cg, _ = _padded(length, dstate, B, C)   # u, delta, z, dout: below
    groups = Bg.shape[1]
    cfg, nc, cps, nseg = _plan(batch, dim, groups, length, dstate, backward=True,
                               packed=cu_seqlens is not None)
    assert nc == states.shape[1], "the forward saved its states at another granularity"
    A32 = A.to(f32).contiguous()
    seq, keep = _sequences(cu_seqlens, length, cps * cfg.chunk, reverse)
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
    dg = dim // groups
    w = _gluon_backward(cfg, u, reverse, seq is not None, lbc, dg) if length > 0 else 0
    if w:  # the Gluon backward's own segments
        grid_g = batch * groups * (dg // w)
        gseg = _gluon_segments(cfg, grid_g, length, w)
        cap = _gluon_cap(cfg, grid_g * gseg, w, num_sms(dev.index))
        if reverse and cap != cfg.maxnreg_gluon:
            # its mirrored walk spills under the lower cap (384 bytes at 8x2K, where it took
            # 1.06x the Triton kernel's time; 112 bytes in scan order)
            w = 0
        else:
            cps = cdiv(nc, gseg)
            nseg = cdiv(nc, cps)
    # rows as u's; the Gluon backward of a reverse scan adds into them flipped, in rows of
    # whole chunks (see scan_bwd_gluon.py)
    rows = lbc if w and reverse else lp
    dB = torch.zeros((batch, groups, dstate, rows), device=dev, dtype=f32)
    dC = torch.zeros((batch, groups, dstate, rows), device=dev, dtype=f32)
    if h0 is not None:
        dh0 = dlast.clone() if dlast is not None else torch.zeros_like(h0)
    else:
        dh0 = empty()
    if length > 0:
        adj = torch.empty_like(states)
        ends = torch.empty((batch, nseg, dim, dstate), device=dev, dtype=f32)
        seg_dt = torch.empty((batch, nseg, dim), device=dev, dtype=f32) if nseg > 1 else None
        if not w or nseg > 1:
            # the Triton kernel: the whole backward, or the adjoint-only pass and the carry
            # that give the Gluon kernel's segments what arrives at their ends. It reads rows
            # padded to lp (copies dropped after it; the adjoint-only pass does not read u)
            tu = u if w else _pad(u, lp)
            tdelta, tz, tdout = (_pad(x, lp) for x in (delta, z, dout))
            cu_dh0 = dh0 if (h0 is not None and seq is not None) else None
            args = (tu, tdelta, delta_bias, A32, Bg, Cg, D, tz, h0, seq, states, adj, ends,
                    seg_dt, tdout, dlast, du, ddelta, dz, dB, dC, dA, dD, dbias, cu_dh0,
                    length, lp, dim, dstate, groups, dg, cps, *tu.stride(), *tdelta.stride(),
                    *Bg.stride(), *Cg.stride(), *_strides(tz), *tdout.stride())
            flags = dict(HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus,
                         HAS_H0=h0 is not None, HAS_DLAST=dlast is not None,
                         HAS_CU=seq is not None, REVERSE=reverse, HAS_D=D is not None,
                         HAS_Z=z is not None, CHUNK=cfg.chunk, BLOCK_D=cfg.block_d,
                         N_PAD=n_pad(dstate), UNROLL=cfg.unroll, BC_WHOLE=lbc % cfg.chunk == 0,
                         num_warps=cfg.warps_bwd, **_maxnreg(cfg.maxnreg_bwd))
            grid = (batch * groups * cdiv(dg, cfg.block_d), nseg)
            if nseg > 1:
                scan_bwd_kernel[grid](*args, ADJ_ONLY=True, HAS_ENTER=False, **flags)
                _carry(ends, seg_dt, A32, keep, not reverse, cfg)
            if not w:
                scan_bwd_kernel[grid](*args, ADJ_ONLY=False, HAS_ENTER=nseg > 1, **flags)
            del args, tu, tdelta, tz, tdout
        if w:  # the rows are read unpadded; `ends` gets what reaches each segment's start
            gB, gC = (Bg.flip(-1), Cg.flip(-1)) if reverse else (Bg, Cg)
            scan_bwd_gluon_kernel[(grid_g, nseg)](
                u, delta, delta_bias, A32, gB, gC, D, z, states, adj, ends, dout, dlast,
                du, ddelta, dz, dB, dC, dA, dD, dbias, length, rows, dim, dstate, groups, dg,
                cps, *u.stride(), *delta.stride(), *gB.stride(), *gC.stride(), *_strides(z),
                *dout.stride(), HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus,
                HAS_DLAST=dlast is not None, HAS_D=D is not None, HAS_Z=z is not None,
                HAS_ENTER=nseg > 1, REVERSE=reverse, CHUNK=cfg.chunk, W=w,
                N_PAD=n_pad(dstate), num_warps=w, **_maxnreg(cap),
                TWO_PASS=cfg.gluon_bwd_two_pass and cap == cfg.maxnreg_gluon)
            if reverse:   # positions [0, length) are the flipped rows' last `length`
                dB, dC = (x[..., rows - length:].flip(-1) for x in (dB, dC))
        if h0 is not None and seq is None:
            dh0 = ends[:, nseg - 1 if reverse else 0].clone()
    if dB.shape[-1] != length:
        dB, dC = dB[..., :length].contiguous(), dC[..., :length].contiguous()
    return (du, ddelta, dA.to(A.dtype), dB.view(B.shape).to(B.dtype),
            dC.view(C.shape).to(C.dtype),
            dD.to(D.dtype) if D is not None else dD, dz,
            dbias.to(delta_bias.dtype) if delta_bias is not None else dbias,
            dh0.to(initial_state.dtype) if initial_state is not None else dh0)
