"""Launch configurations of the scan kernels: fixed, no autotuning at call time.

A program's tiles are (BLOCK_D, CHUNK): the state size only sets how many times the
program loops over them, so one configuration serves every dstate. The length, batch and
channels only change how many segments the chunks are split into (`segments`), which is
plain arithmetic. The table was tuned on the GPU (`scripts/bench_scan.py --tune`);
`BYTESSM_SCAN_CONFIG='{"chunk": 256}'` overrides fields for experiments (and lets the
tests force several segments and carry blocks).

The backward's chunk (`bwd_chunk`: `chunk_bwd`, at most the forward's chunk, which it
divides) is also the granularity of the states the forward pass saves for it (batch x
dim x dstate x length/chunk_bwd floats): a forward and its backward always agree on it.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os


@dataclasses.dataclass(frozen=True)
class ScanConfig:
    chunk: int          # positions per tile and per saved state
    block_d: int        # channels per program, forward
    warps: int
    block_d_bwd: int    # channels per program, backward (where `bwd_fill` allows)
    warps_bwd: int
    block_dn: int       # carry pass: states per program ...
    block_c: int        # ... and segments per step
    warps_carry: int
    programs: int       # split the chunks into segments while the grid stays within this many
                        # programs ...
    unroll: int = 1     # unroll factor of the loop over state indices
    chunk_long: int = 0     # the chunk from `long_from` positions on (0: `chunk` everywhere)
    long_from: int = 2048
    maxnreg: int = 0        # ptxas register cap of the forward kernel (0: none) ...
    maxnreg_long: int = 0   # ... from `long_from` positions on ...
    maxnreg_cu: int = 0     # ... there with cu_seqlens (0: maxnreg_long), also the one-channel
                            # backward's with cu_seqlens (0: maxnreg_bwd_one) ...
    from_t0: bool = False   # the forward without cu_seqlens computes its chunks' addresses
    from_t0_long: bool = False  # from t0 (`common.load_chunk`'s FROM_T0) ... from long_from on
    maxnreg_bwd: int = 0    # ... of the backward at block_d_bwd channels ...
    maxnreg_bwd_one: int = 0    # ... and at one channel, where bwd_fill asks for it
    chunk_bwd: int = 0      # the backward's chunk, the granularity of the saved states
                            # (0: the forward's; at most the forward's: see `bwd_chunk`)
    bwd_fill: int = 0       # the backward runs one channel per program where block_d_bwd
                            # channels would make a grid of fewer programs than this
    seg_chunks: int = 1     # ... and each segment keeps at least this many chunks
    group_store_chunk: int = 0  # the forward stores its saved states by groups of 8
                                # (`common.store_position`) at chunks up to this (0: never)
    gluon_bwd: int = 0      # the backward in Gluon (`scan_bwd_gluon.py`) with this many
                            # channels per program, one warp each, on CUDA where it applies
                            # (0: the Triton kernel everywhere)
    gluon_bwd_reverse: int = 0  # ... its channels per program on reverse scans (0: gluon_bwd)
    gluon_bwd_two_pass: bool = False    # ... each thread's chains run twice (`scan_bwd_gluon.
                                        # _scans_2p`) where it gets the cap maxnreg_gluon
    maxnreg_gluon: int = 0  # its register cap where the grid takes no more waves at it
                            # than at maxnreg_bwd_one (0: maxnreg_bwd_one everywhere)
    gluon_fwd: int = 0      # the forward's full pass in Gluon (`scan_fwd_gluon.py`) with
                            # this many channels per program, one warp each, on CUDA where
                            # it applies (0: the Triton kernel everywhere)
    gluon_fwd_pairs: bool = False   # ... two states an iteration (`scan_fwd_gluon.PAIRS`)
    maxnreg_gluon_fwd: int = 0      # ... its register cap (0: maxnreg)
    gluon_fwd_reverse: bool = False     # ... for reverse scans too (each chunk mirrored,
                                        # `scan_fwd_gluon.py`)
    pad_rows: bool = True   # copy rows whose length is not a multiple of 16 into padded
                            # ones (`scan.row_length`): 2x faster there, more memory


# measured on one H200 (docs/benchmarks/scan.md, scan_tune*.json): one channel per one-warp
# program in both directions; chunks of 512 from 2048 positions on (half the chunk
# hand-overs: 3.6 vs 4.6 ms forward at 1x128K, 0.44 vs 0.50 ms at 8x2K), 256 below, where a
# chunk of 512 would be largely padding (Vision Mamba's 197 or 1025 tokens: at 1025 the
# chunk of 512 measured slower, 440-480 vs 560 images/s in Vim-Ti's inference). The forward
# at chunk 256 capped at 112 registers (8 bytes spilled then): 0.42 vs 0.48 ms at 16x1K (the
# eleventh session's chunk-256 forward compiles to 105 registers under this cap and 76
# without it, which would fit six programs per scheduler instead of four: not re-timed);
# a cap of 112 slowed chunk 512 (3.85 vs 3.52 ms at 128K) and caps of 200 or 168 the ninth
# session's backward (forward+backward 12-30% slower at 128K; `scan_tune_maxnreg.json`).
# The backward runs chunks of 256 with two channels per one-warp program (tenth session,
# interleaved A/B on the H200, `bench_scan_ab.py`): at 1x128K 11.2 ms against 12.4 for
# chunks of 512 with one channel, whose dB and dC atomics (one add per channel, position
# and state) take a third of the backward's time; the two channels' rows are summed in
# registers first. The forward keeps its chunks of 512 and saves its states every 256.
# Register caps (eleventh session, `scan_registers.py --shapes` and `bench_scan_ab.py`): a
# one-warp program of at most 168 registers fits three to an SM scheduler, of 128 four, of
# 169-255 two. Uncapped, ptxas gave the forward at chunk 512 168-172 registers where it
# fits in 128 without spilling; at 172 the 1x128K forward (1536 programs, 1056 fitting at
# once) took 6.6 ms instead of 3.4. Capped at 128, with the sub-chunk saves of
# `common.save_point`: 0.332 vs 0.368 ms at 8x2K, 2.91 vs 3.42 at 128K (the cap alone on
# 454a341's forward: 0.354 and 3.46). With cu_seqlens the forward needs 255 registers
# uncapped, spills 120 bytes at 128 and 12 at 168: 4.50 ms at 128K packed as 16 sequences,
# against 5.10 at 128 and 6.59 uncapped (the first two on a variant with an extra state row,
# since dropped; these kernels: 4.49).
# The backward at two channels needs 255 registers (two programs per scheduler): where that
# grid would have fewer than 1024 programs it runs one channel per program (1x128K: 1536
# programs) capped at 128, 10.3 ms against 11.2 at two channels (168: 10.7); at 8x2K and
# 2x16K two channels stay faster (1.09 vs 1.45 ms, 2.76 vs 3.3). With cu_seqlens, one
# channel capped at 168: 10.8 vs 12.3 ms at 128K in 16 sequences (at 1x16K in 16 sequences
# two channels were faster, 1.56 vs 1.63 ms, and one channel is what the rule gives there).
# Segments (same session): the chunks are split while the grid stays within 1536 programs
# (it was split until it had 256). A model of d_inner 512 at batch 1 has 512 one-warp
# programs, four per SM; in three segments its 1x128K forward took 1.75 ms against 2.58 and
# its backward 5.0 against 7.2 (four segments: 1.69 / 4.77; 1x32K: 0.66x / 0.68x). d_inner
# 768 at batch 1, two segments: 0.99x / 0.87x. At 1024 rows (d_inner 512 at batch 2) two
# segments measured slower (1.23x / 1.07x), so 1024 rows keep one; 1536 rows were one
# before and are. Each segment keeps at least 16 chunks: at 1x16K (32 chunks of 512) four
# segments gave a forward no faster (0.45-0.55 vs 0.34 ms, noisy) where 16 chunks each
# (1x32K) gave 0.66x, and a short prompt at batch 1 keeps its single launch.
# Stores of one position by groups of 8 (`common.store_position`; twelfth session, on the
# H200 against the masked tile's store): the forward's loop over states loses its
# shared-memory round trip and barrier (259 -> 242 instructions at chunk 512), yet only
# chunks of 256 gained (16x1K forward 0.36 vs 0.39 ms); at chunk 512, 8x2K 0.97x but 2x16K
# 1.13x and 1x128K 1.16x (`bench_scan_ab.py`), not understood. The backward's hand-over
# stored so measured 0.91x at two channels per program in `bench_scan_ab.py` (1.075x at
# one), but forward+backward through autograd (`bench_scan.py`) 1.05-1.06x at 8x2K, 2x16K
# and 16x1K, so the backward keeps the masked tile.
# The chunk-512 forward's slowdown with the group store came with the next state's B/C
# prefetches placed at the end of the iteration (SASS); capped at 144 registers instead of
# 128 they move back mid-iteration, and the group store then gains (thirteenth session,
# `bench_scan_ab.py`, forward against cap 128 with the masked tile): 0.959x at 8x2K, 0.926x
# at 2x16K and 1x128K, 0.856x at 1x131071 (the group store alone at 128: 0.98, 1.13, 1.16,
# 0.98). At 144 a one-warp program still fits three to a scheduler: 1584 slots on 132 SMs
# hold 1x128K's 1536 programs at once. The one-channel backward at 144 or 168 instead
# measured 1.13x at 1x128K; the backward at chunks of 128 with two channels capped at 168
# (no spills) 0.895x at 2x16K but 1.10-1.27x elsewhere, with a 6.5% slower forward (its
# saves every 128): neither is used (same session, scan.md).
# More channels per one-warp program at shorter backward chunks, summed before the atomics
# (4 x 64 at 168 registers, no spills, a quarter of the atomic adds; 8 x 32 at 168):
# backward 1.22 / 1.30 / 1.38x at 8x2K / 2x16K / 1x128K for 4 x 64, 1.19 / 1.27 / 1.34x for
# 8 x 32, against the table below (fourteenth session, `bench_scan_ab.py`): the short
# chunks' per-chunk work costs more than the atomics save.
# The backward runs in Gluon where it applies (`scan._gluon_backward`): two channels per
# program on two warps, their dB/dC rows summed before the atomic adds, at 168 registers
# where that costs the grid no wave (`scan._gluon_cap`); `scan_bwd_gluon.py` has the
# measurements (0.77-0.81x the Triton backward from 2x16K to 1x1M, twenty-first session).
# From 2048 positions the forward without cu_seqlens computes its chunks' addresses from
# their start (`from_t0_long`, `common.load_chunk`'s FROM_T0): 128 registers under the cap
# of 144, 16 programs an SM, 0.88-0.95x the time where grids take several waves (8x2K to
# 16x8K), level at one wave; under the caps of 112 and 168 it measured 1.05-1.06x, so the
# short and packed forwards keep the positions' addresses (twenty-seventh session). That
# retired the twenty-sixth session's rule of a cap of 128 where it saved waves.
# Where it applies (`scan._gluon_forward`: in order, no cu_seqlens, one segment, from 2048
# positions) the forward's full pass runs in Gluon (`scan_fwd_gluon.py`): four channels per
# program sharing the chunk's B and C rows through shared memory, 16 positions a thread;
# 0.89x the Triton forward's time at 1x128K and 1x1M, 0.86x at 2x16K, 0.98x at 16x8K (d_inner
# 1024), 1.01x at 8x2K (twenty-eighth session, H200, `bench_scan_ab.py`). Two states an
# iteration in it (`gluon_fwd_pairs`, one scan across the lanes for both), capped at 168
# registers (still three programs an SM, which its shared memory allows; 20 bytes spilled at
# 144): 0.950-0.958x its time from 8x2K to 1x128K and at 16x8K (d_inner 1024; twenty-ninth
# session). Measured in the same run and not kept: the Gluon backward's B and C rows staged
# in shared memory by cp.async a chunk ahead, 1.15-1.18x its time at two channels per
# program, 1.09-1.13x at four; at four with dA summed across the lanes once per program
# (its terms kept per thread in shared memory), 0.996x at 8x2K, 1.006x at 2x16K, 1.058x at
# 1x128K (`docs/benchmarks/scan.md`).
# The Gluon backward's chains in two passes where it gets the cap of 168 (`gluon_bwd_two_pass`,
# `scan_bwd_gluon._scans_2p`: each thread's total decay from one exp2 of its summed dt):
# 0.98x its time at 2x16K and 1x128K, in order and reversed (thirtieth session); under 128
# (8x2K) it spills more and took 1.12x. The forward's two runs of 8 in two passes the same
# way (359 instructions a pair against 377) took 1.035x its time, and was not kept. The Gluon
# forward holds z's row over its loop and starts y at D u, so its chunk ends wait on no load:
# 0.97x its time (thirty-first session; no configuration field, `scan_fwd_gluon.py`).
# Four channels per program in the Gluon backward (thirty-third session, its dB/dC rows
# staged without bank conflicts, against two): 0.970x its time at 8x2K, 0.923x at 2x16K,
# 0.990x at 1x128K, 0.957x at 1x1M, 0.983x at 1x128K and 0.967x at 4x8K with d_inner 512,
# 1.000x at 16x8K with d_inner 1024; reversed 0.994x at 2x16K but 1.040x at 1x128K, so
# reverse scans keep two (`gluon_bwd_reverse`). Where four do not divide a group's channels
# it takes two (`scan._gluon_backward`).
# The Gluon forward on reverse scans (`gluon_fwd_reverse`, each chunk mirrored; thirty-fourth
# session, against the Triton reverse forward): 0.913x its time at 8x2K, 0.806x at 2x16K,
# 0.827x at 1x128K.
TUNED = ScanConfig(chunk=256, block_d=1, warps=1, block_d_bwd=2, warps_bwd=1,
                   block_dn=128, block_c=16, warps_carry=4, programs=1536, chunk_long=512,
                   maxnreg=112, maxnreg_long=144, maxnreg_cu=168, from_t0_long=True,
                   maxnreg_bwd_one=128,
                   chunk_bwd=256, bwd_fill=1024, seg_chunks=16, group_store_chunk=512,
                   gluon_bwd=4, gluon_bwd_reverse=2, maxnreg_gluon=168,
                   gluon_bwd_two_pass=True, gluon_fwd=4, gluon_fwd_pairs=True,
                   maxnreg_gluon_fwd=168, gluon_fwd_reverse=True)
MAX_DSTATE = 256


def cdiv(a: int, b: int) -> int:
    """ceil(a / b), what `triton.cdiv` gives: the launchers call these two on every call, and
    from Python Triton's (ConstexprFunctions in Triton 3.6) cost about 6 us each, 18 calls in
    a scan's forward and backward."""
    return -(-a // b)


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (0 for 0), what `triton.next_power_of_2` gives."""
    return 1 << (n - 1).bit_length() if n > 0 else 0


def n_pad(dstate: int) -> int:
    return max(next_pow2(dstate), 2)


@functools.lru_cache(maxsize=None)
def _config(overrides: str, interpret: bool) -> ScanConfig:
    cfg = TUNED
    if interpret:
        # the interpreter pays per program and per op, not per element: few, small chunks
        # (and at every length the addresses the GPU's long forward computes)
        cfg = dataclasses.replace(cfg, chunk=32, block_d=8, block_d_bwd=8, bwd_fill=0,
                                  programs=1, chunk_long=0, seg_chunks=1, from_t0=True)
    fields = json.loads(overrides) if overrides else {}
    if "chunk" in fields and "chunk_long" not in fields:
        fields["chunk_long"] = 0  # a chunk asked for is the chunk at every length
    if "maxnreg" in fields and "maxnreg_long" not in fields:
        fields["maxnreg_long"] = fields["maxnreg"]  # likewise a register cap ...
    if "from_t0" in fields and "from_t0_long" not in fields:
        fields["from_t0_long"] = fields["from_t0"]  # ... and the forward's addresses
    cfg = dataclasses.replace(cfg, **fields)
    for name in ("chunk", "chunk_long", "chunk_bwd"):
        value = getattr(cfg, name)
        if (value or name == "chunk") and (value < 16 or value & (value - 1)):
            raise ValueError(f"scan configuration: {name} must be a power of two >= 16 (the "
                             f"reverse scans work on groups of 8 positions), got {value} "
                             f"(BYTESSM_SCAN_CONFIG={overrides!r})")
    return cfg


def _for_length(cfg: ScanConfig, length: int) -> ScanConfig:
    # bool() of each comparison: under torch.compile's dynamic shapes `length` is symbolic,
    # and the cache below takes plain bools (a guard on the length's class)
    return _tier(cfg, bool(cfg.chunk_long and length >= cfg.long_from))


@functools.lru_cache(maxsize=None)
def _tier(cfg: ScanConfig, long: bool) -> ScanConfig:
    """The configuration from `long_from` positions on (`long`): built once, not per call
    (the launchers ask for it several times a call)."""
    if long:
        cfg = dataclasses.replace(cfg, chunk=cfg.chunk_long, maxnreg=cfg.maxnreg_long,
                                  from_t0=cfg.from_t0_long)
    return cfg


def bwd_chunk(cfg: ScanConfig) -> int:
    """The backward's chunk: `chunk_bwd`, at most the forward's chunk (both powers of two,
    so it divides it), which the forward saves its states at."""
    return min(cfg.chunk_bwd or cfg.chunk, cfg.chunk)


def scan_config(dstate: int, length: int) -> ScanConfig:
    """The configuration of a scan over `length` positions (its shape class: the chunk)."""
    if dstate > MAX_DSTATE:
        raise ValueError(f"selective_scan (triton): dstate up to {MAX_DSTATE} is supported, "
                         f"got {dstate}")
    return _for_length(_config(os.environ.get("BYTESSM_SCAN_CONFIG", ""),
                               os.environ.get("TRITON_INTERPRET") == "1"), length)


def segments(rows: int, chunks: int, programs: int, min_chunks: int = 1) -> int:
    """How many segments the chunks of each of `rows` (batch x channel block) rows are split
    into: as many as keep the grid within `programs` programs (about what the GPU holds at
    once; a second wave of programs would cost more than the parallelism gains), at least
    one, each with `min_chunks` chunks at least (a segment costs launches and a carry)."""
    return max(1, min(programs // max(rows, 1), chunks // max(min_chunks, 1)))


# ---------------------------------------------------------------------------- decode step
@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    block_d: int    # channels per program of the state step
    warps: int


def decode_config(batch: int, dim: int, dstate: int) -> DecodeConfig:
    """Launch configuration of the single-step state update (`decode.py`). The step streams
    the state once (batch x dim x dstate floats): enough programs to fill the SMs at batch 1,
    enough bytes per program to keep the loads in flight at large batch.
    `BYTESSM_DECODE_CONFIG='{"block_d": 32, "warps": 4}'` overrides it for sweeps
    (`scripts/bench_scan.py --tune-decode`)."""
    # by batch class, from H200 sweeps beside mamba_ssm's step (dstate 16, `bench_scan.py
    # --tune-decode`, docs/benchmarks/decode_tune.json): 512 state elements (32 channels) and
    # four warps per program up to batch 32, mamba_ssm's own geometry (2026-11-30, ninth
    # session, interleaved repeats: 0.98-1.01x its time at batch 1 against 1.01-1.03x for
    # 128 elements and one warp; 1.03x at batch 16 against 1.04-1.05x for 1024 and four),
    # 512 and one warp above (0.78x at 128). The model's step, which computes dt_proj in
    # the same kernel, decoded the 353M Mamba at 1,820 tokens/s at batch 1 this way against
    # 1,809 with 128 elements and one warp (`bench_generate.py --compile off --prompts 1024`).
    # Re-checked after the kernel's broadcast B/C rows (fourteenth session, `bench_scan_ab.py
    # --decode`): 0.96x mamba_ssm's time at batch 1, 0.93x at 16, 0.75x at 128
    elements, warps = (512, 4) if batch <= 32 else (512, 1)
    cfg = DecodeConfig(block_d=min(max(1, elements // n_pad(dstate)), 64), warps=warps)
    overrides = os.environ.get("BYTESSM_DECODE_CONFIG")
    if overrides:
        cfg = dataclasses.replace(cfg, **json.loads(overrides))
    return dataclasses.replace(cfg, block_d=min(cfg.block_d, next_pow2(dim)))
