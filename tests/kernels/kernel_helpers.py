"""Shared by the kernel tests: the tolerance table, the error measure, random inputs, and
Gluon kernels and the scan's launches compiled for sm_90 without a GPU.

Errors are relative L2, ||out - ref|| / ||ref||, against the float32 reference run on the
same (already rounded) inputs, so the table only has to absorb the kernel's own rounding:
float32 arithmetic in a different order, and for bf16/fp16 the rounding of each output and
gradient to the input dtype (2^-9 and 2^-12 relative per element).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

TOLERANCE = {
    torch.float32: 1e-5,
    torch.float16: 3e-3,
    torch.bfloat16: 1e-2,
}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref||; where the reference is exactly zero (dA at length 1 without
    an initial state, say) the plain ||out||, which then has to be rounding-small."""
    out, ref = out.double(), ref.double()
    if not torch.isfinite(out).all():
        return float("inf")
    scale = ref.norm()
    return ((out - ref).norm() / (scale if scale > 0 else 1.0)).item()


def assert_close(name: str, out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    err, tol = rel_err(out, ref), TOLERANCE[dtype]
    assert err <= tol, f"{name}: relative L2 error {err:.2e} > {tol:.0e} ({dtype})"


def scan_inputs(batch=2, dim=8, length=33, dstate=16, groups=0, dtype=torch.float32,
                has_D=True, has_z=True, has_bias=True, initial_state=False, num_seqs=None,
                softplus=True, device="cpu"):
    """Random scan inputs (never zeros), leaves requiring grad; None for absent ones.

    groups=0 gives B, C of shape (batch, dstate, length), else (batch, groups, dstate, length).
    A is negative (S4D-real) with decays spread over (0.1, 3); delta around softplus's knee,
    or, without softplus, already a positive step in (0.05, 0.55).
    """
    g = torch.Generator().manual_seed(1234 + length + dim + dstate)

    def rnd(*shape, dt=dtype, scale=1.0, shift=0.0):
        x = torch.randn(*shape, generator=g) * scale + shift
        return x.to(device=device, dtype=dt).requires_grad_()

    bc = (batch, dstate, length) if groups == 0 else (batch, groups, dstate, length)
    n_states = batch if num_seqs is None else num_seqs
    return dict(
        u=rnd(batch, dim, length),
        delta=(rnd(batch, dim, length, scale=0.5, shift=-1.0) if softplus else
               (torch.rand(batch, dim, length, generator=g) * 0.5 + 0.05).to(device, dtype)
               .requires_grad_()),
        A=(-(torch.rand(dim, dstate, generator=g) * 2.9 + 0.1)).to(device).requires_grad_(),
        B=rnd(*bc),
        C=rnd(*bc),
        D=rnd(dim, dt=torch.float32) if has_D else None,
        z=rnd(batch, dim, length) if has_z else None,
        delta_bias=rnd(dim, dt=torch.float32, scale=0.3) if has_bias else None,
        initial_state=rnd(n_states, dim, dstate, dt=torch.float32) if initial_state else None,
    )


_COMPILE = """
import importlib, json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
a = json.loads(sys.argv[1])
sys.path[:0] = a["path"]
fn = getattr(importlib.import_module(a["module"]), a["kernel"])
attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in a["aligned"]}
src = GluonASTSource(fn, a["signature"], constexprs=a["constexprs"], attrs=attrs)
k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=a["options"])
print(json.dumps(k.asm["ptx"]))
"""


def gluon_ptx(module: str, kernel: str, signature: dict, constexprs: dict, *,
              aligned=(), path=(), **options) -> str:
    """PTX of the Gluon kernel `module.kernel` compiled for sm_90 (no GPU needed), with the
    arguments named in `aligned` marked multiples of 16 as a launch specialises them and
    `options` (num_warps, maxnreg) as launch options; `path` goes in front of sys.path.

    Compiled in a child process without TRITON_INTERPRET: under the interpreter (conftest.py
    sets it where there is no GPU) `gl.program_id` and the Triton-language helpers a kernel
    calls are the interpreter's, which Gluon's compiler cannot take."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    spec = dict(module=module, kernel=kernel, signature=signature, constexprs=constexprs,
                aligned=list(aligned), path=[str(p) for p in path], options=options)
    r = subprocess.run([sys.executable, "-c", _COMPILE, json.dumps(spec)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def scan_registers(*args: str) -> str:
    """What `scripts/scan_registers.py *args` prints (registers, spills and shuffles of each
    launch as an H200 gets it), run without TRITON_INTERPRET, which conftest.py sets where
    there is no GPU and under which Gluon kernels do not compile."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).resolve().parents[2] / "scripts" / "scan_registers.py"
    out = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


class GridRecorder:
    """Stands in for a kernel: records what a launcher launches it with
    (`kernel[grid](*args, **flags)`): the grid, the arguments by name and the flags, in
    `calls`; with `launch`, runs the kernel too."""

    def __init__(self, kernel, launch: bool = False):
        self.kernel, self.launch = kernel, launch
        self.names, self.calls = kernel.arg_names, []

    def __getitem__(self, grid):
        def record(*args, **flags):
            self.calls.append((grid, dict(zip(self.names, args)), flags))
            if self.launch:
                self.kernel[grid](*args, **flags)
        return record
