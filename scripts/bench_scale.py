"""Data-parallel scaling of the trainer: training symbols/s on 1 GPU and on N GPUs, for DDP and
for FSDP2 (fully_shard), at the same per-GPU batch.

Each configuration is one real `bytessm train` run launched through torchrun on the synthetic
task (generated on the fly, no data): the global batch is `--batch-per-gpu` x the number of
processes, so every GPU does the same work per step as the 1-GPU run. Throughput is read from
the run's `metrics.jsonl`: the trainer logs `symbols_per_s` (all ranks' symbols over the wall
time of the window) every `--log-every` steps; windows that start before `--warmup-steps` are
dropped (Triton compilation, CUDA start-up), and the rest are combined as total symbols over
total time. Scaling efficiency = symbols/s on N GPUs / (N x symbols/s on 1 GPU).

With one process the trainer wraps nothing (no DDP, no FSDP): the 1-GPU rows of both
strategies are the same plain model, measured twice (a check of run-to-run spread).

    PYTHONPATH=. python scripts/bench_scale.py --out results          # 2 GPUs, ~3 min
    PYTHONPATH=. python scripts/bench_scale.py --smoke --out /tmp/bs  # CPU, gloo, tiny model

Writes `<out>/bench_scale.md` (the table) and `<out>/bench_scale.json` (meta: device,
versions, date, command; results: one row per configuration with its windows), and prints the
table. NVLink multicast stays off in every launched process (NCCL_NVLS_ENABLE=0 and friends).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO))

from bytessm.io import atomic_write  # noqa: E402

# NVLink multicast can take a shared host's GPUs out of service: never let NCCL, PyTorch's
# symmetric memory or NVSHMEM use it, whatever the caller's environment says.
SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
            "NVSHMEM_DISABLE_NVLS": "1"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results", help="folder for bench_scale.{md,json}")
    p.add_argument("--run-dir", default="/tmp/bytessm_bench_scale",
                   help="where the training runs (checkpoints, logs) go")
    p.add_argument("--smoke", action="store_true",
                   help="CPU, gloo, a tiny model and short sequences (checks the plumbing)")
    p.add_argument("--model", default="mambabyte_353m", help="model preset (configs/model/)")
    p.add_argument("--seq-len", type=int, default=8192)
    p.add_argument("--batch-per-gpu", type=int, default=1, help="sequences per GPU per step")
    p.add_argument("--gpus", type=int, default=2, help="processes of the multi-GPU runs")
    p.add_argument("--parallel", nargs="+", default=["ddp", "fsdp"], choices=["ddp", "fsdp"])
    p.add_argument("--warmup-steps", type=int, default=4, help="steps left out of the timing")
    p.add_argument("--steps", type=int, default=24,
                   help="timed steps (8 read 81%% for DDP where 24 read 86%%: still warming up)")
    p.add_argument("--log-every", type=int, default=4, help="steps per timing window")
    p.add_argument("--device", default="auto", help="trainer.device (auto, cuda, cpu)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="trainer.precision (auto: bf16 autocast on CUDA)")
    p.add_argument("--timeout-s", type=float, default=240, help="limit for one configuration")
    p.add_argument("--budget-s", type=float, default=1e9,
                   help="start no configuration after this many seconds")
    p.add_argument("--commit", default=None, help="commit to record (default: git rev-parse)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after the timed steps, profile N more (trainer.profile) and tabulate "
                        "each rank's wall time, GPU busy time and collective time per step")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    a = p.parse_args(argv)
    if a.smoke:
        a.device, a.seq_len, a.batch_per_gpu = "cpu", 64, 2
        a.model = "tiny" if a.model == p.get_default("model") else a.model
        a.overrides = ["model.d_model=16", *a.overrides]
        a.warmup_steps, a.steps, a.log_every = 2, 4, 2
        a.precision = "fp32" if a.precision == "auto" else a.precision
    if a.warmup_steps % a.log_every or a.steps % a.log_every:
        p.error("--warmup-steps and --steps must be multiples of --log-every")
    if a.steps <= 0 or a.gpus < 2 or a.batch_per_gpu <= 0:
        p.error("need --steps > 0, --gpus >= 2 and --batch-per-gpu > 0")
    return a


def configurations(a) -> list[tuple[str, int]]:
    """1 process then N per strategy; the second 1-process run (identical code path) last,
    so a short budget loses the repeat rather than a multi-GPU number."""
    first, *rest = a.parallel
    order = [(first, 1), (first, a.gpus)] + [(p, a.gpus) for p in rest] + [(p, 1) for p in rest]
    return order


def train_command(a, parallel: str, nproc: int, out_dir: Path) -> list[str]:
    overrides = [
        "task=synthetic", f"model={a.model}", f"trainer.device={a.device}",
        f"trainer.parallel={parallel}", f"trainer.precision={a.precision}",
        f"trainer.seq_len={a.seq_len}", f"trainer.batch_size={a.batch_per_gpu * nproc}",
        f"trainer.max_steps={a.warmup_steps + a.steps + a.profile}",
        f"trainer.log_every={a.log_every}",
        "trainer.eval_every=0", "trainer.save_every=0", "trainer.eval_batches=1",
        f"task.eval_size={nproc * a.batch_per_gpu}", "trainer.progress=false",
        f"trainer.out_dir={out_dir}", *a.overrides]
    if a.profile:  # after the timed windows, which they would slow down
        overrides += [f"trainer.profile.start={a.warmup_steps + a.steps + 1}",
                      f"trainer.profile.steps={a.profile}"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "bytessm.cli", "train", *overrides]


def run_one(cmd: list[str], log: Path, timeout_s: float, env: dict) -> tuple[int | None, float]:
    """Run `cmd` in its own process group (killed whole on timeout); output to `log`."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    return rc, time.perf_counter() - t0


