#!/usr/bin/env python3
"""Training throughput of `bytessm train`, eager step against `trainer.cuda_graph=true` (CUDA).

    python scripts/bench_train_step.py [--steps 500] [--window 100] [--workers auto,0] \
        [--cases induction-tiny,mqar-small] [--out results/bench_train_step]
    python scripts/bench_train_step.py --trees /tmp/old,. --rounds 3 [--eager] [--cases ...]

Each case runs the trainer twice per `--workers` setting (`trainer.num_workers`: auto, the
default, or a count), in fresh processes, for `--steps` steps (no evaluation, no
checkpoints) and reads the symbols per second it logged over the last `--window` steps, so
that compilation, the graph's warm-up steps and its capture are not counted. Small models
at short lengths are host-bound: this is where the graph pays. Writes a Markdown table and
JSON (device, versions, commit, command) to `--out`.

`--trees` compares checkouts instead (e.g. `git archive <commit> | tar -x -C /tmp/old`,
with kernels/, tasks/ and configs/ linked into the tree's bytessm/ as an install does):
graphed runs (`--eager`: eager ones), each tree's `bytessm` imported from the tree, the
trees alternated within each of `--rounds` rounds, since runs of one tree differ by tens of
percent on one machine where the step is host-bound. Prints one line per run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bytessm.io import atomic_write

CASES = {  # name -> overrides of `bytessm train`
    "induction-tiny": [],  # the default job: tiny model, batch 32 x 64
    "induction-small": ["model=small"],
    "mqar4-tiny-b256": ["task=mqar", "task.vocab=64", "task.n_pairs=4", "task.seq_len=64",
                        "trainer.batch_size=256"],
    "mqar-small": ["task=mqar", "model=small", "trainer.batch_size=32"],  # 32 x 256
    "induction-small-accum4": ["model=small", "trainer.grad_accum=4"],   # 4 x 8 x 64 a step
}


def run(overrides: list[str], *, steps: int, window: int, workers: str, graph: bool,
        tree: str | None = None) -> dict:
    """One `bytessm train` in a fresh process (from `tree`'s bytessm where given)."""
    env = None
    if tree is not None:
        tree = str(Path(tree).resolve())
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [tree, *filter(None, [os.environ.get("PYTHONPATH")])])}
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "bytessm.cli", "train", *overrides,
               f"trainer.out_dir={out}", f"trainer.max_steps={steps}", f"trainer.log_every={window}",
               "trainer.eval_every=0", "trainer.save_every=0", "trainer.progress=false",
               f"trainer.num_workers={workers}", f"trainer.cuda_graph={str(graph).lower()}"]
        t = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=tree,
                              env=env)
        wall = time.perf_counter() - t
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
        rows = [json.loads(line) for line in open(Path(out) / "metrics.jsonl")]
    last = [r for r in rows if r["split"] == "train"][-1]
    # the count `auto` chose, from the trainer's own line (it times a batch first)
    chose = re.search(r"num_workers=auto: (\d+) loader", done.stdout)
    count = int(chose.group(1)) if chose else int(workers) if workers != "auto" else None
    return {"symbols_per_s": last["symbols_per_s"], "loss": last["loss"], "wall_s": wall,
            "workers": count}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--window", type=int, default=100)
    p.add_argument("--workers", default="auto",
                   help="comma-separated trainer.num_workers settings (auto or counts)")
    p.add_argument("--out", default="results/bench_train_step")
    p.add_argument("--commit", default=None,
                   help="commit to record (default: git rev-parse; a copied tree's may be stale)")
    p.add_argument("--trees", default=None,
                   help="comma-separated checkouts to compare, graphed runs (see above)")
    p.add_argument("--eager", action="store_true", help="with --trees: eager runs instead")
    p.add_argument("--rounds", type=int, default=3, help="with --trees: alternating rounds")
    a = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_train_step.py measures CUDA graphs: it needs a CUDA device")
    unknown = [c for c in a.cases.split(",") if c not in CASES]
    if unknown:
        sys.exit(f"unknown case {unknown[0]!r}; cases: {', '.join(CASES)}")
    if a.trees:
        for r in range(1, a.rounds + 1):
            for name in a.cases.split(","):
                for tree in a.trees.split(","):
                    g = run(CASES[name], steps=a.steps, window=a.window, workers=a.workers,
                            graph=not a.eager, tree=tree)
                    print(f"round {r} {name} {tree} ({'eager' if a.eager else 'graphed'}): "
                          f"{g['symbols_per_s']:,.0f} symbols/s, "
                          f"loss {g['loss']:.4f}", flush=True)
        return
    settings = a.workers.split(",")
    results = []
    for name in a.cases.split(","):
        for w in settings:
            row = {"case": name, "overrides": CASES[name], "workers": w}
            for graph in (False, True):
                row["graph" if graph else "eager"] = run(CASES[name], steps=a.steps,
                                                         window=a.window, workers=w, graph=graph)
            row["worker_count"] = row["graph"]["workers"]
            results.append(row)
            e, g = row["eager"]["symbols_per_s"], row["graph"]["symbols_per_s"]
            print(f"{name}, workers {w} ({row['worker_count']}): eager {e:,.0f} symbols/s, "
                  f"graph {g:,.0f} ({g / e:.2f}x)", flush=True)
    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
            "commit": a.commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                                 capture_output=True, text=True).stdout.strip()
            or None,
            "command": " ".join(["python", *sys.argv]), "steps": a.steps, "window": a.window,
            "cpu_cores": len(os.sched_getaffinity(0))}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "bench_train_step.json", json.dumps({**meta, "results": results}, indent=1))
    lines = [f"Training throughput, eager vs `trainer.cuda_graph=true`: {meta['device']}, torch "
             f"{meta['torch']}, {meta['date']}, commit {meta['commit']}, {meta['cpu_cores']} CPU "
             f"cores; symbols/s over steps {a.steps - a.window + 1}-{a.steps} of {a.steps}.",
             f"Command: `{meta['command']}`", "",
             "| case | overrides | trainer.num_workers | eager symbols/s | graph symbols/s | speedup |",
             "|---|---|---|---:|---:|---:|"]
    for r in results:
        e, g = r["eager"]["symbols_per_s"], r["graph"]["symbols_per_s"]
        w = r["workers"] + (f" ({r['worker_count']})" if r["workers"] == "auto" else "")
        lines.append(f"| {r['case']} | `{' '.join(r['overrides']) or '(default job)'}` | {w} | "
                     f"{e:,.0f} | {g:,.0f} | {g / e:.2f}x |")
    atomic_write(out / "bench_train_step.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
