"""The decode step of a whole stack of Mamba blocks as one persistent kernel.

    out = mamba_stack_step_triton(layers, residual, workspace)     # batch 1

A batch-1 decode step of the 353M model is 53 layers x 4 dependent kernels (`gemv.py`,
`decode.py`), 2.35 us each on an H200 (0.50 ms for the blocks, 1.45 TB/s of weights), each
boundary an all-to-all exchange. Here one kernel runs every layer. Its programs stay
resident (one per SM at most: the grid is never larger than the GPU holds at once) and
meet at a grid barrier twice a layer, the two points where the step's maths needs the
whole of something:

    phase A (program p owns channels C_p of d_inner):
        r    = residual of this layer (the previous layer's + its out_proj output)
        x, z = in_proj(rmsnorm(r)) rows C_p          conv step + SiLU on x (window in place)
        dbc += x_proj[:, C_p] @ x[C_p]                 partial sums, float32 atomics
    -- barrier: dbc (dt_low, B, C) complete
    phase B:
        dt   = softplus(dt_proj[C_p] @ dt_low + dt_bias)
        state step on C_p (state in place), y = (C.h + D x) silu(z)
        out += out_proj[:, C_p] @ y[C_p]               partial sums, float32 atomics
    -- barrier: out complete; the next layer's phase A adds it to the residual

Each barrier is split in two: a program arrives (a release), then requests the next
phase's inputs that no other program writes (its weight tiles, and the conv window or the
SSM state), then waits. A release waits for every load the program still has in flight,
so tiles requested before the arrival would be waited for there; requested after it they
stream in while the program waits (`scripts/bench_stack_async.py` measured this on the
H200, and the whole kernel went from 0.70-0.72 to 0.54 ms a step).

Rounding is the layers' own, as in the kernels it replaces: the normalised input and every
product's output are rounded to the weights' dtype (x_proj's and out_proj's after their
float32 sums are complete), the conv output before its SiLU, y before out_proj. Only the
order of the float32 sums differs, and the atomics make it vary from run to run: results
are not bitwise reproducible on the GPU (they agree to float32 summation order).

The grid barrier is a sense-reversing counter on one uint32 (`_grid_barrier`): it never
needs resetting, and the float32 accumulators are zeroed by the kernel itself after their
last read, so consecutive launches (a CUDA graph's replays) need nothing between them.
Under TRITON_INTERPRET=1 programs run one after another, which a barrier would deadlock:
the launcher then runs one program that takes every channel block in turn (each phase
loops over its blocks), the same code.

The layers are passed as a table of addresses (`StackLayers`), one row per layer, so a
53-layer model needs no copy of its weights; the states are read and written where the
model keeps them.

Measured on an H200 (scripts/bench_stack.py, docs/generation.md): 0.54 ms a step of the
353M model against 0.50 ms on the blocks' own kernels, so `bytessm.nn.stack` leaves it off
by default. Its timeline: 10 us a layer, of which the two barriers take 2.5 and 3.5 us
(programs arrive up to 2 us apart; the last arrival is seen 0.9-1.6 us later).
"""
from __future__ import annotations

import dataclasses
import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import LOG2E, softplus
from .configs import cdiv, next_pow2
from .decode import conv_window_step
from .gemv import num_sms

# columns of the address table (`StackLayers`), one row per layer
(IN_W, IN_B, CONV_W, CONV_B, X_W, DT_W, DT_B, STATE_A, D_SKIP, OUT_W, OUT_B, NORM_W, CONV_S,
 SSM_S) = (tl.constexpr(i) for i in range(14))
KINDS = tl.constexpr(14)


@triton.jit
def _addr(tab_ptr, l, KIND: tl.constexpr, ELEM: tl.constexpr):
    """Layer l's tensor KIND as a pointer to ELEM, 16-byte aligned (the table's builder
    checks): without the hint Triton cannot vectorise the loads through it."""
    return tl.multiple_of(tl.load(tab_ptr + l * KINDS + KIND).to(tl.pointer_type(ELEM)), 16)


