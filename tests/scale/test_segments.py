"""Segment-wise training (bytessm/train/segments.py) against the plain full-length pass.

The reference is the loop's own step at full length: model(input) -> task loss ->
(loss * count).backward(). Unlimited horizon must give the same loss and every parameter
gradient; a finite horizon must give the same loss and the gradients of a plain pass that
detaches the carried state at the window boundaries.
"""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from bytessm.backbone import Backbone, SequenceModel
from bytessm.nn import ClassifierHead, LMHead
from bytessm.task import ConfigError, Task
from bytessm.train.segments import (segment_bounds, segmented_backward, segmented_eval,
                                    segmented_step, validate)

# relative error ||g - g_ref|| / ||g_ref||, float32 (tolerance table for this folder)
RTOL = {torch.float32: 2e-5}
IGNORE = -100


class NextByte(Task):
    """Causal next-byte LM with the target aligned to the input position by position."""

    def build_head(self, d_model):
        return LMHead(d_model, 256)

    def loss_and_metrics(self, head_out, batch):
        target = batch["target"]                                         # (B, L)
        n = (target != IGNORE).sum()
        nll = F.cross_entropy(head_out.float().flatten(0, 1), target.flatten(),
                              ignore_index=IGNORE, reduction="sum")
        correct = ((head_out.argmax(-1) == target) & (target != IGNORE)).sum()
        return nll / n.clamp(min=1), {"loss": (nll.detach(), n), "accuracy": (correct, n)}


def make_model(*, d_model=16, n_layer=2, attn_layers=(), seed=0) -> SequenceModel:
    torch.manual_seed(seed)
    backbone = Backbone(d_model=d_model, n_layer=n_layer, vocab_size=256, d_state=8,
                        attn_layers=attn_layers, attn_heads=2)
    return SequenceModel(backbone, LMHead(d_model, 256))


def make_batch(B=2, L=23, seed=1) -> dict:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (B, L + 1), generator=g)
    target = x[:, 1:].clone()
    target[0, :5] = IGNORE  # masked positions, unequal counts per segment
    return {"input": x[:, :-1], "target": target, "label": torch.arange(B)}


def full_pass(model, task, batch):
    model.zero_grad(set_to_none=True)
    loss, metrics = task.loss_and_metrics(model(batch["input"]), batch)
    (loss * metrics["loss"][1]).backward()
    return metrics, grads(model)


def truncated_reference(model, task, batch, *, segment_len, horizon):
    """Plain autograd per window of `horizon` segments, state detached between windows."""
    model.zero_grad(set_to_none=True)
    L = batch["input"].shape[1]
    bounds = segment_bounds(L, segment_len)
    states, total = None, 0.0
    for i in range(0, len(bounds), horizon):
        a, b = bounds[i][0], bounds[min(i + horizon, len(bounds)) - 1][1]
        out, states = model(batch["input"][:, a:b], states=states, return_states=True)
        seg = {"input": batch["input"][:, a:b], "target": batch["target"][:, a:b]}
        loss, metrics = task.loss_and_metrics(out, seg)
        (loss * metrics["loss"][1]).backward()
        total += float(metrics["loss"][0])
        states = [type(s)(*(t.detach() for t in s)) for s in states]
    return total, grads(model)


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def assert_same_grads(got: dict, ref: dict, rtol: float) -> None:
    assert got.keys() == ref.keys()
    errs = {n: rel_err(got[n], ref[n]) for n in ref}
    worst = max(errs, key=errs.get)
    assert errs[worst] < rtol, f"{worst}: relative error {errs[worst]:.2e}"


def test_segment_bounds_cover_the_length():
    assert segment_bounds(23, 7) == [(0, 7), (7, 14), (14, 21), (21, 23)]
    assert segment_bounds(6, 6) == [(0, 6)]
    assert segment_bounds(5, 8) == [(0, 5)]


@pytest.mark.parametrize("segment_len", [2, 7], ids=["seg2-shorter-than-conv", "seg7"])
def test_unlimited_horizon_equals_full_length(segment_len):
    task, batch = NextByte(OmegaConf.create({})), make_batch(L=23)
    model = make_model()
    ref_metrics, ref = full_pass(model, task, batch)
    model.zero_grad(set_to_none=True)
    metrics = segmented_step(model, task, batch, segment_len=segment_len, horizon=None)
    got = grads(model)
    assert int(metrics["loss"][1]) == int(ref_metrics["loss"][1]) == 2 * 23 - 5
    assert int(metrics["accuracy"][0]) == int(ref_metrics["accuracy"][0])
    torch.testing.assert_close(metrics["loss"][0], ref_metrics["loss"][0], rtol=1e-5, atol=0)
    assert len(got) == len(list(model.parameters()))
    assert_same_grads(got, ref, RTOL[torch.float32])


