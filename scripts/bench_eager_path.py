#!/usr/bin/env python3
"""A training step with the scan and conv kernels called through their torch.library custom
ops against the eager `torch.autograd.Function`s that `selective_scan` and `causal_conv1d`
use outside torch.compile, interleaved in one process (CUDA).

    python scripts/bench_eager_path.py [--model mamba-6x256] [--shapes 1x1024,1x4096,8x2048] \
        [--rounds 5] [--steps 20]

One step: forward, next-byte cross-entropy, backward and fused AdamW under bf16 autocast
(`bytessm.bench.model`'s model presets). Small models at short lengths are host-bound,
where the custom ops' dispatcher wrappers (schema defaults, the outputs' aliasing check)
cost per call what the kernels do not. Prints each round's median step time.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bytessm.bench.model import PRESETS, build
from bytessm.kernels.triton import autograd as scan_autograd
from bytessm.kernels.triton import conv

EAGER = {"scan": scan_autograd._EagerScan.apply, "conv": conv._EagerConv.apply}


def through_ops(on: bool) -> None:
    """Route the eager calls through the custom ops (on) or the autograd.Functions."""
    scan_autograd._EagerScan.apply = (
        (lambda *a: torch.ops.bytessm.selective_scan_fwd(*a)[:2]) if on else EAGER["scan"])
    conv._EagerConv.apply = (
        (lambda *a: torch.ops.bytessm.causal_conv1d_fwd(*a)) if on else EAGER["conv"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="mamba-6x256", choices=sorted(PRESETS))
    p.add_argument("--shapes", default="1x1024,1x4096,8x2048")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args()
    torch.manual_seed(0)
    model = build(PRESETS[a.model]).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {a.model}")
    for shape in a.shapes.split(","):
        batch, length = (int(v) for v in shape.split("x"))
        x = torch.randint(0, 256, (batch, length), device="cuda")
        y = torch.randint(0, 256, (batch, length), device="cuda")

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(x).float().flatten(0, 1), y.flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        times = {"custom ops": [], "autograd.Function": []}
        for name in times:       # warm-up: compilation, allocator, optimizer state
            through_ops(name == "custom ops")
            for _ in range(5):
                step()
        for _ in range(a.rounds):
            for name in times:
                through_ops(name == "custom ops")
                ts = []
                for _ in range(a.steps):
                    torch.cuda.synchronize()
                    t = time.perf_counter()
                    step()
                    torch.cuda.synchronize()
                    ts.append(time.perf_counter() - t)
                times[name].append(1e3 * statistics.median(ts))
        for name, ts in times.items():
            print(f"{shape} {name}: step ms {' '.join(f'{t:.2f}' for t in ts)}; "
                  f"median {statistics.median(ts):.2f}", flush=True)
    through_ops(False)


if __name__ == "__main__":
    main()
