"""`bytessm train task=text` for each pipeline on a tiny corpus, eval, generate, bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from text_fixtures import write_corpus

BIN = Path(sys.executable).with_name("bytessm")
ROOT = Path(__file__).resolve().parents[2]


def tokenizer_arg(name: str) -> str:
    """`tokenizer=X` once configs/train.yaml lists the group, `+tokenizer=X` before."""
    listed = "tokenizer" in (ROOT / "configs" / "train.yaml").read_text().split("hydra:")[0] \
        .split("defaults:")[1]
    return f"{'' if listed else '+'}tokenizer={name}"


def run(*args, cwd):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def tiny(folder, out):
    return ["task=text", f"task.data.path={folder}", "model=tiny", "model.d_model=16",
            "trainer.max_steps=2", "trainer.batch_size=2", "trainer.seq_len=16",
            "trainer.progress=false", "trainer.eval_batches=2", "task.eval_bytes=32",
            "task.split_fractions=[0.6,0.2,0.2]",
            f"trainer.out_dir={out}"]


@pytest.mark.parametrize("tok", ["bytes", "bpe"])
def test_train_eval_generate(tmp_path, tok):
    folder = write_corpus(tmp_path / "c")
    args = tiny(folder, tmp_path / "run") + [tokenizer_arg(tok)]
    if tok == "bpe":
        args.append("tokenizer.vocab_size=300")
    r = run("train", *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["split"] == "valid" and out["bits_per_byte"] > 0 and out["bytes"] > 0
    assert ("token_perplexity" in out) == (tok == "bpe")
    if tok == "bytes":
        return   # eval and generate below read the BPE tokenizer from the run folder
    r = run("eval", f"checkpoint={tmp_path}/run/checkpoints/last", "split=test", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["bits_per_byte"] > 0
    r = run("generate", f"checkpoint={tmp_path}/run/checkpoints/last", "prompt=the quick",
            "max_new=8", f"out={tmp_path}/samples", "device=cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    sample = (tmp_path / "samples" / "sample_0.txt").read_bytes()
    assert sample.startswith(b"the quick") and len(sample) > len(b"the quick")


@pytest.mark.parametrize("path,message", [
    ("{tmp}/nothing/*.txt", "the glob matched no files"),
    ("{tmp}/empty", "the corpus is empty"),
])
def test_bad_corpus_exits_2_with_one_message(tmp_path, path, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_bytes(b"")
    r = run("train", *tiny(path.format(tmp=tmp_path), tmp_path / "run"), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("tok", ["bytes", "bpe"])
def test_step_replays_from_a_cuda_graph(tmp_path, graph_matches_eager, tok):
    """trainer.cuda_graph=true on the text step: next symbol, bits per byte (BPE: the bytes
    each token stands for)."""
    args = tiny(write_corpus(tmp_path / "c"), tmp_path / "unused")[:-1] + [tokenizer_arg(tok)]
    if tok == "bpe":
        args.append("tokenizer.vocab_size=300")
    graph_matches_eager(*args)
