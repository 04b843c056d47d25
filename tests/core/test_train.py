"""The training loop: exact resume, checkpoints, config and checkpoint errors."""
import itertools
import json
import os
import time

import pytest
import torch

from bytessm.task import ConfigError
from bytessm.train import TrainingError, train
from bytessm.train.build import build_model, build_task
from bytessm.train.checkpoint import CheckpointError, load_for_inference
from bytessm.train.data import (batch_seconds, eval_loader, loader_workers, train_loader,
                                workers_for)
from bytessm.train.distributed import World
from bytessm.train.evaluate import evaluate


def _losses(run_dir):
    rows = [json.loads(l) for l in open(run_dir / "metrics.jsonl")]
    return [r["loss"] for r in rows if r["split"] == "train"]


def test_resume_is_exact(make_cfg, tmp_path):
    common = ["trainer.log_every=1", "trainer.eval_every=0", "trainer.save_every=3"]
    train(make_cfg(*common, "trainer.max_steps=6", out="straight"))
    train(make_cfg(*common, "trainer.max_steps=3", out="resumed"))
    train(make_cfg(*common, "trainer.max_steps=6", out="resumed"))  # same folder: resumes
    straight, resumed = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
    assert len(straight) == len(resumed) == 6
    assert resumed == pytest.approx(straight, rel=1e-5)


def test_checkpoint_layout_and_inference_load(make_cfg, tmp_path):
    result = train(make_cfg("trainer.max_steps=2", "trainer.save_every=1"))
    ck = tmp_path / "run" / "checkpoints"
    assert (ck / "last").is_symlink() and (ck / "best").is_symlink()
    assert os.readlink(ck / "last") == "step_00000002"
    assert not list(ck.glob(".tmp-*"))  # nothing half-written left behind
    assert (tmp_path / "run" / "config.yaml").exists()
    assert list((tmp_path / "run" / "tensorboard").iterdir())
    cfg, task, model = load_for_inference(tmp_path / "run")
    assert not model.training and set(result) >= {"loss", "accuracy", "step", "split"}


def test_corrupt_checkpoint_is_refused_untouched(make_cfg, tmp_path):
    train(make_cfg("trainer.max_steps=1"))
    last = (tmp_path / "run" / "checkpoints" / "last").resolve()
    shard = next(last.glob("*.distcp"))
    shard.write_bytes(b"garbage")
    before = sorted(p.name for p in last.iterdir())
    with pytest.raises(CheckpointError, match="could not be read"):
        train(make_cfg("trainer.max_steps=2"))
    assert sorted(p.name for p in last.iterdir()) == before


def test_mismatched_model_is_refused(make_cfg):
    train(make_cfg("trainer.max_steps=1"))
    with pytest.raises(CheckpointError, match="model"):
        train(make_cfg("trainer.max_steps=2", "model.d_model=24"))


@pytest.mark.parametrize("override,key", [
    ("trainer.seq_len=0", "trainer.seq_len"),
    ("trainer.batch_size=6", "trainer.batch_size"),
    ("model.d_state=0", "d_state"),
    ("trainer.num_workers=-1", "trainer.num_workers"),
    ("trainer.num_workers=some", "trainer.num_workers"),
])
def test_out_of_range_values_fail_before_training(make_cfg, override, key, tmp_path):
    with pytest.raises((ConfigError, ValueError), match=key):
        train(make_cfg(override, "trainer.grad_accum=4" if "batch" in key else "trainer.seed=0"))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(make_cfg, tmp_path, monkeypatch):
    from bytessm.tasks.synthetic import SyntheticTask

    train(make_cfg("trainer.max_steps=2", "trainer.save_every=1"))
    real = SyntheticTask.loss_and_metrics

    def poisoned(self, out, batch):
        loss, m = real(self, out, batch)
        return loss * float("nan"), {**m, "loss": (m["loss"][0] * float("nan"), m["loss"][1])}

    monkeypatch.setattr(SyntheticTask, "loss_and_metrics", poisoned)
    with pytest.raises(TrainingError, match="step 3"):
        train(make_cfg("trainer.max_steps=5", "trainer.save_every=1"))
    assert os.readlink(tmp_path / "run" / "checkpoints" / "last") == "step_00000002"


def test_grad_accumulation_matches_one_big_batch(make_cfg, tmp_path):
    base = ["trainer.max_steps=2", "trainer.log_every=1", "trainer.eval_every=0",
            "trainer.device=cpu"]  # float32: bf16 autocast on CUDA rounds each batch size apart
    train(make_cfg(*base, out="a"))
    train(make_cfg(*base, "trainer.grad_accum=2", out="b"))
    assert _losses(tmp_path / "b") == pytest.approx(_losses(tmp_path / "a"), rel=1e-5)


