"""The Triton selective scan against the float32 reference: output, last state and every
gradient, on random inputs. Runs on CUDA, or on CPU under TRITON_INTERPRET=1.

The reference here is `selective_scan_chunked` (its backward is ~50x faster on a CPU than
the step-by-step one's); test_reference.py checks it against the sequential specification.
"""
from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

from bytessm.kernels import reference, selective_scan
from bytessm.kernels.triton import scan
from bytessm.kernels.triton.configs import scan_config

from kernel_helpers import GridRecorder, TOLERANCE, assert_close, rel_err, scan_inputs

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CHUNK = scan_config(16, 1).chunk
GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


@dataclasses.dataclass(frozen=True)
class Case:
    length: int
    batch: int = 2
    dim: int = 8
    dstate: int = 16
    groups: int = 0
    dtype: torch.dtype = torch.float32
    reverse: bool = False
    initial_state: bool = False
    last_state: bool = False
    cu_seqlens: tuple | None = None
    full: bool = True          # D, z, delta_bias, softplus
    noncontiguous: bool = False

    def __str__(self):
        parts = [f"L{self.length}", f"b{self.batch}", f"N{self.dstate}"]
        parts += [f"g{self.groups}"] if self.groups else []
        parts += [str(self.dtype).removeprefix("torch.")] if self.dtype != torch.float32 else []
        parts += ["rev"] if self.reverse else []
        parts += ["h0"] if self.initial_state else []
        parts += ["last"] if self.last_state else []
        parts += [f"cu{'-'.join(map(str, self.cu_seqlens))}"] if self.cu_seqlens else []
        parts += ["bare"] if not self.full else []
        parts += ["strided"] if self.noncontiguous else []
        return "_".join(parts)


CASES = [
    # odd lengths
    Case(1), Case(7), Case(129), Case(1000, batch=1, last_state=True),
    # ending exactly on, and one past, chunk boundaries
    Case(CHUNK), Case(CHUNK + 1, last_state=True), Case(2 * CHUNK, reverse=True),
    Case(2 * CHUNK + 1, reverse=True, initial_state=True, last_state=True),
    # grouped B/C, states, reverse
    Case(70, groups=2), Case(70, groups=4, reverse=True, initial_state=True, last_state=True),
    Case(129, initial_state=True, last_state=True),
    Case(1, reverse=True, initial_state=True, last_state=True),
    # optional inputs absent, plain dt
    Case(65, full=False), Case(65, full=False, reverse=True, last_state=True),
    # state sizes: 1, padded, larger tiles, the largest
    Case(40, dstate=1), Case(40, dstate=5, groups=2), Case(70, dstate=32), Case(20, dstate=256, dim=2),
    # packed variable-length batches, with length-1 and empty sequences
    Case(131, batch=1, cu_seqlens=(0, 1, 2, 70, 70, 131), initial_state=True, last_state=True),
    Case(131, batch=1, cu_seqlens=(0, 64, 65, 130, 131), reverse=True, initial_state=True,
         last_state=True),
    Case(70, batch=1, cu_seqlens=(0, 1, 70), groups=2, last_state=True),
    # half precision inputs, float32 state; bf16 B/C rows of an even length are read as
    # int32 pairs by the forward, unmasked when every chunk is whole
    Case(129, dtype=torch.bfloat16, initial_state=True, last_state=True),
    Case(130, dtype=torch.bfloat16, last_state=True),
    Case(2 * CHUNK, dtype=torch.bfloat16, reverse=True, initial_state=True, last_state=True),
    Case(129, dtype=torch.float16, reverse=True, groups=2),
    # strided views, as a model produces them
    Case(70, noncontiguous=True, last_state=True),
]


def _strided(x: torch.Tensor) -> torch.Tensor:
    """The same values with the length axis not contiguous."""
    return x.detach().transpose(-1, -2).contiguous().transpose(-1, -2).requires_grad_()


