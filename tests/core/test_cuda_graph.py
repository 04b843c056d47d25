"""trainer.cuda_graph: the step replayed from a CUDA graph takes the eager loop's steps.

On the CPU the graphed step runs its body eagerly (`capture=False`) through the loop, which
checks everything but the capture itself; the capture is checked on CUDA."""
import functools
import json
import os

import pytest
import torch

from bytessm.task import ConfigError
from bytessm.train import loop, train
from bytessm.train.graphs import GraphedStep

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _rows(run_dir, split="train"):
    return [r for r in map(json.loads, open(run_dir / "metrics.jsonl")) if r["split"] == split]


def _compare(a, b, rel):
    for key in ("loss", "accuracy", "grad_norm", "lr"):
        assert [r[key] for r in b] == pytest.approx([r[key] for r in a], rel=rel, abs=1e-7), key


@pytest.mark.parametrize("log_every,lengths", [
    (1, [8, 8, 16, 16, 32, 32, 32, 32]),
    (3, [16, 32, 32]),   # steps 3, 6, 8: each step's metrics are read after the next is queued
])
def test_graphed_step_body_takes_the_eager_steps(make_cfg, tmp_path, monkeypatch, log_every,
                                                 lengths):
    """Through the loop on the CPU, with gradient accumulation and the sequence-length
    warmup's new streams (the batches read ahead must be the next ones, and from the current
    length's stream): the same losses, accuracies, gradient norms and learning rates as the
    eager step, and the same final validation; logged every step, and every three steps,
    where the graphed loop reads each step's metrics one step late."""
    monkeypatch.setattr(loop, "GraphedStep", functools.partial(GraphedStep, capture=False))
    base = ["trainer.max_steps=8", f"trainer.log_every={log_every}", "trainer.eval_every=0",
            "trainer.grad_accum=2", "trainer.grad_clip=0.05",  # a clip that acts
            "trainer.seq_len_warmup.start=8", "trainer.seq_len_warmup.steps=4",
            "trainer.device=cpu"]
    eager = train(make_cfg(*base, out="eager"))
    graphed = train(make_cfg(*base, "trainer.cuda_graph=true", out="graphed"))
    rows = _rows(tmp_path / "graphed")
    assert len(rows) == len(lengths) and max(r["grad_norm"] for r in rows) > 0.05
    assert [r["seq_len"] for r in rows] == lengths
    _compare(_rows(tmp_path / "eager"), rows, rel=1e-5)
    assert graphed["loss"] == pytest.approx(eager["loss"], rel=1e-5)
    if log_every > 1:   # each window holds all its steps (one answer per sequence each)
        train(make_cfg(*base, "trainer.log_every=1", out="every_step"))
        steps = _rows(tmp_path / "every_step")
        windows = [steps[0:3], steps[3:6], steps[6:8]]
        assert [r["loss"] for r in rows] == pytest.approx(
            [sum(r["loss"] for r in w) / len(w) for w in windows], rel=1e-5)


def test_graphed_non_finite_loss_is_named_and_never_saved(make_cfg, tmp_path, monkeypatch):
    """Read one step late, a non-finite loss still names its own step, and the checkpoint
    due at that step is not written: the loop reads a step's metrics before it saves."""
    from bytessm.tasks.synthetic import SyntheticTask

    monkeypatch.setattr(loop, "GraphedStep", functools.partial(GraphedStep, capture=False))
    real, calls = SyntheticTask.loss_and_metrics, []

    def poisoned_from_step_4(self, out, batch):
        loss, m = real(self, out, batch)
        calls.append(1)
        if len(calls) < 4:
            return loss, m
        return loss * float("nan"), {**m, "loss": (m["loss"][0] * float("nan"), m["loss"][1])}

    monkeypatch.setattr(SyntheticTask, "loss_and_metrics", poisoned_from_step_4)
    with pytest.raises(loop.TrainingError, match="at step 4;"):
        train(make_cfg("trainer.max_steps=8", "trainer.log_every=100", "trainer.eval_every=0",
                       "trainer.save_every=2", "trainer.device=cpu", "trainer.cuda_graph=true"))
    assert os.readlink(tmp_path / "run" / "checkpoints" / "last") == "step_00000002"


@pytest.mark.parametrize("overrides,match", [
    (["trainer.cuda_graph=true", "trainer.segment_len=16"], "trainer.segment_len"),
    (["trainer.cuda_graph=true", "trainer.compile=true"], "trainer.compile"),
    (["trainer.cuda_graph=yes"], "must be true or false"),
])
def test_cuda_graph_refuses_what_it_cannot_capture(make_cfg, overrides, match):
    with pytest.raises(ConfigError, match=match):
        train(make_cfg(*overrides))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's refusal")