@triton.jit
def _now(TIMING: tl.constexpr):
    """The GPU's global timer in ns (TIMING only: scripts/bench_stack.py --timeline)."""
    if TIMING:
        t = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64,
                                      is_pure=False, pack=1)
    else:
        t = 0
    return t


@triton.jit
def _stamp(times_ptr, pid, l, L, POINT: tl.constexpr, TIMING: tl.constexpr):
    """TIMING: store the global timer as point POINT of (program pid, layer l) of times
    (programs, L, 10); returns that row (called with pid = l = 0 on a row: into the row)."""
    if TIMING:
        row = times_ptr + (pid * L + l) * 10
        tl.store(row + POINT, _now(TIMING))
    else:
        row = times_ptr
    return row


@triton.jit
def _barrier_arrive(sem_ptr):
    """This program's arrival at the grid barrier (`_grid_barrier`); returns the counter it
    saw, for `_barrier_wait`. A release: every earlier memory access of the program,
    outstanding weight loads included, completes before it."""
    tl.debug_barrier()                       # this program's threads are all done
    expected = tl.num_programs(0).to(tl.uint32)
    if tl.program_id(0) == 0:
        add = 0x80000000 - (expected - 1)
    else:
        add = tl.full([], 1, tl.uint32)
    return tl.atomic_add(sem_ptr, add, sem="release")


@triton.jit
def _barrier_wait(sem_ptr, seen):
    """Wait for the barrier that `_barrier_arrive` entered (it saw `seen`) to open. Loads
    requested between the two stream in during the wait."""
    flipped = False
    while not flipped:
        now = tl.atomic_add(sem_ptr, 0, sem="acquire")
        flipped = ((seen ^ now) & 0x80000000) != 0
    tl.debug_barrier()


@triton.jit
def _grid_barrier(sem_ptr):
    """Wait until every program of the grid has arrived here; each program's earlier global
    writes and atomics are visible to all after it. Sense reversal: program 0 adds
    2^31 - (programs - 1), the others 1, so bit 31 of the counter flips exactly when the
    last one arrives and the low bits are back where they were; each waits for the bit to
    differ from what it saw on arrival. No reset between barriers or launches. It polls
    with atomics (measured 1-3% faster in the whole kernel than ld.acquire polling)."""
    _barrier_wait(sem_ptr, _barrier_arrive(sem_ptr))


@triton.jit
def _residual(tab_ptr, res_in_ptr, resbuf_ptr, acc_ptr, l, L, DM, cols, cmask,
              HAS_OUT_BIAS: tl.constexpr, WT: tl.constexpr):
    """Columns `cols` of layer l's input residual (float32): the stack's input for layer 0,
    else layer l-1's input (resbuf, written in its phase A) + its out_proj output, rounded
    to the weights' dtype as the Linear's output is before the float32 add."""
    if l == 0:
        r = tl.load(res_in_ptr + cols, mask=cmask, other=0.0)
    else:
        prev = tl.load(resbuf_ptr + ((l - 1) % 2) * DM + cols, mask=cmask, other=0.0,
                       cache_modifier=".cg")
        out = tl.load(acc_ptr + (l - 1) * DM + cols, mask=cmask, other=0.0,
                      cache_modifier=".cg")
        if HAS_OUT_BIAS:
            out += tl.load(_addr(tab_ptr, l - 1, OUT_B, tl.float32) + cols, mask=cmask,
                           other=0.0)
        r = prev + out.to(WT).to(tl.float32)
    return r