def _run(case: Case, backend: str):
    torch.manual_seed(0)
    nseq = None if case.cu_seqlens is None else len(case.cu_seqlens) - 1
    ins = scan_inputs(batch=case.batch, dim=case.dim, length=case.length, dstate=case.dstate,
                      groups=case.groups, dtype=case.dtype, has_D=case.full, has_z=case.full,
                      has_bias=case.full, initial_state=case.initial_state, num_seqs=nseq,
                      softplus=case.full)
    if case.noncontiguous:
        ins = {k: _strided(v) if k in ("u", "delta", "B", "C", "z") else v for k, v in ins.items()}
    cu = None if case.cu_seqlens is None else torch.tensor(case.cu_seqlens, dtype=torch.int32)
    return ins, cu


def _forward_backward(fn, ins, cu, case: Case, dev: str, upcast: bool):
    leaves = {k: (v.detach().float() if upcast else v.detach()).to(dev).requires_grad_()
              for k, v in ins.items() if v is not None}
    args = {k: leaves.get(k) for k in ins}
    out = fn(**args, delta_softplus=case.full, return_last_state=True, reverse=case.reverse,
             cu_seqlens=None if cu is None else cu.to(dev))
    y, last = out
    g = torch.Generator().manual_seed(7)
    w_out = torch.randn(y.shape, generator=g).to(dev)
    loss = (y.float() * w_out).sum()
    if case.last_state:
        loss = loss + (last * torch.randn(last.shape, generator=g).to(dev)).sum()
    names = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[k] for k in names])
    return y, last, dict(zip(names, grads))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_scan_matches_reference(case: Case):
    ins, cu = _run(case, "triton")

    def triton_fn(**kw):
        return selective_scan(**kw, backend="triton")

    y, last, grads = _forward_backward(triton_fn, ins, cu, case, DEVICE, upcast=False)
    y_ref, last_ref, grads_ref = _forward_backward(reference.selective_scan_chunked, ins, cu,
                                                   case, "cpu", upcast=True)
    assert y.dtype == case.dtype and last.dtype == torch.float32
    assert_close("out", y.cpu(), y_ref, case.dtype)
    assert_close("last_state", last.cpu(), last_ref, torch.float32 if case.dtype ==
                 torch.float32 else case.dtype)
    assert set(grads) == set(grads_ref)
    for name in GRAD_NAMES:
        if name in grads:
            assert grads[name].dtype == ins[name].dtype, name
            assert_close(f"d{name}", grads[name].cpu(), grads_ref[name], case.dtype)


def test_several_channel_blocks_and_segments(monkeypatch):
    """Force small channel blocks and many programs: several channel blocks per group (and
    one cut short), chunks split into segments that run in parallel with the carry pass
    between them, and the carry pass's loop over blocks of segments. (Four states: the
    interpreter pays per state, and the grid is what is tested; the carry pass still runs
    several programs, of 8 (channel, state) rows each.)"""
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", '{"block_d": 4, "block_d_bwd": 2, '
                       '"programs": 64, "block_c": 2, "block_dn": 8, "seg_chunks": 1}')
    case = Case(3 * CHUNK + 3, batch=1, dim=8, dstate=4, groups=2, initial_state=True,
                last_state=True)
    test_scan_matches_reference(case)
    case = Case(2 * CHUNK - 1, batch=2, dim=6, dstate=4, reverse=True, initial_state=True,
                last_state=True)
    test_scan_matches_reference(case)
    # packed sequences that start inside a segment, and one that spans segments
    for reverse in (False, True):
        case = Case(4 * CHUNK + 5, batch=1, dim=4, dstate=4,
                    cu_seqlens=(0, 3, CHUNK + 9, 4 * CHUNK + 5), reverse=reverse,
                    initial_state=True, last_state=True)
        test_scan_matches_reference(case)


class _MarkUnwritten:
    """Wraps a scan kernel: its pass-only launch (STATE_ONLY / ADJ_ONLY) first fills `ends`
    with NaN, and afterwards records the number of segments and which ones' rows it left
    so."""

    def __init__(self, kernel):
        self.kernel, self.unwritten = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **flags):
            ends = args[self.kernel.arg_names.index("ends_ptr")]
            only = flags.get("STATE_ONLY", flags.get("ADJ_ONLY"))
            if only:
                ends.fill_(float("nan"))
            self.kernel[grid](*args, **flags)
            if only:
                nan = ends.isnan().flatten(2).all(-1)                  # (batch, segments)
                assert (nan.all(0) | ~nan.any(0)).all()
                self.unwritten.append((nan.shape[1], nan[0].nonzero().flatten().tolist()))
        return launch


