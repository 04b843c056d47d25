"""Launch configurations of the scan kernels, fixed per shape class: no autotuning at call time.

The shape class is the padded state size N_PAD (the tile is BLOCK_D x N_PAD x CHUNK, so it
sets the register budget); the length and batch only change how many programs split the
channels (`splits`), which is plain arithmetic. The table below was tuned on an H100
(scripts/bench_scan.py --tune); `BYTESSM_SCAN_CONFIG='{"16": {"chunk": 32}}'` overrides
fields for experiments (and lets the tests force several channel blocks and splits).

CHUNK is also the granularity of the states the forward pass saves for the backward pass
(batch x dim x dstate x length/CHUNK floats), so it depends on N_PAD only: a forward and
its backward always agree on it.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os

import triton


@dataclasses.dataclass(frozen=True)
class ScanConfig:
    chunk: int          # positions per tile and per saved state
    block_d: int        # channels per tile, forward kernels
    warps: int
    block_d_bwd: int    # channels per tile, backward kernels
    warps_bwd: int
    block_dn: int       # carry pass: states per program ...
    block_c: int        # ... and chunks per step
    warps_carry: int
    programs: int       # aim for at least this many programs in the chunk kernels


# keyed by N_PAD; measured on one H100 SXM, bf16 inputs, D=1536 (docs/benchmarks/scan.md)
TUNED: dict[int, ScanConfig] = {
    # BLOCK_D * N_PAD = 32 * warps: every thread owns whole time columns of the tile
    16: ScanConfig(chunk=16, block_d=8, warps=4, block_d_bwd=8, warps_bwd=4,
                   block_dn=128, block_c=16, warps_carry=4, programs=2048),
    32: ScanConfig(chunk=16, block_d=4, warps=4, block_d_bwd=4, warps_bwd=4,
                   block_dn=128, block_c=16, warps_carry=4, programs=2048),
    64: ScanConfig(chunk=16, block_d=2, warps=4, block_d_bwd=2, warps_bwd=4,
                   block_dn=128, block_c=16, warps_carry=4, programs=2048),
    128: ScanConfig(chunk=16, block_d=1, warps=4, block_d_bwd=1, warps_bwd=4,
                    block_dn=128, block_c=16, warps_carry=4, programs=2048),
    256: ScanConfig(chunk=16, block_d=1, warps=8, block_d_bwd=1, warps_bwd=8,
                    block_dn=256, block_c=16, warps_carry=8, programs=2048),
}


def n_pad(dstate: int) -> int:
    return max(triton.next_power_of_2(dstate), 2)


@functools.lru_cache(maxsize=None)
def _config(npad: int, overrides: str) -> ScanConfig:
    npad = max(npad, 16)  # smaller states use the N_PAD=16 tiles' configuration
    if npad not in TUNED:
        raise ValueError(f"selective_scan (triton): dstate up to 256 is supported, got N_PAD={npad}")
    cfg = TUNED[npad]
    if os.environ.get("TRITON_INTERPRET") == "1":
        # the interpreter pays per program and per op, not per element: few, wide programs
        cfg = dataclasses.replace(cfg, block_d=8, block_d_bwd=8, programs=1)
    extra = json.loads(overrides).get(str(npad), {}) if overrides else {}
    return dataclasses.replace(cfg, **extra)


def scan_config(dstate: int) -> ScanConfig:
    return _config(n_pad(dstate), os.environ.get("BYTESSM_SCAN_CONFIG", ""))


def splits(dim_per_group: int, block_d: int, rows: int, chunks: int, programs: int) -> int:
    """How many programs share one (batch, group)'s channels so that the grid has at least
    `programs` programs, without giving a program less than one channel block."""
    want = triton.cdiv(programs, max(rows * chunks, 1))
    return max(1, min(want, triton.cdiv(dim_per_group, block_d)))
