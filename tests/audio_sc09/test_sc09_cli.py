"""End to end on a tiny Speech Commands fixture: train (U-Net), eval, generate WAVs, train
the classifier, score the samples; a data error exits with status 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

from sc09_fixtures import make_sc09

BIN = Path(sys.executable).with_name("bytessm")
REPO = Path(__file__).resolve().parents[2]
COMMON = ["trainer.max_steps=2", "trainer.batch_size=2", "trainer.progress=false",
          "trainer.eval_batches=1", "trainer.warmup_steps=1", "trainer.device=cpu"]


def run(*args, cwd):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run([*args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.slow  # five CLI processes
def test_train_eval_generate_classify_score(tmp_path):
    root = tmp_path / "sc"
    make_sc09(root, per_digit=3, valid=1, test=1)
    data = f"task.data.root={root}"
    run_dir = tmp_path / "ar"
    r = run(BIN, "train", "task=audio_sc09", "model=sashimi_tiny", "model.d_model=8",
            "model.d_state=4", "trainer.seq_len=64", "task.eval_seq_len=128", data, *COMMON,
            f"trainer.out_dir={run_dir}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = last_json(r.stdout)
    assert res["step"] == 2 and 0 < res["bits_per_sample"] < 9

    r = run(BIN, "eval", f"checkpoint={run_dir}", "split=test", "max_batches=1", "device=cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 0 < last_json(r.stdout)["bits_per_sample"] < 9

    samples = tmp_path / "gen"
    r = run(BIN, "generate", f"checkpoint={run_dir}", "num_samples=3", "max_new=40",
            "include_prompt=false", f"out={samples}", "device=cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    wavs = sorted(os.listdir(samples))
    assert wavs == ["sample_0000.wav", "sample_0001.wav", "sample_0002.wav"]
    info = sf.info(str(samples / wavs[0]))
    assert (info.samplerate, info.frames, info.subtype) == (16000, 40, "PCM_16")

    clf_dir = tmp_path / "clf"
    r = run(BIN, "train", "task=audio_sc09_classifier", "model=tiny", "model.d_model=8",
            "model.n_layer=1", "model.bidirectional=true", data, *COMMON,
            f"trainer.out_dir={clf_dir}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 0 <= last_json(r.stdout)["accuracy"] <= 1

    r = run(sys.executable, str(REPO / "scripts" / "score_sc09.py"), "--classifier", str(clf_dir),
            "--samples", str(samples), "--device", "cpu", "--out", str(tmp_path / "s.json"),
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["samples"] == 3 and scores["reference_clips"] == 10
    assert scores["generated"]["is"] >= 1 - 1e-9 and scores["generated"]["fid"] >= 0


def test_missing_split_list_exits_2(tmp_path):
    root = tmp_path / "sc"
    make_sc09(root, per_digit=2)
    os.remove(root / "validation_list.txt")
    r = run(BIN, "train", "task=audio_sc09", "model=sashimi_tiny", f"task.data.root={root}",
            *COMMON, f"trainer.out_dir={tmp_path / 'run'}", cwd=tmp_path)
    assert r.returncode == 2
    assert "validation_list.txt: split list not found" in r.stderr


@pytest.mark.slow  # two models trained and sampled at toy size
def test_bench_audio_smoke(tmp_path):
    r = run(sys.executable, str(REPO / "scripts" / "bench_audio.py"), "--out", str(tmp_path),
            "--smoke", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "bench_audio.json").read_text())["rows"]
    assert [row["model"] for row in rows] == ["unet", "flat"]
    assert all(row["samples_per_s"] > 0 and row["gen_s"] > 0 for row in rows)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("task", ["audio_sc09", "audio_sc09_classifier"])
def test_step_replays_from_a_cuda_graph(tmp_path, graph_matches_eager, task):
    """trainer.cuda_graph=true on the audio steps: mu-law samples through the SaShiMi U-Net,
    and the digit classifier."""
    root = tmp_path / "sc"
    make_sc09(root, per_digit=3, valid=1, test=1)
    common = [c for c in COMMON if not c.startswith(("trainer.max_steps", "trainer.device"))]
    model = (["model=sashimi_tiny", "model.d_model=8", "model.d_state=4", "trainer.seq_len=64",
              "task.eval_seq_len=128"] if task == "audio_sc09" else
             ["model=tiny", "model.d_model=8", "model.n_layer=1", "model.bidirectional=true"])
    graph_matches_eager(f"task={task}", *model, f"task.data.root={root}", *common)