@triton.jit
def _load_in_proj(tab_ptr, l, blk, DM, E, CB: tl.constexpr, DM_PAD: tl.constexpr,
                  WT: tl.constexpr):
    """Layer l's in_proj rows of block blk's channels: x half and z half, (CB, DM_PAD) each."""
    c = blk * CB + tl.arange(0, CB)
    kd = tl.arange(0, DM_PAD)
    mask = (c < E)[:, None] & (kd < DM)[None, :]
    in_w = _addr(tab_ptr, l, IN_W, WT)
    wx = tl.load(in_w + c[:, None] * DM + kd[None, :], mask=mask, other=0.0)
    wz = tl.load(in_w + (E + c)[:, None] * DM + kd[None, :], mask=mask, other=0.0)
    return wx, wz


@triton.jit
def _load_phase_b(tab_ptr, l, blk, DM, E, R, N, CB: tl.constexpr, DM_PAD: tl.constexpr,
                  R_PAD: tl.constexpr, N_PAD: tl.constexpr, WT: tl.constexpr):
    """Phase B's parameters of layer l for block blk: out_proj's columns (DM_PAD, CB), dt_proj's
    rows (CB, R_PAD) float32, dt bias, A (CB, N_PAD), D."""
    c = blk * CB + tl.arange(0, CB)
    cm = c < E
    kd = tl.arange(0, DM_PAD)
    r = tl.arange(0, R_PAD)
    n = tl.arange(0, N_PAD)
    wo = tl.load(_addr(tab_ptr, l, OUT_W, WT) + kd[:, None] * E + c[None, :],
                 mask=(kd < DM)[:, None] & cm[None, :], other=0.0)
    dtw = tl.load(_addr(tab_ptr, l, DT_W, WT) + c[:, None] * R + r[None, :],
                  mask=cm[:, None] & (r < R)[None, :], other=0.0).to(tl.float32)
    dtb = tl.load(_addr(tab_ptr, l, DT_B, tl.float32) + c, mask=cm, other=0.0)
    A = tl.load(_addr(tab_ptr, l, STATE_A, tl.float32) + c[:, None] * N + n[None, :],
                mask=cm[:, None] & (n < N)[None, :], other=0.0)
    Dv = tl.load(_addr(tab_ptr, l, D_SKIP, tl.float32) + c, mask=cm, other=0.0)
    return wo, dtw, dtb, A, Dv


@triton.jit
def _inputs_a(tab_ptr, l, blk, DM, E, NX, HAS_IN_BIAS: tl.constexpr,
              HAS_CONV_BIAS: tl.constexpr, CONV_WIDTH: tl.constexpr, W_PAD: tl.constexpr,
              CB: tl.constexpr, DM_PAD: tl.constexpr, NX_PAD: tl.constexpr, WT: tl.constexpr):
    """Phase A's inputs of layer l for block blk that no other program writes during the
    step: the conv window (CB, W_PAD) float32, oldest input first, and it shifted by one (HBM:
    evicted since the last step, so first); the norm weight, conv weight and bias, in_proj's
    bias (x and z halves), x_proj's columns (NX_PAD, CB). Biases a layer lacks are 0.0."""
    c = blk * CB + tl.arange(0, CB)
    cm = c < E
    kd = tl.arange(0, DM_PAD)
    nx = tl.arange(0, NX_PAD)
    kw = tl.arange(0, W_PAD)
    wptrs = _addr(tab_ptr, l, CONV_S, tl.float32) + c[:, None] * (CONV_WIDTH - 1) + kw[None, :]
    window = tl.load(wptrs, mask=cm[:, None] & (kw < CONV_WIDTH - 1)[None, :], other=0.0)
    shifted = tl.load(wptrs + 1, mask=cm[:, None] & (kw < CONV_WIDTH - 2)[None, :], other=0.0)
    nw = tl.load(_addr(tab_ptr, l, NORM_W, tl.float32) + kd, mask=kd < DM, other=0.0)
    cw = tl.load(_addr(tab_ptr, l, CONV_W, tl.float32) + c[:, None] * CONV_WIDTH + kw[None, :],
                 mask=cm[:, None] & (kw < CONV_WIDTH)[None, :], other=0.0)       # (CB, W_PAD)
    if HAS_CONV_BIAS:
        cb = tl.load(_addr(tab_ptr, l, CONV_B, tl.float32) + c, mask=cm, other=0.0)
    else:
        cb = 0.0
    if HAS_IN_BIAS:
        in_b = _addr(tab_ptr, l, IN_B, tl.float32)
        bx = tl.load(in_b + c, mask=cm, other=0.0)
        bz = tl.load(in_b + E + c, mask=cm, other=0.0)
    else:
        bx = 0.0
        bz = 0.0
    xw = tl.load(_addr(tab_ptr, l, X_W, WT) + nx[:, None] * E + c[None, :],
                 mask=(nx < NX)[:, None] & cm[None, :], other=0.0)               # (NX_PAD, CB)
    return window, shifted, nw, cw, cb, bx, bz, xw


