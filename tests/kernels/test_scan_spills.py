"""Spills of the Triton backward where CUDA runs it (cu_seqlens, reverse), and the reverse
forward's loop against the in-order one, compiled for sm_90 by `scripts/scan_registers.py`
on any machine. A guard for a measured regression: taking its
chunk epilogue's sigmoids through exp2 (as the Gluon kernel does) made the one-channel
backward spill 40 bytes instead of 12 at 1x16K in 4 sequences, and it took 1.04-1.05x the
time on an H200 (twenty-second session, `bench_scan_ab.py --seqs 4`)."""
from __future__ import annotations

import re

from kernel_helpers import scan_registers


def _backward_spills(*args: str) -> list[int]:
    lines = [line for line in scan_registers(*args).splitlines()
             if "backward full pass" in line]
    assert lines
    return [int(re.search(r"(\d+) bytes spilled", line).group(1)) for line in lines]


def test_packed_backward_spills_what_was_measured():
    # 1x16384 in 4 sequences: one channel per one-warp program, capped at 168 registers.
    # Any other count means the kernel compiles differently from what was timed
    assert _backward_spills("--shapes", "1x16384", "--seqs", "4") == [12]


def _forward(*args: str) -> tuple[int, int, int]:
    """(registers, bytes spilled, shuffles) of the forward's full pass."""
    line, = [line for line in scan_registers(*args).splitlines() if "forward full pass" in line]
    return tuple(int(v) for v in re.search(
        r"(\d+) registers, (\d+) bytes spilled, (\d+) shuffles", line).groups())


def test_reverse_forward_compiles_to_the_in_order_loop(monkeypatch):
    # the mirrored chunk (`common.chunk_rows`, `load_chunk`) keeps the in-order tiles'
    # layout: as many shuffles as in order, no spill. A draft that loaded the mirrored rows
    # with descending addresses got 224 shuffles and spilled 112 bytes (twenty-fifth
    # session); on an H200 the reverse forward now takes 0.96-1.00x the in-order one's time
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", '{"gluon_fwd": 0}')   # the Triton kernel in order
    _regs, spilled, shuffles = _forward("--shapes", "8x2048", "--reverse")
    _regs_in_order, _spilled, shuffles_in_order = _forward("--shapes", "8x2048")
    assert (spilled, shuffles) == (0, shuffles_in_order)


def test_in_order_forward_fits_128_registers(monkeypatch):
    # with the chunk's addresses and masks after the loop over states computed from t0
    # (`common._in_order`), nothing of the chunk stays live across that loop but what it
    # uses: 128 registers under the cap of 144, no spill, as the reverse forward. Taken
    # from `chunk_rows`'s positions and masks, they took 144 (twenty-sixth session). The
    # Triton kernel's, which runs these shapes where the Gluon forward does not (several
    # segments, channels per group not a multiple of 4, B and C not bf16)
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", '{"gluon_fwd": 0}')
    assert _forward("--shapes", "8x2048") == (128, 0, 28)
    assert _forward("--shapes", "1x131072")[:2] == (128, 0)
