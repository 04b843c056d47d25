"""Vim-Ti against a DeiT-Ti-sized ViT: images/s and peak GPU memory against resolution.

    PYTHONPATH=. python scripts/bench_vision.py --out results/bench_vision          # GPU
    PYTHONPATH=. python scripts/bench_vision.py --smoke --out /tmp/bench_vision     # CPU, tiny

Models (3 input channels, patch 16, 1000 classes, built from the core Backbone and the
images task's patch embedding, so the benchmark measures the code that trains):

    vim-ti     Vim-Ti: 24 BiMamba blocks, width 192, middle class token (7.1M parameters)
    vit-ti     DeiT-Ti's size: 12 blocks of non-causal SDPA attention (3 heads, FlashAttention
               forced) + SwiGLU MLP of hidden 512 (the parameters and FLOPs of DeiT's 4x GELU
               MLP), width 192 (5.5M)
    vit-ti-24  the same ViT at Vim-Ti's depth, 24 blocks (11M)
    vit-ti-math  vit-ti with SDPA's math backend: attention as two matmuls and a softmax over
               the L x L score matrix, the way DeiT's original code computes it (the baseline
               of Vim's paper, whose 2.8x / 86.8% at 1248 are against such a DeiT)

Vim's paper compares Vim-Ti with DeiT-Ti (12 blocks); vit-ti-24 matches the depth instead.
The core attention layer adds rotary position embeddings to q and k on top of the patch
embedding's absolute ones (DeiT has only the latter): a few elementwise ops per block.

Resolutions 224, 512, 768, 1024, 1248 (197 .. 6085 tokens), all in one run. Two modes:
"infer" (forward under torch.inference_mode) and "train" (forward, cross-entropy, backward,
AdamW step). On CUDA, inference is captured in a CUDA graph and replayed (`--eager`: not),
so that it times the GPU rather than Python's kernel launches (each row says which);
training runs eagerly. The batch holds about `--tokens-per-batch` tokens (127 images at 224, 4 at
1248) unless `--batch` fixes it; both models get the same batch. On CUDA everything runs
under bf16 autocast. Each point: warm-up steps, then timed steps (median), peak of
torch.cuda.max_memory_allocated over them (weights, gradients and optimizer state
included). OOM is reported, not fatal. The crossover is the lowest resolution from which on
Vim is faster (uses less memory) than the ViT at every tested resolution.

Writes bench_vision.md (the table) and bench_vision.json (every measurement) into --out.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from bytessm.backbone import Backbone, SequenceModel
from bytessm.generation import capture_graphs
from bytessm.kernels.ops import resolve_backend
from bytessm.nn import ClassifierHead
from bytessm.tasks.images import VimPatchEmbed
from bytessm.io import atomic_write

GIB = 2**30
RESOLUTIONS = (224, 512, 768, 1024, 1248)


@dataclass(frozen=True)
class Spec:
    name: str
    d_model: int
    n_layer: int
    attention: bool
    heads: int = 3
    mlp_hidden: int = 0
    sdpa: str = "flash"   # attention kernel: "flash" (FlashAttention) or "math" (explicit)


SPECS = {s.name: s for s in (
    Spec("vim-ti", 192, 24, attention=False),
    Spec("vit-ti", 192, 12, attention=True, heads=3, mlp_hidden=512),
    Spec("vit-ti-24", 192, 24, attention=True, heads=3, mlp_hidden=512),
    Spec("vit-ti-math", 192, 12, attention=True, heads=3, mlp_hidden=512, sdpa="math"),
)}
SMOKE_SPECS = {s.name: s for s in (
    Spec("vim-smoke", 32, 2, attention=False),
    Spec("vit-smoke", 32, 1, attention=True, heads=2, mlp_hidden=64),
)}


def build(spec: Spec, resolution: int, patch: int, *, scan_backend: str = "auto",
          classes: int = 1000) -> SequenceModel:
    encoder = VimPatchEmbed(d_model=spec.d_model, in_chans=3, image_size=resolution,
                            patch_size=patch)
    backbone = Backbone(d_model=spec.d_model, n_layer=spec.n_layer, encoder=encoder,
                        bidirectional=True, attn_layers="all" if spec.attention else (),
                        attn_heads=spec.heads,
                        attn_mlp_ratio=spec.mlp_hidden / spec.d_model if spec.attention else 0.0,
                        scan_backend=scan_backend)
    head = ClassifierHead(spec.d_model, classes, pool="index", index=encoder.cls_index)
    return SequenceModel(backbone, head)


def _attention_ctx(spec: Spec):
    """One SDPA kernel per spec, so that a ViT meant to run FlashAttention fails loudly
    rather than fall back to O(L^2) memory."""
    if not spec.attention:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH if spec.sdpa == "math" else SDPBackend.FLASH_ATTENTION])


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def measure(spec: Spec, resolution: int, mode: str, *, patch: int, batch: int,
            dev: torch.device, bf16: bool, warmup: int, iters: int,
            scan_backend: str, cuda_graph: bool = False) -> dict:
    """One (model, resolution, mode) point -> a result row."""
    tokens = (resolution // patch) ** 2 + 1
    row = {"model": spec.name, "resolution": resolution, "tokens": tokens, "mode": mode,
           "batch": batch, "status": "ok", "note": "", "ms": None, "images_per_s": None,
           "peak_gib": None, "params": None, "cuda_graph": False}
    model = optimizer = x = y = step = None
    try:
        torch.manual_seed(0)
        model = build(spec, resolution, patch, scan_backend=scan_backend).to(dev)
        row["params"] = sum(p.numel() for p in model.parameters())
        g = torch.Generator().manual_seed(resolution)
        x = torch.randn(batch, 3, resolution, resolution, generator=g).to(dev)   # (B, 3, H, W)
        y = torch.randint(0, 1000, (batch,), generator=g).to(dev)                 # (B,)
        # no cast cache: a CUDA graph must not keep casts made outside it (PyTorch's rule)
        autocast = lambda: torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16,  # noqa: E731
                                          cache_enabled=not cuda_graph)
        if mode == "train":
            model.train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4,
                                          fused=dev.type == "cuda")

            def step():
                with _attention_ctx(spec), autocast():
                    loss = F.cross_entropy(model(x).float(), y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        else:
            model.eval()

            def step():
                with torch.inference_mode(), _attention_ctx(spec), autocast():
                    model(x)

        for _ in range(max(1, warmup)):           # compile kernels, allocate, optimizer state
            step()
        _sync(dev)
        peak = None
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        if cuda_graph and mode == "infer":
            # the peak of one eager step: a graph's private pool does not count as allocated
            step()
            _sync(dev)
            peak = torch.cuda.max_memory_allocated(dev)
            step = _graphed(step, row)
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            step()
            _sync(dev)
            times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        row.update(ms=1e3 * t, images_per_s=batch / t)
        if dev.type == "cuda":
            row["peak_gib"] = (peak or torch.cuda.max_memory_allocated(dev)) / GIB
    except Exception as e:  # noqa: BLE001 - a benchmark reports and goes on
        row.update(status="OOM" if _is_oom(e) else "error",
                   note=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300])
    finally:
        del model, optimizer, x, y, step  # the step holds the CUDA graph and its memory pool
        gc.collect()
        if dev.type == "cuda":
            torch._C._cuda_clearCublasWorkspaces()  # not to be counted in the next point's peak
            torch.cuda.empty_cache()
    return row


def _graphed(step, row: dict):
    """The inference step captured as a CUDA graph (`bytessm.generation.capture_graphs`), so
    the timing is the GPU's and not Python's launching: the small models launch ~1300
    kernels a batch, and eager host time varied between machines.
    Falls back to the eager step, with the reason in the row's note, if capture fails."""
    try:
        graph = capture_graphs({"step": step}, "cuda")["step"]
        graph.replay()
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - measure eagerly instead, and say so
        row["note"] = f"CUDA graph capture failed ({type(e).__name__}: {e}); eager"[:300]
        return step
    row["cuda_graph"] = True
    return graph.replay