@triton.jit
def _inputs_b(tab_ptr, l, blk, E, N, CB: tl.constexpr, N_PAD: tl.constexpr):
    """Phase B's own input of layer l for block blk: the SSM state (CB, N_PAD) float32, from
    HBM."""
    c = blk * CB + tl.arange(0, CB)
    n = tl.arange(0, N_PAD)
    return tl.load(_addr(tab_ptr, l, SSM_S, tl.float32) + c[:, None] * N + n[None, :],
                   mask=(c < E)[:, None] & (n < N)[None, :], other=0.0)


@triton.jit
def _phase_a(tab_ptr, res_in_ptr, resbuf_ptr, acc_ptr, dbc_ptr, xz_ptr, wx, wz, ins, l, L, blk,
             DM, E, NX, R, N, eps, HAS_IN_BIAS: tl.constexpr,
             HAS_OUT_BIAS: tl.constexpr, HAS_CONV_BIAS: tl.constexpr, CONV_WIDTH: tl.constexpr,
             W_PAD: tl.constexpr, CB: tl.constexpr, DS: tl.constexpr, DM_PAD: tl.constexpr,
             NX_PAD: tl.constexpr, R_PAD: tl.constexpr, N_PAD: tl.constexpr, WT: tl.constexpr,
             trow, TIMING: tl.constexpr):
    """Block blk's channels of layer l up to x_proj (module docstring), with its in_proj rows
    wx, wz (`_load_in_proj`) and its other inputs `ins` (`_inputs_a`); it loads only the
    residual, which the barrier before it completed."""
    window, shifted, nw, cw, cb, bx, bz, xw = ins
    c = blk * CB + tl.arange(0, CB)
    cm = c < E
    kd = tl.arange(0, DM_PAD)
    dm = kd < DM
    nx = tl.arange(0, NX_PAD)
    kw = tl.arange(0, W_PAD)
    wptrs = _addr(tab_ptr, l, CONV_S, tl.float32) + c[:, None] * (CONV_WIDTH - 1) + kw[None, :]
    held = cm[:, None] & (kw < CONV_WIDTH - 1)[None, :]
    r = _residual(tab_ptr, res_in_ptr, resbuf_ptr, acc_ptr, l, L, DM, kd, dm, HAS_OUT_BIAS, WT)
    own = blk * DS + tl.arange(0, DS)        # the residual columns this block writes
    r_own = _residual(tab_ptr, res_in_ptr, resbuf_ptr, acc_ptr, l, L, DM, own, own < DM,
                      HAS_OUT_BIAS, WT)
    tl.store(resbuf_ptr + (l % 2) * DM + own, r_own, mask=own < DM)
    rstd = tl.math.rsqrt(tl.sum(r * r, axis=0) / DM + eps)
    h = (r * rstd * nw).to(WT).to(tl.float32)                                     # in_proj's input
    _stamp(trow, 0, 0, 0, 1, TIMING)
    x = tl.sum(wx.to(tl.float32) * h[None, :], axis=1)
    z = tl.sum(wz.to(tl.float32) * h[None, :], axis=1)
    if HAS_IN_BIAS:
        x += bx
        z += bz
    x = x.to(WT).to(tl.float32)
    _stamp(trow, 0, 0, 0, 2, TIMING)
    xc, new = conv_window_step(window, shifted, x, cw, cb, CONV_WIDTH, True, WT, HAS_CONV_BIAS)
    tl.debug_barrier()  # in place: every read of the old window before any write
    tl.store(wptrs, new, mask=held)
    xc = xc.to(WT)
    tl.store(xz_ptr + c, xc, mask=cm)
    tl.store(xz_ptr + E + c, z.to(WT), mask=cm)
    _stamp(trow, 0, 0, 0, 3, TIMING)
    part = tl.sum(xw.to(tl.float32) * xc.to(tl.float32)[None, :], axis=1)        # (NX_PAD,)
    tl.atomic_add(dbc_ptr + l * NX + nx, part, mask=nx < NX, sem="relaxed")


