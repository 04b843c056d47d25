"""scripts/bench_speculative.py end to end on the CPU: two tiny trained checkpoints (a
2-step `bytessm train` each), prompts from files, every k, equality with greedy decoding."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]
TRAIN = ["task=synthetic", "model=tiny", "trainer.max_steps=2", "trainer.batch_size=2",
         "trainer.seq_len=16", "trainer.progress=false", "trainer.eval_every=0",
         "trainer.eval_batches=1", "task.eval_size=2"]


def train(out, d_model):
    r = subprocess.run([sys.executable, "-m", "bytessm.cli", "train", *TRAIN,
                        f"model.d_model={d_model}", f"trainer.out_dir={out}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_bench_speculative_smoke(tmp_path):
    train(tmp_path / "target", 32)
    train(tmp_path / "drafter", 16)
    prompts = [tmp_path / "a.txt", tmp_path / "b.txt"]
    prompts[0].write_bytes(b"def f(x):\n    return x\n")
    prompts[1].write_bytes(bytes(range(7, 40)))
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_speculative.py"),
                        "--target", str(tmp_path / "target"), "--drafter",
                        str(tmp_path / "drafter"), "--prompt-files", *map(str, prompts),
                        "--prompt-bytes", "12", "--new", "20", "--k", "1", "3",
                        "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "bench_speculative.json").read_text())
    assert [row["k"] for row in report["rows"]] == [1, 3]
    for row in report["rows"]:
        assert row["equal_to_greedy"] == row["prompts"] == 2
        assert 0.0 <= row["acceptance_rate"] <= 1.0 and row["rounds"] > 0
        assert row["mean_accepted"] <= row["k"]
    assert report["meta"]["prompt_bytes"] == 12 and report["meta"]["target_params"] > \
        report["meta"]["drafter_params"]
    assert "| 3 |" in (tmp_path / "out" / "bench_speculative.md").read_text()
