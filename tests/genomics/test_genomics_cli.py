"""`bytessm train` end to end on tiny FASTA/BED fixtures: each objective, the RC model, eval."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dna_fixtures import random_dna, write_fasta

BIN = Path(sys.executable).with_name("bytessm")
TINY = ["model=tiny", "model.d_model=16", "model.n_layer=1", "trainer.max_steps=2",
        "trainer.batch_size=2", "trainer.progress=false", "trainer.eval_batches=1",
        "trainer.seq_len=32", "trainer.warmup_steps=1"]


def run(*args, cwd):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture
def pretrain_data(tmp_path):
    fa = write_fasta(tmp_path / "g.fa", {"chr1": random_dna(2000, 1), "chr2": random_dna(800, 2)})
    bed = tmp_path / "g.bed"
    bed.write_text("chr1\t0\t1500\ttrain\nchr2\t0\t800\ttrain\nchr1\t1500\t1750\tvalid\n"
                   "chr1\t1750\t2000\ttest\n")
    return [f"task.data.fasta={fa}", f"task.data.bed={bed}"]


@pytest.mark.parametrize("extra", [
    [],
    ["task.objective=masked", "model.bidirectional=true",
     "model._target_=bytessm.tasks.genomics.rc.RCPSBackbone"],
], ids=["next-base", "masked-rcps"])
def test_pretraining_runs(tmp_path, pretrain_data, extra):
    out = tmp_path / "run"
    r = run("train", "task=genomics", *TINY, *pretrain_data, *extra, f"trainer.out_dir={out}",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = last_json(r.stdout)
    assert res["step"] == 2 and res["bits_per_base"] > 0 and res["perplexity"] > 1
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert {row["split"] for row in rows} == {"train", "valid"}


def test_species_classification_runs_and_evaluates(tmp_path):
    root = tmp_path / "species"
    write_fasta(root / "a.fa", {"a": random_dna(3000, 3, gc=0.3)})
    write_fasta(root / "b" / "b1.fa", {"b": random_dna(3000, 4, gc=0.7)})
    out = tmp_path / "run"
    r = run("train", "task=genomics_species", *TINY, f"task.data.species_dir={root}",
            "task.eval_size=4", "trainer.seq_len_warmup.start=8", "trainer.seq_len_warmup.steps=2",
            "trainer.log_every=1",
            f"trainer.out_dir={out}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = last_json(r.stdout)
    assert 0 <= res["accuracy"] <= 1 and -1 <= res["mcc"] <= 1
    assert not any(k.startswith("_cm") for k in res)
    train_rows = [json.loads(line) for line in open(out / "metrics.jsonl")
                  if '"train"' in line]
    assert [row["seq_len"] for row in train_rows] == [8, 16]    # length warmup drove the set
    r = run("eval", f"checkpoint={out}/checkpoints/last", "split=test", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert last_json(r.stdout)["split"] == "test"


def test_data_errors_exit_2_with_one_message(tmp_path):
    fa = write_fasta(tmp_path / "g.fa", {"chr1": random_dna(500, 1)})
    bed = tmp_path / "g.bed"
    bed.write_text("chr1\t0\t100\ttrain\nchr9\t0\t100\tvalid\n")
    r = run("train", "task=genomics", *TINY, f"task.data.fasta={fa}", f"task.data.bed={bed}",
            f"trainer.out_dir={tmp_path / 'run'}", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "line 2: chromosome 'chr9' is not in the FASTA" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_species_classification_replays_from_a_cuda_graph(tmp_path, graph_matches_eager):
    """trainer.cuda_graph=true on the species step (pooled logits, the confusion counts)."""
    root = tmp_path / "species"
    write_fasta(root / "a.fa", {"a": random_dna(3000, 3, gc=0.3)})
    write_fasta(root / "b" / "b1.fa", {"b": random_dna(3000, 4, gc=0.7)})
    graph_matches_eager("task=genomics_species", *TINY, f"task.data.species_dir={root}",
                        "task.eval_size=4")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("extra", [
    [],
    ["task.objective=masked", "model.bidirectional=true",
     "model._target_=bytessm.tasks.genomics.rc.RCPSBackbone"],
], ids=["next-base", "masked-rcps"])
def test_pretraining_replays_from_a_cuda_graph(pretrain_data, graph_matches_eager, extra):
    """trainer.cuda_graph=true on the pretraining steps: next base, and masked bases through
    the reverse-complement-equivariant backbone."""
    graph_matches_eager("task=genomics", *TINY, *pretrain_data, *extra)