@pytest.mark.parametrize("reverse", [False, True])
def test_pass_only_launches_skip_the_segment_nothing_reads(monkeypatch, reverse):
    """With segments, the state-only pass leaves out the scan's last segment and the
    adjoint-only pass the scan's first: the carry never reads what they would leave (the
    segment's end state, or what reaches its start). Their rows of `ends` stay as they
    were (NaN here), and the results still match the reference, so the carry does not read
    them either."""
    # bwd_fill 0: a backward grid this small keeps its four channels a program on CUDA too
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", '{"block_d": 4, "block_d_bwd": 4, '
                       '"programs": 12, "block_c": 2, "block_dn": 8, "seg_chunks": 1, '
                       '"bwd_fill": 0}')
    fwd, bwd = _MarkUnwritten(scan.scan_fwd_kernel), _MarkUnwritten(scan.scan_bwd_kernel)
    monkeypatch.setattr(scan, "scan_fwd_kernel", fwd)
    monkeypatch.setattr(scan, "scan_bwd_kernel", bwd)
    test_scan_matches_reference(Case(3 * CHUNK + 3, batch=2, dim=4, dstate=4,
                                     reverse=reverse, initial_state=True, last_state=True))
    last = 3                                                   # a segment per chunk
    assert fwd.unwritten == [(4, [0 if reverse else last])]    # the scan's last
    assert bwd.unwritten == [(4, [last if reverse else 0])]    # the scan's first


@pytest.mark.parametrize("dtype, length, reverse", [(torch.float32, 8 * 32 + 5, False),
                                                     (torch.bfloat16, 8 * 32 + 4, True)])
def test_state_only_pass_over_several_chunks(monkeypatch, dtype, length, reverse):
    """The state-only pass sums each chunk into its segment's end state rather than scanning
    it (`scan_fwd._segment_end_state`), the state carried from chunk to chunk in registers:
    three segments of three chunks of 32, the last cut short, two groups, an initial state;
    B and C rows masked (odd length), and bf16 in pairs (even)."""
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", '{"chunk": 32, "chunk_bwd": 16, "block_d": 2, '
                       '"block_d_bwd": 2, "programs": 8, "seg_chunks": 3}')
    forward = GridRecorder(scan.scan_fwd_kernel, launch=True)
    monkeypatch.setattr(scan, "scan_fwd_kernel", forward)
    test_scan_matches_reference(Case(length, batch=1, dim=4, dstate=4, groups=2, dtype=dtype,
                                     reverse=reverse, initial_state=True, last_state=True))
    launches = [(grid[1], flags["STATE_ONLY"]) for grid, _args, flags in forward.calls]
    assert launches[:2] == [(3, True), (3, False)]


@pytest.mark.parametrize("reverse", [False, True])
def test_one_position_stores_either_way(monkeypatch, reverse):
    """The forward's saved states are stored from one position of a tile either by groups of
    8 positions (`common.store_position`'s BY_GROUP: the tuned table's and the
    interpreter's) or as the tile masked to that position (the backward's hand-over, and
    the forward where `group_store_chunk` is below its chunk); here the latter, with two
    saves per forward chunk."""
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", '{"group_store_chunk": 0, "chunk_bwd": 16}')
    test_scan_matches_reference(Case(2 * CHUNK + 9, dtype=torch.bfloat16, reverse=reverse,
                                     initial_state=True, last_state=True))


