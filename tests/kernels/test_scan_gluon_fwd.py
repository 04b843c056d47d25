"""The Gluon forward (`kernels/triton/scan_fwd_gluon.py`): where the launcher takes it, its
loop's shape compiled for sm_90 on any machine, and on CUDA against the Triton forward it
stands in for."""
from __future__ import annotations

import json
import re
import types

import pytest
import torch

from bytessm.kernels.triton import configs, scan

from kernel_helpers import scan_registers

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _applies(monkeypatch, length, overrides='{"gluon_fwd": 4}', reverse=False,
             packed=False, nseg=1, pairs=True, cuda=True, dg=1536, dstate=16,
             fits=True) -> bool:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", overrides)
    monkeypatch.setattr(scan, "_staging_fits", lambda *_: fits)
    cfg = configs.scan_config(dstate, length)
    u = types.SimpleNamespace(is_cuda=cuda, device=types.SimpleNamespace(index=0))
    return scan._gluon_forward(cfg, u, reverse, packed, nseg, scan.bc_row_length(length), pairs,
                               dg, dstate)


def test_where_the_launcher_takes_it(monkeypatch):
    """From 2048 positions (chunks of 512), in scan order, without cu_seqlens, in one
    segment, with B and C read as words of two bf16 positions, on CUDA only; and only where
    the configuration asks for it."""
    assert _applies(monkeypatch, 4096)
    assert _applies(monkeypatch, 3001)           # the last chunk part padding
    assert not _applies(monkeypatch, 1024)       # chunks of 256 below 2048 positions
    assert _applies(monkeypatch, 4096, reverse=True)           # reverse scans mirrored
    assert not _applies(monkeypatch, 4096, '{"gluon_fwd": 4, "gluon_fwd_reverse": false}',
                        reverse=True)                          # unless turned off
    assert not _applies(monkeypatch, 4096, packed=True)
    assert not _applies(monkeypatch, 4096, nseg=3)
    assert not _applies(monkeypatch, 4096, pairs=False)
    assert not _applies(monkeypatch, 4096, cuda=False)
    assert not _applies(monkeypatch, 4096, dg=1534)      # channels per group not a multiple of 4
    assert _applies(monkeypatch, 4096, dstate=12)
    assert not _applies(monkeypatch, 4096, dstate=32)
    assert not _applies(monkeypatch, 4096, fits=False)   # before sm_80, or too little shared memory
    assert not _applies(monkeypatch, 4096, overrides='{"gluon_fwd": 0}')
    assert not _applies(monkeypatch, 4096, overrides='{"gluon_fwd": 4, "chunk_bwd": 128}')
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    cfg = configs.dataclasses.replace(configs.TUNED, gluon_fwd=4, chunk=512)
    u = types.SimpleNamespace(is_cuda=True, device=types.SimpleNamespace(index=0))
    assert not scan._gluon_forward(cfg, u, False, False, 1, 4096, True, 1536, 16)


def test_compiles_to_one_scan_across_lanes_per_state(monkeypatch, tmp_path):
    """What an H200 gets at 1x128K with the Gluon forward: its register cap, no spill (with
    z's row held over the loop over states since the thirty-first session; 8 bytes before,
    two spill instructions a chunk outside the loop), and one scan across the lanes a pair of
    states, 5 steps of four shuffles (two states' decays and states), plus the odd dstate's
    last state alone (5 steps of two), where the Triton forward's 8 positions a thread scan
    across the lanes twice a state (22 shuffles)."""
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", '{"gluon_fwd": 4}')
    out = scan_registers("--shapes", "1x131072", "--ptx", str(tmp_path))
    fwd = [line for line in out.splitlines() if "forward (Gluon) full pass" in line]
    assert len(fwd) == 1, out
    regs, spilled = map(int, re.search(r"(\d+) registers, (\d+) bytes spilled", fwd[0]).groups())
    assert regs <= configs.TUNED.maxnreg_gluon_fwd and spilled == 0, fwd[0]
    ptx = (tmp_path / "forward (Gluon)_1.ptx").read_text()
    ups = re.findall(r"shfl\.sync\.up\.b32\s+%r\d+, %r\d+, (\d+),", ptx)
    steps = ("1", "2", "4", "8", "16")
    assert ups == [s for s in steps for _ in range(4)] + [s for s in steps for _ in range(2)], ups
    assert ptx.count("shfl.sync") == 33       # and one for each state's exclusive shift


