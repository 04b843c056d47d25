#!/usr/bin/env python3
"""Registers and spills of the scan kernels for sm_90, compiled on a machine without a GPU.

    python scripts/scan_registers.py [--shapes 8x2048,1x131072] [--seqs 16] [--reverse] \
        [--initial-state] [--dim 1536] [--kernels DIR] [--ptx DIR]

Compiles what `scan.scan_forward` and `scan.scan_backward` launch for `bench_scan.py`'s
workload (N=16, bf16, z, D, delta_bias, softplus) at the given BxL shapes: the tuned
configuration (`BYTESSM_SCAN_CONFIG` overrides it, e.g. '{"maxnreg_long": 96}'), every
launch of the call (the segments' state-only / adjoint-only passes included), specialised
from the launch's own arguments as Triton specialises a call: integers equal to 1 become
constants, integers and pointers that are multiples of 16 are marked divisible (a length
such as 1x1000 gives the padded rows' launches, and with BYTESSM_SCAN_CONFIG='{"pad_rows":
false}' the unaligned ones: 112 shuffles in the forward at 128x197 against 12). The tensors
live on the meta device, so nothing is allocated. Triton's front end and the ptxas it ships
run on any machine; `ptxas -v` gives the register count and spill bytes, and the PTX its
warp shuffles.

The register count decides the occupancy: a one-warp program of up to 128 registers fits
four to an SM scheduler, up to 168 three, 169-255 two (on an H200 the forward at 172
registers ran at half the speed of the same loop at 168). `--seqs K` packs batch-1 rows as
K sequences (cu_seqlens); `--kernels` compiles another version's `kernels/triton` folder (a
`git archive` copy) instead of this checkout's; `--ptx` keeps each launch's PTX (for
`nvdisasm` after `ptxas`) and its TTGIR (the layouts Triton chose, and where it converts
between them).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import types

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.experimental.gluon._runtime import GluonASTSource, GluonJITFunction

from bytessm.kernels.triton import scan

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_scan  # noqa: E402
from bench_scan_ab import import_launchers  # noqa: E402

H200_SMS = 132
H200_SMEM = 233472   # shared memory per SM, bytes
PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")


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
    source = GluonASTSource if isinstance(fn, GluonJITFunction) else ASTSource
    src = source(fn=fn, signature=sig, attrs=attrs,
                 constexprs={(names.index(k),): v for k, v in consts.items()})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)


class _Recorder:
    """Stands in for a kernel's `kernel[grid]`: compiles the launches instead of running them."""

    def __init__(self, fn, label: str, ptx_dir: str | None = None):
        self.fn, self.label, self.ptx_dir, self.count = fn, label, ptx_dir, 0

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            passes = ("state-only pass" if kwargs.get("STATE_ONLY") else
                      "adjoint-only pass" if kwargs.get("ADJ_ONLY") else
                      "pass" if "CHUNK" not in kwargs else "full pass")
            k = compile_launch(self.fn, args, kwargs)
            if self.ptx_dir:
                os.makedirs(self.ptx_dir, exist_ok=True)
                self.count += 1
                for ext in ("ptx", "ttgir"):  # the PTX, and Triton's IR with its layouts
                    path = os.path.join(self.ptx_dir, f"{self.label}_{self.count}.{ext}")
                    with open(path, "w") as f:
                        f.write(k.asm[ext])
            channels = kwargs.get("BLOCK_D", kwargs.get("W"))   # W: the Gluon kernels'
            shape = (f"chunk {kwargs['CHUNK']}, {channels} channel(s)"
                     if "CHUNK" in kwargs else f"{kwargs['BLOCK_DN']} states")
            print(f"  {self.label} {passes}, grid {tuple(grid)}, {shape} x "
                  f"{kwargs['num_warps']} warp(s): {ptxas_usage(k)}, {shuffles(k)} shuffles",
                  flush=True)
        return launch


def compile_shapes(shapes: str, seqs: int, dim: int, reverse: bool, initial_state: bool,
                   kernels: str | None, ptx_dir: str | None):
    """Compile, instead of running, what the launchers launch at each BxL shape."""
    launchers = import_launchers(kernels, "bytessm_other_kernels") if kernels else scan
    launchers.scan_fwd_kernel = _Recorder(launchers.scan_fwd_kernel, "forward", ptx_dir)
    launchers.scan_bwd_kernel = _Recorder(launchers.scan_bwd_kernel, "backward", ptx_dir)
    launchers.chunk_carry_kernel = _Recorder(launchers.chunk_carry_kernel, "carry", ptx_dir)
    if hasattr(launchers, "scan_bwd_gluon_kernel"):   # versions before it (--kernels) lack it
        launchers.scan_bwd_gluon_kernel = _Recorder(launchers.scan_bwd_gluon_kernel,
                                                     "backward (Gluon)", ptx_dir)
        # what an H200 gets: the Gluon backward where it applies (it asks whether the
        # tensors are on CUDA; these are on the meta device) and its register cap for 132 SMs
        gluon_applies = launchers._gluon_backward
        launchers._gluon_backward = lambda cfg, u, *rest: gluon_applies(
            cfg, types.SimpleNamespace(is_cuda=True, shape=u.shape), *rest)
        launchers.num_sms = lambda _index: H200_SMS
    if hasattr(launchers, "scan_fwd_gluon_kernel"):
        launchers.scan_fwd_gluon_kernel = _Recorder(launchers.scan_fwd_gluon_kernel,
                                                     "forward (Gluon)", ptx_dir)
        fwd_applies = launchers._gluon_forward
        launchers._gluon_forward = lambda cfg, u, *rest: fwd_applies(
            cfg, types.SimpleNamespace(is_cuda=True, shape=u.shape,
                                       device=types.SimpleNamespace(index=0)), *rest)
        launchers._staging_fits = lambda _index, chunk, npad: 2 * 8 * npad * chunk <= H200_SMEM
    dstate = bench_scan.D_STATE
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
        h0 = torch.empty(batch if cu is None else seqs, dim, dstate, device="meta") \
            if initial_state else None
        print(f"{shape}, D={dim}{f', {seqs} sequences' if cu is not None else ''}"
              f"{', reverse' if reverse else ''}{', initial state' if initial_state else ''}:",
              flush=True)
        args = (u, delta, A, B, C, D, z, bias)
        _out, _last, states = launchers.scan_forward(*args, h0, cu, True, reverse)
        launchers.scan_backward(torch.empty_like(u), None, *args, h0, cu, states, True, reverse)


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
    p.add_argument("--shapes", default="8x2048,1x131072", help="BxL shapes, comma-separated")
    p.add_argument("--dim", type=int, default=bench_scan.D_INNER, help="channels (d_inner)")
    p.add_argument("--seqs", type=int, default=0,
                   help="pack batch-1 rows as this many sequences (cu_seqlens)")
    p.add_argument("--reverse", action="store_true")
    p.add_argument("--initial-state", action="store_true")
    p.add_argument("--kernels", help="another version's kernels/triton folder")
    p.add_argument("--ptx", help="write each launch's PTX into this folder "
                   "(forward_1.ptx, backward_1.ptx, ... in launch order)")
    a = p.parse_args()
    compile_shapes(a.shapes, a.seqs, a.dim, a.reverse, a.initial_state, a.kernels, a.ptx)


if __name__ == "__main__":
    main()
