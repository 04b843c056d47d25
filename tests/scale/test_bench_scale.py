"""scripts/bench_scale.py and scripts/bench_allreduce.py on the CPU: the real trainer under
torchrun with gloo (tiny model), the throughput arithmetic, and the all-reduce table."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parents[2] / "scripts"
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def _load(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_combines_timed_windows_only(tmp_path):
    """Windows ending at or before the warm-up are dropped; the rest combine as total
    symbols over total time (not a mean of rates)."""
    log = tmp_path / "metrics.jsonl"
    rows = [{"split": "train", "step": 2, "symbols_per_s": 10.0},     # warm-up window
            {"split": "train", "step": 4, "symbols_per_s": 100.0},
            {"split": "valid", "step": 4, "loss": 1.0},
            {"split": "train", "step": 6, "symbols_per_s": 300.0, "loss": 2.5}]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = _load("bench_scale").throughput(log, warmup_steps=2, log_every=2, symbols_per_step=60)
    # two windows of 120 symbols: 1.2 s + 0.4 s
    assert got["symbols_per_s"] == pytest.approx(240 / 1.6)
    assert got["step_s"] == pytest.approx(1.6 / 4) and got["timed_steps"] == 4
    assert got["final_train_loss"] == 2.5
    # profiled steps after the timed ones (--profile) are left out too
    late = _load("bench_scale").throughput(log, warmup_steps=2, log_every=2, symbols_per_step=60,
                                           last_step=4)
    assert late["symbols_per_s"] == pytest.approx(100.0) and late["timed_steps"] == 2


def test_bench_scale_smoke_ddp_with_an_override(tmp_path):
    """One process, then two DDP ranks, each a real `bytessm train` run; the override
    reaches both (bf16 gradient all-reduce on gloo); --profile adds each rank's profile of
    two steps after the timed ones."""
    r = subprocess.run([sys.executable, str(SCRIPTS / "bench_scale.py"), "--smoke",
                        "--parallel", "ddp", "--profile", "2", "--out", str(tmp_path),
                        "--run-dir", str(tmp_path / "runs"), "trainer.grad_reduce=bf16"],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "bench_scale.json").read_text())
    rows = report["results"]
    assert [(x["parallel"], x["gpus"], x["status"]) for x in rows] == [
        ("ddp", 1, "ok"), ("ddp", 2, "ok")]
    assert all("trainer.grad_reduce=bf16" in x["command"] for x in rows)
    one, two = rows
    assert two["efficiency"] == pytest.approx(two["symbols_per_s"] / (2 * one["symbols_per_s"]))
    table = (tmp_path / "bench_scale.md").read_text()
    assert "| ddp | 2 | 4 |" in table and "efficiency" in table
    assert [p["rank"] for p in one["profile"]] == [0] and [p["rank"] for p in two["profile"]] == [0, 1]
    assert all(p["first_step"] == 7 and p["steps"] == 2 for p in two["profile"])
    assert two["timed_steps"] == 4                    # the profiled steps are not timed
    assert "| ddp x2 | 1 |" in table


def test_bench_allreduce_smoke_prints_every_size_and_dtype():
    torchrun = Path(sys.executable).with_name("torchrun")
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2",
                        str(SCRIPTS / "bench_allreduce.py"), "--smoke", "--iters", "3"],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line for line in r.stdout.splitlines() if line.startswith("| float32")
            or line.startswith("| bfloat16")]
    assert len(rows) == 4 and "backend gloo" in r.stdout
    assert all(float(row.split("|")[4]) > 0 for row in rows)        # algbw GB/s
