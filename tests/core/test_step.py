"""`step.train_step`: the numbers of a plain step, on the device, without waiting for it."""
import itertools
import math

import pytest
import torch

from bytessm.train.build import build_model, build_task
from bytessm.train.data import train_loader
from bytessm.train.optim import build_optimizer, no_decay_names
from bytessm.train.step import StepResult, train_step
from bytessm.train.totals import MetricSums

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _setup(make_cfg, device, fused=False):
    cfg = make_cfg("trainer.grad_accum=2")
    task = build_task(cfg)
    train_ds, _, _ = task.build_datasets()
    torch.manual_seed(0)
    model = build_model(cfg, task).to(device)
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95),
                          no_decay=no_decay_names(model), fused=fused)
    loader = train_loader(train_ds, seed=0, global_batch=8, grad_accum=2, rank=0,
                          world_size=1, start_step=0, num_workers=0,
                          pin_memory=device.type == "cuda")
    return task, model, opt, list(itertools.islice(iter(loader), 2))


def test_step_is_the_mean_loss_step_and_reports_its_totals(make_cfg):
    """Two micro-batches: the totals are the sums of each one's metrics, the gradient that of
    the mean loss over both, the norm the one before clipping (clipped to 0.05: it acts)."""
    device = torch.device("cpu")
    task, model, opt, micro = _setup(make_cfg, device)
    ref = {k: v.clone() for k, v in model.state_dict().items()}

    keys, flat = train_step(model, task, opt, micro, device=device, precision="fp32",
                            max_norm=0.05)
    totals, norm = StepResult(keys, flat).result()
    assert flat.dtype == torch.float64 and keys == sorted(keys) and "loss" in keys
    stepped = {k: v.clone() for k, v in model.state_dict().items()}

    # the same step by hand, from the same weights and optimizer state
    model.load_state_dict(ref)
    model.zero_grad(set_to_none=True)
    opt2 = build_optimizer(model, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95),
                           no_decay=no_decay_names(model), fused=False)
    sums, counts, metrics = 0.0, 0.0, []
    for batch in micro:
        loss, m = task.loss_and_metrics(model(batch["input"]), batch)
        (loss * m["loss"][1]).backward()
        metrics.append(m)
        counts += float(m["loss"][1])
        sums += float(m["loss"][0])
    for p in model.parameters():
        p.grad /= counts
    want_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
    opt2.step()

    assert totals["loss"] == pytest.approx((sums, counts), rel=1e-6)
    for k in keys:
        assert totals[k][1] == pytest.approx(sum(float(m[k][1]) for m in metrics))
    assert norm == pytest.approx(float(want_norm), rel=1e-5) and norm > 0.05
    for k, v in model.state_dict().items():
        torch.testing.assert_close(stepped[k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_metric_sums_take_tensors_and_numbers():
    sums = MetricSums(torch.device("cpu"))
    sums.add({"loss": (torch.tensor(2.5), 4), "hits": (1, torch.tensor(3))})
    sums.add({"loss": (torch.tensor([0.5]), torch.tensor(2.0)), "hits": (2.0, 3)})
    keys, flat = sums.flat()
    assert keys == ["hits", "loss"] and flat.dtype == torch.float64
    assert MetricSums.totals(keys, flat.tolist()) == {"hits": (3.0, 6.0), "loss": (3.0, 6.0)}


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("fused", [False, True], ids=["foreach", "fused"])
def test_step_does_not_wait_for_the_gpu(make_cfg, fused):
    """With CUDA's synchronising calls made errors, a whole step (micro-batches copied in,
    forward, backward, clipping, AdamW) and the queuing of its read-back run: nothing in
    them waits for the GPU. The read-back then gives finite totals."""
    device = torch.device("cuda", torch.cuda.current_device())
    task, model, opt, micro = _setup(make_cfg, device, fused=fused)
    kw = dict(device=device, precision="bf16", max_norm=1.0)
    train_step(model, task, opt, micro, **kw)   # first calls: compilation, workspaces
    opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        result = StepResult(*train_step(model, task, opt, micro, **kw))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    totals, norm = result.result()
    assert math.isfinite(totals["loss"][0]) and totals["loss"][1] > 0 and math.isfinite(norm)
