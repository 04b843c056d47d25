"""Model-level benchmark: time and peak memory of one training step against sequence length.

One training step = forward + next-byte cross-entropy + backward + AdamW step, of the whole
model (byte embedding, blocks, final norm, LM head), at batch 1 for every length (so the
tokens per step grow with the length: 2^10 .. 2^20). Models, measured in one run:

    mamba-6x256        the Mamba paper's DNA scaling model: 6 Mamba layers, width 256
    mamba-6x512-ckpt   a wider one, trained with activation checkpointing per block
    mamba-6x256-seg64k the first, trained in segments of 2^16 carrying the state (unlimited
                       TBPTT horizon, so the same gradients; bytessm/train/segments.py)
    transformer-3x256  the same-size Transformer: 3 layers of attention (SDPA, FlashAttention
                       forced, rotary) + SwiGLU MLP (ratio 3), width 256; one
                       attention+MLP layer has the parameters of two Mamba layers (Gu & Dao
                       2023 match sizes the same way): 2.69M vs 2.76M parameters

On CUDA the step runs under bf16 autocast (fp32 residual stream and master weights), on the
CPU in float32. Each (model, length) gets one warm-up step (kernel compilation, allocator,
optimizer state), then timed steps until `min_time_s` has passed (at most `max_repeats`);
the median is reported, with the peak of torch.cuda.max_memory_allocated over the timed
steps (parameters, gradients and AdamW state included). An out-of-memory error is caught
and reported as OOM, and the model's longer lengths are skipped; so are lengths whose
predicted step time (extrapolated from the last two) exceeds `max_step_s`, or that would
start after `budget_s`. Defaults fit one H100 in about five minutes.

Below about 2^15 positions the eager step of these small models is bound by the host (a few
hundred kernel launches from Python, tens of ms), not by the GPU. `cuda_graph=True` captures
each (model, length)'s step once in a CUDA graph (after two warm-up steps on a side stream,
AdamW made capturable) and times its replays: what the kernels take, as
`trainer.cuda_graph=true` trains. Segmented specs run eagerly (their loop over segments
carries tensors between captures).

    from bytessm.bench.model import run, write_outputs
    rows = run(models=["mamba-6x256", "transformer-3x256"], lengths=[2**k for k in range(10, 21)])
    write_outputs(rows, "results/bench_model")   # .md table, .json, .png plot

`scripts/bench_model.py` is the command-line wrapper (`--smoke`: tiny models on the CPU).
"""
from __future__ import annotations

import contextlib
import functools
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from bytessm.backbone import Backbone, SequenceModel
from bytessm.io import atomic_open, atomic_write
from bytessm.nn import LMHead

__all__ = ["ModelSpec", "PRESETS", "SMOKE_PRESETS", "DEFAULT_MODELS", "DEFAULT_LENGTHS",
           "SMOKE_LENGTHS", "SETTINGS", "run", "markdown_table", "plot", "write_outputs", "cli",
           "main"]

VOCAB = 256
GIB = 2**30


@dataclass(frozen=True)
class ModelSpec:
    """A benchmarked model: all-Mamba, or (attention=True) all attention + SwiGLU MLP."""
    name: str
    d_model: int
    n_layer: int
    attention: bool = False
    mlp_ratio: float = 0.0
    heads: int = 4
    checkpoint: bool = False
    segment_len: int | None = None  # train in segments carrying the state (exact gradients)

    @property
    def kind(self) -> str:
        return "transformer" if self.attention else "mamba"


PRESETS = {s.name: s for s in (
    ModelSpec("mamba-6x128", 128, 6),
    ModelSpec("mamba-6x256", 256, 6),
    ModelSpec("mamba-6x512-ckpt", 512, 6, checkpoint=True),
    ModelSpec("mamba-6x256-seg64k", 256, 6, segment_len=2**16),
    ModelSpec("transformer-3x256", 256, 3, attention=True, mlp_ratio=3.0, heads=4),
)}
SMOKE_PRESETS = {s.name: s for s in (
    ModelSpec("mamba-2x32", 32, 2),
    ModelSpec("mamba-2x32-ckpt", 32, 2, checkpoint=True),
    ModelSpec("mamba-2x32-seg", 32, 2, segment_len=32),
    ModelSpec("transformer-1x32", 32, 1, attention=True, mlp_ratio=3.0, heads=2),
)}
DEFAULT_MODELS = ("mamba-6x256", "transformer-3x256", "mamba-6x512-ckpt",  # key pair first
                  "mamba-6x256-seg64k")
