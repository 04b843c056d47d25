#!/usr/bin/env python3
"""GPU: the split-state prototype forward against the production forward (same process,
alternating rounds), D=1536, N=16, bf16, bench_scan.py's inputs. Prints a table."""
import os, sys, statistics
sys.path.insert(0, "scripts"); sys.path.insert(0, "scripts/prototypes")
import torch
from triton.testing import do_bench
from bench_scan import scan_inputs
from bytessm.kernels import selective_scan
from split_states_fwd import split_forward

VARIANTS = [("split1 c512", dict(split=1, chunk=512)), ("split1 c256", dict(split=1, chunk=256)),
            ("split2 c256", dict(split=2, chunk=256)), ("split2 c256 nopf", dict(split=2, chunk=256, prefetch=False)),
            ("split4 c256", dict(split=4, chunk=256)), ("split2 c512", dict(split=2, chunk=512))]
shapes = [(8, 2048), (2, 16384), (1, 131072), (1, 1048576)]
rows = []
for bt, L in shapes:
    x = scan_inputs(bt, L, grad=False)
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"])
    prod = lambda: selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"],
                                  delta_bias=x["delta_bias"], delta_softplus=True, return_last_state=True)
    ref_out, ref_last = prod()
    fns = {"production": prod}
    for name, kw in VARIANTS:
        fns[name] = (lambda kw=kw: split_forward(*args, **kw))
        out, last = fns[name]()
        e1 = ((out.float() - ref_out.float()).norm() / ref_out.float().norm()).item()
        e2 = ((last - ref_last).norm() / ref_last.norm()).item()
        print(f"{bt}x{L} {name}: out {e1:.1e} last {e2:.1e}", flush=True)
    times = {k: [] for k in fns}
    for r in range(3):
        for k, f in fns.items():
            times[k].append(do_bench(f, warmup=10, rep=100 if L < 10**6 else 300, return_mode="median"))
    med = {k: statistics.median(v) for k, v in times.items()}
    rows.append((f"{bt}x{L}", med))
    print(f"{bt}x{L}: " + ", ".join(f"{k} {v:.3f}" for k, v in med.items()), flush=True)
names = list(rows[0][1])
print("| variant | " + " | ".join(s for s, _ in rows) + " |")
print("|---|" + "---:|" * len(rows))
for k in names:
    print(f"| {k} | " + " | ".join(f"{m[k]:.3f} ({m[k] / m['production']:.2f}x)" for _, m in rows) + " |")