def test_cuda_graph_needs_cuda(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="needs a CUDA device, got cpu"):
        train(make_cfg("trainer.cuda_graph=true"))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("precision,rel,extra", [
    ("fp32", 1e-4, []), ("bf16", 2e-2, []),
    ("fp32", 1e-4, ["model.checkpoint_blocks=true"]),            # recomputed in the graph
    ("fp32", 1e-4, ["model.attn_layers=[1]", "model.attn_heads=2"]),  # hybrid: SDPA
    ("fp32", 1e-4, ["trainer.num_workers=2"]),   # the pin-memory thread runs during capture
], ids=["fp32", "bf16", "checkpointed", "hybrid", "workers"])
def test_graph_replays_the_eager_steps_on_cuda(make_cfg, tmp_path, precision, rel, extra):
    """Captured after its three eager steps, replayed for the rest: the eager run's numbers
    (float32 to 1e-4: the scan's backward sums dB, dC with atomics, in any order). With
    loader workers, their batches reach the captured step through the loader's pin-memory
    thread, whose pinned allocations a capture in the global mode counted as its error."""
    base = ["trainer.max_steps=12", "trainer.log_every=1", "trainer.eval_every=0",
            "trainer.device=cuda", f"trainer.precision={precision}", "trainer.grad_accum=2",
            *extra]
    train(make_cfg(*base, out="eager"))
    train(make_cfg(*base, "trainer.cuda_graph=true", out="graphed"))
    _compare(_rows(tmp_path / "eager"), _rows(tmp_path / "graphed"), rel=rel)


@pytest.mark.gpu
@CUDA
def test_graphed_run_resumes_exactly_and_recaptures_new_lengths(make_cfg, tmp_path, monkeypatch):
    """The sequence-length warmup's lengths (8, 16, 32 for four steps each) are captured
    anew after one eager step each; a graphed run saved at step 6 and resumed takes the
    straight run's steps (its checkpoint loads into a fresh optimizer), and both take the
    eager run's."""
    captures = []
    real = GraphedStep._capture
    monkeypatch.setattr(GraphedStep, "_capture",
                        lambda self, micro: captures.append(micro[0]["input"].shape) or
                        real(self, micro))
    base = ["trainer.log_every=1", "trainer.eval_every=0", "trainer.save_every=6",
            "trainer.device=cuda", "trainer.precision=fp32", "trainer.warmup_steps=7",
            "trainer.seq_len_warmup.start=8", "trainer.seq_len_warmup.steps=8"]
    graph = [*base, "trainer.cuda_graph=true"]
    train(make_cfg(*graph, "trainer.max_steps=12", out="straight"))
    assert [s[-1] for s in captures] == [8, 16, 32]   # steps 4, 6 and 10
    train(make_cfg(*graph, "trainer.max_steps=6", out="resumed"))
    train(make_cfg(*graph, "trainer.max_steps=12", out="resumed"))
    train(make_cfg(*base, "trainer.max_steps=12", out="eager"))
    straight = _rows(tmp_path / "straight")
    assert [r["seq_len"] for r in straight] == [8] * 4 + [16] * 4 + [32] * 4
    _compare(straight, _rows(tmp_path / "resumed"), rel=1e-4)
    _compare(_rows(tmp_path / "eager"), straight, rel=1e-4)


@pytest.mark.gpu
@CUDA
def test_a_step_that_waits_for_the_host_is_named(make_cfg, monkeypatch):
    """Found in the warm-up steps (sync debug mode), not by a failed capture: CUDA random
    numbers still work after it."""
    from bytessm.tasks.synthetic import SyntheticTask

    real = SyntheticTask.loss_and_metrics

    def syncing(self, out, batch):
        loss, m = real(self, out, batch)
        return loss, {**m, "answers": (m["loss"][1], float(m["loss"][1].item()))}

    monkeypatch.setattr(SyntheticTask, "loss_and_metrics", syncing)
    with pytest.raises(RuntimeError, match="cannot be captured in a CUDA graph.*synchronised"):
        train(make_cfg("trainer.max_steps=6", "trainer.device=cuda", "trainer.cuda_graph=true"))
    torch.randn(3, device="cuda")


def test_checkpoint_stores_float_learning_rates_and_leaves_the_optimizers():
    """A graphed run's learning rates are tensors its graph reads: the saved state holds
    floats (any run can load it), the live optimizer keeps its tensors."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    from bytessm.train.checkpoint import _plain_groups

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=torch.tensor(0.01), foreach=False)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    saved = _plain_groups(get_optimizer_state_dict(model, opt))
    assert saved["param_groups"][0]["lr"] == pytest.approx(0.01)
    assert isinstance(saved["param_groups"][0]["lr"], float)
    assert torch.is_tensor(opt.param_groups[0]["lr"])
