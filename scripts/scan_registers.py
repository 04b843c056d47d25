#!/usr/bin/env python3
"""Registers and spills of the scan kernels for sm_90, compiled on a machine without a GPU.

    python scripts/scan_registers.py [--chunk 256] [--block-d 1] [--warps 1] \
        [--chunk-bwd 256] [--block-d-bwd 1] [--warps-bwd 1] [--all-variants]

Triton's front end and the ptxas it ships run on any machine; `ptxas -v` on the PTX gives
the register count and spill bytes that set how many programs fit on an SM. bf16 inputs,
with D, z, delta_bias and softplus, B/C read as int32 pairs in the forward; by default
the variants without cu_seqlens, with an initial state, in both directions (--all-variants:
every combination of initial state, cu_seqlens, reverse and the segments' state-only /
adjoint-only passes); aligned as for a length that is a multiple of 16 unless --unaligned. Also counts the warp shuffles in the PTX.
"""
from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from bytessm.kernels.triton.scan_bwd import scan_bwd_kernel
from bytessm.kernels.triton.scan_fwd import scan_fwd_kernel

PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
BF16 = ("u_ptr", "delta_ptr", "B_ptr", "C_ptr", "z_ptr", "out_ptr", "dout_ptr", "du_ptr",
        "ddelta_ptr", "dz_ptr")


def compile_kernel(fn, constants: dict, absent: list[str], warps: int, aligned: bool = True):
    """Compile `fn` with `constants` as constexprs and the `absent` pointers as None.

    `aligned`: specialised the way Triton specialises a call whose length and row strides
    are multiples of 16 (unit strides along the length become constants, the other integers
    and the pointers are marked divisible by 16): what the model layers hand the scan.
    Without it nothing is known about alignment, as for an odd length."""
    consts = {**constants, **{name: None for name in absent}}
    if aligned:
        consts.update({name: 1 for name in fn.arg_names if name.endswith("_l")})
    sig = {}
    for name in fn.arg_names:
        if name in consts:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*bf16" if name in BF16 else "*i32" if name == "seq_ptr" else "*fp32"
        else:
            sig[name] = "i32"
    attrs = ({(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names)
              if name not in consts} if aligned else {})
    src = ASTSource(fn=fn, signature=sig, attrs=attrs,
                    constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})


def shuffles(kernel) -> int:
    """Warp shuffles in the kernel's PTX (most sit in the loop over state indices)."""
    return kernel.asm["ptx"].count("shfl.sync")


def ptxas_usage(kernel) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(kernel.asm["ptx"])
    try:
        out = subprocess.run([PTXAS, "-v", "--gpu-name=sm_90a", f.name, "-o", os.devnull],
                             capture_output=True, text=True, check=True).stderr
    finally:
        os.unlink(f.name)
    regs = re.search(r"Used (\d+) registers", out)
    spill = re.search(r"(\d+) bytes spill stores", out)
    return f"{regs.group(1) if regs else '?'} registers, {spill.group(1) if spill else '?'} bytes spilled"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--chunk", type=int, default=256)
    p.add_argument("--block-d", type=int, default=1)
    p.add_argument("--warps", type=int, default=1)
    p.add_argument("--chunk-bwd", type=int, default=0, help="the backward's chunk (0: --chunk)")
    p.add_argument("--block-d-bwd", type=int, default=1)
    p.add_argument("--warps-bwd", type=int, default=1)
    p.add_argument("--all-variants", action="store_true")
    p.add_argument("--unaligned", action="store_true",
                   help="compile as for an odd length (no alignment known)")
    a = p.parse_args()
    base = dict(CHUNK=a.chunk, N_PAD=16, UNROLL=1, EVEN_L=not a.unaligned, SOFTPLUS=True,
                HAS_BIAS=True, HAS_D=True, HAS_Z=True)
    chunk_bwd = min(a.chunk_bwd or a.chunk, a.chunk)      # as configs.bwd_chunk
    flags = (itertools.product((False, True), repeat=4) if a.all_variants
             else [(True, False, False, False), (True, False, True, False)])
    for h0, cu, reverse, partial in flags:
        absent = ([] if cu else ["seq_ptr"]) + ([] if h0 else ["h0_ptr"])
        fwd = compile_kernel(scan_fwd_kernel, dict(base, BC_PAIRS=True,
                                                    SAVE=chunk_bwd,
                                                    BLOCK_D=a.block_d, HAS_H0=h0,
                                                    HAS_CU=cu, REVERSE=reverse,
                                                    STATE_ONLY=partial, HAS_ENTER=not partial),
                             absent + ([] if partial else ["seg_dt_ptr"]), a.warps,
                             not a.unaligned)
        bwd = compile_kernel(scan_bwd_kernel, dict(base, CHUNK=chunk_bwd,
                                                    BLOCK_D=a.block_d_bwd, HAS_H0=h0,
                                                    HAS_CU=cu, REVERSE=reverse, ADJ_ONLY=partial,
                                                    HAS_ENTER=not partial, HAS_DLAST=True),
                             absent + ([] if partial else ["seg_dt_ptr"])
                             + ([] if (h0 and cu) else ["dh0_ptr"]), a.warps_bwd,
                             not a.unaligned)
        label = (f"h0={h0:d} cu={cu:d} reverse={reverse:d} "
                 f"{'state/adjoint-only pass' if partial else 'full pass'}")
        print(f"{label}: forward {ptxas_usage(fwd)}, {shuffles(fwd)} shuffles; "
              f"backward {ptxas_usage(bwd)}, {shuffles(bwd)} shuffles", flush=True)


if __name__ == "__main__":
    main()