def throughput(metrics_path: Path, *, warmup_steps: int, log_every: int,
               symbols_per_step: int, last_step: int | None = None) -> dict:
    """Combine the timed windows of a run's train log (after `warmup_steps`, up to
    `last_step`): total symbols / total time."""
    rows = [json.loads(line) for line in open(metrics_path)]
    windows = [r for r in rows if r.get("split") == "train" and "symbols_per_s" in r]
    timed = [w for w in windows if w["step"] - log_every >= warmup_steps
             and (last_step is None or w["step"] <= last_step)]
    if not timed:
        raise ValueError(f"no timed window in {metrics_path}")
    symbols = symbols_per_step * log_every * len(timed)
    seconds = sum(symbols_per_step * log_every / w["symbols_per_s"] for w in timed)
    return {"symbols_per_s": symbols / seconds, "step_s": seconds / (log_every * len(timed)),
            "timed_steps": log_every * len(timed),
            "window_symbols_per_s": [round(w["symbols_per_s"], 1) for w in windows],
            "final_train_loss": windows[-1].get("loss")}


def meta(a) -> dict:
    import torch

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    commit = a.commit
    if commit is None:
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True, cwd=REPO, timeout=10).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            commit = None
    gpus = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if torch.cuda.is_available() else [])
    topo = None
    if gpus:
        try:
            topo = subprocess.run(["nvidia-smi", "topo", "-m"], capture_output=True, text=True,
                                  timeout=30).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    return {"device": f"{len(gpus)} x {gpus[0]}" if gpus else f"CPU ({os.cpu_count()} cores)",
            "gpus": gpus, "gpu_topology": topo, "torch": torch.__version__,
            "triton": triton_version, "nccl": (".".join(map(str, torch.cuda.nccl.version()))
                                               if gpus else None),
            "python": platform.python_version(), "git_commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": " ".join(shlex.quote(x) for x in ["python", "scripts/bench_scale.py",
                                                          *sys.argv[1:]]),
            "env": SAFE_ENV}


def markdown(rows: list[dict], a, m: dict) -> str:
    params = next((r["params_m"] for r in rows if r.get("params_m")), "?")
    head = (f"Training throughput, `{a.model}` ({params}M parameters), "
            f"synthetic task, seq_len {a.seq_len}, {a.batch_per_gpu} sequence(s) per GPU per "
            f"step, precision {a.precision}; {a.steps} timed steps after {a.warmup_steps} "
            f"warm-up steps. {m['device']}, torch {m['torch']}, triton {m['triton']}, "
            f"{m['date']}.\n\n")
    lines = ["| strategy | GPUs | global batch | step time | symbols/s | speed-up | efficiency |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['parallel']} | {r['gpus']} | {r['global_batch']} | "
                         f"{r['status']} | — | — | — |")
            continue
        sp = f"{r['speedup']:.2f}x" if r.get("speedup") else "—"
        eff = f"{100 * r['efficiency']:.1f}%" if r.get("efficiency") else "—"
        lines.append(f"| {r['parallel'] if r['gpus'] > 1 else r['parallel'] + ' (1 proc: unwrapped)'}"
                     f" | {r['gpus']} | {r['global_batch']} | {1000 * r['step_s']:.0f} ms | "
                     f"{r['symbols_per_s']:,.0f} | {sp} | {eff} |")
    return (head + "\n".join(lines) + profile_markdown(rows) + "\n\nCommand: `" + m["command"]
            + "`\n")


def _ms(v) -> str:
    return "—" if v is None else f"{v:.1f}"


