"""`bytessm generate` end to end on a checkpoint written by a tiny `bytessm train` run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bytessm.commands.generate import parse_stop
from bytessm.task import ConfigError

BIN = Path(sys.executable).with_name("bytessm")
HERE = Path(__file__).parent
TRAIN = ["task=synthetic", "task._target_=gen_symbol_task.SymbolTask", "model=tiny",
         "model.d_model=16", "model.n_layer=2", "trainer.max_steps=2", "trainer.batch_size=4",
         "trainer.seq_len=32", "trainer.progress=false", "trainer.eval_batches=1",
         "task.eval_size=8"]


def run(*args):
    env = {**os.environ, "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    r = run("train", *TRAIN, f"trainer.out_dir={out}")
    assert r.returncode == 0, r.stderr
    return out


def summary(stderr: str) -> dict:
    return json.loads(stderr.strip().splitlines()[-1])


def greedy_reference(run_dir, prompt: list[int], n: int) -> list[int]:
    """The checkpoint's greedy continuation, generated in this process."""
    from bytessm.generation import generate
    from bytessm.sampling import SamplingParams
    from bytessm.train.checkpoint import load_for_inference

    sys.path.insert(0, str(HERE))
    try:
        _, _, model = load_for_inference(run_dir, "cpu")
    finally:
        sys.path.remove(str(HERE))
    return generate(model, [prompt], max_new=n, params=SamplingParams(temperature=0)).samples[0]


def test_generate_writes_greedy_samples(run_dir, tmp_path):
    out = tmp_path / "samples.txt"
    r = run("generate", f"checkpoint={run_dir}", "prompt=hi", "num_samples=2", "max_new=6",
            "temperature=0", f"out={out}", "device=cpu")
    assert r.returncode == 0, r.stderr
    info = summary(r.stderr)
    assert info["paths"] == [str(out)] and info["finished"] == ["length", "length"]
    assert info["prompt_symbols"] == 2 and info["steps"] == 6
    lines = [list(map(int, line.split())) for line in out.read_text().splitlines()]
    assert lines == [[104, 105] + greedy_reference(run_dir, [104, 105], 6)] * 2


def test_speculative_generate_with_itself_as_drafter(run_dir):
    r = run("generate", f"checkpoint={run_dir}", f"draft_checkpoint={run_dir}", "draft_k=3",
            "prompt=abc", "max_new=7", "temperature=0", "device=cpu", "draft_compare=true")
    assert r.returncode == 0, r.stderr
    info = summary(r.stderr)
    assert info["speculative"]["acceptance_rate"] == 1.0
    assert info["speculative"]["speedup"] > 0
    printed = list(map(int, r.stdout.split()))
    assert printed == [97, 98, 99] + greedy_reference(run_dir, [97, 98, 99], 7)


def test_generate_usage_errors(run_dir):
    r = run("generate")
    assert r.returncode == 2 and "checkpoint" in r.stderr
    r = run("generate", f"checkpoint={run_dir}", "top_p=0", "device=cpu")
    assert r.returncode == 2 and "top_p must be in (0, 1]" in r.stderr


@pytest.mark.parametrize("value,expected", [
    ("", []), (None, []), ("\\n", [10]), ("ab", [97, 98]), ("é", [0xC3, 0xA9]), (0, [0]),
    ([10, 13], [10, 13]),
])
def test_parse_stop(value, expected):
    assert parse_stop(value) == expected


def test_parse_stop_rejects_other_values():
    with pytest.raises(ConfigError, match="stop"):
        parse_stop([1.5])