DEFAULT_LENGTHS = tuple(2**k for k in range(10, 21))
SMOKE_LENGTHS = (2**6, 2**7, 2**8)


def _spec(m: str | dict | ModelSpec) -> ModelSpec:
    if isinstance(m, ModelSpec):
        return m
    if isinstance(m, str):
        if m not in PRESETS and m not in SMOKE_PRESETS:
            raise ValueError(f"unknown benchmark model {m!r}; presets: "
                             f"{sorted(PRESETS) + sorted(SMOKE_PRESETS)}, or a dict with keys "
                             f"{[f.name for f in fields(ModelSpec)]}")
        return PRESETS.get(m) or SMOKE_PRESETS[m]
    unknown = set(m) - {f.name for f in fields(ModelSpec)}
    if unknown:
        raise ValueError(f"benchmark model {dict(m)} has unknown keys {sorted(unknown)}")
    return ModelSpec(**m)


def build(spec: ModelSpec, *, scan_backend: str = "auto") -> SequenceModel:
    """The core Backbone + LM head for a spec (byte vocabulary)."""
    backbone = Backbone(d_model=spec.d_model, n_layer=spec.n_layer, vocab_size=VOCAB,
                        attn_layers="all" if spec.attention else (), attn_heads=spec.heads,
                        attn_mlp_ratio=spec.mlp_ratio, checkpoint_blocks=spec.checkpoint,
                        scan_backend=scan_backend)
    return SequenceModel(backbone, LMHead(spec.d_model, VOCAB))


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def _attention_ctx(spec: ModelSpec):
    """A fresh context per step (sdpa_kernel is single-use): FlashAttention only, so a
    Transformer fails loudly rather than fall back to O(L^2) memory. torch has a flash
    kernel on the CPU as well, so the smoke run takes the same path."""
    if spec.attention:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.FLASH_ATTENTION])
    return contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_step(model, optimizer, x, y, *, autocast_dtype, attention_ctx,
                segment_len: int | None = None) -> None:
    """forward -> next-byte cross-entropy -> backward -> AdamW step; x, y (B, L) int64.
    With `segment_len`, forward/backward run segment-wise (unlimited horizon: the same
    gradients, the memory of one segment)."""
    def autocast():
        return torch.autocast(x.device.type, dtype=autocast_dtype,
                              enabled=autocast_dtype is not None)

    if segment_len is not None:
        from bytessm.train.segments import segmented_backward

        def loss_fn(logits, seg):                                        # (B, S, V), (B, S)
            nll = F.cross_entropy(logits.float().flatten(0, 1), seg["target"].flatten(),
                                  reduction="sum")
            return nll / y.numel(), {}

        with attention_ctx():
            segmented_backward(model, {"input": x, "target": y}, loss_fn,
                               segment_len=segment_len, autocast=autocast)
    else:
        with attention_ctx(), autocast():
            logits = model(x)                                            # (B, L, V)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


class _Graphed:
    """A step function (`_train_step`'s signature) captured in a CUDA graph per model and
    input shape, then replayed. The inputs are copied into the captured tensors; AdamW's
    learning rate and step counters move to the device (`make_capturable`)."""

    def __init__(self, step_fn: Callable, warmup: int = 2):
        self.step_fn, self.warmup = step_fn, warmup
        self.key = self.graph = self.x = self.y = None

    def __call__(self, model, optimizer, x, y, **kw) -> None:
        key = (id(model), tuple(x.shape))
        if key != self.key:
            self.key, self.graph = key, None       # the previous graph's memory goes
            self._capture(model, optimizer, x, y, **kw)
        else:
            self.x.copy_(x)
            self.y.copy_(y)
        self.graph.replay()

    def _capture(self, model, optimizer, x, y, **kw) -> None:
        from bytessm.train.graphs import make_capturable

        make_capturable(optimizer, x.device)
        self.x, self.y = x.clone(), y.clone()
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):          # compile, allocate, create AdamW's state
            for _ in range(self.warmup):
                self.step_fn(model, optimizer, self.x, self.y, **kw)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):          # the step ends with zero_grad: the replays
            self.step_fn(model, optimizer, self.x, self.y, **kw)   # write the same grads
        self.graph = graph


def _predict(times: list[tuple[int, float]], length: int) -> float | None:
    """Step time at `length` extrapolated from the last two measurements (exponent in [1, 2])."""
    if len(times) < 2:
        return None
    (l0, t0), (l1, t1) = times[-2], times[-1]
    p = min(2.0, max(1.0, math.log(t1 / t0) / math.log(l1 / l0))) if t0 > 0 and t1 > 0 else 2.0
    return t1 * (length / l1) ** p