def test_horizon_one_same_loss_different_gradients():
    task, batch = NextByte(OmegaConf.create({})), make_batch(L=23)
    model = make_model()
    ref_metrics, ref = full_pass(model, task, batch)
    model.zero_grad(set_to_none=True)
    metrics = segmented_step(model, task, batch, segment_len=5, horizon=1)
    got = grads(model)
    torch.testing.assert_close(metrics["loss"][0], ref_metrics["loss"][0], rtol=1e-5, atol=0)
    # truncation drops the gradient through the carried state: the recurrent parameters
    # (conv, A, dt) must differ clearly from the full-length gradient
    diff = rel_err(got["backbone.blocks.0.mixer.ssm.A_log"],
                   ref["backbone.blocks.0.mixer.ssm.A_log"])
    assert diff > 1e-3, diff


@pytest.mark.parametrize("horizon", [1, 4], ids=["h1", "h4-uneven-windows"])
def test_finite_horizon_matches_plain_truncated_pass(horizon):
    task, batch = NextByte(OmegaConf.create({})), make_batch(L=23)
    model = make_model()
    ref_loss, ref = truncated_reference(model, task, batch, segment_len=4, horizon=horizon)
    model.zero_grad(set_to_none=True)
    metrics = segmented_step(model, task, batch, segment_len=4, horizon=horizon)
    assert float(metrics["loss"][0]) == pytest.approx(ref_loss, rel=1e-5)
    assert_same_grads(grads(model), ref, RTOL[torch.float32])


def test_synthetic_task_causal_loss():
    """The real causal task (multi-query associative recall: answers scattered through the
    sequence, so across segment boundaries; targets aligned with the input)."""
    from bytessm.tasks.synthetic import SyntheticTask

    cfg = OmegaConf.create({"task": {"kind": "mqar", "vocab": 8, "n_pairs": 4, "eval_size": 4},
                            "trainer": {"seq_len": 37, "seed": 0}})
    task = SyntheticTask(cfg)
    train, _, _ = task.build_datasets()
    batch = torch.utils.data.default_collate([train[0], train[1]])
    model = make_model()
    ref_metrics, ref = full_pass(model, task, batch)
    model.zero_grad(set_to_none=True)
    metrics = segmented_step(model, task, batch, segment_len=8)
    assert int(metrics["loss"][1]) == int(ref_metrics["loss"][1]) == 2 * 4
    torch.testing.assert_close(metrics["loss"][0], ref_metrics["loss"][0], rtol=1e-5, atol=0)
    assert_same_grads(grads(model), ref, RTOL[torch.float32])


