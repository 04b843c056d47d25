"""Species-classification training step vs DNA length (2^10 .. 2^20 bases, batch 1).

The Mamba paper's Great Apes setting: a 6-layer Mamba of width 128-256 reads a window of
bases as bytes, the per-position class logits are mean-pooled (GenomicsSpeciesTask's head
and pooling), cross-entropy, backward, AdamW step. Reports bases/s (window length over the
median step time) and the peak CUDA memory of the step, per model and length; OOM is
recorded, not fatal. Inputs are random bases: throughput does not depend on content.

    PYTHONPATH=. python scripts/bench_genomics.py --out results/bench_genomics          # GPU
    PYTHONPATH=. python scripts/bench_genomics.py --smoke --out /tmp/bench_genomics     # CPU

Prints a Markdown table; writes bench_genomics.md and bench_genomics.json into --out
(atomically).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bytessm.backbone import Backbone, SequenceModel
from bytessm.tasks.genomics import VOCAB_SIZE, RCPSBackbone
from bytessm.tasks.genomics.task import PositionClassifier
from bytessm.io import atomic_write

GIB = 2**30
NUM_CLASSES = 5
# name -> (d_model, n_layer, checkpoint_blocks, rc-equivariant)
MODELS = {
    "mamba-6x128": (128, 6, False, False),
    "mamba-6x256": (256, 6, False, False),
    "mamba-6x256-ckpt": (256, 6, True, False),
    "caduceus-ps-6x256-ckpt": (256, 6, True, True),
}


def build(name: str, device: torch.device, *, d_model=None, n_layer=None) -> SequenceModel:
    d, n, ckpt, rc = MODELS[name]
    d, n = d_model or d, n_layer or n
    cls = RCPSBackbone if rc else Backbone
    backbone = cls(d_model=d, n_layer=n, vocab_size=VOCAB_SIZE, bidirectional=rc,
                   checkpoint_blocks=ckpt)
    return SequenceModel(backbone, PositionClassifier(d, NUM_CLASSES)).to(device)


def step(model, optimizer, x, y, use_bf16: bool) -> None:
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else torch.autocast("cpu", enabled=False)
    with ctx:
        logits = model(x).float().mean(1)                         # (B, L, C) -> (B, C)
    F.cross_entropy(logits, y).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, length: int, device: torch.device, *, warmup: int, iters: int,
            d_model=None, n_layer=None) -> dict:
    row = {"model": name, "length": length}
    model = optimizer = None
    try:
        torch.manual_seed(0)
        model = build(name, device, d_model=d_model, n_layer=n_layer)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.tensor(list(b"ACGT"), device=device)[torch.randint(0, 4, (1, length), device=device)]
        y = torch.randint(0, NUM_CLASSES, (1,), device=device)
        for _ in range(warmup):
            step(model, optimizer, x, y, device.type == "cuda")
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            step(model, optimizer, x, y, device.type == "cuda")
            sync(device)
            times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        row.update(step_s=t, bases_per_s=length / t,
                   params_m=sum(p.numel() for p in model.parameters()) / 1e6)
        if device.type == "cuda":
            row["peak_gib"] = torch.cuda.max_memory_allocated(device) / GIB
    except torch.cuda.OutOfMemoryError:
        row["oom"] = True
    finally:
        del model, optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def pow2(n: int) -> str:
    return f"2^{n.bit_length() - 1}" if n & (n - 1) == 0 else str(n)


def markdown(rows: list[dict]) -> str:
    lines = ["| model | length | step (ms) | bases/s | peak memory (GiB) |",
             "|---|---|---|---|---|"]
    for r in rows:
        if r.get("oom"):
            lines.append(f"| {r['model']} | {pow2(r['length'])} | OOM | - | - |")
        else:
            peak = f"{r['peak_gib']:.2f}" if "peak_gib" in r else "-"
            lines.append(f"| {r['model']} | {pow2(r['length'])} | {r['step_s'] * 1e3:.1f} | "
                         f"{r['bases_per_s']:,.0f} | {peak} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--min-log2", type=int, default=10)
    ap.add_argument("--max-log2", type=int, default=20)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--smoke", action="store_true",
                    help="CPU, tiny: lengths 2^6..2^8, width 16, 2 layers, 1 timed step")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    lo, hi, iters, warmup, size = args.min_log2, args.max_log2, args.iters, 2, {}
    if args.smoke:
        lo, hi, iters, warmup, size = 6, 8, 1, 1, {"d_model": 16, "n_layer": 2}
    rows = []
    for name in args.models:
        oom = False
        for k in range(lo, hi + 1):
            row = {"model": name, "length": 1 << k, "oom": True} if oom else \
                measure(name, 1 << k, device, warmup=warmup, iters=iters, **size)
            oom = oom or bool(row.get("oom"))   # longer lengths would not fit either
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    table = markdown(rows)
    print(table)
    meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else
            platform.processor() or "cpu", "torch": torch.__version__, "batch": 1,
            "smoke": args.smoke, "precision": "bf16 autocast" if device.type == "cuda" else "fp32"}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "bench_genomics.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
    atomic_write(args.out / "bench_genomics.md",
                 f"Species-classification training step, batch 1, {meta['device']}, "
                 f"{meta['precision']}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