def run(*, models: Sequence[str | dict | ModelSpec] | None = None,
        lengths: Sequence[int] | None = None, batch: int = 1, device: str = "auto",
        smoke: bool = False, precision: str = "auto", scan_backend: str = "auto",
        min_time_s: float = 1.0, max_repeats: int = 10, max_step_s: float = 45.0,
        budget_s: float = 270.0, cuda_graph: bool = False,
        log: Callable[[str], None] | None = None,
        step_fn: Callable | None = None) -> list[dict]:
    """Measure every (model, length); one dict per pair, in order.

    Keys: model, kind, d_model, n_layer, checkpoint, params, length, batch, tokens, status
    ("ok" | "OOM" | "skipped" | "error"), note, step_ms, tokens_per_s, peak_gib (None on the
    CPU), repeats, device, dtype. `smoke` picks the tiny CPU presets and lengths 2^6..2^8
    unless `models` / `lengths` are given. `precision`: "auto" (bf16 autocast on CUDA,
    float32 on the CPU), "bf16" or "fp32". `cuda_graph`: time the step replayed from a CUDA
    graph (CUDA only; segmented specs stay eager, noted in their rows). `step_fn` replaces
    the training step (tests).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if device == "auto":
        device = "cpu" if smoke or not torch.cuda.is_available() else "cuda"
    dev = torch.device(device)
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    if cuda_graph and dev.type != "cuda":
        raise ValueError(f"cuda_graph=true replays the step as a CUDA graph: it needs a CUDA "
                         f"device, got {dev}")
    bf16 = precision == "bf16" or (precision == "auto" and dev.type == "cuda")
    autocast_dtype = torch.bfloat16 if bf16 else None
    specs = [_spec(m) for m in (models or (tuple(SMOKE_PRESETS) if smoke else DEFAULT_MODELS))]
    lengths = sorted(lengths or (SMOKE_LENGTHS if smoke else DEFAULT_LENGTHS))
    if batch <= 0 or any(n <= 0 for n in lengths):
        raise ValueError(f"batch and lengths must be positive, got batch={batch}, {lengths}")
    step_fn = step_fn or _train_step
    start = time.perf_counter()
    rows: list[dict] = []

    for spec in specs:
        torch.manual_seed(0)
        model = build(spec, scan_backend=scan_backend).to(dev)
        params = sum(p.numel() for p in model.parameters())
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
        attention_ctx = functools.partial(_attention_ctx, spec)
        graphed = cuda_graph and spec.segment_len is None
        step = _Graphed(step_fn) if graphed else step_fn
        times: list[tuple[int, float]] = []
        stop: str | None = None  # why the longer lengths of this model are skipped
        log(f"[bench] {spec.name}: {params / 1e6:.2f}M parameters on {dev}")
        for length in lengths:
            row = {"model": spec.name, "kind": spec.kind, "d_model": spec.d_model,
                   "n_layer": spec.n_layer, "checkpoint": spec.checkpoint,
                   "segment_len": spec.segment_len, "params": params,
                   "length": length, "batch": batch, "tokens": batch * length,
                   "status": "ok", "note": "", "step_ms": None, "tokens_per_s": None,
                   "peak_gib": None, "repeats": 0, "device": str(dev),
                   "dtype": "bf16-autocast" if bf16 else "fp32", "cuda_graph": graphed}
            if cuda_graph and not graphed:
                row["note"] = "eager: segments are not captured"
            rows.append(row)
            predicted = _predict(times, length)
            elapsed = time.perf_counter() - start
            if stop is None and predicted is not None and predicted > max_step_s:
                stop = f"predicted step {predicted:.0f} s > max_step_s={max_step_s:g}"
            if stop is None and elapsed > budget_s:
                stop = f"time budget {budget_s:g} s spent"
            if stop is not None:
                row.update(status="skipped", note=stop)
                continue
            g = torch.Generator().manual_seed(length)
            x = torch.randint(0, VOCAB, (batch, length), generator=g).to(dev)    # (B, L)
            y = torch.randint(0, VOCAB, (batch, length), generator=g).to(dev)    # (B, L)
            kw = dict(autocast_dtype=autocast_dtype, attention_ctx=attention_ctx,
                      segment_len=spec.segment_len)
            try:
                if graphed:   # the peak of the warm-up steps: a replay allocates nothing
                    torch.cuda.reset_peak_memory_stats(dev)
                t0 = time.perf_counter()
                step(model, optimizer, x, y, **kw)       # warm-up: compile, allocate, capture
                _sync(dev)
                warm = time.perf_counter() - t0
                if dev.type == "cuda" and not graphed:
                    torch.cuda.reset_peak_memory_stats(dev)
                n = max(1, min(max_repeats, math.ceil(min_time_s / max(warm, 1e-6))))
                samples = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    step(model, optimizer, x, y, **kw)
                    _sync(dev)
                    samples.append(time.perf_counter() - t0)
                t = statistics.median(samples)
                row.update(step_ms=1e3 * t, tokens_per_s=batch * length / t, repeats=n)
                if dev.type == "cuda":
                    row["peak_gib"] = torch.cuda.max_memory_allocated(dev) / GIB
                times.append((length, t))
            except Exception as e:  # noqa: BLE001 - a benchmark reports and goes on
                if _is_oom(e):
                    row.update(status="OOM", note=str(e).splitlines()[0][:200])
                    stop = f"OOM at length {length}"
                else:
                    traceback.print_exc()
                    row.update(status="error", note=f"{type(e).__name__}: {e}"[:300])
                    stop = f"error at length {length}"
            finally:
                optimizer.zero_grad(set_to_none=True)
                del x, y
                if dev.type == "cuda":
                    gc.collect()
                    torch.cuda.empty_cache()
            log(f"[bench] {spec.name} L={length}: {_cell(row)}")
        del model, optimizer, step
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# -- reporting -------------------------------------------------------------------------

def _pow2(n: int) -> str:
    k = int(math.log2(n))
    return f"2^{k}" if 2**k == n else str(n)


def _cell(row: dict) -> str:
    if row["status"] == "ok":
        mem = "" if row["peak_gib"] is None else f" / {row['peak_gib']:.2f} GiB"
        return f"{row['step_ms']:.1f} ms{mem}"
    return {"OOM": "OOM", "skipped": "—", "error": "error"}[row["status"]]


def _speedups(rows: list[dict]) -> list[tuple[str, str]]:
    """(transformer, full-length mamba) pairs of the same width: Transformer/Mamba ratios."""
    specs = {r["model"]: (r["kind"], r["d_model"], r.get("segment_len")) for r in rows}
    return [(t, m) for t, (tk, td, _) in specs.items() if tk == "transformer"
            for m, (mk, md, seg) in specs.items() if mk == "mamba" and md == td and seg is None]


def markdown_table(rows: list[dict]) -> str:
    """Lengths down, models across ("step ms / peak GiB"), then Transformer/Mamba ratios."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    lengths = sorted({r["length"] for r in rows})
    by = {(r["model"], r["length"]): r for r in rows}
    pairs = _speedups(rows)
    params = {r["model"]: r["params"] for r in rows}
    head = (["length"] + [f"{m} ({params[m] / 1e6:.2f}M)" for m in models]
            + [f"{t} / {m}" for t, m in pairs])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in lengths:
        cells = [_pow2(n)] + [_cell(by[(m, n)]) if (m, n) in by else "" for m in models]
        for t, m in pairs:
            rt, rm = by.get((t, n)), by.get((m, n))
            ok = rt and rm and rt["status"] == rm["status"] == "ok"
            cells.append(f"{rt['step_ms'] / rm['step_ms']:.1f}x" if ok else "—")
        lines.append("| " + " | ".join(cells) + " |")
    notes = sorted({f"{r['model']}: {r['note']}" for r in rows
                    if r["status"] in ("skipped", "error") and r["note"]})
    r0 = rows[0] if rows else {}
    lines.append("")
    graphed = " replayed from a CUDA graph" if any(r.get("cuda_graph") for r in rows) else ""
    eager = sorted({r["model"] for r in rows if r.get("note", "").startswith("eager")})
    lines.append(f"One training step (forward + backward + AdamW){graphed} at batch "
                 f"{r0.get('batch')}, {r0.get('dtype')}, on {r0.get('device')}: median step "
                 f"time / peak allocated memory."
                 + (f" Eager (not captured): {', '.join(eager)}." if graphed and eager else "")
                 + (f" — = not run ({'; '.join(notes)})." if notes else ""))
    return "\n".join(lines)


