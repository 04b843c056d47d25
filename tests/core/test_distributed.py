"""DDP and FSDP2 under torchrun on the CPU (gloo): the same steps as one process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bytessm.train.checkpoint import load_for_inference

TORCHRUN = Path(sys.executable).with_name("torchrun")
ARGS = ["trainer.device=cpu", "model=tiny", "model.d_model=16", "trainer.max_steps=3",
        "trainer.batch_size=4", "trainer.seq_len=32", "trainer.progress=false",
        "trainer.eval_batches=2", "task.eval_size=16", "trainer.log_every=1",
        "trainer.eval_every=0"]


def _train(out, nproc, *extra):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    cmd = [str(TORCHRUN), "--standalone", f"--nproc_per_node={nproc}", "-m", "bytessm.cli",
           "train", *ARGS, f"trainer.out_dir={out}", *extra]
    if nproc == 1:
        cmd = [sys.executable, "-m", "bytessm.cli", "train", *ARGS, f"trainer.out_dir={out}", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(l) for l in open(out / "metrics.jsonl")]
    return [r["loss"] for r in rows if r["split"] == "train"], rows[-1]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The plain 1-process run (ARGS and nothing else) that several tests compare against:
    (train losses, last metrics row, run folder). Trained once per module; read only."""
    out = tmp_path_factory.mktemp("one") / "run"
    losses, final = _train(out, 1)
    return losses, final, out


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_ranks_match_one_process(tmp_path, parallel, one_process):
    one, one_final, one_dir = one_process
    two, two_final = _train(tmp_path / "two", 2, f"trainer.parallel={parallel}")
    assert two == pytest.approx(one, rel=1e-4)
    assert two_final["loss"] == pytest.approx(one_final["loss"], rel=1e-4)
    _, _, m1 = load_for_inference(one_dir)
    _, _, m2 = load_for_inference(tmp_path / "two")
    for (name, p1), p2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        torch.testing.assert_close(p2, p1, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_bf16_gradient_reduction_trains_close_to_one_process(tmp_path, parallel, one_process):
    """trainer.grad_reduce=bf16 (DDP's bf16 compress hook, FSDP2's reduce_dtype): the losses
    of one process to bf16 rounding, and weights further from one process's than the fp32
    reduction leaves them (the bf16 path is really taken)."""
    one, _, one_dir = one_process
    two, _ = _train(tmp_path / "two", 2, f"trainer.parallel={parallel}", "trainer.grad_reduce=bf16")
    assert two == pytest.approx(one, rel=2e-2)
    _, _, m1 = load_for_inference(one_dir)
    _, _, m2 = load_for_inference(tmp_path / "two")
    diffs = [float((p2 - p1).abs().max()) for p1, p2 in
             zip(m1.state_dict().values(), m2.state_dict().values())]
    assert 1e-7 < max(diffs) < 5e-3   # fp32 reduction: 3.7e-9 from one process; bf16: 1e-5


def test_fsdp_checkpoint_resumes_on_one_process(tmp_path):
    """A sharded FSDP checkpoint written by 2 ranks resumes with 1 process."""
    _train(tmp_path / "run", 2, "trainer.parallel=fsdp")
    losses, _ = _train(tmp_path / "run", 1, "trainer.max_steps=5")
    assert len(losses) == 5  # 3 from the 2-rank run, 2 more after resuming


def test_batch_that_cannot_split_across_ranks_is_refused(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m",
                        "bytessm.cli", "train", *ARGS, "trainer.batch_size=3",
                        f"trainer.out_dir={tmp_path}"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode != 0 and "trainer.batch_size=3 cannot be split across 2" in r.stderr


def _fake_cuda(monkeypatch):
    """CUDA as torch.cuda.set_device sees it, without a GPU: an unindexed device is refused."""
    calls = []

    def set_device(device):
        if isinstance(device, torch.device) and device.index is None:
            raise ValueError(f"Expected a torch.device with a specified index, got {device}")
        calls.append(device)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    return calls


@pytest.mark.parametrize("setting", ["auto", "cuda"])
def test_one_process_on_cuda_gets_an_indexed_device(monkeypatch, setting):
    """`bytessm train` on one GPU (trainer.device=auto or cuda) failed in pick_device:
    torch.cuda.set_device(torch.device("cuda")) raises in torch 2.11."""
    from bytessm.train.distributed import World, pick_device

    calls = _fake_cuda(monkeypatch)
    device = pick_device(setting, World())
    assert device == torch.device("cuda", 0) and calls == [device]


def test_ranks_on_cuda_take_their_local_rank(monkeypatch):
    from bytessm.train.distributed import World, pick_device

    calls = _fake_cuda(monkeypatch)
    device = pick_device("auto", World(rank=3, local_rank=1, size=4))
    assert device == torch.device("cuda", 1) and calls == [device]
    assert pick_device("cpu", World(rank=3, local_rank=1, size=4)) == torch.device("cpu")


def test_gradient_sync_pause_for_ddp_fsdp2_and_plain_models():
    """Accumulation and segments reduce gradients once per step: DDP through `no_sync`,
    FSDP2 (which has no `no_sync`) through `set_requires_gradient_sync`, restored even when
    the backward raises."""
    from bytessm.train.distributed import gradient_sync_pause

    class FakeFSDP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = []

        def set_requires_gradient_sync(self, flag):
            self.calls.append(flag)

    fsdp = FakeFSDP()
    with gradient_sync_pause(fsdp)():
        assert fsdp.calls == [False]
    assert fsdp.calls == [False, True]
    with pytest.raises(RuntimeError):
        with gradient_sync_pause(fsdp)():
            raise RuntimeError("backward failed")
    assert fsdp.calls[-1] is True

    class FakeDDP(torch.nn.Module):
        def no_sync(self):
            return "ddp-no-sync"

    assert gradient_sync_pause(FakeDDP())() == "ddp-no-sync"
    assert gradient_sync_pause(torch.nn.Linear(2, 2)) is None


@pytest.mark.parametrize("extra", [("trainer.grad_accum=2",),
                                   ("trainer.segment_len=8",)], ids=["accum", "segments"])
def test_fsdp_with_paused_gradient_sync_matches_one_process(tmp_path, extra):
    """FSDP2 with gradient accumulation or segment-wise training (gradients reduced once,
    after the last backward of the step) trains as one process does."""
    one, _ = _train(tmp_path / "one", 1, *extra)
    two, _ = _train(tmp_path / "two", 2, "trainer.parallel=fsdp", *extra)
    assert two == pytest.approx(one, rel=1e-4)
    _, _, m1 = load_for_inference(tmp_path / "one")
    _, _, m2 = load_for_inference(tmp_path / "two")
    for (name, p1), p2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        torch.testing.assert_close(p2, p1, rtol=1e-4, atol=1e-5, msg=name)


def test_profile_writes_a_trace_and_summary_per_rank(tmp_path):
    """trainer.profile: steps 2-3 of a 2-rank run profiled; each rank writes its Chrome trace
    and summary (CPU run: the GPU fields are null), and training still matches its steps."""
    losses, _ = _train(tmp_path / "run", 2, "trainer.profile.start=2", "trainer.profile.steps=2")
    assert len(losses) == 3
    for rank in (0, 1):
        summary = json.loads((tmp_path / "run" / "profile" / f"rank{rank}_summary.json").read_text())
        assert summary["rank"] == rank and summary["first_step"] == 2 and summary["steps"] == 2
        assert summary["wall_ms_per_step"] > 0 and summary["device_busy_ms_per_step"] is None
        trace = json.loads((tmp_path / "run" / "profile" / f"rank{rank}.json").read_text())
        names = {e.get("name", "") for e in trace["traceEvents"]}
        assert any("backward" in n.lower() for n in names), sorted(names)[:20]
    assert not list((tmp_path / "run" / "profile").glob("*.tmp*"))


def test_compiled_training_matches_eager_and_saves_plain_weights(tmp_path, one_process):
    """trainer.compile=true (torch.compile of the whole model, inductor on the CPU): the same
    losses as the eager run, and a checkpoint that loads into the uncompiled model (no
    `_orig_mod.` prefixes in the saved weights)."""
    eager, _, eager_dir = one_process
    # validated at the training length: a second length recompiles with dynamic shapes,
    # 456 s against 204 s for this run with an empty inductor cache on a 2-core CPU
    compiled, _ = _train(tmp_path / "compiled", 1, "trainer.compile=true",
                         "task.eval_seq_len=32")
    assert compiled == pytest.approx(eager, rel=1e-4)
    _, _, m1 = load_for_inference(eager_dir)
    _, _, m2 = load_for_inference(tmp_path / "compiled")
    assert list(m1.state_dict()) == list(m2.state_dict())
    for (name, p1), p2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        torch.testing.assert_close(p2, p1, rtol=1e-4, atol=1e-5, msg=name)


def test_fused_optimizer_trains_as_the_multi_tensor_one_and_resumes_with_its_own(tmp_path,
                                                                                 one_process):
    """trainer.fused_optimizer=true (PyTorch's fused AdamW, here on the CPU): the losses of
    the default multi-tensor AdamW; a run resumed from its checkpoint with the setting
    false takes the multi-tensor path again (the saved param groups carry fused=True)."""
    from bytessm.train.optim import keep_implementation
    plain = one_process[0]           # trainer.fused_optimizer=auto: multi-tensor on the CPU
    fused, _ = _train(tmp_path / "fused", 1, "trainer.fused_optimizer=true")
    assert fused == pytest.approx(plain, rel=1e-5)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], fused=True)
    keep_implementation(opt, False)
    assert opt.param_groups[0]["fused"] is None and opt.param_groups[0]["foreach"] is None
    _, last = _train(tmp_path / "fused", 1, "trainer.fused_optimizer=false",
                     "trainer.max_steps=4")                        # the same out_dir: resumes
    assert last["step"] == 4