def test_reverse_compiles_to_the_same_loop(monkeypatch, tmp_path):
    """The reverse forward (each chunk mirrored): the same shuffles, under the same cap, at
    most 8 bytes spilled (4 at 5f44ed6, outside the loop over states), and its rows of u,
    delta, z and out read and written as 16-byte vectors (each thread's 16 positions
    flipped in registers, `_flip16`, which the layout conversion asserts is a renaming)."""
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", '{"gluon_fwd": 4, "gluon_fwd_reverse": true}')
    out = scan_registers("--shapes", "1x131072", "--reverse", "--ptx", str(tmp_path))
    fwd = [line for line in out.splitlines() if "forward (Gluon) full pass" in line]
    assert len(fwd) == 1, out
    regs, spilled = map(int, re.search(r"(\d+) registers, (\d+) bytes spilled", fwd[0]).groups())
    assert regs <= configs.TUNED.maxnreg_gluon_fwd and spilled <= 8, fwd[0]
    ptx = (tmp_path / "forward (Gluon)_1.ptx").read_text()
    assert ptx.count("shfl.sync") == 33
    # u, delta, z: two 16-byte loads a thread each; out: two 16-byte stores
    assert len(re.findall(r"ld\.global[a-z.]*\.v4\.b32", ptx)) == 6, ptx.count("ld.global")
    assert len(re.findall(r"st\.global[a-z.]*\.v4\.b32", ptx)) == 2


def _forward(monkeypatch, overrides, batch, dim, length, groups, h0, dtype=torch.bfloat16,
             opts=True, dstate=16, reverse=False):
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", overrides)
    g = torch.Generator(device="cuda").manual_seed(0)

    def r(*s, scale=1.0):
        return torch.randn(*s, device="cuda", generator=g) * scale
    u, z = r(batch, dim, length).to(dtype), r(batch, dim, length).to(dtype)
    delta = (r(batch, dim, length, scale=0.5) - 2).to(dtype)
    bc = (batch, groups, dstate, length) if groups > 1 else (batch, dstate, length)
    B, C = r(*bc).to(dtype), r(*bc).to(dtype)
    A = -torch.rand(dim, dstate, device="cuda", generator=g) - 0.5
    D, bias = r(dim), r(dim, scale=0.1)
    hs = r(batch, dim, dstate) if h0 else None
    if not opts:
        D = z = bias = None
    return scan.scan_forward(u, delta, A, B, C, D, z, bias, hs, None, True, reverse)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("pairs", [False, True])
@pytest.mark.parametrize("batch, dim, length, groups, h0, opts, dstate", [
    (2, 256, 2048, 1, False, True, 16),
    (2, 256, 3001, 2, True, True, 16),     # a last chunk that is part padding, 2 groups, h0
    (1, 1536, 4096, 1, True, False, 16),   # no D, z, delta_bias
    (3, 128, 5120, 1, False, True, 16),    # an odd number of sub-chunks: 20 saved states
    (2, 128, 2500, 1, True, True, 13),     # an odd dstate: the pairs' last state alone
])
def test_matches_the_triton_forward(monkeypatch, batch, dim, length, groups, h0, opts,
                                    dstate, pairs):
    """Output, last state and every saved state (what the backward restarts from), with one
    state an iteration and with two (`PAIRS`)."""
    assert _applies(monkeypatch, length, dstate=dstate)
    on = json.dumps({"gluon_fwd": 4, "gluon_fwd_pairs": pairs})
    gluon = _forward(monkeypatch, on, batch, dim, length, groups, h0, opts=opts,
                     dstate=dstate)
    triton_ = _forward(monkeypatch, '{"gluon_fwd": 0}', batch, dim, length, groups, h0,
                       opts=opts, dstate=dstate)
    for name, x, y in zip(("out", "last", "states"), gluon, triton_):
        assert x.shape == y.shape, name
        err = ((x.double() - y.double()).norm() / y.double().norm()).item()
        assert err < (5e-3 if x.dtype == torch.bfloat16 else 1e-5), (name, err)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("batch, dim, length, groups, h0, opts, dstate", [
    (2, 256, 2048, 1, False, True, 16),
    (2, 256, 3001, 2, True, True, 16),     # the scan's first chunk part padding, 2 groups, h0
    (1, 1536, 4096, 1, True, False, 16),
    (3, 128, 5120, 1, False, True, 16),    # 20 saved states
    (2, 128, 2300, 1, True, True, 13),     # an odd count of saved states (9), odd dstate
])
def test_reverse_matches_the_triton_forward(monkeypatch, batch, dim, length, groups, h0, opts,
                                            dstate):
    """Reverse scans: output, last state and every saved state against the Triton forward's
    mirrored chunks (the saved rows are what the reverse backward restarts from)."""
    on = '{"gluon_fwd": 4, "gluon_fwd_reverse": true}'
    assert _applies(monkeypatch, length, on, reverse=True, dstate=dstate)
    gluon = _forward(monkeypatch, on, batch, dim, length, groups, h0, opts=opts,
                     dstate=dstate, reverse=True)
    triton_ = _forward(monkeypatch, '{"gluon_fwd": 0}', batch, dim, length, groups, h0,
                       opts=opts, dstate=dstate, reverse=True)
    for name, x, y in zip(("out", "last", "states"), gluon, triton_):
        assert x.shape == y.shape, name
        err = ((x.double() - y.double()).norm() / y.double().norm()).item()
        assert err < (5e-3 if x.dtype == torch.bfloat16 else 1e-5), (name, err)