@triton.jit
def _phase_b(tab_ptr, acc_ptr, dbc_ptr, xz_ptr, wo, dtw, dtb, A, Dv, h, l, L, blk, DM, E, NX,
             R, N, CB: tl.constexpr, DM_PAD: tl.constexpr,
             R_PAD: tl.constexpr, N_PAD: tl.constexpr, WT: tl.constexpr, trow,
             TIMING: tl.constexpr):
    """Block blk's channels of layer l from dt_proj to out_proj's partial sums, with the
    parameters of `_load_phase_b` and the SSM state h (`_inputs_b`); it loads x and z (its
    own, from phase A) and x_proj's sums, which the barrier before it completed."""
    c = blk * CB + tl.arange(0, CB)
    cm = c < E
    kd = tl.arange(0, DM_PAD)
    r = tl.arange(0, R_PAD)
    n = tl.arange(0, N_PAD)
    sm = cm[:, None] & (n < N)[None, :]
    sptrs = _addr(tab_ptr, l, SSM_S, tl.float32) + c[:, None] * N + n[None, :]
    x = tl.load(xz_ptr + c, mask=cm, other=0.0).to(tl.float32)
    z = tl.load(xz_ptr + E + c, mask=cm, other=0.0).to(tl.float32)
    row = dbc_ptr + l * NX
    low = tl.load(row + r, mask=r < R, other=0.0, cache_modifier=".cg")
    Bv = tl.load(row + R + n, mask=n < N, other=0.0, cache_modifier=".cg")
    Cv = tl.load(row + R + N + n, mask=n < N, other=0.0, cache_modifier=".cg")
    low = low.to(WT).to(tl.float32)       # x_proj's output, rounded as the Linear's
    Bv = Bv.to(WT).to(tl.float32)
    Cv = Cv.to(WT).to(tl.float32)
    dt = tl.sum(dtw * low[None, :], axis=1).to(WT).to(tl.float32)
    dt = softplus(dt + dtb)
    _stamp(trow, 0, 0, 0, 6, TIMING)
    h = tl.exp2(dt[:, None] * A * LOG2E) * h + (dt * x)[:, None] * Bv[None, :]
    tl.store(sptrs, h, mask=sm)
    y = tl.sum(h * Cv[None, :], axis=1) + Dv * x
    y = (y * z * tl.sigmoid(z)).to(WT).to(tl.float32)                   # out_proj's input
    _stamp(trow, 0, 0, 0, 7, TIMING)
    part = tl.sum(wo.to(tl.float32) * y[None, :], axis=1)                         # (DM_PAD,)
    tl.atomic_add(acc_ptr + l * DM + kd, part, mask=kd < DM, sem="relaxed")


