"""Raw bytes vs BPE, Mamba vs Transformer, at matched training compute and parameters,
in bits per byte on the same held-out bytes.

    PYTHONPATH=. python scripts/compare_tokenization.py --out runs/compare_tokenization \
        [--data data/text/prose] [--context-bytes 256] [--d-model 64] [--layers 2]
        [--bytes-steps 300] [--batch-size 8] [--vocab-size 1024] [--extras] [--smoke]

Four runs through the `bytessm train` CLI, one per (pipeline, architecture):
    bytes-mamba, bytes-transformer, bpe-mamba, bpe-transformer
- Architectures: Mamba with 2*layers Mamba blocks; Transformer with `layers` blocks of
  attention + SwiGLU MLP (model.attn_layers=all), the MLP width chosen so a Transformer block
  has the non-embedding parameters of two Mamba blocks (about 12 d^2), same d_model. Parameter counts (total
  and non-embedding) are reported; BPE's larger vocabulary adds embedding/head parameters only.
- Context: every model sees `context_bytes` bytes per window: bytes models seq_len =
  context_bytes, BPE models seq_len = context_bytes / (bytes per token on the training split).
- Matched compute: training FLOPs = 3 x forward FLOPs per symbol x symbols (tasks/text/flops.py
  states the count: 2 x Linear weights + attention 2 x context x d + scan 9 x d_inner x d_state
  + conv per symbol). bytes-mamba trains --bytes-steps steps; every other run gets the
  steps that spend the same FLOPs.
- Evaluation: task.eval_bytes = context_bytes spans of the valid split (the same bytes for
  all four, checked through the held-out byte count), `--evals` times during training
  (the curves) and on the test split at the end (`bytessm eval`).
Writes <out>/results.json, <out>/table.md and <out>/bpb_vs_flops.png; prints the table.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bytessm.io import atomic_open, atomic_write

ROOT = Path(__file__).resolve().parents[1]


def _tokenizer_arg(name: str) -> str:
    head = (ROOT / "configs" / "train.yaml").read_text().split("hydra:")[0]
    return f"{'' if 'tokenizer' in head.split('defaults:')[1] else '+'}tokenizer={name}"


def _bytessm(*args: str) -> str:
    exe = Path(sys.executable).with_name("bytessm")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "bytessm.cli"]
    r = subprocess.run([*cmd, *args], capture_output=True, text=True,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if r.returncode:
        sys.exit(f"compare_tokenization.py: bytessm {' '.join(args[:3])} ... failed "
                 f"(exit {r.returncode}):\n{r.stderr[-3000:]}")
    return r.stdout


def _model_kwargs(arch: str, d_model: int, layers: int) -> dict:
    if arch == "mamba":
        return dict(d_model=d_model, n_layer=2 * layers, attn_layers=[], attn_mlp_ratio=0)
    return dict(d_model=d_model, n_layer=layers, attn_layers="all",
                attn_mlp_ratio=_matched_mlp_ratio(d_model, layers))


def _matched_mlp_ratio(d_model: int, layers: int) -> float:
    """The SwiGLU width at which a Transformer block has the non-embedding parameters of two
    Mamba blocks (attention 4 d^2 + MLP 3 h d + norms); ~2.67 at large d, more at small d
    where Mamba's x_proj/dt_proj/conv/A/D weigh more."""
    from bytessm.backbone import Backbone

    mamba = Backbone(d_model=d_model, n_layer=2, vocab_size=1)
    per_pair = sum(p.numel() for p in mamba.blocks.parameters())
    hidden = (per_pair - 4 * d_model ** 2 - 2 * d_model) / (3 * d_model)
    return round(max(hidden, 1) / d_model + 1e-3, 4)   # Backbone takes int(ratio * d)


def _count(arch: str, d_model: int, layers: int, vocab: int, context: int) -> dict:
    from bytessm.backbone import Backbone, SequenceModel
    from bytessm.nn import LMHead
    from bytessm.tasks.text.flops import forward_flops_per_symbol, param_counts

    kw = _model_kwargs(arch, d_model, layers)
    model = SequenceModel(Backbone(vocab_size=vocab, attn_heads=4, **kw), LMHead(d_model, vocab))
    return {**{f"params_{k}": v for k, v in param_counts(model).items()},
            "forward_flops_per_symbol": forward_flops_per_symbol(model, context)}