def profile_markdown(rows: list[dict], top: int = 8) -> str:
    """The `--profile` tables: per run and rank, ms per profiled step; then each run's top
    kernels on rank 0."""
    prof = [r for r in rows if r.get("profile")]
    if not prof:
        return ""
    lines = ["", "", "Profiled steps (trainer.profile, after the timed ones; ms per step; GPU "
             "busy = union of kernel intervals, so overlapping kernels count once):", "",
             "| run | rank | wall | GPU busy | GPU idle | kernels (sum) | collectives |",
             "|---|---|---|---|---|---|---|"]
    for r in prof:
        for s in r["profile"]:
            busy = s["device_busy_ms_per_step"]
            idle = None if busy is None else s["wall_ms_per_step"] - busy
            lines.append(f"| {r['parallel']} x{r['gpus']} | {s['rank']} | "
                         f"{_ms(s['wall_ms_per_step'])} | {_ms(busy)} | {_ms(idle)} | "
                         f"{_ms(s['kernel_ms_per_step'])} | {_ms(s['collective_ms_per_step'])} |")
    for r in prof:
        kernels = r["profile"][0]["top_kernels"][:top]
        if not kernels:
            continue
        lines += ["", f"Top kernels, {r['parallel']} x{r['gpus']}, rank 0 (ms per step, calls):",
                  "", "| kernel | ms | calls |", "|---|---|---|"]
        lines += [f"| `{k['name'][:90]}` | {k['ms_per_step']:.2f} | {k['calls_per_step']:.0f} |"
                  for k in kernels]
    return "\n".join(lines)


def main(argv=None) -> int:
    a = parse_args(argv)
    run_root = Path(a.run_dir) / time.strftime("%Y%m%d-%H%M%S")
    run_root.mkdir(parents=True, exist_ok=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **SAFE_ENV, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"}
    # torchrun sets OMP_NUM_THREADS=1 for several processes only: the same for every run
    env.setdefault("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    rows = []
    for parallel, nproc in configurations(a):
        name = f"{parallel}_{nproc}"
        row = {"parallel": parallel, "gpus": nproc, "global_batch": a.batch_per_gpu * nproc,
               "seq_len": a.seq_len}
        rows.append(row)
        if time.perf_counter() - start > a.budget_s:
            row["status"] = "skipped (budget)"
            continue
        cmd = train_command(a, parallel, nproc, run_root / name)
        row["command"] = " ".join(shlex.quote(x) for x in cmd)
        print(f"[bench_scale] {name}: {row['command']}", file=sys.stderr, flush=True)
        rc, wall = run_one(cmd, run_root / f"{name}.log", a.timeout_s, env)
        row["wall_s"] = round(wall, 1)
        log_text = (run_root / f"{name}.log").read_text(errors="replace")
        for line in log_text.splitlines():
            if line.startswith("[bytessm]") and "M parameters" in line:
                row["params_m"] = float(line.split(": ", 1)[1].split("M parameters")[0])
        if rc != 0:
            row["status"] = "timeout" if rc is None else f"failed (exit {rc})"
            row["log_tail"] = log_text[-3000:]
            print(f"[bench_scale] {name}: {row['status']}\n{log_text[-3000:]}", file=sys.stderr,
                  flush=True)
            continue
        row.update(throughput(run_root / name / "metrics.jsonl", warmup_steps=a.warmup_steps,
                              log_every=a.log_every,
                              symbols_per_step=a.batch_per_gpu * nproc * a.seq_len,
                              last_step=a.warmup_steps + a.steps))
        if a.profile:
            row["profile"] = [json.loads(f.read_text()) for f in
                              sorted((run_root / name / "profile").glob("rank*_summary.json"))]
        row["status"] = "ok"
        print(f"[bench_scale] {name}: {row['symbols_per_s']:,.0f} symbols/s, "
              f"{row['step_s'] * 1000:.0f} ms/step, wall {wall:.0f} s", file=sys.stderr,
              flush=True)
    # baseline: the strategy's own 1-process run, else the other one (the same code path)
    ones = [r for r in rows if r["gpus"] == 1 and r["status"] == "ok"]
    for r in rows:
        b = next((o for o in ones if o["parallel"] == r["parallel"]), ones[0] if ones else None)
        if r["gpus"] > 1 and r["status"] == "ok" and b is not None:
            r["baseline"] = f"{b['parallel']}_1"
            r["speedup"] = r["symbols_per_s"] / b["symbols_per_s"]
            r["efficiency"] = r["speedup"] / r["gpus"]
    m = meta(a)
    table = markdown(rows, a, m)
    atomic_write(out / "bench_scale.md", table)
    settings = {k: v for k, v in vars(a).items() if k not in ("out", "run_dir")}
    atomic_write(out / "bench_scale.json",
                 json.dumps({"meta": m, "settings": settings, "results": rows}, indent=1) + "\n")
    print(table, flush=True)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
