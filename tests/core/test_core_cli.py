"""The `bytessm` command line: every synthetic task end to end, eval, and usage errors."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).with_name("bytessm")
TINY = ["model=tiny", "model.d_model=16", "trainer.max_steps=2", "trainer.batch_size=4",
        "trainer.progress=false", "trainer.eval_batches=1", "task.eval_size=8"]


def run(*args, cwd=None):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("task,length", [("synthetic", 32), ("selective_copying", 40),
                                         ("induction_heads", 24), ("mqar", 64)])
def test_train_each_synthetic_task(tmp_path, task, length):
    r = run("train", f"task={task}", *TINY, f"trainer.seq_len={length}",
            f"trainer.out_dir={tmp_path}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    assert out["split"] == "valid" and out["step"] == 2 and 0 <= out["accuracy"] <= 1
    rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert {r["split"] for r in rows} == {"train", "valid"}
    assert all("loss" in r and "step" in r for r in rows)


@pytest.fixture(scope="module")
def induction_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("induction")
    r = run("train", "task=induction_heads", *TINY, "trainer.seq_len=16", f"trainer.out_dir={out}")
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("prefix", ["", "+"], ids=["as_documented", "hydra_append"])
def test_eval_and_extrapolated_length(induction_run, prefix):
    """`override.KEY=V` (configs/eval.yaml's form) and Hydra's `+override.KEY=V` both reach
    the run's config: length 1000 evaluates, length 2 is refused by the task."""
    r = run("eval", f"checkpoint={induction_run}/checkpoints/last", "split=test",
            f"{prefix}override.task.eval_seq_len=1000", "max_batches=1")
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    assert out["split"] == "test" and "accuracy" in out
    r = run("eval", f"checkpoint={induction_run}/checkpoints/last",
            f"{prefix}override.task.eval_seq_len=2")
    assert r.returncode == 2 and "induction heads needs seq_len >= 4" in r.stdout + r.stderr


def test_eval_progress_bar_goes_to_stderr(induction_run):
    """`bytessm eval` shows a bar of the split's batches on stderr (stdout ends with the
    JSON line); `progress=false` turns it off."""
    args = ("eval", f"checkpoint={induction_run}/checkpoints/last", "split=valid")
    r = run(*args)
    assert r.returncode == 0, r.stderr
    assert re.search(r"valid:\s+\d+%.*batch", r.stderr) and last_json(r.stdout)["split"] == "valid"
    r = run(*args, "progress=false")
    assert r.returncode == 0 and not re.search(r"valid:\s+\d+%", r.stderr)


def test_multirun_sweep(tmp_path):
    r = run("train", "--multirun", *TINY, "trainer.seq_len=16", "trainer.seed=1,2",
            f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "0" / "metrics.jsonl").exists() and (tmp_path / "1" / "metrics.jsonl").exists()


@pytest.mark.parametrize("args,message", [
    (["train", "task=nope"], "valid task names: "),
    (["train", "model=huge"], "valid model names: "),
    (["frobnicate"], "unknown command"),
    (["train", "trainer.seq_len=-3"], "trainer.seq_len"),
    (["eval"], "checkpoint"),
    (["eval", "checkpoint=somewhere", "num_workers=-2"], "num_workers must be auto or an integer"),
])
def test_usage_errors_exit_2_with_one_message(tmp_path, args, message):
    r = run(*args, f"trainer.out_dir={tmp_path}" if args[0] == "train" else "split=test",
            cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_task_lists_the_valid_ones(tmp_path):
    r = run("train", "task=nope", cwd=tmp_path)
    for name in ("synthetic", "mqar", "induction_heads", "selective_copying"):
        assert name in r.stderr
