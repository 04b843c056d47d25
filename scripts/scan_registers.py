#!/usr/bin/env python3
"""Registers and spills of the scan kernels for sm_90, compiled on a machine without a GPU.

    python scripts/scan_registers.py [--chunk 256] [--block-d 1] [--warps 1] \
        [--chunk-bwd 256] [--block-d-bwd 1] [--warps-bwd 1] [--all-variants]
    python scripts/scan_registers.py --shapes 8x2048,1x131072 [--seqs 16] [--kernels DIR] \
        [--ptx DIR]

Triton's front end and the ptxas it ships run on any machine; `ptxas -v` on the PTX gives
the register count and spill bytes that set how many programs fit on an SM. bf16 inputs,
with D, z, delta_bias and softplus, B/C read as int32 pairs in the forward; by default
the variants without cu_seqlens, with an initial state, in both directions (--all-variants:
every combination of initial state, cu_seqlens, reverse and the segments' state-only /
adjoint-only passes; the full passes as with one segment); aligned as for a length that
is a multiple of 16 unless --unaligned. Also counts the warp shuffles in the PTX. (This
mode marks every integer argument divisible by 16, the group count 1 included, where
Triton makes 1 a constant, so its counts can differ from what runs; `--shapes` does not.)

`--shapes` compiles instead what `scan.scan_forward` and `scan.scan_backward` launch for
`bench_scan.py`'s workload at those shapes (the tuned configuration, `BYTESSM_SCAN_CONFIG`
included), specialised from the launch's own arguments as Triton specialises a call:
integers equal to 1 become constants, integers and pointers that are multiples of 16 are
marked divisible. The tensors live on the meta device, so nothing is allocated. The
register count decides the occupancy: a one-warp program with up to 168 registers fits
three to a scheduler, 169-255 only two (on an H200 the forward at 172 registers ran at
half the speed of the same loop at 168). `--kernels` compiles another version's
`kernels/triton` folder (a `git archive` copy) instead of this checkout's.
"""
from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from bytessm.kernels.triton import scan
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


def compile_launch(fn, args: tuple, kwargs: dict):
    """Compile `fn` for sm_90a as Triton would for the launch `fn[grid](*args, **kwargs)`."""
    consts, sig, attrs = {}, {}, {}
    names = fn.arg_names
    for i, (name, value) in enumerate(zip(names, args)):
        if value is None or (isinstance(value, int) and not isinstance(value, bool)
                             and value == 1):
            consts[name] = value
        elif isinstance(value, torch.Tensor):
            sig[name] = "*" + {torch.bfloat16: "bf16", torch.float16: "fp16",
                               torch.float32: "fp32", torch.int32: "i32"}[value.dtype]
            if value.data_ptr() % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, bool):
            sig[name] = "i1"
        else:
            sig[name] = "i32" if -2**31 <= value < 2**31 else "i64"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    options = {k: kwargs[k] for k in ("num_warps", "maxnreg") if k in kwargs}
    consts.update({k: v for k, v in kwargs.items() if k not in options})
    sig = {name: "constexpr" if name in consts else sig[name] for name in names}
    src = ASTSource(fn=fn, signature=sig, attrs=attrs,
                    constexprs={(names.index(k),): v for k, v in consts.items()})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)


class _Recorder:
    """Stands in for a kernel's `kernel[grid]`: compiles the launches instead of running them."""

    def __init__(self, fn, label: str, ptx_dir: str | None = None):
        self.fn, self.label, self.ptx_dir, self.count = fn, label, ptx_dir, 0

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            passes = ("state-only pass" if kwargs.get("STATE_ONLY") else
                      "adjoint-only pass" if kwargs.get("ADJ_ONLY") else "full pass")
            k = compile_launch(self.fn, args, kwargs)
            if self.ptx_dir:
                self.count += 1
                path = os.path.join(self.ptx_dir, f"{self.label}_{self.count}.ptx")
                with open(path, "w") as f:
                    f.write(k.asm["ptx"])
            print(f"  {self.label} {passes}, grid {tuple(grid)}, chunk {kwargs['CHUNK']}, "
                  f"{kwargs['BLOCK_D']} channel(s) x {kwargs['num_warps']} warp(s): "
                  f"{ptxas_usage(k)}, {shuffles(k)} shuffles", flush=True)
        return launch