def plot(rows: list[dict], path: str | os.PathLike) -> None:
    """Step time and peak memory against length, log-log, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        ok = [r for r in mine if r["status"] == "ok"]
        oom = [r["length"] for r in mine if r["status"] == "OOM"]
        label = model + (f" (OOM at {_pow2(oom[0])})" if oom else "")
        style = "--" if mine[0]["kind"] == "transformer" else "-"
        ax_t.plot([r["length"] for r in ok], [r["step_ms"] for r in ok], style, marker="o",
                  label=label)
        if any(r["peak_gib"] is not None for r in ok):
            ax_m.plot([r["length"] for r in ok], [r["peak_gib"] for r in ok], style,
                      marker="o", label=label)
    batch = rows[0]["batch"] if rows else 1
    for ax, ylabel in ((ax_t, "step time (ms)"), (ax_m, "peak memory (GiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(f"sequence length (batch {batch})")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not measured (CUDA only)", ha="center", transform=ax.transAxes)
    fig.suptitle("Training step (fwd + bwd + AdamW) vs sequence length")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, dpi=120, format="png")
    plt.close(fig)


def _meta() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"torch": torch.__version__, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "git_commit": commit or None, "command": " ".join(sys.argv),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def write_outputs(rows: list[dict], out_dir: str | os.PathLike,
                  stem: str = "bench_model") -> dict[str, Path]:
    """`<stem>.md` (the table), `<stem>.json` ({meta, results}), `<stem>.png` (the plot)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {ext: out / f"{stem}.{ext}" for ext in ("md", "json", "png")}
    table = markdown_table(rows)
    atomic_write(paths["md"], table + "\n")
    atomic_write(paths["json"], json.dumps({"meta": _meta(), "results": rows}, indent=1))
    plot(rows, paths["png"])
    return paths


