#!/usr/bin/env python3
"""The block's depthwise causal conv: bytessm's Triton kernel against PyTorch's F.conv1d.

    python scripts/bench_conv.py [--out docs/benchmarks]

bf16 x, float32 weight (width 4) and bias, as under autocast; shapes of Vim-Ti (126 x 384 x
208, 4 x 384 x 6096) and of a long sequence (1 x 1536 x 128K). Forward and forward+backward
medians (`triton.testing.do_bench`), forward+backward also replayed from a CUDA graph (the
GPU's time alone: at small shapes eager timing measures Python), both directions checked against the float32 reference
first. Writes conv.md and conv.json into --out and prints the table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import triton
from triton.testing import do_bench

from bytessm.generation import capture_graphs
from bytessm.io import atomic_write
from bytessm.kernels import causal_conv1d

SHAPES = ((126, 384, 208), (4, 384, 6096), (1, 1536, 131072))


def make(batch, dim, length, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(batch, dim, length, device="cuda", generator=g).to(torch.bfloat16)
    w = torch.randn(dim, 4, device="cuda", generator=g) * 0.5
    b = torch.randn(dim, device="cuda", generator=g)
    return x, w, b


def timed(backend, x, w, b, reverse, backward, graph=False):
    """Median ms of the forward (or forward+backward) call; `graph`: of its replay from a CUDA
    graph, i.e. the GPU's time without Python's (custom-op dispatch, autograd, launches)."""
    if not backward:
        def step():
            causal_conv1d(x, w, b, reverse=reverse, backend=backend)
    else:
        leaves = [t.detach().requires_grad_() for t in (x, w, b)]
        dy = torch.randn_like(x)

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=backend == "reference",
                                cache_enabled=False):
                y = causal_conv1d(*leaves, reverse=reverse, backend=backend)
            torch.autograd.grad(y, leaves, dy)
    if graph:  # `step` keeps the tensors the graph reads alive while it replays
        return do_bench(capture_graphs({"step": step}, "cuda")["step"].replay, warmup=5,
                        rep=50, return_mode="median")
    return do_bench(step, warmup=5, rep=50, return_mode="median")


def check(x, w, b, reverse) -> float:
    """Worst relative L2 error of output and gradients against the float32 reference."""
    dy = torch.randn_like(x, dtype=torch.float32)

    def run(backend, cast):
        leaves = [(t.float() if cast else t).detach().requires_grad_() for t in (x, w, b)]
        y = causal_conv1d(*leaves, reverse=reverse, backend=backend)
        return [y.float(), *torch.autograd.grad(y, leaves, dy.to(y.dtype))]

    got, want = run("triton", False), run("reference", True)
    return max(((a.float() - r).norm() / r.norm()).item() for a, r in zip(got, want))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    rows = []
    for shape in SHAPES:
        x, w, b = make(*shape)
        for reverse in (False, True):
            err = check(x, w, b, reverse)
            row = dict(shape="x".join(map(str, shape)), reverse=reverse, max_rel_err=err)
            for backend, name in (("triton", "triton"), ("reference", "F.conv1d")):
                row[f"{name} fwd ms"] = timed(backend, x, w, b, reverse, False)
                row[f"{name} fwd+bwd ms"] = timed(backend, x, w, b, reverse, True)
                row[f"{name} fwd+bwd graphed ms"] = timed(backend, x, w, b, reverse, True, True)
            rows.append(row)
            print(json.dumps(row), flush=True)
    head = ["shape", "reverse", "triton fwd ms", "F.conv1d fwd ms", "triton fwd+bwd ms",
            "F.conv1d fwd+bwd ms", "triton fwd+bwd graphed ms", "F.conv1d fwd+bwd graphed ms",
            "max rel err"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['reverse']} | {r['triton fwd ms']:.4f} | "
                     f"{r['F.conv1d fwd ms']:.4f} | {r['triton fwd+bwd ms']:.4f} | "
                     f"{r['F.conv1d fwd+bwd ms']:.4f} | {r['triton fwd+bwd graphed ms']:.4f} | "
                     f"{r['F.conv1d fwd+bwd graphed ms']:.4f} | {r['max_rel_err']:.1e} |")
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                triton=triton.__version__, date=time.strftime("%Y-%m-%d"),
                command=" ".join(sys.argv))
    table = (f"# Depthwise causal conv (width 4, bf16 x)\n\n{meta['device']}; torch "
             f"{meta['torch']}, triton {meta['triton']}; {meta['date']}.\n\n" + "\n".join(lines))
    print(table)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        atomic_write(a.out / "conv.json", json.dumps(dict(meta=meta, rows=rows), indent=1))
        atomic_write(a.out / "conv.md", table + "\n")
    return 0 if all(r["max_rel_err"] < 1e-2 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
