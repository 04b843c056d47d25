"""The Gluon backward (`kernels/triton/scan_bwd_gluon.py`): compiled for sm_90 on any machine
(its loop's shape), and on CUDA against the Triton backward it stands in for."""
from __future__ import annotations

import re
import types
from math import prod

import numpy as np
import pytest
import torch

from bytessm.kernels.triton import configs, scan
from bytessm.kernels.triton.scan_bwd import scan_bwd_kernel
from bytessm.kernels.triton.scan_bwd_gluon import scan_bwd_gluon_kernel

from kernel_helpers import GridRecorder, gluon_ptx, scan_inputs, scan_registers

BF16 = {"u_ptr", "delta_ptr", "B_ptr", "C_ptr", "z_ptr", "dout_ptr", "du_ptr", "ddelta_ptr",
        "dz_ptr"}
UNIT = ("su_l", "sdl_l", "sB_l", "sC_l", "sz_l", "sdo_l", "G")


W = configs.TUNED.gluon_bwd   # channels per program, one warp each


def _ptx() -> str:
    """The kernel as `bench_scan.py`'s workload launches it at 1x128K: bf16, z, D,
    delta_bias, softplus; unit strides along the length, pointers and sizes multiples of
    16; the tuned channels per program, register cap and two passes."""
    from bytessm.kernels.triton.scan_bwd_gluon import scan_bwd_gluon_kernel as fn
    consts = dict(HAS_BIAS=True, SOFTPLUS=True, HAS_DLAST=False, HAS_D=True, HAS_Z=True,
                  CHUNK=256, W=W, N_PAD=16, TWO_PASS=configs.TUNED.gluon_bwd_two_pass,
                  **{name: 1 for name in UNIT})
    sig = {name: "constexpr" if name in consts else
           ("*bf16" if name in BF16 else "*fp32") if name.endswith("_ptr") else "i32"
           for name in fn.arg_names}
    aligned = [name for name in fn.arg_names if sig[name] != "constexpr"]
    return gluon_ptx("bytessm.kernels.triton.scan_bwd_gluon", "scan_bwd_gluon_kernel", sig,
                     consts, aligned=aligned, num_warps=W,
                     maxnreg=configs.TUNED.maxnreg_gluon)


def test_compiles_to_one_scan_across_lanes_per_state():
    ptx = _ptx()
    # the state loop's shuffles: the adjoint's and the states' group totals in one scan
    # across the lanes, each of its 5 steps shuffling 4 values (two scans in a row wait 10
    # steps: 0.81x the time at 1x128K when fused), gathers for the adjoint's reversal and
    # the states' exclusive shift, dA's sums. Triton's reverse scan across lanes mirrors
    # every value (285 shuffles in the first draft)
    assert ptx.count("shfl.sync") <= 48
    ups = re.findall(r"shfl\.sync\.up\.b32\s+%r\d+, %r\d+, (\d+),", ptx)
    assert ups == [step for step in ("1", "2", "4", "8", "16") for _ in range(4)], ups
    # dB and dC: one add per position after the sum over the warps, 256 // (32 W) positions
    # a thread in one vector add
    adds = re.findall(r"(?:red|atom)\.global\.[a-z.]*add\.(v\d\.)?f32", ptx)
    assert adds.count(f"v{256 // (32 * W)}.") == 2, adds
    assert ptx.count("bar.sync") <= 4


def test_reads_both_rows_back_before_adding_either():
    """After the barrier, the W channels' dB and dC rows come back from shared memory in one
    batch of loads, then the two vector adds: with dC's loads after dB's add, ptxas keeps
    them there and a state waits for two load latencies in a row (0.984x the backward's time
    at 1x128K on an H200 with one batch, thirty-fourth session)."""
    ptx = _ptx()
    lines = ptx.splitlines()
    vector = [i for i, line in enumerate(lines)
              if re.search(r"(?:red|atom)\.global\.[a-z.]*add\.v\d\.f32", line)]
    first = vector[0]
    barrier = max(i for i, line in enumerate(lines[:first]) if "bar.sync" in line)
    loads = [i for i in range(barrier, first) if "ld.shared" in lines[i]]
    assert len(loads) == 2 * W, lines[barrier:first + 1]
    assert not any("ld.shared" in line for line in lines[first:vector[1]])