def test_ddp_reduces_once(tmp_path):
    """Under DDP (gloo, one process) the no_sync hand-off raises no reducer errors and the
    gradients still equal the full-length pass."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        task, batch = NextByte(OmegaConf.create({})), make_batch(L=23)
        model = make_model()
        _, ref = full_pass(model, task, batch)
        model.zero_grad(set_to_none=True)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        segmented_step(ddp, task, batch, segment_len=6, horizon=None, no_sync=ddp.no_sync)
        assert_same_grads(grads(model), ref, RTOL[torch.float32])
    finally:
        dist.destroy_process_group()


def test_generic_loss_fn_and_autocast_factory():
    """segmented_backward calls the loss once per segment inside the autocast context."""
    calls = []

    class Ctx:
        def __enter__(self):
            calls.append("enter")

        def __exit__(self, *exc):
            return False

    model, batch = make_model(), make_batch(L=10)
    seen = []

    def loss_fn(out, seg):
        seen.append(seg["input"].shape[1])
        assert seg["label"] is batch["label"]  # per-sample keys passed whole
        s = out.float().pow(2).sum()
        return s, {"loss": (s.detach(), torch.tensor(out.shape[1]))}

    metrics = segmented_backward(model, batch, loss_fn, segment_len=4, horizon=None,
                                 autocast=Ctx)
    assert sorted(seen) == [2, 4, 4]  # once per segment: the no-grad pass computes no loss
    assert int(metrics["loss"][1]) == 10
    assert calls.count("enter") == 2 + 3  # 2 no-grad state passes + 3 replays


@pytest.mark.parametrize("key,value,match", [
    ("segment_len", 0, "trainer.segment_len must be a positive integer"),
    ("horizon", 0, "trainer.tbptt_horizon must be a positive number"),
])
def test_bad_settings(key, value, match):
    kw = {"segment_len": 4, "horizon": None, key: value}
    with pytest.raises(ConfigError, match=match):
        segmented_step(make_model(), NextByte(OmegaConf.create({})), make_batch(), **kw)


def test_attention_layers_refused():
    model = make_model(n_layer=2, attn_layers=[1])
    with pytest.raises(ConfigError, match=r"layers \[1\] are \['Attention'\]"):
        validate(model, 4, None)
    with pytest.raises(ConfigError, match=r"layers \[1\] are \['Attention'\]"):
        segmented_step(model, NextByte(OmegaConf.create({})), make_batch(), segment_len=4)


def test_segmented_eval_equals_full_forward():
    task, batch = NextByte(OmegaConf.create({})), make_batch(L=23)
    model = make_model()
    with torch.no_grad():
        _, ref = task.loss_and_metrics(model(batch["input"]), batch)
    got = segmented_eval(model, task, batch, segment_len=6)
    assert got.keys() == ref.keys()
    torch.testing.assert_close(got["loss"][0], ref["loss"][0], rtol=1e-5, atol=0)
    assert int(got["loss"][1]) == int(ref["loss"][1])
    assert int(got["accuracy"][0]) == int(ref["accuracy"][0])


def test_per_sequence_head_refused():
    model = make_model()
    model.head = ClassifierHead(16, 3, pool="last")
    with pytest.raises(ConfigError, match=r"per-position head output \(B, segment, \.\.\.\)"):
        segmented_backward(model, make_batch(), lambda o, b: (o.sum(), {}), segment_len=4)


class SavedTensorMeter:
    """Peak bytes of tensors saved for backward alive at once (activation memory, CPU too)."""

    def __init__(self):
        self.live = self.peak = 0

    def __enter__(self):
        import weakref

        meter = self

        class Held:
            def __init__(self, t):
                self.t, self.n = t, t.numel() * t.element_size()
                meter.live += self.n
                meter.peak = max(meter.peak, meter.live)
                weakref.finalize(self, meter._free, self.n)

        self._ctx = torch.autograd.graph.saved_tensors_hooks(Held, lambda h: h.t)
        self._ctx.__enter__()
        return self

    def _free(self, n):
        self.live -= n

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def test_memory_is_one_segment_whatever_the_horizon():
    """Saved activations grow with L at full length, stay flat in segments (any horizon)."""
    task, model = NextByte(OmegaConf.create({})), make_model()
    full, seg = {}, {}
    for L in (128, 256):
        batch = make_batch(B=1, L=L)
        with SavedTensorMeter() as m:
            full_pass(model, task, batch)
        full[L] = m.peak
        for horizon in (None, 2):
            model.zero_grad(set_to_none=True)
            with SavedTensorMeter() as m:
                segmented_step(model, task, batch, segment_len=32, horizon=horizon)
            seg[L, horizon] = m.peak
    assert full[256] > 1.8 * full[128], full
    assert max(seg.values()) < 1.2 * min(seg.values()), seg
    assert max(seg.values()) < full[256] / 2, (seg, full)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_unlimited_horizon_equals_full_length_triton_cuda():
    """The same equivalence through the Triton scan (its initial_state gradient), float32.
    Bound: fp32 Triton reductions in another chunk order than at full length."""
    task, batch = NextByte(OmegaConf.create({})), make_batch(B=2, L=1000)
    torch.manual_seed(0)
    backbone = Backbone(d_model=64, n_layer=2, vocab_size=256, scan_backend="triton")
    model = SequenceModel(backbone, LMHead(64, 256)).cuda()
    batch = {k: v.cuda() for k, v in batch.items()}
    ref_metrics, ref = full_pass(model, task, batch)
    model.zero_grad(set_to_none=True)
    metrics = segmented_step(model, task, batch, segment_len=96, horizon=None)
    torch.testing.assert_close(metrics["loss"][0], ref_metrics["loss"][0], rtol=1e-5, atol=0)
    assert_same_grads(grads(model), ref, 2e-4)
