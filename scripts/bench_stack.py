"""The decode step of a Mamba stack: every block on its own kernels against the whole stack as
one persistent kernel (`bytessm.nn.stack`, `kernels/triton/stack.py`).

    PYTHONPATH=. python scripts/bench_stack.py --out results/bench_stack        # one GPU, ~1 min
    PYTHONPATH=. python scripts/bench_stack.py --smoke --out /tmp/bench_stack   # CPU, interpreter

MambaByte-353M's stack by default (53 blocks, d_model 1024, bf16 weights, random), the
blocks only (no embedding, final norm or head). Each variant's step is captured in a CUDA
graph and replayed; the time is the median over --repeats runs of --steps replays, between
CUDA events. "blocks": `Block.step` per block, compiled (`generation.compiled_block_step`,
as the Decoder runs it without the fused stack), on the decode GEMV with programmatic
dependent launch; "fused" (batch 1): the persistent kernel at each --warps. Bandwidth: the
bytes a step must move (weights once, states read and written) over the step's time.
`--timeline` also records the fused kernel's phases and barriers. Prints a Markdown table;
writes bench_stack.{md,json} into --out.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

from bytessm.backbone import Backbone
from bytessm.generation import cast_for_inference, prepare_compiled_step
from bytessm.io import write_report
from bytessm.nn.stack import FusedStack


def time_step(fn, *, steps: int, repeats: int, cuda: bool) -> float:
    """Median seconds per call of fn: on CUDA a graph of one call, replayed."""
    if not cuda:
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        return (time.perf_counter() - t0) / steps
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    for _ in range(10):
        graph.replay()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / steps)
    return statistics.median(times)


def run(a) -> dict:
    from bytessm.kernels.triton.pdl import programmatic_launch  # after TRITON_INTERPRET is set
    cuda = torch.cuda.is_available() and not a.smoke
    device = torch.device("cuda" if cuda else "cpu")
    d_model, n_layer = (32, 2) if a.smoke else (a.d_model, a.layers)
    torch.manual_seed(0)
    backbone = Backbone(d_model=d_model, n_layer=n_layer, vocab_size=256,
                        scan_backend="triton" if cuda else "reference").eval()
    blocks = list(cast_for_inference(backbone.to(device), torch.bfloat16 if cuda else
                                     torch.float32).blocks)
    weight_bytes = sum(p.numel() * p.element_size() for b in blocks for p in b.parameters())
    compiled = prepare_compiled_step(backbone) if cuda else None
    rows, timeline = [], []
    for batch in a.batches:
        states = [b.mixer.new_state(batch, device) for b in blocks]
        for s in states:
            s.conv.normal_()
            s.ssm.normal_()
        state_bytes = sum(s.conv.numel() * 4 + s.ssm.numel() * 4 for s in states)
        moved = weight_bytes + 2 * state_bytes
        residual = torch.randn(batch, d_model, device=device)

        def blocks_step():
            r = residual
            for b, s in zip(blocks, states):
                r = b.step(r, s) if compiled is None else compiled(b, r, s)
            return r

        variants = [("blocks (compiled, GEMV, PDL)" if cuda else "blocks (eager)", blocks_step)]
        fused = FusedStack(blocks, states) if batch == 1 else None
        for warps in a.warps if fused is not None else ():
            variants.append((f"fused, {warps} warps",
                             lambda w=warps: fused(residual, states, num_warps=w)))
        start = [(s.conv.clone(), s.ssm.clone()) for s in states]
        ref = None
        for name, fn in variants:
            for s, (conv, ssm) in zip(states, start):  # every variant's first step from here
                s.conv.copy_(conv)
                s.ssm.copy_(ssm)
            with torch.no_grad(), programmatic_launch(cuda):
                out = fn()  # also compiles; the output is checked against the first variant's
                ref = out if ref is None else ref
                err = float((out - ref).norm() / ref.norm())
                sec = time_step(fn, steps=a.steps, repeats=a.repeats, cuda=cuda)
            rows.append({"batch": batch, "variant": name, "us_per_step": sec * 1e6,
                         "gb_per_s": moved / sec / 1e9, "rel_err_vs_blocks": err})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if a.timeline and cuda and fused is not None:
            timeline.append({"batch": batch, **phase_times(fused, residual, states)})
            print(json.dumps(timeline[-1]), file=sys.stderr, flush=True)
    return {"meta": {"torch": torch.__version__, "python": platform.python_version(),
                     "device": torch.cuda.get_device_name(device) if cuda else "cpu",
                     "n_layer": n_layer, "d_model": d_model, "weight_bytes": weight_bytes,
                     "command": " ".join(sys.argv),
                     "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}, "results": rows,
            "timeline": timeline}


def phase_times(fused, residual, states) -> dict:
    """One fused step with the kernel's timer (`times`): per layer and program the global
    timer at ten points (`mamba_stack_kernel`). Means over programs and layers 1.. (layer
    0 includes the launch) in us: each stretch between two points; for each barrier the
    arrival spread (last minus first program to reach it) and the release (first program
    through minus last arrival)."""
    from bytessm.kernels.triton.stack import stack_grid
    _, programs = stack_grid(fused.layers.d_inner, residual.device)
    times = torch.zeros(programs, fused.layers.n_layer, 10, dtype=torch.int64,
                        device=residual.device)
    for _ in range(2):  # the second call's times
        fused(residual, states, times=times)
    torch.cuda.synchronize()
    t = times[:, 1:].double() / 1e3                                   # (P, L-1, 10) us
    d = t.diff(dim=-1)
    names = ("a_to_h", "a_h_to_xz", "a_xz_to_conv", "a_conv_to_end", "barrier_a",
             "b_to_dt", "b_dt_to_y", "b_y_to_end", "barrier_b")
    out = {f"{k}_us": float(d[..., i].mean()) for i, k in enumerate(names)}
    for name, arrive, leave in (("a", 4, 5), ("b", 8, 9)):
        arrivals = t[..., arrive]
        out[f"arrival_spread_{name}_us"] = float((arrivals.amax(0) - arrivals.amin(0)).mean())
        out[f"release_{name}_us"] = float((t[..., leave].amin(0) - t[..., arrive].amax(0)).mean())
    out["layer_us"] = float((t[:, -1, 9] - t[:, 0, 0]).mean()) / t.shape[1]
    return out


def markdown(report: dict) -> str:
    m = report["meta"]
    lines = [f"# Mamba stack decode step: {m['device']}, torch {m['torch']}, {m['date']}", "",
             f"`{m['command']}`", "",
             f"{m['n_layer']} blocks, d_model {m['d_model']}, {m['weight_bytes'] / 1e6:.0f} MB of "
             f"weights. Bandwidth: weights + states read and written, over the step's time. "
             f"Error: relative L2 distance of the variant's first step's output from the "
             f"blocks' one, from the same states.", "",
             "| batch | variant | us/step | GB/s | error |", "|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['batch']} | {r['variant']} | {r['us_per_step']:.1f} | "
                     f"{r['gb_per_s']:,.0f} | {r['rel_err_vs_blocks']:.1e} |")
    if report["timeline"]:
        keys = [k for k in report["timeline"][0] if k != "batch"]
        lines += ["", "Fused kernel (default warps), per layer, mean over programs and layers "
                  "1.., us:", "", "| batch | " + " | ".join(k[:-3] for k in keys) + " |",
                  "|---" * (len(keys) + 1) + "|"]
        lines += [f"| {r['batch']} | " + " | ".join(f"{r[k]:.2f}" for k in keys) + " |"
                  for r in report["timeline"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--smoke", action="store_true", help="tiny stack on the CPU (interpreter)")
    p.add_argument("--layers", type=int, default=53)
    p.add_argument("--d-model", type=int, default=1024)
    p.add_argument("--batches", type=int, nargs="+", default=[1],
                   help="the fused kernel runs at batch 1 only; other batches time the blocks")
    p.add_argument("--warps", type=int, nargs="+", default=[8, 16])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--timeline", action="store_true",
                   help="also time the fused kernel's phases and barriers (CUDA)")
    a = p.parse_args(argv)
    if a.smoke and not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    if a.smoke:
        a.batches, a.warps, a.steps, a.repeats = [1], [4], 1, 1
    report = run(a)
    write_report(a.out, "bench_stack", markdown(report), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