@triton.jit
def mamba_stack_kernel(tab_ptr, res_in_ptr, res_out_ptr, resbuf_ptr, acc_ptr, dbc_ptr, xz_ptr,
                       sem_ptr, wt_ptr, L, DM, E, NX, R, N, NBLK, eps,
                       HAS_IN_BIAS: tl.constexpr, HAS_OUT_BIAS: tl.constexpr,
                       HAS_CONV_BIAS: tl.constexpr, CONV_WIDTH: tl.constexpr,
                       W_PAD: tl.constexpr, CB: tl.constexpr, DS: tl.constexpr,
                       DM_PAD: tl.constexpr, NX_PAD: tl.constexpr, R_PAD: tl.constexpr,
                       N_PAD: tl.constexpr, ZB: tl.constexpr, ONE_BLOCK: tl.constexpr,
                       times_ptr, TIMING: tl.constexpr):
    """Grid: at most one program per SM (the barrier needs all of them resident); program p
    takes channel blocks p, p + programs, ... of CB channels (ONE_BLOCK: exactly block p,
    a GPU), and residual columns blk * DS ... for each block blk it takes. TIMING: the
    global timer at ten points of each (program, layer) into times (programs, L, 10): the
    layer's start, phase A's h, x and z, conv, its end, the barrier passed, phase B's dt,
    y, its end, the barrier passed."""
    WT: tl.constexpr = wt_ptr.dtype.element_ty
    pid, nprog = tl.program_id(0), tl.num_programs(0)
    if ONE_BLOCK:
        # each phase's successor's inputs that no other program writes (its weights, the
        # conv window or SSM state) are requested between this program's arrival at the
        # barrier and its wait (module docstring)
        wx, wz = _load_in_proj(tab_ptr, 0, pid, DM, E, CB, DM_PAD, WT)
        ins = _inputs_a(tab_ptr, 0, pid, DM, E, NX, HAS_IN_BIAS, HAS_CONV_BIAS, CONV_WIDTH,
                        W_PAD, CB, DM_PAD, NX_PAD, WT)
        for l in range(L):
            trow = _stamp(times_ptr, pid, l, L, 0, TIMING)
            _phase_a(tab_ptr, res_in_ptr, resbuf_ptr, acc_ptr, dbc_ptr, xz_ptr, wx, wz, ins, l, L,
                     pid, DM, E, NX, R, N, eps, HAS_IN_BIAS, HAS_OUT_BIAS, HAS_CONV_BIAS,
                     CONV_WIDTH, W_PAD, CB, DS, DM_PAD, NX_PAD, R_PAD, N_PAD, WT, trow, TIMING)
            _stamp(times_ptr, pid, l, L, 4, TIMING)
            seen = _barrier_arrive(sem_ptr)
            h = _inputs_b(tab_ptr, l, pid, E, N, CB, N_PAD)
            wo, dtw, dtb, A, Dv = _load_phase_b(tab_ptr, l, pid, DM, E, R, N, CB, DM_PAD,
                                                R_PAD, N_PAD, WT)
            _barrier_wait(sem_ptr, seen)
            _stamp(times_ptr, pid, l, L, 5, TIMING)
            _phase_b(tab_ptr, acc_ptr, dbc_ptr, xz_ptr, wo, dtw, dtb, A, Dv, h, l, L, pid,
                     DM, E, NX, R, N, CB, DM_PAD, R_PAD, N_PAD, WT, trow, TIMING)
            _stamp(times_ptr, pid, l, L, 8, TIMING)
            seen = _barrier_arrive(sem_ptr)
            nl = tl.minimum(l + 1, L - 1)        # the last layer's again after the last
            ins = _inputs_a(tab_ptr, nl, pid, DM, E, NX, HAS_IN_BIAS, HAS_CONV_BIAS,
                            CONV_WIDTH, W_PAD, CB, DM_PAD, NX_PAD, WT)
            wx, wz = _load_in_proj(tab_ptr, nl, pid, DM, E, CB, DM_PAD, WT)
            _barrier_wait(sem_ptr, seen)
            _stamp(times_ptr, pid, l, L, 9, TIMING)
    else:
        # the interpreter's single program: every block in turn, each phase's inputs loaded
        # in place
        for l in range(L):
            for blk in range(pid, NBLK, nprog):
                wx, wz = _load_in_proj(tab_ptr, l, blk, DM, E, CB, DM_PAD, WT)
                ins = _inputs_a(tab_ptr, l, blk, DM, E, NX, HAS_IN_BIAS, HAS_CONV_BIAS,
                                CONV_WIDTH, W_PAD, CB, DM_PAD, NX_PAD, WT)
                _phase_a(tab_ptr, res_in_ptr, resbuf_ptr, acc_ptr, dbc_ptr, xz_ptr, wx, wz, ins,
                         l, L, blk, DM, E, NX, R, N, eps, HAS_IN_BIAS, HAS_OUT_BIAS,
                         HAS_CONV_BIAS, CONV_WIDTH, W_PAD, CB, DS, DM_PAD, NX_PAD, R_PAD, N_PAD,
                         WT, times_ptr, False)
            _grid_barrier(sem_ptr)
            for blk in range(pid, NBLK, nprog):
                wo, dtw, dtb, A, Dv = _load_phase_b(tab_ptr, l, blk, DM, E, R, N, CB, DM_PAD,
                                                    R_PAD, N_PAD, WT)
                h = _inputs_b(tab_ptr, l, blk, E, N, CB, N_PAD)
                _phase_b(tab_ptr, acc_ptr, dbc_ptr, xz_ptr, wo, dtw, dtb, A, Dv, h, l, L, blk,
                         DM, E, NX, R, N, CB, DM_PAD, R_PAD, N_PAD, WT, times_ptr, False)
            _grid_barrier(sem_ptr)
    # the output residual; then zero what this program read last, for the next launch
    for blk in range(pid, NBLK, nprog):
        own = blk * DS + tl.arange(0, DS)
        r = _residual(tab_ptr, res_in_ptr, resbuf_ptr, acc_ptr, L, L, DM, own, own < DM,
                      HAS_OUT_BIAS, WT)
        tl.store(res_out_ptr + own, r, mask=own < DM)
        for i in range(L):  # acc[., own]: read by this block only, and done
            tl.store(acc_ptr + i * DM + own, tl.zeros([DS], tl.float32), mask=own < DM)
        z = blk * ZB + tl.arange(0, ZB)      # dbc: read by every program, before the last barrier
        tl.store(dbc_ptr + z, tl.zeros([ZB], tl.float32), mask=z < L * NX)