def test_fsdp_without_resharding_after_forward_matches_one_process(tmp_path, one_process):
    """trainer.fsdp_reshard_after_forward=false (each block's parameters stay gathered from
    forward to backward), with the fused AdamW stepping FSDP2's sharded DTensors: the same
    steps as one process."""
    one = one_process[0]
    two, _ = _train(tmp_path / "two", 2, "trainer.parallel=fsdp",
                    "trainer.fsdp_reshard_after_forward=false", "trainer.fused_optimizer=true")
    assert two == pytest.approx(one, rel=1e-4)


@pytest.mark.parametrize("overrides, match", [
    (["trainer.fused_optimizer=maybe"], "trainer.fused_optimizer must be auto, true or false"),
    (["trainer.fsdp_reshard_after_forward=sometimes"],
     "trainer.fsdp_reshard_after_forward must be true or false"),
    (["trainer.parallel=fsdp", "trainer.fsdp_param_dtype=fp16"],
     "trainer.fsdp_param_dtype must be fp32 or bf16, got 'fp16'"),
    (["trainer.fsdp_param_dtype=bf16"], "it needs trainer.parallel=fsdp, got 'ddp'")])
def test_bad_optimizer_and_fsdp_settings_are_refused(make_cfg, overrides, match):
    from bytessm.task import ConfigError
    from bytessm.train.build import validate_trainer
    with pytest.raises(ConfigError, match=match):
        validate_trainer(make_cfg(*overrides), 1)