def test_backward_chunk_smaller_than_the_forwards(monkeypatch):
    """The forward's chunks split into the backward's (the tuned table runs 512 and 256 at
    long lengths): the forward saves the state entering every sub-chunk, and the backward
    restarts from them; two and four sub-chunks per chunk, the last chunk with sub-chunks
    past the end, both directions, packed sequences, bf16 rows in pairs, and segments.
    (Small channel and state counts: the interpreter pays per program and per state.)"""
    small = dict(batch=1, dim=4, dstate=4, initial_state=True, last_state=True)
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", '{"chunk": 64, "chunk_bwd": 16, "block_d_bwd": 2}')
    test_scan_matches_reference(Case(3 * 64 + 5, **small))
    test_scan_matches_reference(Case(2 * 64 - 20, reverse=True, **small))
    test_scan_matches_reference(Case(2 * 64 + 40, cu_seqlens=(0, 17, 100, 168), reverse=True,
                                     **small))
    test_scan_matches_reference(Case(2 * 64, dtype=torch.bfloat16, groups=2, batch=2, dim=4,
                                     dstate=4, last_state=True))
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", '{"chunk": 64, "chunk_bwd": 32, "block_d": 4, '
                       '"block_d_bwd": 2, "programs": 16, "block_c": 2, "block_dn": 32, '
                       '"seg_chunks": 1}')
    for reverse in (False, True):
        test_scan_matches_reference(Case(4 * 64 + 5, cu_seqlens=(0, 3, 64 + 9, 4 * 64 + 5),
                                         reverse=reverse, **small))
    # a grid of two-channel programs that would be too small runs one channel per program
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", '{"chunk": 64, "chunk_bwd": 32, '
                       '"block_d_bwd": 2, "bwd_fill": 3}')
    assert scan._plan(1, 4, 1, 200, 4, backward=True, packed=True)[0].block_d == 1
    assert scan._plan(2, 4, 1, 200, 4, backward=True, packed=False)[0].block_d == 2
    test_scan_matches_reference(Case(2 * 64 + 40, cu_seqlens=(0, 17, 100, 168), **small))
    test_scan_matches_reference(Case(2 * 64 + 40, reverse=True, **small))


def test_backward_width_and_register_caps_by_grid(monkeypatch):
    """The backward keeps `block_d_bwd` channels per program where that grid has at least
    `bwd_fill` programs, else one channel under its own register cap (another with
    cu_seqlens); the packed forward takes `maxnreg_cu` from `long_from` positions on. The
    GPU's table at the benchmark's shapes (D=1536, N=16)."""
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", '{"block_d_bwd": 2, "bwd_fill": 1024, '
                       '"maxnreg_bwd": 0, "maxnreg_bwd_one": 128, "maxnreg_cu": 168}')
    plan = functools.partial(scan._plan, dim=1536, groups=1, dstate=16)
    wide = plan(8, length=2048, backward=True)[0]           # 6144 programs of two channels
    assert (wide.block_d, wide.maxnreg_bwd) == (2, 0)
    wide = plan(2, length=1 << 14, backward=True)[0]        # 1536
    assert (wide.block_d, wide.maxnreg_bwd) == (2, 0)
    narrow = plan(1, length=1 << 17, backward=True)[0]      # 768: one channel, 1536 programs
    assert (narrow.block_d, narrow.maxnreg_bwd) == (1, 128)
    packed = plan(1, length=1 << 17, backward=True, packed=True)[0]
    assert (packed.block_d, packed.maxnreg_bwd) == (1, 168)
    assert plan(1, length=1 << 17, backward=False, packed=True)[0].maxnreg == 168
    assert plan(1, length=1 << 17, backward=False, packed=False)[0].maxnreg != 168
    assert plan(1, length=100, backward=False, packed=True)[0].maxnreg != 168