def _bytes_per_token(data: str, vocab: int, max_train_bytes: int) -> float:
    """Train (or reuse) the corpus's BPE tokenizer; bytes per token on the training split."""
    from omegaconf import OmegaConf

    from bytessm.tasks.text import TextTask

    cfg = OmegaConf.create({"task": {"data": {"path": data}}, "trainer": {"seed": 0, "seq_len": 8},
                            "tokenizer": {"name": "bpe", "vocab_size": vocab,
                                          "max_train_bytes": max_train_bytes}})
    task = TextTask(cfg)
    folder = task._bpe().folder
    meta = json.loads((folder / "meta.json").read_text())
    return meta["train_bytes"] / meta["train_tokens"]


def _plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        xs = [p["flops"] for p in r["curve"]]
        ys = [p["bits_per_byte"] for p in r["curve"]]
        ax.plot(xs, ys, marker="o", label=r["name"])
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("valid bits per byte")
    ax.set_title("bytes vs BPE at matched compute")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, dpi=120, format="png")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/compare_tokenization")
    p.add_argument("--data", default="data/text/prose")
    p.add_argument("--context-bytes", type=int, default=256)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2, help="Transformer blocks (Mamba: 2x)")
    p.add_argument("--bytes-steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--max-train-bytes", type=int, default=10_000_000)
    p.add_argument("--eval-spans", type=int, default=256)
    p.add_argument("--evals", type=int, default=4, help="evaluations during training")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--device", default="auto")
    p.add_argument("--extras", action="store_true",
                   help="also length extrapolation (1x, 4x) and noise robustness per run")
    p.add_argument("--smoke", action="store_true", help="toy sizes: a few steps each")
    a = p.parse_args(argv)
    if a.smoke:
        a.context_bytes, a.d_model, a.layers, a.bytes_steps = 64, 16, 1, 6
        a.batch_size, a.vocab_size, a.eval_spans, a.evals = 2, 300, 8, 2
    out = Path(a.out).absolute()
    (out / "runs").mkdir(parents=True, exist_ok=True)

    bpt = _bytes_per_token(a.data, a.vocab_size, a.max_train_bytes)
    seq = {"bytes": a.context_bytes, "bpe": max(8, round(a.context_bytes / bpt))}
    vocab = {"bytes": 257, "bpe": a.vocab_size}
    runs = [(pipe, arch) for pipe in ("bytes", "bpe") for arch in ("mamba", "transformer")]
    info = {(pipe, arch): _count(arch, a.d_model, a.layers, vocab[pipe], seq[pipe])
            for pipe, arch in runs}
    per_step = {k: 3 * v["forward_flops_per_symbol"] * a.batch_size * seq[k[0]]
                for k, v in info.items()}
    budget = per_step["bytes", "mamba"] * a.bytes_steps

    results = []
    for pipe, arch in runs:
        name = f"{pipe}-{arch}"
        steps = max(2, round(budget / per_step[pipe, arch]))
        run_dir = out / "runs" / name
        kw = _model_kwargs(arch, a.d_model, a.layers)
        args = ["train", "task=text", _tokenizer_arg(pipe), f"task.data.path={a.data}",
                "model=small", f"model.d_model={kw['d_model']}", f"model.n_layer={kw['n_layer']}",
                f"model.attn_layers={'all' if kw['attn_layers'] == 'all' else '[]'}",
                f"model.attn_mlp_ratio={kw['attn_mlp_ratio']}", "model.attn_heads=4",
                f"trainer.seq_len={seq[pipe]}", f"trainer.batch_size={a.batch_size}",
                f"trainer.max_steps={steps}", f"trainer.eval_every={max(1, steps // a.evals)}",
                "trainer.eval_batches=null", f"trainer.warmup_steps={max(1, steps // 10)}",
                f"trainer.lr={a.lr}", "trainer.save_every=0", "trainer.progress=false",
                f"trainer.log_every={max(1, steps // 10)}", f"trainer.device={a.device}",
                f"task.eval_bytes={a.context_bytes}", f"task.eval_max_spans={a.eval_spans}",
                f"trainer.out_dir={run_dir}"]
        if pipe == "bpe":
            args += [f"tokenizer.vocab_size={a.vocab_size}",
                     f"tokenizer.max_train_bytes={a.max_train_bytes}"]
        print(f"[compare] {name}: {steps} steps of {a.batch_size} x {seq[pipe]} symbols",
              flush=True)
        if run_dir.exists():   # an earlier run folder would be resumed, not retrained
            shutil.rmtree(run_dir)
        _bytessm(*args)
        rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
        curve = [{"step": r["step"], "flops": r["step"] * per_step[pipe, arch],
                  "bits_per_byte": r["bits_per_byte"], "bytes": r["bytes"]}
                 for r in rows if r["split"] == "valid"]
        test = json.loads(_bytessm("eval", f"checkpoint={run_dir}/checkpoints/last",
                                   "split=test").strip().splitlines()[-1])
        res = {"name": name, "pipeline": pipe, "arch": arch, "seq_len": seq[pipe],
               "steps": steps, "train_flops": steps * per_step[pipe, arch], **info[pipe, arch],
               "valid_bpb": curve[-1]["bits_per_byte"], "test_bpb": test["bits_per_byte"],
               "test_bytes": test["bytes"], "curve": curve}
        if "token_perplexity" in test:
            res["test_token_perplexity"] = test["token_perplexity"]
        if a.extras:
            ex = subprocess.run([sys.executable, "-m", "bytessm.tasks.text.extras",
                                 f"{run_dir}/checkpoints/last", "--factors", "1", "4",
                                 "--base-bytes", str(a.context_bytes), "--max-spans", "8",
                                 "--rates", "0.05"], capture_output=True, text=True)
            if ex.returncode == 0:
                res["extras"] = json.loads(ex.stdout.strip().splitlines()[-1])
            else:
                res["extras_error"] = ex.stderr[-2000:]
        results.append(res)

    held_out = {(r["curve"][-1]["bytes"], r["test_bytes"]) for r in results}
    if len(held_out) != 1:
        sys.exit(f"compare_tokenization.py: the runs scored different held-out bytes {held_out}")
    lines = [f"Corpus {a.data}; context {a.context_bytes} bytes; BPE vocab {a.vocab_size} "
             f"({bpt:.2f} bytes/token on the training split); budget {budget:.3g} training "
             f"FLOPs per run; test bits per byte over {results[0]['test_bytes']:.0f} bytes.",
             "", "| run | params (non-emb) | seq_len | steps | train FLOPs | valid bpb | "
             "test bpb |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['params_total'] / 1e3:.0f}K ({r['params_non_embedding'] / 1e3:.0f}K) "
                     f"| {r['seq_len']} | {r['steps']} | {r['train_flops']:.3g} | "
                     f"{r['valid_bpb']:.4f} | {r['test_bpb']:.4f} |")
    if a.extras:
        lines += ["", "| run | bpb 1x ctx | bpb 4x ctx | clean | drop 5% | swap 5% | case 5% |",
                  "|---|---|---|---|---|---|---|"]
        for r in results:
            ex = r.get("extras")
            if ex is None:
                continue
            e = {row["factor"]: row["bits_per_byte"] for row in ex["extrapolation"]}
            n = {row["kind"]: row["noisy_bpb"] for row in ex["noise"]}
            lines.append(f"| {r['name']} | {e[1]:.4f} | {e[4]:.4f} | "
                         f"{ex['noise'][0]['clean_bpb']:.4f} | {n['drop']:.4f} | "
                         f"{n['swap']:.4f} | {n['case']:.4f} |")
    best = min(results, key=lambda r: r["test_bpb"])
    lines += ["", f"Lowest test bits per byte at this compute: {best['name']} "
                  f"({best['test_bpb']:.4f})."]
    table = "\n".join(lines) + "\n"
    atomic_write(out / "table.md", table)
    atomic_write(out / "results.json", json.dumps({"args": vars(a), "bytes_per_token": bpt,
                                                   "budget_flops": budget, "runs": results},
                                                  indent=1))
    _plot(results, out / "bpb_vs_flops.png")
    print(table)


if __name__ == "__main__":
    main()