# -- launcher ----------------------------------------------------------------------------

@dataclasses.dataclass
class StackLayers:
    """A stack of L Mamba blocks as the kernel reads them.

    table: (L, 14) int64 addresses on the device, columns IN_W ... SSM_S of this module:
        in_proj.weight (2E, DM), its bias (2E,) float32 or 0, conv weight (E, width) float32,
        conv bias (E,) float32 or 0, x_proj.weight (NX, E), dt_proj.weight (E, R),
        dt_proj.bias (E,) float32, A (E, N) float32, D (E,) float32, out_proj.weight
        (DM, E), its bias (DM,) float32 or 0, the norm weight (DM,) float32, the conv window
        (1, E, width - 1) float32, the SSM state (1, E, N) float32;
        every tensor contiguous, the matrices in one dtype (`weight_dtype`).
    keep: the tensors the addresses point to (held so that they stay allocated).
    """
    table: Tensor
    keep: list
    d_model: int
    d_inner: int
    dt_rank: int
    d_state: int
    d_conv: int
    eps: float
    weight_dtype: torch.dtype
    in_bias: bool
    out_bias: bool
    conv_bias: bool

    @property
    def n_layer(self) -> int:
        return self.table.shape[0]


@dataclasses.dataclass
class StackWorkspace:
    """Scratch for `mamba_stack_step_triton`, one per StackLayers (reused every step): the
    accumulators must be zero before the first launch, and each launch leaves them zero."""
    resbuf: Tensor    # (2, DM) float32: layer inputs, alternating
    acc: Tensor       # (L, DM) float32: out_proj sums per layer
    dbc: Tensor       # (L, NX) float32: x_proj sums per layer
    xz: Tensor        # (2, E) weight dtype: x after the conv, and z
    sem: Tensor       # (1,) uint32: the grid barrier
    weight: Tensor    # (1,) weight dtype: gives the kernel the weights' element type

    @classmethod
    def new(cls, layers: StackLayers, device) -> "StackWorkspace":
        L, DM, E = layers.n_layer, layers.d_model, layers.d_inner
        nx = layers.dt_rank + 2 * layers.d_state
        f32 = dict(dtype=torch.float32, device=device)
        return cls(resbuf=torch.zeros(2, DM, **f32), acc=torch.zeros(L, DM, **f32),
                   dbc=torch.zeros(L, nx, **f32),
                   xz=torch.zeros(2, E, dtype=layers.weight_dtype, device=device),
                   sem=torch.zeros(1, dtype=torch.uint32, device=device),
                   weight=torch.zeros(1, dtype=layers.weight_dtype, device=device))


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def stack_grid(d_inner: int, device: torch.device) -> tuple[int, int]:
    """(channels per block CB, programs): CB the smallest power of two that leaves no more
    blocks than SMs, so that every block has its own resident program; one program under
    the interpreter."""
    if interpreting() or device.type != "cuda":
        cb = min(16, next_pow2(d_inner))
        return cb, 1
    sms = num_sms(device.index if device.index is not None else torch.cuda.current_device())
    cb = next_pow2(cdiv(d_inner, sms))
    return cb, cdiv(d_inner, cb)