def _offsets(layout, shape) -> dict:
    """Logical element (a tuple) -> its offset in elements, from a SharedLinearLayout's
    bases (offset bit j -> basis j, XORed)."""
    where = {}
    for offset in range(1 << len(layout.offset_bases)):
        element = [0] * len(shape)
        for j, basis in enumerate(layout.offset_bases):
            if offset >> j & 1:
                element = [e ^ b for e, b in zip(element, basis)]
        where[tuple(element)] = offset
    assert len(where) == 1 << len(layout.offset_bases) == prod(shape)
    return where


def _wavefronts(vectors) -> int:
    """Shared-memory wavefronts of one 16-byte access a thread: per quarter warp (8 threads)
    as many as the most 16-byte vectors that share a bank group (offset // 4 mod 8) but not
    their address."""
    total = 0
    for q in range(0, len(vectors), 8):
        groups = {}
        for v in vectors[q:q + 8]:
            groups.setdefault(v % 8, set()).add(v)
        total += max(len(s) for s in groups.values())
    return total


@pytest.mark.parametrize("shape", [(256,), (2, 256), (4, 256), (16, 256), (2, 512)])
def test_staged_rows_take_no_bank_conflicts(shape):
    """`spread_rows`: a row written or read 8 elements a thread (two 16-byte vectors per
    thread, as the backward writes its dB/dC rows and the forward reads B's and C's) and 4 a
    thread (the backward's reads, the forward's cp.async) meets 8 distinct bank groups in
    every quarter warp; the identity layout takes two wavefronts per quarter at 8 a thread."""
    from bytessm.kernels.triton.scan_bwd_gluon import spread_rows
    where = _offsets(spread_rows(list(shape)), shape)
    n = shape[-1]
    for half in range(2):   # unswizzled, 8 a thread: two wavefronts per quarter warp
        assert _wavefronts([(8 * lane + 4 * half) // 4 for lane in range(n // 8)]) == n // 32
    for lead in np.ndindex(*shape[:-1]):
        def vec(p):
            offset = where[tuple(lead) + (p,)]
            assert offset % 4 == p % 4   # 16-byte vectors stay whole
            return offset // 4
        for half in range(2):   # 8 a thread: lane l's vector `half` is elements 8l + 4 half
            vs = [vec(8 * lane + 4 * half) for lane in range(n // 8)]
            assert _wavefronts(vs) == len(vs) // 8
        vs = [vec(4 * lane) for lane in range(n // 4)]   # 4 a thread
        assert _wavefronts(vs) == len(vs) // 8


def test_only_cuda_launches_it(monkeypatch):
    """The backward's configuration at 1x4096 (chunks of 256) takes the Gluon kernel for
    CUDA tensors only, and never under the interpreter."""
    cfg = configs.dataclasses.replace(configs.scan_config(16, 4096), chunk=256)
    u = torch.empty(1, 1536, 4096)
    cuda_u = types.SimpleNamespace(is_cuda=True, shape=u.shape)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert scan._gluon_backward(cfg, u, False, False, 4096, 1536) == 0
    assert scan._gluon_backward(cfg, cuda_u, False, False, 4096, 1536) == W
    assert scan._gluon_backward(cfg, cuda_u, True, False, 4096, 1536) == (     # reverse too
        configs.TUNED.gluon_bwd_reverse or W)
    assert scan._gluon_backward(cfg, cuda_u, False, True, 4096, 1536) == 0      # cu_seqlens
    # channels per group that W does not divide: half as many a program, down to 2
    four = configs.dataclasses.replace(cfg, gluon_bwd=4)
    assert scan._gluon_backward(four, cuda_u, False, False, 4096, 1536) == 4
    assert scan._gluon_backward(four, cuda_u, False, False, 4096, 1534) == 2
    assert scan._gluon_backward(four, cuda_u, False, False, 4096, 1533) == 0
    rev2 = configs.dataclasses.replace(four, gluon_bwd_reverse=2)
    assert scan._gluon_backward(rev2, cuda_u, True, False, 4096, 1536) == 2
    assert scan._gluon_backward(rev2, cuda_u, False, False, 4096, 1536) == 4
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert scan._gluon_backward(cfg, cuda_u, False, False, 4096, 1536) == 0


def test_segments_where_channels_are_few(monkeypatch):
    """Where batch x channels gives fewer than 1024 warps, the Gluon backward splits the
    chunks into segments (16 chunks each at least), as many as keep the grid within 768
    two-warp programs; where even that gives fewer than 1024 warps, the Triton kernel runs."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("BYTESSM_SCAN_CONFIG", raising=False)
    cfg = configs.dataclasses.replace(configs.TUNED, chunk=256)

    def plan(batch, dim, length):
        u = types.SimpleNamespace(is_cuda=True, shape=(batch, dim, length))
        w = scan._gluon_backward(cfg, u, False, False, length, dim)
        return w, scan._gluon_segments(cfg, batch * dim // W, length, W) if w else 0
    assert plan(1, 1536, 131072) == (W, 1)
    assert plan(1, 512, 131072) == (W, 3)
    assert plan(1, 512, 8192) == (W, 2)          # 32 chunks: two segments of 16
    assert plan(1, 512, 4096) == (0, 0)          # one segment, 512 warps: the Triton kernel
    assert plan(2, 512, 4096) == (W, 1)
    assert plan(1, 256, 131072) == (W, 6)


def _launch_on_meta(monkeypatch, batch, dim, length, reverse):
    """`scan_backward` on meta tensors (bench_scan.py's workload at `dim` channels) with the
    kernels replaced by recorders, the Gluon backward allowed, on an H200's 132 SMs: the
    Gluon launches, the Triton launches, the carries and the gradients."""
    def meta(*shape, dtype=torch.bfloat16):
        return torch.empty(*shape, device="meta", dtype=dtype)
    u, delta, z, dout = (meta(batch, dim, length) for _ in range(4))
    A, D, bias = meta(dim, 16, dtype=torch.float32), meta(dim), meta(dim)
    B, C = meta(batch, 16, length), meta(batch, 16, length)
    states = meta(batch, scan.num_saved(length, 16), dim, 16, dtype=torch.float32)
    gluon, triton_ = GridRecorder(scan_bwd_gluon_kernel), GridRecorder(scan_bwd_kernel)
    carries = []
    monkeypatch.setattr(scan, "scan_bwd_gluon_kernel", gluon)
    monkeypatch.setattr(scan, "scan_bwd_kernel", triton_)
    monkeypatch.setattr(scan, "_carry", lambda ends, *rest: carries.append((ends.shape, rest)))
    monkeypatch.setattr(scan, "_gluon_backward", lambda *_: W)
    monkeypatch.setattr(scan, "num_sms", lambda _: 132)
    grads = scan.scan_backward(dout, None, u, delta, A, B, C, D, z, bias, None, None, states,
                               True, reverse)
    assert grads[3].shape == B.shape and grads[4].shape == C.shape
    return gluon.calls, triton_.calls, carries


@pytest.mark.parametrize("reverse", [False, True])
def test_segmented_launches(monkeypatch, reverse):
    """With segments, `scan_backward` runs the Triton kernel's adjoint-only pass and the
    carry over the Gluon backward's segments (the same chunks per segment), then the Gluon
    backward on (programs, segments) starting from `ends`; a reverse scan's B, C, dB and dC
    go to it flipped, in rows of whole chunks."""
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", '{"programs": 1536, "seg_chunks": 16, '
                       '"chunk": 256, "chunk_bwd": 256}')
    # 1x131000 at 512 channels: rows of 131008 (u's), 131072 (B's: whole chunks)
    gluon, triton_, carries = _launch_on_meta(monkeypatch, 1, 512, 131000, reverse)
    (tgrid, targs, tflags), = triton_
    (ggrid, gargs, gflags), = gluon
    assert tflags["ADJ_ONLY"] and not tflags["HAS_ENTER"]
    assert tflags["REVERSE"] == gflags["REVERSE"] == reverse
    assert tgrid[1] == ggrid[1] == 3 and ggrid[0] == 512 // W and gflags["HAS_ENTER"]
    assert targs["CPS"] == gargs["CPS"] == 171                  # 512 chunks of 256
    assert targs["ends_ptr"] is gargs["ends_ptr"] and gargs["ends_ptr"].shape[1] == 3
    (ends_shape, (seg_dt, _A, keep, backwards, _cfg)), = carries
    assert ends_shape[1] == 3 and keep is None and seg_dt is targs["seg_dt_ptr"]
    assert backwards == (not reverse)                           # the carry runs against the scan
    rows = 131072 if reverse else 131008                        # dB's, dC's
    assert gargs["LP"] == gargs["dB_ptr"].shape[-1] == gargs["dC_ptr"].shape[-1] == rows
    assert gargs["B_ptr"].shape[-1] == gargs["C_ptr"].shape[-1] == 131072


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("batch, length, gluon_cap", [(8, 2048, 128), (2, 16384, 168),
                                                      (1, 131072, 168)])
def test_reverse_scans_take_it_only_under_the_higher_cap(monkeypatch, reverse, batch, length,
                                                         gluon_cap):
    """A reverse scan's mirrored walk spills under the lower register cap (384 bytes at 8x2K,
    1.06x the Triton backward's time on an H200), so where the grid gets that cap the Triton
    kernel runs the reverse backward; in scan order, and elsewhere, the Gluon kernel."""
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", '{"chunk": 256, "chunk_bwd": 256}')
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)     # the caps are launch options
    gluon, triton_, _ = _launch_on_meta(monkeypatch, batch, 1536, length, reverse)
    if reverse and gluon_cap == 128:
        assert not gluon
        (_grid, _args, flags), = triton_
        assert flags["REVERSE"] and not flags["ADJ_ONLY"]
    else:
        (_grid, _args, flags), = gluon
        assert not triton_ and flags["REVERSE"] == reverse
        assert flags["maxnreg"] == gluon_cap
        # the two passes where the cap is the higher one (under 128 they spill 164 bytes at
        # 8x2K against 112, and took 1.12x the time)
        assert flags["TWO_PASS"] == (gluon_cap == 168)


def test_register_cap_only_where_it_costs_no_wave():
    """On an H200's 132 SMs, two-warp programs: 168 registers fit 6 a multiprocessor, 128 fit
    8. 1x128K's 768 programs and 2x16K's 1536 take as many waves either way, 8x2K's 6144 do
    not (8 against 6)."""
    cfg = configs.dataclasses.replace(configs.TUNED, maxnreg_gluon=168, maxnreg_bwd_one=128)
    assert scan._gluon_cap(cfg, 768, 2, 132) == 168
    assert scan._gluon_cap(cfg, 1536, 2, 132) == 168
    assert scan._gluon_cap(cfg, 6144, 2, 132) == 128
    assert scan._gluon_cap(cfg, 793, 2, 132) == 128     # one past a wave at 168
    assert scan._gluon_cap(configs.dataclasses.replace(cfg, maxnreg_gluon=0), 768, 2, 132) == 128


def test_scan_registers_reports_what_an_h200_launches():
    """`scripts/scan_registers.py` compiles what the launchers launch on an H200: the Gluon
    backward at 1x4096 (768 two-warp programs, at the 168-register cap)."""
    out = scan_registers("--shapes", "1x4096")
    gluon = [line for line in out.splitlines() if "backward (Gluon) full pass" in line]
    assert len(gluon) == 1, out
    cap = configs.TUNED.maxnreg_gluon
    assert f"grid ({1536 // W}, 1), chunk 256, {W} channel(s) x {W} warp(s): {cap} registers" \
        in gluon[0], gluon[0]


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _grads(monkeypatch, overrides: str, batch, dim, length, groups, h0, reverse=False):
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", overrides)
    g = torch.Generator(device="cuda").manual_seed(0)

    def r(*s, scale=1.0):
        return torch.randn(*s, device="cuda", generator=g) * scale
    u, z = r(batch, dim, length).bfloat16(), r(batch, dim, length).bfloat16()
    delta = (r(batch, dim, length, scale=0.5) - 2).bfloat16()
    bc = (batch, groups, 16, length) if groups > 1 else (batch, 16, length)
    B, C = r(*bc).bfloat16(), r(*bc).bfloat16()
    A = -torch.rand(dim, 16, device="cuda", generator=g) - 0.5
    D, bias = r(dim), r(dim, scale=0.1)
    hs = r(batch, dim, 16) if h0 else None
    args = (u, delta, A, B, C, D, z, bias)
    out, last, states = scan.scan_forward(*args, hs, None, True, reverse)
    dout = r(*out.shape).bfloat16()
    dlast = r(*last.shape) if h0 else None
    return scan.scan_backward(dout, dlast, *args, hs, None, states, True, reverse)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("batch, dim, length, groups, h0, reverse", [
    (2, 512, 2048, 1, False, False),
    (2, 512, 1000, 2, True, False),   # rows read unpadded, 2 groups, initial state, last-state grad
    (2, 512, 1001, 1, False, False),  # rows that start at odd positions: unaligned loads
    (1, 1536, 4096, 1, True, False),
    (1, 512, 16384, 1, True, False),  # three segments (d_inner 512 at batch 1)
    (1, 512, 12289, 2, True, False),  # three segments, the last shorter, an odd length, 2 groups
    # reverse scans: each chunk mirrored, B, C, dB, dC flipped
    (2, 512, 2048, 1, False, True),
    (2, 512, 1001, 2, True, True),
    (1, 512, 12289, 2, True, True),
])
@pytest.mark.parametrize("two_pass", [False, True])
def test_matches_the_triton_backward(monkeypatch, batch, dim, length, groups, h0, reverse,
                                     two_pass):
    cfg = configs.scan_config(16, length)
    u = torch.empty(batch, dim, length, device="cuda")
    channels = configs.TUNED.gluon_bwd_reverse if reverse else W
    assert scan._gluon_backward(configs.dataclasses.replace(cfg, chunk=256), u, reverse, False,
                                scan.bc_row_length(length), dim // groups) == channels
    gluon = _grads(monkeypatch, f'{{"gluon_bwd_two_pass": {str(two_pass).lower()}}}', batch,
                   dim, length, groups, h0, reverse)
    triton_ = _grads(monkeypatch, '{"gluon_bwd": 0}', batch, dim, length, groups, h0, reverse)
    names = ("du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias", "dinitial_state")
    for name, x, y in zip(names, gluon, triton_):
        if y.numel():
            err = ((x.double() - y.double()).norm() / y.double().norm()).item()
            assert err < (5e-3 if x.dtype == torch.bfloat16 else 1e-4), (name, err)


@pytest.mark.parametrize("length", [1000, 1024])
def test_reads_the_rows_unpadded(monkeypatch, length):
    """Where the Gluon backward runs, u, delta, z and dout reach it as they came (no padded
    copies: four (batch, dim, length) tensors less through the backward at lengths that are
    not a multiple of 16), while dB's and dC's rows stay `row_length` long; the Triton
    backward still gets padded rows. CPU tensors, the kernels replaced by recorders."""
    a = {k: (v.detach() if v is not None else None)
         for k, v in scan_inputs(batch=1, dim=4, length=length, dtype=torch.bfloat16).items()}
    lp = scan.row_length(length)
    states = torch.zeros(1, scan.num_saved(length, 16), 4, 16)
    dout = torch.randn(1, 4, length).bfloat16()
    rows = {"u_ptr": a["u"], "delta_ptr": a["delta"], "z_ptr": a["z"], "dout_ptr": dout}
    args = (dout, None, a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"],
            a["delta_bias"], None, None, states, True, False)
    gluon, triton_ = GridRecorder(scan_bwd_gluon_kernel), GridRecorder(scan_bwd_kernel)
    monkeypatch.setattr(scan, "scan_bwd_gluon_kernel", gluon)
    monkeypatch.setattr(scan, "scan_bwd_kernel", triton_)

    monkeypatch.setattr(scan, "_gluon_backward", lambda *_: 2)
    scan.scan_backward(*args)
    (_grid, got, _flags), = gluon.calls
    for name, x in rows.items():
        assert got[name] is x, name
    assert (got["L"], got["LP"]) == (length, lp)
    assert got["dB_ptr"].shape[-1] == got["dC_ptr"].shape[-1] == lp
    assert got["B_ptr"].shape[-1] == scan.bc_row_length(length)

    monkeypatch.setattr(scan, "_gluon_backward", lambda *_: 0)
    scan.scan_backward(*args)
    (_grid, got, _flags), = triton_.calls
    for name, x in rows.items():
        assert got[name].shape[-1] == lp, name
        assert (got[name] is x) == (lp == length), name     # copied only where padded


@needs_cuda
@pytest.mark.gpu
def test_odd_lengths_cost_the_backward_no_copies():
    """The backward's peak memory at 1x1536x4095 is that at 4096 (B and C padded, dB and dC
    at 4096 either way): no padded copies of u, delta, z and dout (50 MB there)."""
    def peak(length):
        g = torch.Generator(device="cuda").manual_seed(0)
        u, z, delta, dout = (torch.randn(1, 1536, length, device="cuda", generator=g)
                             .bfloat16() for _ in range(4))
        B, C = (torch.randn(1, 16, length, device="cuda", generator=g).bfloat16()
                for _ in range(2))
        A = -torch.rand(1536, 16, device="cuda", generator=g) - 0.5
        D, bias = torch.randn(1536, device="cuda"), torch.zeros(1536, device="cuda")
        args = (u, delta, A, B, C, D, z, bias, None, None)
        _out, _last, states = scan.scan_forward(*args, True, False)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        scan.scan_backward(dout, None, *args, states, True, False)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base

    even, odd = peak(4096), peak(4095)
    assert odd <= even + 2**20, (odd, even)