def shapes_main(shapes: str, seqs: int, kernels: str | None, ptx_dir: str | None):
    """What the launchers compile for bench_scan.py's workload (D=1536, N=16, bf16)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_scan
    from bench_scan_ab import import_launchers
    launchers = import_launchers(kernels, "bytessm_other_kernels") if kernels else scan
    launchers.scan_fwd_kernel = _Recorder(launchers.scan_fwd_kernel, "forward", ptx_dir)
    launchers.scan_bwd_kernel = _Recorder(launchers.scan_bwd_kernel, "backward", ptx_dir)
    dim, dstate = bench_scan.D_INNER, bench_scan.D_STATE
    for shape in shapes.split(","):
        batch, length = (int(v) for v in shape.split("x"))
        meta = dict(device="meta", dtype=torch.bfloat16)
        u, delta, z = (torch.empty(batch, dim, length, **meta) for _ in range(3))
        B, C = (torch.empty(batch, dstate, length, **meta) for _ in range(2))
        A = torch.empty(dim, dstate, device="meta")
        D, bias = torch.empty(dim, device="meta"), torch.empty(dim, device="meta")
        cu = None
        if seqs and batch == 1:
            cu = torch.linspace(0, length, seqs + 1).round().to(torch.int32).to("meta")
        print(f"{shape}{f', {seqs} sequences' if cu is not None else ''}:", flush=True)
        args = (u, delta, A, B, C, D, z, bias)
        _out, _last, states = launchers.scan_forward(*args, None, cu, True, False)
        launchers.scan_backward(torch.empty_like(u), None, *args, None, cu, states, True, False)


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
    return (f"{regs.group(1) if regs else '?'} registers, "
            f"{spill.group(1) if spill else '?'} bytes spilled")


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
    p.add_argument("--shapes", help="compile what the launchers run at these BxL shapes")
    p.add_argument("--kernels", help="with --shapes: another version's kernels/triton folder")
    p.add_argument("--ptx", help="with --shapes: write each launch's PTX into this folder "
                   "(forward_1.ptx, backward_1.ptx, ... in launch order)")
    p.add_argument("--seqs", type=int, default=0,
                   help="with --shapes: pack batch-1 rows as this many sequences (cu_seqlens)")
    a = p.parse_args()
    if a.shapes:
        return shapes_main(a.shapes, a.seqs, a.kernels, a.ptx)
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
                                                    STATE_ONLY=partial, HAS_ENTER=False,
                                                    SPLIT=partial),
                             absent + ([] if partial else ["seg_dt_ptr", "ends_ptr"]), a.warps,
                             not a.unaligned)
        bwd = compile_kernel(scan_bwd_kernel, dict(base, CHUNK=chunk_bwd,
                                                    BLOCK_D=a.block_d_bwd, HAS_H0=h0,
                                                    HAS_CU=cu, REVERSE=reverse, ADJ_ONLY=partial,
                                                    HAS_ENTER=False, HAS_DLAST=True),
                             absent + ([] if partial else ["seg_dt_ptr"])
                             + ([] if (h0 and cu) else ["dh0_ptr"]), a.warps_bwd,
                             not a.unaligned)
        label = (f"h0={h0:d} cu={cu:d} reverse={reverse:d} "
                 f"{'state/adjoint-only pass' if partial else 'full pass'}")
        print(f"{label}: forward {ptxas_usage(fwd)}, {shuffles(fwd)} shuffles; "
              f"backward {ptxas_usage(bwd)}, {shuffles(bwd)} shuffles", flush=True)


if __name__ == "__main__":
    main()