def mamba_stack_step_triton(layers: StackLayers, residual: Tensor, ws: StackWorkspace, *,
                            num_warps: int | None = None,
                            times: Tensor | None = None) -> Tensor:
    """residual (1, d_model) float32 before the first block -> after the last; every layer's
    conv window and SSM state advanced in place (those the table points to).

    For scripts/bench_stack.py's comparisons: `num_warps` (default 8 when a block's in_proj
    tile has >= 8192 weights, else 4); `times` ((programs, L, 10) int64: the
    kernel's timeline, `mamba_stack_kernel`; GPU only)."""
    if tuple(residual.shape) != (1, layers.d_model) or residual.dtype != torch.float32:
        raise ValueError(f"residual must be (1, {layers.d_model}) float32, got "
                         f"{tuple(residual.shape)} {residual.dtype}")
    residual = residual.contiguous()
    out = torch.empty_like(residual)
    L, DM, E = layers.n_layer, layers.d_model, layers.d_inner
    R, N = layers.dt_rank, layers.d_state
    NX = R + 2 * N
    cb, programs = stack_grid(E, residual.device)
    nblk = cdiv(E, cb)
    gpu = residual.is_cuda and not interpreting()
    if num_warps is None:
        num_warps = 8 if cb * DM >= 8192 else 4
    mamba_stack_kernel[(programs,)](
        layers.table, residual, out, ws.resbuf, ws.acc, ws.dbc, ws.xz, ws.sem, ws.weight,
        L, DM, E, NX, R, N, nblk, layers.eps,
        HAS_IN_BIAS=layers.in_bias, HAS_OUT_BIAS=layers.out_bias,
        HAS_CONV_BIAS=layers.conv_bias, CONV_WIDTH=layers.d_conv,
        W_PAD=max(next_pow2(layers.d_conv), 2), CB=cb,
        DS=next_pow2(cdiv(DM, nblk)),
        DM_PAD=max(next_pow2(DM), 64), NX_PAD=next_pow2(NX),
        R_PAD=max(next_pow2(R), 2), N_PAD=max(next_pow2(N), 2),
        ZB=next_pow2(cdiv(L * NX, nblk)), ONE_BLOCK=programs == nblk,
        times_ptr=times, TIMING=times is not None and gpu, num_warps=num_warps)
    return out
