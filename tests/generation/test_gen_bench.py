"""The decoding benchmarks' CPU runs: scripts/bench_generate.py --smoke end to end (every
decode case and both speculative rows), and the fused-stack scripts."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).parents[2] / "scripts"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --smoke of the fused-stack scripts runs their kernels in Triton's interpreter, which
# tests/conftest.py turns on only where CUDA is absent
interpreter_only = pytest.mark.skipif(torch.cuda.is_available(),
                                      reason="interpreter smoke run: CPU machines only")


def test_bench_generate_smoke(tmp_path):
    bench = _load("bench_generate")
    assert bench.main(["--smoke", "--out", str(tmp_path), "--prompts", "8", "24",
                       "--batches", "1", "2", "--new", "6"]) == 0
    report = json.loads((tmp_path / "bench_generate.json").read_text())
    rows = report["results"]
    assert len(rows) == 2 * 2 * 2 and all(r["status"] == "ok" for r in rows)
    assert all(r["steps"] == 6 and r["tokens_per_s"] > 0 for r in rows)
    self_row, small_row = report["speculative"]
    assert self_row["drafter"].startswith("self") and small_row["drafter"].startswith("small")
    assert self_row["mean_accepted"] == self_row["k"] == 4          # float32 CPU: exact
    assert self_row["same_as_greedy"] and small_row["same_as_greedy"]
    assert all(r["speedup"] > 0 and r["decode_speedup"] > 0 for r in (self_row, small_row))
    table = (tmp_path / "bench_generate.md").read_text()
    assert "mean accepted" in table and "Wall time" in table


@interpreter_only
def test_bench_stack_smoke(tmp_path):
    """scripts/bench_stack.py --smoke: the blocks' step and the fused kernel on a 2-block
    stack; the fused output agrees with the blocks'."""
    bench = _load("bench_stack")
    assert bench.main(["--smoke", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "bench_stack.json").read_text())["results"]
    assert [r["variant"].split(",")[0] for r in rows] == ["blocks (eager)", "fused"]
    assert all(r["us_per_step"] > 0 and r["rel_err_vs_blocks"] < 1e-5 for r in rows)
    assert "| 1 | fused, 4 warps |" in (tmp_path / "bench_stack.md").read_text()


@interpreter_only
def test_bench_stack_sync_smoke(capsys):
    """scripts/bench_stack_sync.py --smoke: every round type on one program (interpreter),
    including the check that reads see complete sums."""
    bench = _load("bench_stack_sync")
    assert bench.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    assert out.count("+ barrier + read |") == 4 and "| barrier |" in out


def test_bench_stack_async_builds_for_sm90():
    """scripts/bench_stack_async.py --compile: the Gluon microbenchmark builds for sm_90 on a
    machine without a GPU (its numbers need one). The cp.async kernels double-buffer 128 KB
    of shared memory and the weights-ahead ones issue twice the serial kernel's copies; the
    TMA kernels copy 8 boxes a round (the warp-specialized one from its loader warp). Run in its own process without TRITON_INTERPRET: with
    the interpreter on, importing Gluon's Hopper module turns tl.sum's combine function into
    an interpreted one that the Gluon compiler refuses."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, str(SCRIPTS / "bench_stack_async.py"), "--compile"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.split(": ", 1) for line in out.stdout.strip().splitlines())
    assert lines["weights, then exchange"].startswith("131076 bytes of shared memory, 16 cp.async")
    assert lines["weights ahead"].startswith("131076 bytes of shared memory, 32 cp.async")
    assert lines["weights ahead, requested after the arrival"].startswith(
        "131076 bytes of shared memory, 32 cp.async")
    assert lines["TMA weights, then exchange"].endswith("0 cp.async, 8 TMA copies")
    assert lines["TMA weights ahead"].endswith("0 cp.async, 16 TMA copies")
    assert lines["warp-specialized TMA loader ahead"].endswith("0 cp.async, 8 TMA copies")
