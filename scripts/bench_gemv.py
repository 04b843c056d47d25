#!/usr/bin/env python3
"""The decode step's matrix-vector products: bytessm's Triton GEMV against F.linear (cuBLAS).

    PYTHONPATH=. python scripts/bench_gemv.py --out results/bench_gemv           # GPU, ~2 min
    PYTHONPATH=. python scripts/bench_gemv.py --sweep --out results/bench_gemv   # + sweep, < 9 min

Shapes of the 353M benchmark model's decode step (d_model 1024, d_inner 2048, dt_rank 64,
d_state 16; scripts/bench_generate.py) at M = 1, 4, 16 rows: in_proj 4096x1024, x_proj
96x2048, dt_proj 2048x64, out_proj 1024x2048 in bf16, and the byte LM head 256x1024 in
float32 (`cast_for_inference` keeps a small head float32). Plus the fused forms the step
uses: in_proj with the block's RMSNorm of the float32 residual (against torch.compile of
norm + cast + F.linear, as inductor runs the compiled block step now) and out_proj with the
residual add (against compiled F.linear + add).

Timing: a CUDA graph of `calls` products back to back, each on its own copy of the weights,
with enough copies (at least 20 and twice the L2 cache) that every call streams its weights
from HBM as in the decode step (53 layers of weights are far larger than L2). Replays are
timed with CUDA events, the median of --reps; us per call = replay time / calls. The CPU's
launch cost is excluded; the GPU's gap between kernels is included, as in the step's graph.
GB/s counts the bytes of W, x, y (and the residual) once per call.

Correctness: every timed variant, and every configuration of the sweep, is checked against
float32 maths on the same inputs (F.linear on float32 copies; `reference.gemv_ref` for the
fused forms) with the kernel tests' tolerances; the exit status is 1 if any check fails.

--sweep: per shape (fused forms included: the norm's extra reads of x may want other
blocks) and M, a grid of launch configurations (BLOCK_N, BLOCK_K, warps, split-K,
element-wise or tl.dot) around `default_config`; prints the best per shape beside the
default, M=1 first, within --budget-s. Its ~500 configurations compile in ~0.1 s each
(measured for sm_90 on a CPU). Writes bench_gemv.{md,json} into --out.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

from bytessm.generation import capture_graphs
from bytessm.io import atomic_write
from bytessm.kernels import gemv, reference
from bytessm.kernels.triton.gemv import GemvConfig, default_config, gemv_launch, num_sms

BF16, F32 = torch.bfloat16, torch.float32
DEVICE = "cuda"
# (name, N, K, weight dtype, fused): the 353M model's decode products
SHAPES = [("in_proj", 4096, 1024, BF16, None), ("x_proj", 96, 2048, BF16, None),
          ("dt_proj", 2048, 64, BF16, None), ("out_proj", 1024, 2048, BF16, None),
          ("lm_head", 256, 1024, F32, None),
          ("in_proj+norm", 4096, 1024, BF16, "norm"), ("out_proj+residual", 1024, 2048, BF16,
                                                       "residual")]
TOLERANCE = {F32: 1e-5, torch.float16: 3e-3, BF16: 1e-2}   # tests/kernels/kernel_helpers.py


def rel_err(out, ref) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())


class Case:
    """One shape at M rows: inputs, weight copies enough to defeat L2, reference output."""

    def __init__(self, name, N, K, dtype, fused, M, l2_bytes, seed=0):
        g = torch.Generator(device=DEVICE).manual_seed(seed)
        self.name, self.N, self.K, self.dtype, self.fused, self.M = name, N, K, dtype, fused, M
        w_bytes = N * K * torch.finfo(dtype).bits // 8
        self.calls = min(max(20, math.ceil(2 * l2_bytes / w_bytes)), 1000)
        self.weights = [(torch.randn(N, K, device=DEVICE, generator=g) / K**0.5).to(dtype)
                        for _ in range(self.calls)]
        x_dtype = F32 if fused == "norm" else dtype
        self.x = (torch.randn(M, K, device=DEVICE, generator=g) + 0.1).to(x_dtype)
        self.norm_weight = (1 + 0.2 * torch.randn(K, device=DEVICE, generator=g)
                            if fused == "norm" else None)
        self.residual = (torch.randn(M, N, device=DEVICE, generator=g)
                         if fused == "residual" else None)
        w0 = self.weights[0]
        self.ref = (F.linear(self.x.float(), w0.float()) if fused is None else
                    reference.gemv_ref(self.x, w0, None, self.residual, self.norm_weight))
        out_bytes = M * N * (4 if fused == "residual" else torch.finfo(dtype).bits // 8)
        self.bytes = (w_bytes + self.x.numel() * self.x.element_size() + out_bytes
                      + (0 if self.residual is None else self.residual.numel() * 4))

    def ours(self, config=None):
        """Callables, one per weight copy: the public op (config None) or a fixed config."""
        kw = dict(residual=self.residual, norm_weight=self.norm_weight)
        if config is None:
            return [lambda w=w: gemv(self.x, w, None, backend="triton", **kw) for w in self.weights]
        return [lambda w=w: gemv_launch(self.x, w, None, config=config, **kw)
                for w in self.weights]

    def baseline(self):
        """F.linear; the fused forms as the compiled step computes them (inductor + cuBLAS)."""
        if self.fused is None:
            return [lambda w=w: F.linear(self.x, w) for w in self.weights]
        if self.fused == "norm":
            def fn(r, w, nw):
                r32 = r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + 1e-5) * nw
                return F.linear(r32.to(w.dtype), w)
            step = torch.compile(fn, fullgraph=True, dynamic=False)
            return [lambda w=w: step(self.x, w, self.norm_weight) for w in self.weights]
        step = torch.compile(lambda y, w, r: r + F.linear(y, w), fullgraph=True, dynamic=False)
        return [lambda w=w: step(self.x, w, self.residual) for w in self.weights]


def graph_us(fns, reps: int) -> float:
    """Median us per call of a CUDA graph that runs every fn once, in order."""
    graph = capture_graphs({"calls": lambda: [fn() for fn in fns]}, "cuda")["calls"]
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    del graph
    return statistics.median(times) * 1e3 / len(fns)


def measure(case: Case, fns, reps: int) -> dict:
    err = rel_err(fns[0]().float(), case.ref.float())
    us = graph_us(fns, reps)
    return dict(us=us, gb_s=case.bytes / us / 1e3, rel_err=err,
                ok=err <= TOLERANCE[case.dtype])


def candidates(M: int, N: int, K: int, elem: int, sms: int) -> list[GemvConfig]:
    """The sweep's grid around the default. Element-wise (BLOCK_M = 1, or M rows in one
    program up to 4): tiles of 4/8/16 KB of W per iteration, BLOCK_K 256 / 1024 / up to
    8 KB of a row, 2-8 warps at 16-64 elements a thread, split-K 1/2/4 when the N blocks
    leave SMs idle. tl.dot for M > 1: BLOCK_N 16/32/64, BLOCK_K 64/128/256, 4 warps,
    split-K 1-8 under the same condition."""
    Kp = max(triton.next_power_of_2(K), 16)
    out = {default_config(M, N, K, elem, sms)}
    if M <= 4:
        block_m = triton.next_power_of_2(M)
        tiles = (4096, 8192, 16384) if M == 1 else (8192,)
        for block_k, tile, warps, split in itertools.product(
                sorted({min(Kp, 256), min(Kp, 1024), min(Kp, 8192 // elem)}), tiles, (2, 4, 8),
                (1, 2, 4)):
            block_n = tile // (block_k * elem * block_m)
            per_thread = tile // elem // (32 * warps)
            programs = triton.cdiv(N, max(block_n, 1))
            if (not 1 <= block_n <= 64 or not 16 <= per_thread <= 64
                    or split > triton.cdiv(K, block_k) or (split > 1 and programs >= sms)):
                continue
            out.add(GemvConfig(block_m=block_m, block_n=block_n, block_k=block_k,
                               split_k=split, num_warps=warps, num_stages=2))
    if M > 1:
        for block_n, block_k, split in itertools.product((16, 32, 64), (64, 128, 256),
                                                         (1, 2, 4, 8)):
            programs = triton.cdiv(N, block_n)
            if (block_k > Kp or split > triton.cdiv(K, block_k)
                    or (split > 1 and programs >= sms)):
                continue
            out.add(GemvConfig(block_m=16, block_n=block_n, block_k=block_k, split_k=split,
                               num_warps=4, num_stages=3, dot=True))
    return sorted(out, key=dataclass_key)


def dataclass_key(c: GemvConfig) -> tuple:
    return (c.dot, c.block_m, c.block_n, c.block_k, c.split_k, c.num_warps, c.num_stages)


def cfg_str(c: GemvConfig) -> str:
    kind = "dot" if c.dot else "fma"
    return (f"{kind} m{c.block_m} n{c.block_n} k{c.block_k} s{c.split_k} w{c.num_warps} "
            f"st{c.num_stages}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--ms", type=int, nargs="+", default=[1, 4, 16], help="rows of x")
    p.add_argument("--reps", type=int, default=20, help="graph replays per measurement")
    p.add_argument("--sweep", action="store_true", help="also sweep launch configurations")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="the sweep stops starting shapes after this many seconds")
    a = p.parse_args()
    if not torch.cuda.is_available():
        print("bench_gemv needs a CUDA GPU", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, "L2_cache_size", 50 * 2**20) or 50 * 2**20
    sms = num_sms(0)
    rows, sweep, failed = [], [], []
    for M in a.ms:
        for name, N, K, dtype, fused in SHAPES:
            case = Case(name, N, K, dtype, fused, M, l2)
            cfg = default_config(M, N, K, case.weights[0].element_size(), sms)
            ours, base = measure(case, case.ours(), a.reps), measure(case, case.baseline(), a.reps)
            row = dict(op=name, N=N, K=K, dtype=str(dtype)[6:], M=M, calls=case.calls,
                       config=cfg_str(cfg), ours_us=ours["us"], baseline_us=base["us"],
                       speedup=base["us"] / ours["us"], ours_gb_s=ours["gb_s"],
                       baseline_gb_s=base["gb_s"], rel_err=ours["rel_err"],
                       baseline_rel_err=base["rel_err"], ok=ours["ok"])
            rows.append(row)
            if not ours["ok"]:
                failed.append(f"{name} M={M}: rel err {ours['rel_err']:.2e}")
            print(json.dumps(row), flush=True)
            del case
    if a.sweep:
        order = sorted(a.ms, key=lambda m: (m != 1, -m))     # batch 1 first, then 16, 4
        for M, (name, N, K, dtype, fused) in itertools.product(order, SHAPES):
            if time.perf_counter() - t0 > a.budget_s:
                print(f"sweep: budget of {a.budget_s:.0f} s spent, skipping {name} M={M}",
                      file=sys.stderr)
                continue
            case = Case(name, N, K, dtype, fused, M, l2)
            default = default_config(M, N, K, case.weights[0].element_size(), sms)
            results = []
            for cfg in candidates(M, N, K, case.weights[0].element_size(), sms):
                try:
                    r = measure(case, case.ours(cfg), max(5, a.reps // 2))
                except Exception as e:  # a configuration the compiler rejects (registers, smem)
                    r = dict(us=float("inf"), gb_s=0.0, rel_err=float("nan"), ok=False,
                             error=f"{type(e).__name__}: {str(e)[:200]}")
                if r.get("error") is None and not r["ok"]:
                    failed.append(f"sweep {name} M={M} {cfg_str(cfg)}: rel err {r['rel_err']:.2e}")
                results.append(dict(config=cfg_str(cfg), **r))
            ok = [r for r in results if r["ok"]]
            best = min(ok, key=lambda r: r["us"]) if ok else None
            dflt = next(r for r in results if r["config"] == cfg_str(default))  # always tried
            entry = dict(op=name, M=M, N=N, K=K, default=dflt["config"], default_us=dflt["us"],
                         best=None if best is None else best["config"],
                         best_us=None if best is None else best["us"],
                         best_gb_s=None if best is None else best["gb_s"],
                         tried=len(results), results=results)
            sweep.append(entry)
            print(json.dumps({k: v for k, v in entry.items() if k != "results"}), flush=True)
            del case
    meta = dict(device=torch.cuda.get_device_name(), sms=sms, l2_bytes=l2,
                torch=torch.__version__, triton=triton.__version__,
                date=time.strftime("%Y-%m-%d"), command=" ".join(sys.argv),
                wall_s=time.perf_counter() - t0)
    lines = ["# Decode GEMV: Triton vs F.linear (cuBLAS)\n",
             f"{meta['device']} ({sms} SMs, L2 {l2 / 2**20:.0f} MiB); torch {meta['torch']}, "
             f"triton {meta['triton']}; {meta['date']}. us per call inside a CUDA graph, weights "
             f"streamed from HBM; baseline of the fused rows: torch.compile of the unfused ops.\n",
             "| op | N x K | dtype | M | ours us | baseline us | speedup | ours GB/s | "
             "baseline GB/s | rel err | config |", "|" + "---|" * 11]
    for r in rows:
        lines.append(f"| {r['op']} | {r['N']}x{r['K']} | {r['dtype']} | {r['M']} | "
                     f"{r['ours_us']:.2f} | {r['baseline_us']:.2f} | {r['speedup']:.2f} | "
                     f"{r['ours_gb_s']:.0f} | {r['baseline_gb_s']:.0f} | {r['rel_err']:.1e} | "
                     f"{r['config']} |")
    if sweep:
        lines += ["", "## Sweep: best configuration per shape\n",
                  "| op | M | default | default us | best | best us | best GB/s | tried |",
                  "|" + "---|" * 8]
        for s in sweep:
            best_us = "-" if s["best_us"] is None else f"{s['best_us']:.2f}"
            best_gb = "-" if s["best_gb_s"] is None else f"{s['best_gb_s']:.0f}"
            lines.append(f"| {s['op']} | {s['M']} | {s['default']} | {s['default_us']:.2f} | "
                         f"{s['best']} | {best_us} | {best_gb} | {s['tried']} |")
    if failed:
        lines += ["", "FAILED checks:"] + [f"- {f}" for f in failed]
    table = "\n".join(lines)
    print(table)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        atomic_write(a.out / "bench_gemv.json",
                     json.dumps(dict(meta=meta, rows=rows, sweep=sweep, failed=failed), indent=1))
        atomic_write(a.out / "bench_gemv.md", table + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