def test_forward_cap_and_addresses_by_length_class(monkeypatch):
    """The forward's launch options on the GPU's table: from 2048 positions 144 registers and
    its chunks' addresses computed from t0 (`common.load_chunk`'s FROM_T0, which holds it to
    128 registers: `test_scan_spills.py`); below them 112, and with cu_seqlens 168, both
    with the addresses of the chunk's positions. Launches recorded on meta tensors."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)     # the GPU's table; caps are
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", '{"maxnreg_long": 144}')  # launch options
    launches = GridRecorder(scan.scan_fwd_kernel)
    monkeypatch.setattr(scan, "scan_fwd_kernel", launches)

    def forward(batch, dim, length, cu_seqlens=None):
        meta = functools.partial(torch.empty, device="meta", dtype=torch.bfloat16)
        u, delta = meta(batch, dim, length), meta(batch, dim, length)
        A = torch.empty(dim, 16, device="meta")
        B, C = meta(batch, 16, length), meta(batch, 16, length)
        scan.scan_forward(u, delta, A, B, C, None, None, None, None, cu_seqlens, True, False)
        _grid, _args, flags = launches.calls.pop()
        return flags["maxnreg"], flags["FROM_T0"]
    assert forward(1, 1536, 1 << 17) == (144, True)
    assert forward(8, 1536, 2048) == (144, True)
    assert forward(16, 1024, 8192) == (144, True)
    assert forward(8, 1536, 1024) == (112, False)
    cu = torch.tensor([0, 100, 32768], dtype=torch.int32, device="meta")
    assert forward(1, 2048, 32768, cu) == (168, False)          # maxnreg_cu


@pytest.mark.parametrize("case", [Case(129, initial_state=True, last_state=True),
                                  Case(130, dtype=torch.bfloat16, last_state=True),
                                  Case(70, noncontiguous=True, last_state=True)], ids=str)
def test_forward_at_the_chunks_positions(monkeypatch, case):
    """The forward without cu_seqlens with its chunks' addresses from their positions (the
    GPU's below 2048 positions; the interpreter's table computes them from t0)."""
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", '{"from_t0": false}')
    test_scan_matches_reference(case)


def test_segments_fill_the_gpu_without_a_second_wave(monkeypatch):
    """Chunks are split into segments while the grid stays within `programs` programs (the
    GPU's table: 1536): a narrow model at batch 1 gets several, 1024 rows or more one (two
    measured slower there), and the two-channel backward stays within `bwd_fill`."""
    from bytessm.kernels.triton.configs import segments
    assert segments(512, 256, 1536) == 3             # d_inner 512 at batch 1
    assert segments(768, 256, 1536) == 2
    assert segments(1024, 256, 1536) == 1            # d_inner 512 at batch 2
    assert segments(8 * 1536, 4, 1536) == 1
    assert segments(512, 2, 1536) == 2               # at least a chunk per segment
    assert segments(3, 0, 1536) == 1
    assert segments(512, 256, 1536, min_chunks=16) == 3
    assert segments(512, 32, 1536, min_chunks=16) == 2   # 1x16K: 32 chunks of 512
    assert segments(512, 4, 1536, min_chunks=16) == 1    # a short prompt: one launch
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", '{"block_d_bwd": 2, "bwd_fill": 1024, '
                       '"programs": 2048, "chunk": 256, "chunk_bwd": 256, "block_d": 1, '
                       '"seg_chunks": 16}')
    plan = functools.partial(scan._plan, groups=1, dstate=16, length=1 << 17)
    assert plan(1, 512, backward=False)[3] == 4
    assert plan(1, 512, backward=True)[0].block_d == 1 and plan(1, 512, backward=True)[3] == 4
    wide = plan(1, 2048, backward=True)  # 1024 programs of two channels: not two segments
    assert wide[0].block_d == 2 and wide[3] == 1
    assert plan(1, 1536, backward=False)[3] == 1
    assert plan(1, 512, backward=False, length=4096)[3] == 1     # 16 chunks: one segment


def test_b_c_rows_in_pairs_only_where_they_can_be():
    """The forward reads B/C as int32 words of two bf16 positions only for bf16, a unit
    stride along the length, an even length and 4-byte aligned rows."""
    _bc_pairs = scan._bc_pairs
    B = torch.randn(2, 1, 16, 64).to(torch.bfloat16)
    assert _bc_pairs(B, B, 64)
    assert not _bc_pairs(B[..., 1:63], B[..., 1:63], 62)        # rows start at odd positions
    assert not _bc_pairs(B[..., :63], B[..., :63], 63)          # odd length
    assert not _bc_pairs(B.half(), B.half(), 64)
    assert not _bc_pairs(B.float(), B, 64)
    strided = B.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not _bc_pairs(strided, strided, 64)


class _Launches:
    """Stands in for a kernel's `kernel[grid]`, recording each launch's arguments."""

    def __init__(self, kernel):
        self.kernel, self.calls = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.calls.append(dict(zip(self.kernel.arg_names, args), **kwargs))
            return self.kernel[grid](*args, **kwargs)
        return launch


@pytest.mark.parametrize("length,pad", [(197, True), (208, True), (197, False)])
def test_rows_read_at_a_multiple_of_16(monkeypatch, length, pad):
    """At a length that is not a multiple of 16 the kernels get zero-padded copies of their
    inputs' rows, of `row_length` positions (16-element aligned, so that the loads are
    vectors and the scan keeps their layout), and write unpadded outputs; at a multiple of
    16, or with `pad_rows` off, they get the inputs themselves. B and C come in rows of
    whole chunks (`bc_row_length`; BC_WHOLE: loaded unmasked) unless `pad_rows` is off.
    The values: `test_scan_matches_reference` at odd lengths (the padding must not reach the
    last state or the gradients), and here with `pad_rows` off."""
    if not pad:
        monkeypatch.setenv("BYTESSM_SCAN_CONFIG", '{"pad_rows": false}')
    fwd, bwd = _Launches(scan.scan_fwd_kernel), _Launches(scan.scan_bwd_kernel)
    monkeypatch.setattr(scan, "scan_fwd_kernel", fwd)
    monkeypatch.setattr(scan, "scan_bwd_kernel", bwd)
    ins = scan_inputs(batch=2, dim=4, length=length, dstate=4, dtype=torch.bfloat16,
                      has_D=True, has_z=True, has_bias=True, softplus=True)
    ins = {k: v.detach().to(DEVICE).requires_grad_() for k, v in ins.items() if v is not None}
    y, last = selective_scan(**ins, delta_softplus=True, return_last_state=True,
                             backend="triton")
    (y.float().sum() + last.sum()).backward()
    lp = scan.row_length(length)
    assert lp == (208 if pad else length) and y.shape == (2, 4, length) and y.is_contiguous()
    lbc = scan.bc_row_length(length)
    assert lbc % CHUNK == 0 if pad else lbc == length
    for forward, call in [(True, c) for c in fwd.calls] + [(False, c) for c in bwd.calls]:
        assert (call["L"], call["LP"]) == (length, lp) and call["BC_WHOLE"] == pad
        padded = [("u_ptr", lp), ("delta_ptr", lp), ("B_ptr", lbc), ("C_ptr", lbc)]
        for name, n in padded + ([] if forward else [("z_ptr", lp), ("dout_ptr", lp)]):
            rows = call[name]
            assert rows.shape[-1] == n
            assert not pad or all(st % 16 == 0 for st in rows.stride()[:-1])
        assert (call["u_ptr"].data_ptr() == ins["u"].data_ptr()) == (length == lp)
        # the forward reads z once per chunk, after its loop over states: z is not copied
        assert not forward or call["z_ptr"].data_ptr() == ins["z"].data_ptr()
    assert bwd.calls[0]["dB_ptr"].shape[-1] == lp
    assert ins["B"].grad.shape == ins["B"].shape and ins["u"].grad.shape == ins["u"].shape
    if not pad:
        test_scan_matches_reference(Case(length, dtype=torch.bfloat16, last_state=True))


def test_gradient_through_last_state_only():
    """d last_state / d initial_state alone: the product of the decays over the sequence.
    On the GPU each decay is an ex2.approx (2^-22 relative), and their errors add up along
    the sequence: measured on an H200, 1.1e-5 at 517 positions, 2.3e-5 at 1029, 4.9e-5 at
    2053 (about 2.3e-8 a position, with the kernels before and after the padded rows of
    `scan.row_length`), so there the tolerance grows with the length; the interpreter's
    exp2 is numpy's."""
    length = 2 * CHUNK + 5
    ins, _ = _run(Case(length, initial_state=True), "triton")
    h0 = ins["initial_state"]
    dev = {k: ins[k].detach().to(DEVICE) for k in ("u", "delta", "A", "B", "C")}
    h0_dev = h0.detach().to(DEVICE).requires_grad_()
    _, last = selective_scan(**dev, initial_state=h0_dev, return_last_state=True,
                             backend="triton")
    (g_tri,) = torch.autograd.grad(last.sum(), [h0_dev])
    _, last_ref = reference.selective_scan_chunked(
        ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"], initial_state=h0,
        return_last_state=True)
    (g_ref,) = torch.autograd.grad(last_ref.sum(), [h0])
    assert_close("last_state", last.cpu(), last_ref, torch.float32)
    tol = TOLERANCE[torch.float32]
    if DEVICE == "cuda":
        tol = max(tol, 3e-8 * length)
    err = rel_err(g_tri.cpu(), g_ref)
    assert err <= tol, f"dinitial_state: relative L2 error {err:.2e} > {tol:.1e}"