def test_init_from_starts_from_weights_only(make_cfg, tmp_path):
    """trainer.init_from (any task): a new run starts at step 0 from another run's weights;
    a different architecture is refused naming both sides; a resumed run keeps its own."""
    from bytessm.train.build import build_model, build_task
    from bytessm.train.checkpoint import load_weights

    tied = "model.tie_embeddings=true"      # the head's weight is the embedding's, saved twice
    train(make_cfg("trainer.max_steps=2", tied, out="a"))
    _, _, saved = load_for_inference(tmp_path / "a")
    cfg = make_cfg(tied, "trainer.seed=7", out="b")
    model = build_model(cfg, build_task(cfg))
    assert load_weights(tmp_path / "a", model) == (tmp_path / "a" / "checkpoints" / "last").resolve()
    for (name, p), q in zip(model.state_dict().items(), saved.state_dict().values()):
        assert torch.equal(p, q), name

    cfg = make_cfg("trainer.max_steps=1", "trainer.log_every=1", tied,
                   f"trainer.init_from={tmp_path / 'a'}", out="b")
    assert train(cfg)["step"] == 1          # its own step count, not a's 2
    with pytest.raises(CheckpointError, match="trainer.init_from=/nowhere: no checkpoint at"):
        train(make_cfg(tied, "trainer.init_from=/nowhere", out="c"))
    with pytest.raises(CheckpointError, match=r"another architecture.*blocks\.2\."):
        train(make_cfg("model.n_layer=3", f"trainer.init_from={tmp_path / 'a'}", out="c"))
    with pytest.raises(CheckpointError, match=r"parameter backbone\.\S+ has shape \(\d+, 16\) "
                                              r"there but \(\d+, 24\) in this run's model"):
        train(make_cfg("model.d_model=24", f"trainer.init_from={tmp_path / 'a'}", out="c"))
    train(make_cfg("trainer.max_steps=2", "trainer.log_every=1", tied,  # resumes b: no init
                   f"trainer.init_from={tmp_path / 'gone'}", out="b"))
    assert [r["step"] for r in map(json.loads, open(tmp_path / "b" / "metrics.jsonl"))
            if r["split"] == "train"] == [1, 2]


def test_loader_workers_auto_is_none_on_cpu_and_spare_cores_on_gpu(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert loader_workers("auto", cpu) == 0
    assert loader_workers("auto", gpu) == 8                       # 15 spare cores, at most 8
    assert loader_workers("auto", gpu, batch_s=0.5e-3) == 0       # a batch made quicker here
    assert loader_workers("auto", gpu, batch_s=5e-3) == 8
    assert loader_workers(2, gpu, batch_s=0.5e-3) == 2            # a count is a count
    assert loader_workers("auto", gpu, local_world_size=4) == 3   # 4 cores each, one its own
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert loader_workers("auto", gpu) == 1                       # torchrun's processes
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert loader_workers("auto", gpu, local_world_size=1) == 0
    assert loader_workers(3, cpu) == 3


def test_auto_times_a_batch_and_starts_workers_where_it_is_slow(monkeypatch):
    class Data(torch.utils.data.Dataset):
        def __init__(self, delay):
            self.delay = delay

        def __len__(self):
            return 100

        def __getitem__(self, i):
            time.sleep(self.delay)
            return {"input": torch.full((4,), i)}

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    slow, quick = Data(1e-3), Data(0.0)
    assert 5e-3 <= batch_seconds(slow, 5) < 0.5
    gpu = torch.device("cuda", 0)      # a device name: nothing runs on it
    workers, took = workers_for(slow, "auto", gpu, 5)
    assert workers == 8 and took >= 5e-3
    assert workers_for(quick, "auto", gpu, 5)[0] == 0
    assert workers_for(slow, "auto", torch.device("cpu"), 5) == (0, None)   # not timed
    assert workers_for(slow, 3, gpu, 5) == (3, None)
    with pytest.raises(ConfigError, match="num_workers must be auto or an integer >= 0"):
        workers_for(slow, "many", gpu, 5, key="num_workers")


def test_worker_processes_give_the_same_batches_and_evaluation(make_cfg):
    """Samples are functions of their index: two worker processes (forked, persistent for
    evaluation) must give the batches and validation metrics of the main process."""
    cfg = make_cfg("task=mqar", "task.n_pairs=4", "task.vocab=64")
    task = build_task(cfg)
    train_ds, valid_ds, _ = task.build_datasets()
    model = build_model(cfg, task)
    world = World()

    def loaders(workers):
        train = train_loader(train_ds, seed=0, global_batch=4, grad_accum=2, rank=0,
                             world_size=1, start_step=3, num_workers=workers)
        valid = eval_loader(valid_ds, batch_size=4, rank=0, world_size=1, num_workers=workers)
        return train, valid

    (t0, v0), (t2, v2) = loaders(0), loaders(2)
    assert v2.persistent_workers and not v0.persistent_workers
    for a, b in zip(itertools.islice(t0, 7), itertools.islice(t2, 7)):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for _ in range(2):   # the persistent workers serve a second evaluation alike
        got = [evaluate(model, task, valid_ds, batch_size=4, device=torch.device("cpu"),
                        world=world, max_batches=3, loader=v) for v in (v0, v2)]
        assert got[0] == got[1]


def test_the_loop_reads_no_config_node_per_step(make_cfg, monkeypatch):
    """A read of an OmegaConf node costs microseconds, an interpolated one (trainer.seq_len is
    ${task.seq_len}) a parse of hundreds, against 0.83 ms of GPU time for a small model's
    graphed step on an H200. Twice the steps must not add a single read."""
    from omegaconf import DictConfig

    reads = {"n": 0}
    original = DictConfig.__getattr__

    def counting(self, key):
        reads["n"] += 1
        return original(self, key)

    monkeypatch.setattr(DictConfig, "__getattr__", counting)
    counts = []
    for steps in (4, 8):
        reads["n"] = 0
        train(make_cfg(f"trainer.max_steps={steps}", "trainer.eval_every=0",
                       "trainer.save_every=0", "trainer.log_every=100",
                       out=f"run{steps}"))
        counts.append(reads["n"])
    assert counts[0] > 0 and counts[1] == counts[0], counts