@pytest.mark.parametrize("h0, reverse", [(False, False), (True, False), (True, True)])
def test_launch(monkeypatch, h0, reverse):
    """Where it applies, the launcher runs the Gluon kernel alone (no Triton forward): one
    program per 4 channels, 4 warps, the long tier's chunk, its own register cap and two
    states an iteration, B and C as the rows of whole chunks the kernel stages, and the last
    state written by it into `last` (its `ends`). CPU tensors, the kernels replaced by recorders."""
    from bytessm.kernels.triton.scan_fwd import scan_fwd_kernel
    from bytessm.kernels.triton.scan_fwd_gluon import scan_fwd_gluon_kernel
    from kernel_helpers import GridRecorder, scan_inputs

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)     # the GPU's table, its caps
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", '{"gluon_fwd": 4}')
    a = {k: (v.detach() if v is not None else None) for k, v in scan_inputs(
        batch=2, dim=8, length=3001, dtype=torch.bfloat16, initial_state=h0).items()}
    gluon, triton_ = GridRecorder(scan_fwd_gluon_kernel), GridRecorder(scan_fwd_kernel)

    class Writes:   # the kernel's final states, as the recorded launch "writes" them
        def __getitem__(self, grid):
            def launch(*args, **flags):
                gluon[grid](*args, **flags)
                ends = dict(zip(gluon.names, args))["ends_ptr"]
                ends.copy_(torch.arange(ends.numel()).view(ends.shape))
            return launch
    monkeypatch.setattr(scan, "scan_fwd_gluon_kernel", Writes())
    monkeypatch.setattr(scan, "scan_fwd_kernel", triton_)
    monkeypatch.setattr(scan, "_gluon_forward", lambda *_: True)
    out, last, states = scan.scan_forward(a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"],
                                          a["z"], a["delta_bias"], a["initial_state"], None,
                                          True, reverse)
    assert triton_.calls == []
    (grid, got, flags), = gluon.calls
    cfg = configs.scan_config(16, 3001)
    assert grid == (2 * 8 // 4,)
    assert flags["W"] == flags["num_warps"] == 4 and flags["CHUNK"] == cfg.chunk == 512
    assert flags["HAS_H0"] == h0 and flags["HAS_D"] and flags["HAS_Z"] and flags["HAS_BIAS"]
    assert flags.get("maxnreg") == cfg.maxnreg_gluon_fwd == 168 and flags["PAIRS"]
    assert got["B_ptr"].shape[-1] == got["C_ptr"].shape[-1] == 3072    # whole chunks
    assert flags["REVERSE"] == reverse
    for name in ("B", "C"):   # reversed: zero-padded and flipped, the mirrored chunks' rows
        rows = got[f"{name}_ptr"].flip(-1) if reverse else got[f"{name}_ptr"]
        assert torch.equal(rows[..., :3001].reshape(a[name].shape), a[name])
        assert not rows[..., 3001:].any()
    assert got["states_ptr"] is states and states.shape[1] == 12        # every 256 positions
    assert got["out_ptr"] is out and out.shape == (2, 8, 3001)
    # one segment: the kernel's `ends` (batch, 1, dim, dstate) is `last` itself, no copy
    assert got["ends_ptr"] is last and last.shape == (2, 8, 16)
    assert torch.equal(last.flatten(), torch.arange(2 * 8 * 16, dtype=last.dtype))


@pytest.mark.parametrize("major, smem, hip, fits", [
    (9, 233472, None, True),       # H100 / H200: three programs' rows fit an SM
    (8, 167936, None, True),       # A100: two
    (8, 102400, None, False),      # sm_86: room for one program only
    (7, 98304, None, False),       # before cp.async
    (9, 233472, "6.2", False),     # ROCm: the copies are NVIDIA's
])
def test_staging_fits(monkeypatch, major, smem, hip, fits):
    props = types.SimpleNamespace(major=major, shared_memory_per_multiprocessor=smem)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _index: props)
    monkeypatch.setattr(torch.version, "hip", hip)
    assert scan._staging_fits.__wrapped__(0, 512, 16) == fits