def crossover(rows: list[dict], mode: str, key: str, vim: str, vit: str) -> int | None:
    """Lowest resolution from which on Vim beats the ViT on `key` at every tested resolution
    ("images_per_s": higher is better, "peak_gib": lower; a ViT OOM counts as a Vim win)."""
    by = {(r["model"], r["resolution"]): r for r in rows if r["mode"] == mode}
    res = sorted({r["resolution"] for r in rows if r["mode"] == mode})
    wins = []
    for n in res:
        a, b = by.get((vim, n)), by.get((vit, n))
        if a is None or b is None or a["status"] != "ok" or a[key] is None:
            wins.append(False)
        elif b["status"] == "OOM":
            wins.append(True)
        elif b["status"] != "ok" or b[key] is None:
            wins.append(False)
        else:
            wins.append(a[key] > b[key] if key == "images_per_s" else a[key] < b[key])
    best = None
    for n, w in zip(reversed(res), reversed(wins)):
        if not w:
            break
        best = n
    return best


def _res(n: int | None) -> str:
    return f"{n}x{n}" if n else "none of the tested resolutions"


def _cell(r: dict | None) -> str:
    if r is None:
        return ""
    if r["status"] != "ok":
        return r["status"]
    mem = "" if r["peak_gib"] is None else f" / {r['peak_gib']:.2f} GiB"
    return f"{r['images_per_s']:.1f}{mem}"