def test_fsdp_bf16_parameters_train_close_to_fp32_gathering(tmp_path):
    """trainer.fsdp_param_dtype=bf16 (FSDP2 gathers the parameters in bfloat16 and computes
    with them, under bf16 autocast): the losses of the same 2-rank run gathering float32
    parameters to bf16 rounding, the checkpoint still float32, and the weights apart from
    that run's (the bf16 gathering is really taken)."""
    common = ("trainer.parallel=fsdp", "trainer.precision=bf16")
    f32, _ = _train(tmp_path / "f32", 2, *common)
    b16, _ = _train(tmp_path / "b16", 2, *common, "trainer.fsdp_param_dtype=bf16")
    assert b16 == pytest.approx(f32, rel=2e-2)
    _, _, m1 = load_for_inference(tmp_path / "f32")
    _, _, m2 = load_for_inference(tmp_path / "b16")
    assert all(p.dtype == torch.float32 for p in m2.state_dict().values())
    diffs = [float((p2 - p1).abs().max()) for p1, p2 in
             zip(m1.state_dict().values(), m2.state_dict().values())]
    assert 1e-6 < max(diffs) < 5e-2


def test_fsdp_bf16_parameters_need_bf16_autocast(tmp_path):
    """Outside autocast float32 activations would meet bfloat16 weights: refused up front,
    naming the setting (here on the CPU, whose `precision=auto` is float32)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, "-m", "bytessm.cli", "train", *ARGS,
                        "trainer.parallel=fsdp", "trainer.fsdp_param_dtype=bf16",
                        f"trainer.out_dir={tmp_path / 'run'}"], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode != 0
    assert "trainer.fsdp_param_dtype=bf16 computes with bfloat16 parameters" in r.stderr
    assert "precision='auto' on cpu" in r.stderr
