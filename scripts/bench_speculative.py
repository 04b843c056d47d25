"""Greedy speculative decoding with a trained target and drafter: accepted length,
acceptance rate and time against plain greedy decoding of the same prompts, per draft length.

    python scripts/bench_speculative.py --target RUN_DIR --drafter RUN_DIR \
        --prompt-files a.py b.py --prompt-bytes 256 --new 256 --k 2 4 8 --out results/spec

Both checkpoints are `bytessm train` run folders (or step folders) of causal byte models with
the same alphabet. Each prompt is the first `--prompt-bytes` bytes of a file (pick files the
models were not trained on). For every k the prompts are decoded speculatively
(`bytessm.speculative.speculative_generate`, greedy) and compared with plain greedy
decoding (`bytessm.generation.generate`, warmed up; on CUDA both use CUDA graphs), which
they must equal. Prints a Markdown table and writes OUT/bench_speculative.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO))

from bytessm.generation import cast_for_inference, generate  # noqa: E402
from bytessm.io import write_report  # noqa: E402
from bytessm.sampling import SamplingParams  # noqa: E402
from bytessm.speculative import speculative_generate  # noqa: E402
from bytessm.train.checkpoint import load_for_inference  # noqa: E402


def load(path: str, device: torch.device, dtype: torch.dtype):
    _, _, model = load_for_inference(path)
    n = sum(p.numel() for p in model.parameters())
    return cast_for_inference(model.to(device).eval(), dtype), n


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(a) -> dict:
    device = torch.device(a.device if a.device != "auto" else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    target, n_target = load(a.target, device, dtype)
    drafter, n_drafter = load(a.drafter, device, dtype)
    prompts = [list(Path(f).read_bytes()[:a.prompt_bytes]) for f in a.prompt_files]
    if not all(prompts):
        raise SystemExit("every prompt file must hold at least one byte")
    params = SamplingParams(temperature=0)
    plain = []
    for p in prompts:
        generate(target, [p], max_new=8, params=params)                   # warm-up (capture)
        sync(device)
        t = time.perf_counter()
        res = generate(target, [p], max_new=a.new, params=params)
        sync(device)
        plain.append((res.samples[0], time.perf_counter() - t))
    rows = []
    for k in a.k:
        speculative_generate(target, drafter, prompts[0], max_new=8, k=k, params=params)  # warm
        accepted = drafted = rounds = same = 0
        spec_s = 0.0
        for p, (want, _) in zip(prompts, plain):
            sync(device)
            t = time.perf_counter()
            symbols, _, st = speculative_generate(target, drafter, p, max_new=a.new, k=k,
                                                  params=params)
            sync(device)
            spec_s += time.perf_counter() - t
            accepted, drafted, rounds = (accepted + st.accepted, drafted + st.drafted,
                                         rounds + st.rounds)
            same += symbols == want
        plain_s = sum(s for _, s in plain)
        rows.append({"k": k, "mean_accepted": accepted / max(rounds, 1),
                     "acceptance_rate": accepted / max(drafted, 1), "rounds": rounds,
                     "speculative_s": spec_s, "plain_s": plain_s, "speedup": plain_s / spec_s,
                     "equal_to_greedy": same, "prompts": len(prompts)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {"meta": {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
                     else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)",
                     "dtype": str(dtype), "torch": torch.__version__,
                     "python": platform.python_version(),
                     "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                     "command": " ".join(["python", "scripts/bench_speculative.py", *sys.argv[1:]]),
                     "target": a.target, "target_params": n_target, "drafter": a.drafter,
                     "drafter_params": n_drafter, "prompt_files": a.prompt_files,
                     "prompt_bytes": a.prompt_bytes, "new": a.new},
            "rows": rows}


def markdown(report: dict) -> str:
    m = report["meta"]
    lines = [f"Greedy speculative decoding: target {m['target_params'] / 1e6:.2f}M params "
             f"(`{m['target']}`), drafter {m['drafter_params'] / 1e6:.2f}M (`{m['drafter']}`); "
             f"{len(m['prompt_files'])} prompts of {m['prompt_bytes']} bytes, {m['new']} new "
             f"symbols each; {m['device']}, {m['dtype']}, torch {m['torch']}, {m['date']}.", "",
             "| k | mean accepted | acceptance rate | speculative s | plain s | speedup | "
             "== greedy |", "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['k']} | {r['mean_accepted']:.2f} | {r['acceptance_rate']:.1%} | "
                     f"{r['speculative_s']:.2f} | {r['plain_s']:.2f} | {r['speedup']:.2f}x | "
                     f"{r['equal_to_greedy']}/{r['prompts']} |")
    return "\n".join(lines) + f"\n\nCommand: `{m['command']}`\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", required=True, help="run folder of the target model")
    p.add_argument("--drafter", required=True, help="run folder of the drafter")
    p.add_argument("--prompt-files", nargs="+", required=True)
    p.add_argument("--prompt-bytes", type=int, default=256)
    p.add_argument("--new", type=int, default=256, help="symbols generated per prompt")
    p.add_argument("--k", type=int, nargs="+", default=[2, 4, 8], help="draft lengths")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--out", default=None, help="folder for bench_speculative.{md,json}")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    report = run(a)
    table = markdown(report)
    if a.out:
        write_report(a.out, "bench_speculative", table, report)
    else:
        print(table)
    return 0 if all(r["equal_to_greedy"] == r["prompts"] for r in report["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