def markdown(rows: list[dict], vim: str, vits: list[str]) -> str:
    models = [vim, *vits]
    by = {(r["model"], r["resolution"], r["mode"]): r for r in rows}
    params = {r["model"]: r["params"] for r in rows if r["params"]}
    head = ["mode", "resolution", "tokens", "batch"]
    head += [f"{m} ({params.get(m, 0) / 1e6:.1f}M) img/s / peak" for m in models]
    head += [f"{vim} vs {v}: speed, memory saved" for v in vits]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mode in ("infer", "train"):
        for n in sorted({r["resolution"] for r in rows}):
            any_row = next((by[k] for k in by if k[1] == n and k[2] == mode), None)
            if any_row is None:
                continue
            cells = [mode, f"{n}x{n}", str(any_row["tokens"]), str(any_row["batch"])]
            cells += [_cell(by.get((m, n, mode))) for m in models]
            a = by.get((vim, n, mode))
            for v in vits:
                b = by.get((v, n, mode))
                if a and b and a["status"] == b["status"] == "ok":
                    s = f"{a['images_per_s'] / b['images_per_s']:.2f}x"
                    if a["peak_gib"] is not None:
                        s += f", {100 * (1 - a['peak_gib'] / b['peak_gib']):.1f}%"
                    cells.append(s)
                else:
                    cells.append("—")
            lines.append("| " + " | ".join(cells) + " |")
    r0 = rows[0] if rows else {}
    graphed = {r["cuda_graph"] for r in rows if r["mode"] == "infer" and r["status"] == "ok"}
    how = {frozenset({True}): "inference replayed from a CUDA graph, training eager",
           frozenset({False}): "eager (Python launches every kernel)"}.get(
        frozenset(graphed), "inference through a CUDA graph where the capture worked (see notes)")
    lines += ["", f"images/s (median of timed steps) / peak allocated memory; {r0.get('dtype')} "
              f"on {r0.get('device')}; {how}; speed = Vim img/s over ViT img/s, memory saved = 1 - "
              "Vim peak / ViT peak. Crossover (lowest resolution from which on Vim wins at "
              "every larger tested one):", ""]
    measured_memory = any(r["peak_gib"] is not None for r in rows)
    for v in vits:
        for mode in ("infer", "train"):
            if not any(r["mode"] == mode for r in rows):
                continue
            sp = _res(crossover(rows, mode, "images_per_s", vim, v))
            mem = _res(crossover(rows, mode, "peak_gib", vim, v)) if measured_memory \
                else "not measured (CUDA only)"
            lines.append(f"- {vim} vs {v}, {mode}: faster from {sp}; less memory from {mem}")
    errors = sorted({f"{r['model']} {r['resolution']} {r['mode']}: {r['note']}"
                     for r in rows if r["status"] == "error" or r["note"].startswith("CUDA graph")})
    if errors:
        lines += ["", "Errors:", *[f"- {e}" for e in errors]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--smoke", action="store_true", help="tiny models on the CPU")
    ap.add_argument("--resolutions", type=int, nargs="+", default=None)
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--models", nargs="+", default=None,
                    help=f"first Vim, then ViTs; default {' '.join(SPECS)}")
    ap.add_argument("--tokens-per-batch", type=int, default=25000)
    ap.add_argument("--batch", type=int, default=None,
                    help="fixed batch at every resolution (--smoke: 2)")
    ap.add_argument("--modes", nargs="+", default=["infer", "train"], choices=["infer", "train"])
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    ap.add_argument("--scan-backend", default="auto")
    ap.add_argument("--eager", action="store_true",
                    help="inference without a CUDA graph (the Python launch loop is timed too)")
    args = ap.parse_args(argv)

    specs = SMOKE_SPECS if args.smoke else SPECS
    names = args.models or list(specs)
    unknown = [n for n in names if n not in {**SPECS, **SMOKE_SPECS}]
    if unknown or len(names) < 2:
        ap.error(f"--models needs a Vim and at least one ViT of {list(SPECS) + list(SMOKE_SPECS)}")
    chosen = [{**SPECS, **SMOKE_SPECS}[n] for n in names]
    resolutions = args.resolutions or ([32, 64] if args.smoke else list(RESOLUTIONS))
    if any(r % args.patch for r in resolutions):
        ap.error(f"every resolution must be divisible by the patch size {args.patch}")
    dev = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    bf16 = args.precision == "bf16" or (args.precision == "auto" and dev.type == "cuda")
    warmup, iters = (1, 1) if args.smoke else (args.warmup, args.iters)
    backend = resolve_backend(args.scan_backend, dev)
    args.out.mkdir(parents=True, exist_ok=True)

    rows = []
    for mode in args.modes:
        for n in resolutions:
            tokens = (n // args.patch) ** 2 + 1
            batch = args.batch or (2 if args.smoke else max(1, args.tokens_per_batch // tokens))
            for spec in chosen:
                r = measure(spec, n, mode, patch=args.patch, batch=batch, dev=dev, bf16=bf16,
                            warmup=warmup, iters=iters, scan_backend=args.scan_backend,
                            cuda_graph=dev.type == "cuda" and not args.eager)
                r.update(device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                         dtype="bf16 autocast" if bf16 else "fp32", scan_backend=backend)
                rows.append(r)
                print(f"[bench_vision] {mode} {n}x{n} {spec.name}: {_cell(r)} {r['note']}",
                      file=sys.stderr, flush=True)

    table = markdown(rows, names[0], names[1:])
    print(table)
    meta = {"torch": torch.__version__, "python": platform.python_version(),
            "command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "specs": [asdict(s) for s in chosen], "patch": args.patch,
            "crossover": {f"{v}/{mode}/{key}": crossover(rows, mode, key, names[0], v)
                          for v in names[1:] for mode in args.modes
                          for key in ("images_per_s", "peak_gib")}}
    atomic_write(args.out / "bench_vision.json", json.dumps({"meta": meta, "results": rows},
                                                             indent=1))
    atomic_write(args.out / "bench_vision.md", table + "\n")
    return 0 if all(r["status"] != "error" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
