"""The training loop. Components (data, optimizer, checkpoints, metrics, evaluation) live in
their own modules; this file only puts them in order:

    setup -> (resume) -> for each step: micro-batches -> backward -> clip -> step
          -> log / eval / checkpoint -> final eval -> one JSON line on stdout

(with `trainer.cuda_graph=true` the step, micro-batches to optimizer, is replayed from a
CUDA graph: graphs.py).

Gradients are those of the mean loss over every counted position of the global batch
(across micro-batches and ranks): each micro-batch backpropagates its *sum*, and the summed
gradient is divided by the global count afterwards. So a 2-rank run and a 1-rank run with
the same global batch take the same steps.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from bytessm.task import ConfigError

from . import checkpoint as ckpt
from .build import build_model, build_task, validate_trainer
from .data import eval_loader, train_loader, workers_for
from .distributed import (World, broadcast_object, close, gradient_sync_pause, init_world,
                          pick_device, wrap_model)
from .evaluate import bf16_autocast, evaluate
from .graphs import GraphedStep
from .logging import MetricsWriter, progress
from .optim import build_optimizer, keep_implementation, no_decay_names, use_fused, warmup_cosine
from .profiling import StepProfiler
from .seqlen import seq_len_at
from .step import StepResult, train_step


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


def _seed_everything(seed: int, rank: int) -> None:
    import random

    import numpy as np

    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)


def train(cfg: DictConfig) -> dict:
    """Train per `cfg`; returns the final validation metrics (also printed as JSON)."""
    t = cfg.trainer
    world = init_world("cuda" if t.device in ("auto", "cuda") and torch.cuda.is_available()
                       else "cpu")
    try:
        return _train(cfg, world)
    finally:
        close(world)


def _train(cfg: DictConfig, world: World) -> dict:
    t = cfg.trainer
    validate_trainer(cfg, world.size)
    device = pick_device(t.device, world)
    # ranks may have resolved ${now:...} a second apart: rank 0's folder is the run's
    out_dir = Path(broadcast_object(str(Path(str(t.out_dir)).absolute()), world))
    ckpt_dir = out_dir / "checkpoints"
    resume_from = ckpt.find_resume(ckpt_dir, world)
    # trainer.init_from: a fresh run starts from another run's weights; a resumed one from its own
    init_from = None
    if t.get("init_from") and resume_from is None:
        try:
            init_from = ckpt.find_checkpoint(t.init_from)   # before any data is read
        except ckpt.CheckpointError as e:
            raise ckpt.CheckpointError(f"trainer.init_from={t.init_from}: {e}") from e
    _seed_everything(int(t.seed), 0)  # the same initial weights on every rank (FSDP
    # shards them as they are; DDP would broadcast rank 0's)
    task = build_task(cfg)
    train_ds, valid_ds, _ = task.build_datasets()
    model = build_model(cfg, task)
    if init_from is not None:
        ckpt.load_weights(init_from, model)
    model = model.to(device)
    _seed_everything(int(t.seed), world.rank)
    n_params = sum(p.numel() for p in model.parameters())
    no_decay = no_decay_names(model)
    if t.get("fsdp_param_dtype", "fp32") == "bf16" and not bf16_autocast(device, t.precision):
        # outside autocast, float32 activations would meet the gathered bfloat16 weights
        raise ConfigError(f"trainer.fsdp_param_dtype=bf16 computes with bfloat16 parameters, "
                          f"which needs bf16 autocast: trainer.precision=bf16 (or auto on "
                          f"CUDA), got precision={t.precision!r} on {device.type}")
    model = wrap_model(model, world, t.parallel, device, grad_reduce=t.get("grad_reduce", "fp32"),
                       bucket_mb=float(t.get("ddp_bucket_mb", 25)),
                       reshard_after_forward=bool(t.get("fsdp_reshard_after_forward", True)),
                       param_dtype=t.get("fsdp_param_dtype", "fp32"))
    if t.compile:
        model = torch.compile(model)
    fused = use_fused(t.get("fused_optimizer", "auto"), device)
    optimizer = build_optimizer(model, lr=t.lr, weight_decay=t.weight_decay, betas=t.betas,
                                no_decay=no_decay, fused=fused)
    # What the loop reads every step, read once: a node of the config costs microseconds a
    # read, an interpolated one (trainer.seq_len: ${task.seq_len}) a parse of hundreds (300
    # us on a 2-core CPU), against 0.83 ms of GPU time for the default job's graphed step
    max_steps, log_every = int(t.max_steps), int(t.log_every)
    eval_every, save_every = int(t.eval_every or 0), int(t.save_every or 0)
    precision, max_norm = str(t.precision), float(t.grad_clip or math.inf)
    segment_len, horizon = (int(t.segment_len) if t.segment_len else None), t.tbptt_horizon
    warmup_steps, min_lr_ratio = int(t.warmup_steps), float(t.min_lr_ratio)
    schedule = lambda s: warmup_cosine(s, warmup_steps=warmup_steps,  # noqa: E731
                                       max_steps=max_steps, min_lr_ratio=min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    step, best = 0, math.inf
    if resume_from is not None:
        state = ckpt.load_for_resume(resume_from, model=model, optimizer=optimizer,
                                     scheduler=scheduler, cfg=cfg, world=world)
        step, best = state["step"], state.get("best", math.inf)
        keep_implementation(optimizer, fused)
        # the lr follows this run's schedule (max_steps may have been raised on resume)
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * schedule(step)
    if world.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg.trainer.out_dir = str(out_dir)
        OmegaConf.save(cfg, out_dir / "config.yaml", resolve=True)
        print(f"[bytessm] {cfg.task.name}: {n_params / 1e6:.2f}M parameters, model "
              f"{cfg.model.name}, device {device}, world {world.size}, out_dir {out_dir}"
              + (f", resumed at step {step}" if resume_from else "")
              + (f", weights from {init_from}" if init_from else ""), flush=True)
    writer = MetricsWriter(out_dir, enabled=world.is_main)

    accum = int(t.grad_accum)

    seq_len, warm = int(t.seq_len), t.seq_len_warmup
    warm_start, warm_steps = (int(warm.start), int(warm.steps)) if warm.start and warm.steps \
        else (None, 0)

    def length_at(s: int) -> int:
        if warm_start is None:
            return seq_len
        return seq_len_at(s, start=warm_start, target=seq_len, warmup_steps=warm_steps)

    pin = device.type == "cuda"
    if hasattr(train_ds, "set_seq_len"):   # the first stream's length, for a timed batch
        train_ds.set_seq_len(length_at(step))
    workers, batch_s = workers_for(train_ds, t.get("num_workers", 0), device,
                                   int(t.batch_size) // (world.size * accum))
    if batch_s is not None and world.is_main:
        print(f"[bytessm] trainer.num_workers=auto: {workers} loader worker process(es) (a "
              f"batch takes {batch_s * 1e3:.2f} ms to make in this process)", flush=True)

    def make_iter(s: int):
        if hasattr(train_ds, "set_seq_len"):
            train_ds.set_seq_len(length_at(s))
        return iter(train_loader(train_ds, seed=int(t.seed), global_batch=int(t.batch_size),
                                 grad_accum=accum, rank=world.rank, world_size=world.size,
                                 start_step=s, num_workers=workers, pin_memory=pin))

    valid_loader = None   # built at the first evaluation; its workers persist
    show_bars = world.is_main and bool(t.progress)   # training's, and each evaluation's

    def run_eval(s: int) -> dict:
        nonlocal valid_loader
        batch = int(t.batch_size) // world.size
        if valid_loader is None:
            valid_loader = eval_loader(valid_ds, batch_size=batch, rank=world.rank,
                                       world_size=world.size, num_workers=workers,
                                       pin_memory=pin)
        return evaluate(model, task, valid_ds, batch_size=batch, device=device, world=world,
                        precision=precision, max_batches=t.eval_batches, loader=valid_loader,
                        show_progress=show_bars, desc="valid")

    def save(s: int, is_best: bool) -> None:
        ckpt.save(ckpt_dir, model=model, optimizer=optimizer, scheduler=scheduler, step=s,
                  cfg=cfg, world=world, extra={"best": best}, is_best=is_best)

    params = [p for p in model.parameters() if p.requires_grad]

    def eager_step(batches) -> StepResult:
        """Micro-batches -> metric totals over ranks -> scaled, clipped gradients -> AdamW
        (`step.train_step`), queued on the GPU; nothing here waits for it."""
        micro = [next(batches) for _ in range(accum)]
        window["symbols"] += sum(task.num_symbols(b) for b in micro)
        keys, flat = train_step(model, task, optimizer, micro, device=device,
                                precision=precision, max_norm=max_norm, params=params,
                                world=world, pause=pause, segment_len=segment_len,
                                horizon=horizon)
        optimizer.zero_grad(set_to_none=True)
        return StepResult(keys, flat)

    ahead: dict = {"batches": None, "micro": None}   # the next step's batches, on the host

    def graphed_step(batches) -> StepResult:
        """The same step replayed from a CUDA graph (graphs.py). The next step's batches are
        read while the GPU runs this one (from the same stream only: a new length's stream
        starts afresh)."""
        cpu = ahead["micro"] if ahead["batches"] is batches else None
        micro = cpu or [next(batches) for _ in range(accum)]   # copied in by the step
        window["symbols"] += sum(task.num_symbols(b) for b in micro)
        result = graphed.step(micro)
        ahead["batches"], ahead["micro"] = batches, [next(batches) for _ in range(accum)]
        return result

    def check_finite(loss_sum: float, at_step: int) -> None:
        if not math.isfinite(loss_sum):
            raise TrainingError(f"non-finite loss ({loss_sum}) at step {at_step}; the last "
                                f"good checkpoint is kept in {ckpt_dir}")

    def settle(pending: tuple[int, StepResult]) -> float:
        """A finished step's totals into the log window; returns its gradient norm."""
        at_step, result = pending
        totals, norm = result.result()
        check_finite(totals["loss"][0], at_step)
        for k, v in totals.items():
            acc = log_sums.setdefault(k, [0.0, 0.0])
            acc[0] += v[0]
            acc[1] += v[1]
        return norm

    graphed = None
    if t.get("cuda_graph", False):  # after any resume: the optimizer's lr becomes a tensor
        graphed = GraphedStep(model, task, optimizer, device=device, precision=precision,
                              grad_clip=t.grad_clip)
    run_step = eager_step if graphed is None else graphed_step
    batches, current_len = make_iter(step), length_at(step)
    bar = progress(max_steps, step, enabled=show_bars)
    model.train()
    pause = gradient_sync_pause(model) if world.distributed else None
    prof_cfg = t.get("profile") or {}
    profiler = StepProfiler(prof_cfg.get("start"), prof_cfg.get("steps", 3), out_dir, world.rank,
                            device)
    window = {"symbols": 0.0, "time": time.perf_counter()}
    log_sums: dict[str, list[float]] = {}
    # A step's metrics are read one step late, once the next step is queued, so that the
    # host does not wait for the GPU between steps; a step that logs, evaluates or saves
    # reads its own first. So a step's update is made before its loss is checked, and a
    # non-finite loss stops the run, named, before its weights could be saved
    pending, grad_norm = None, math.nan
    while step < max_steps:
        profiler.before(step + 1)
        if length_at(step) != current_len:  # sequence-length warmup: rebuild the stream
            batches, current_len = make_iter(step), length_at(step)
        queued = run_step(batches)
        scheduler.step()
        step += 1
        if pending is not None:
            grad_norm = settle(pending)
        pending = (step, queued)
        logs = step % log_every == 0 or step == max_steps
        evals = bool(eval_every) and step % eval_every == 0 and step < max_steps
        saves = bool(save_every) and step % save_every == 0 and step < max_steps
        if logs or evals or saves:
            grad_norm, pending = settle(pending), None
        summary = profiler.after(step)
        if summary is not None and world.is_main:
            print(f"[bytessm] profile of steps {profiler.start}-{step} (rank 0): "
                  f"{summary['wall_ms_per_step']:.1f} ms a step"
                  + ("" if summary["device_busy_ms_per_step"] is None else
                     f", GPU busy {summary['device_busy_ms_per_step']:.1f} ms, collectives "
                     f"{summary['collective_ms_per_step']:.1f} ms")
                  + f"; trace in {out_dir / 'profile'}", flush=True)

        if logs:
            elapsed = time.perf_counter() - window["time"]
            values = task.summarize({k: tuple(v) for k, v in log_sums.items()})
            values.update(lr=float(scheduler.get_last_lr()[0]), grad_norm=grad_norm,
                          seq_len=current_len,
                          symbols_per_s=window["symbols"] * world.size / max(elapsed, 1e-9))
            writer.log(step, "train", values)
            bar.set_postfix(loss=f"{values['loss']:.4f}",
                            sym_s=f"{values['symbols_per_s']:.3g}")
            log_sums = {}
            window = {"symbols": 0.0, "time": time.perf_counter()}
        bar.update(1)

        is_best = False
        if evals:
            values = run_eval(step)
            writer.log(step, "valid", values)
            is_best = values.get("loss", math.inf) < best
            best = min(best, values.get("loss", math.inf))
        if saves:
            save(step, is_best)
    bar.close()

    final = run_eval(step)
    writer.log(step, "valid", final)
    is_best = final.get("loss", math.inf) < best
    best = min(best, final.get("loss", math.inf))
    save(step, is_best)
    writer.close()
    result = {"split": "valid", "step": step, **final}
    if world.is_main:
        print(json.dumps(result), flush=True)
    return result


__all__ = ["train", "TrainingError", "ConfigError"]