SETTINGS = ("models", "lengths", "min_log2", "max_log2", "batch", "device", "precision",
            "scan_backend", "max_step_s", "budget_s", "cuda_graph")


def cli(settings: dict, *, out: str, smoke: bool = False) -> list[dict]:
    """Run with `settings` (keys: SETTINGS; absent or None = default), write the outputs into
    `out`, print the table on stdout. Shared by `bytessm bench what=model` and the script."""
    from bytessm.task import ConfigError

    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"bench what=model: unknown setting(s) {unknown}; expected some of "
                          f"{list(SETTINGS)}")
    kw = {k: v for k, v in settings.items() if v is not None}
    lengths = kw.pop("lengths", None)
    if lengths is not None and ("min_log2" in kw or "max_log2" in kw):
        raise ConfigError("bench what=model: give either lengths or min_log2/max_log2, "
                          f"got lengths={lengths} and {kw.get('min_log2')}/{kw.get('max_log2')}")
    lo = kw.pop("min_log2", 6 if smoke else 10)
    hi = kw.pop("max_log2", 8 if smoke else 20)
    if lengths is None:
        if not 0 <= lo <= hi <= 30:
            raise ConfigError(f"bench what=model: need 0 <= min_log2 <= max_log2 <= 30, got "
                              f"min_log2={lo}, max_log2={hi}")
        lengths = [2**k for k in range(lo, hi + 1)]
    elif not lengths or not all(isinstance(n, int) and n > 0 for n in lengths):
        raise ConfigError(f"bench what=model: lengths must be positive integers, got {lengths}")
    try:
        rows = run(lengths=list(lengths), smoke=smoke, **kw)
    except ValueError as e:  # an unknown preset, a bad precision or batch
        raise ConfigError(f"bench what=model: {e}") from e
    paths = write_outputs(rows, out)
    print(markdown_table(rows), flush=True)
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/bench_model", help="output folder")
    p.add_argument("--smoke", action="store_true", help="tiny models, short lengths, CPU")
    p.add_argument("--models", nargs="+", help=f"presets: {sorted(PRESETS)} "
                   f"(smoke: {sorted(SMOKE_PRESETS)})")
    p.add_argument("--min-log2", type=int, help="shortest length 2^k (default 10; smoke 6)")
    p.add_argument("--max-log2", type=int, help="longest length 2^k (default 20; smoke 8)")
    p.add_argument("--batch", type=int)
    p.add_argument("--device")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"))
    p.add_argument("--scan-backend")
    p.add_argument("--max-step-s", type=float)
    p.add_argument("--budget-s", type=float)
    p.add_argument("--cuda-graph", action="store_true", default=None,
                   help="time the step replayed from a CUDA graph (CUDA)")
    a = vars(p.parse_args(argv))
    out, smoke = a.pop("out"), a.pop("smoke")
    from bytessm.task import ConfigError

    try:
        rows = cli(a, out=out, smoke=smoke)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if all(r["status"] != "error" for r in rows) else 1