def test_segments_chain_to_the_full_sequence():
    """Feeding a sequence in two segments through initial_state/last_state gives the
    full-length output (how million-length inputs are processed)."""
    ins, _ = _run(Case(3 * CHUNK + 7, full=False), "triton")
    u, delta, A, B, C = (ins[k].detach().to(DEVICE) for k in ("u", "delta", "A", "B", "C"))
    full = selective_scan(u, delta, A, B, C, backend="triton")
    cut = CHUNK + 3
    y1, h = selective_scan(u[..., :cut], delta[..., :cut], A, B[..., :cut], C[..., :cut],
                           return_last_state=True, backend="triton")
    y2 = selective_scan(u[..., cut:], delta[..., cut:], A, B[..., cut:], C[..., cut:],
                        initial_state=h, backend="triton")
    assert_close("segmented", torch.cat([y1, y2], -1), full, torch.float32)


def test_tolerance_table_covers_input_dtypes():
    assert set(TOLERANCE) == {torch.float32, torch.bfloat16, torch.float16}



# -- the two-level reverse scans of common.py against tl.associative_scan(reverse=True) ----

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from bytessm.kernels.triton.common import (_flip8_split_join, _group_end,  # noqa: E402
                                           adjoint_combine, pair_combine, reverse_adjoint_scan,
                                           reverse_pair_scan, softplus)


@triton.jit
def _reverse_scans_kernel(a_ptr, x_ptr, f_ptr, g_ptr, out_ptr, BD: tl.constexpr,
                          T: tl.constexpr):
    o = tl.arange(0, BD)[:, None] * T + tl.arange(0, T)[None, :]
    a, x, f = tl.load(a_ptr + o), tl.load(x_ptr + o), tl.load(f_ptr + o)
    g_end = tl.load(g_ptr + tl.arange(0, BD))
    ra, rx = tl.associative_scan((a, x), axis=1, combine_fn=pair_combine, reverse=True)
    ga, gx = reverse_pair_scan(a, x, BD, T)
    ones = tl.full(x.shape, 1.0, tl.float32)
    rq, rp, _rf = tl.associative_scan((x, ones, f), axis=1, combine_fn=adjoint_combine,
                                      reverse=True)
    adjoint = reverse_adjoint_scan(x, f, g_end, BD, T)
    v = tl.reshape(x, (BD, T // 8, 8))
    flips = tl.reshape(_flip8_split_join(v) - tl.flip(v, 2), (BD, T))
    tl.store(out_ptr + o, ra)
    tl.store(out_ptr + BD * T + o, ga)
    tl.store(out_ptr + 2 * BD * T + o, rx)
    tl.store(out_ptr + 3 * BD * T + o, gx)
    tl.store(out_ptr + 4 * BD * T + o, rq + rp * g_end[:, None])
    tl.store(out_ptr + 5 * BD * T + o, adjoint)
    o_g = tl.arange(0, BD)[:, None] * (T // 8) + tl.arange(0, T // 8)[None, :]
    tl.store(out_ptr + 6 * BD * T + o_g, _group_end(v, False))
    tl.store(out_ptr + 8 * BD * T + o, flips)


@pytest.mark.parametrize("length", [8, 64])
def test_two_level_reverse_scans_equal_tritons(length):
    """`reverse_pair_scan` / `reverse_adjoint_scan` (in-register groups of 8, then one value
    per group across threads) give what Triton's own reverse scan gives (the adjoint with a
    gradient arriving at the end, Q + P g_end), the groups' first positions are right, and the
    interpreter's flip of a group equals `tl.flip` (the GPU's); random values, decays in
    (0, 1) as the scan's are."""
    g = torch.Generator().manual_seed(length)
    bd = 2
    a = torch.rand(bd, length, generator=g) * 0.9 + 0.05
    x = torch.randn(bd, length, generator=g)
    f = torch.rand(bd, length, generator=g) * 0.9 + 0.05
    g_end = torch.randn(bd, generator=g)
    a, x, f, g_end = (t.to(DEVICE) for t in (a, x, f, g_end))
    out = torch.zeros(9, bd, length, device=DEVICE)
    _reverse_scans_kernel[(1,)](a, x, f, g_end, out, BD=bd, T=length)
    for want, got in ((0, 1), (2, 3), (4, 5)):
        torch.testing.assert_close(out[got], out[want], rtol=1e-5, atol=1e-6)
    first = out[6].flatten()[:bd * (length // 8)].view(bd, length // 8)
    assert torch.equal(first, x[:, ::8])    # each group's first position, by split
    assert out[8].abs().max() == 0


@triton.jit
def _softplus_kernel(x_ptr, out_ptr, T: tl.constexpr):
    o = tl.arange(0, T)
    tl.store(out_ptr + o, softplus(tl.load(x_ptr + o)))


def test_softplus_matches_torch():
    """`common.softplus` (ex2 and lg2, a series below -8, linear past 20: the kernels' dt)
    against torch's over [-40, 40]: absolute error within float32's rounding of 1 + e^x, and
    below -8 a relative error within float32's exp (x log2 e is rounded: 3e-6 at -40), where
    log(1 + e^x) would have lost e^x altogether."""
    edges = torch.tensor([-8.0, 20.0, 0.0, -7.99, 20.01])
    x = torch.cat([torch.linspace(-40.0, 40.0, 1000), edges])
    x = torch.nn.functional.pad(x, (0, 1024 - x.numel())).to(DEVICE)
    out = torch.empty_like(x)
    _softplus_kernel[(1,)](x, out, T=1024)
    want = torch.nn.functional.softplus(x.double())
    err = (out.double() - want).abs()
    assert (err <= 2e-7 + 1e-6 * want).all(), \
        f"worst at x={x[err.argmax()].item()}: {err.max().item():.3g}"
    small = x < -8.0
    assert (err[small] <= 5e-6 * want[small]).all()
    special = torch.tensor([float("nan"), float("inf"), float("-inf")] + [0.0] * 13,
                           device=DEVICE)
    out = torch.empty_like(special)
    _softplus_kernel[(1,)](special, out, T=16)
    assert torch.isnan(out[0]) and out[1] == float("inf") and out[2] == 0   # NaN stays NaN


def test_chunk_by_length_class(monkeypatch):
    """The tuned table's chunk depends on the length (its shape class), a chunk set through
    BYTESSM_SCAN_CONFIG applies at every length, and the dstate limit is enforced."""
    from bytessm.kernels.triton import configs

    tuned = configs.TUNED
    assert configs._for_length(tuned, tuned.long_from - 1).chunk == tuned.chunk
    assert configs._for_length(tuned, tuned.long_from).chunk == tuned.chunk_long != tuned.chunk
    # the forward's register cap belongs to the length class too
    assert configs._for_length(tuned, tuned.long_from - 1).maxnreg == tuned.maxnreg == 112
    assert configs._for_length(tuned, tuned.long_from).maxnreg == tuned.maxnreg_long == 144
    # ... and where the forward's chunk addresses come from (`common.load_chunk`'s FROM_T0)
    assert not configs._for_length(tuned, tuned.long_from - 1).from_t0
    assert configs._for_length(tuned, tuned.long_from).from_t0
    # ... and both chunks store their saved states by groups (`common.store_position`)
    assert tuned.group_store_chunk >= max(tuned.chunk, tuned.chunk_long)
    # the backward's chunk is 256 at every length: a sub-chunk of the forward's 512
    assert configs.bwd_chunk(configs._for_length(tuned, tuned.long_from)) == 256
    assert configs.bwd_chunk(configs._for_length(tuned, tuned.long_from - 1)) == 256
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", '{"chunk": 64, "maxnreg": 96}')
    assert configs.scan_config(16, 1).chunk == configs.scan_config(16, 1 << 20).chunk == 64
    assert configs.scan_config(16, 1).maxnreg == configs.scan_config(16, 1 << 20).maxnreg == 96
    with pytest.raises(ValueError, match="dstate up to 256"):
        configs.scan_config(257, 10)
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", '{"chunk": 24}')
    with pytest.raises(ValueError, match="chunk must be a power of two >= 16 .*got 24"):
        configs.scan_config(16, 100)
