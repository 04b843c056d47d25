"""Build the task and the model from a resolved config (Hydra `_target_`s are the registry)."""
from __future__ import annotations

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from bytessm.backbone import SequenceModel
from bytessm.task import ConfigError, Task

from .data import check_workers

# Keys of a model config that are not constructor arguments of its backbone.
_MODEL_META = ("_target_", "name", "tie_embeddings")


def build_task(cfg: DictConfig) -> Task:
    target = cfg.task.get("_target_")
    if not target:
        raise ConfigError("task._target_ is missing: a task config names its Task class")
    return get_class(target)(cfg)


def build_model(cfg: DictConfig, task: Task) -> SequenceModel:
    """backbone (cfg.model) with the task's encoder or alphabet, plus the task's head."""
    m = cfg.model
    kwargs = {k: v for k, v in OmegaConf.to_container(m, resolve=True).items()
              if k not in _MODEL_META}
    if getattr(task, "causal", True) and kwargs.get("bidirectional", False):
        raise ConfigError(f"task {cfg.task.name!r} has a causal objective but model "
                          f"{m.name!r} is bidirectional (model.bidirectional=true)")
    encoder = task.build_encoder(m.d_model)
    if encoder is not None:
        kwargs["encoder"] = encoder
    else:
        kwargs["vocab_size"] = task.vocab_size
    backbone = get_class(m._target_)(**kwargs)
    return SequenceModel(backbone, task.build_head(m.d_model),
                         tie_embeddings=bool(m.get("tie_embeddings", False)))


def validate_trainer(cfg: DictConfig, world_size: int) -> None:
    """Out-of-range trainer values fail here, before any data is read, naming the key."""
    t = cfg.trainer
    for key in ("max_steps", "batch_size", "grad_accum", "seq_len", "log_every"):
        if t[key] is None or int(t[key]) <= 0:
            raise ConfigError(f"trainer.{key} must be a positive integer, got {t[key]}")
    for key in ("eval_every", "save_every"):
        if int(t[key]) < 0:
            raise ConfigError(f"trainer.{key} must be >= 0 (0 = never), got {t[key]}")
    check_workers(t.get("num_workers", 0))
    if t.lr <= 0:
        raise ConfigError(f"trainer.lr must be positive, got {t.lr}")
    per = world_size * t.grad_accum
    if t.batch_size % per:
        raise ConfigError(f"trainer.batch_size={t.batch_size} cannot be split across "
                          f"{world_size} rank(s) x trainer.grad_accum={t.grad_accum}: it must "
                          f"be a multiple of {per}")
    if t.precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"trainer.precision must be auto, fp32 or bf16, got {t.precision!r}")
    if t.parallel not in ("ddp", "fsdp"):
        raise ConfigError(f"trainer.parallel must be ddp or fsdp, got {t.parallel!r}")
    if t.get("grad_reduce", "fp32") not in ("fp32", "bf16"):
        raise ConfigError(f"trainer.grad_reduce must be fp32 or bf16, got {t.grad_reduce!r}")
    if t.get("fsdp_param_dtype", "fp32") not in ("fp32", "bf16"):
        raise ConfigError(f"trainer.fsdp_param_dtype must be fp32 or bf16, got "
                          f"{t.fsdp_param_dtype!r}")
    if t.get("fsdp_param_dtype", "fp32") == "bf16" and t.parallel != "fsdp":
        raise ConfigError("trainer.fsdp_param_dtype=bf16 gathers FSDP2's parameters in "
                          f"bfloat16: it needs trainer.parallel=fsdp, got {t.parallel!r}")
    if t.get("fused_optimizer", "auto") not in ("auto", True, False):
        raise ConfigError(f"trainer.fused_optimizer must be auto, true or false, got "
                          f"{t.fused_optimizer!r}")
    if t.get("fsdp_reshard_after_forward", True) not in (True, False):
        raise ConfigError(f"trainer.fsdp_reshard_after_forward must be true or false, got "
                          f"{t.fsdp_reshard_after_forward!r}")
    if float(t.get("ddp_bucket_mb", 25)) <= 0:
        raise ConfigError(f"trainer.ddp_bucket_mb must be positive, got {t.ddp_bucket_mb}")
    if t.get("cuda_graph", False) not in (True, False):
        raise ConfigError(f"trainer.cuda_graph must be true or false, got {t.cuda_graph!r}")
    if t.get("cuda_graph", False):
        clash = [name for name, on in ((f"{world_size} processes (DDP/FSDP)", world_size > 1),
                                       ("trainer.segment_len", t.get("segment_len")),
                                       ("trainer.compile", t.get("compile"))) if on]
        if clash:
            raise ConfigError("trainer.cuda_graph=true captures one process's plain step; it "
                              f"cannot be combined with {', '.join(clash)}")
    prof = t.get("profile") or {}
    if prof.get("start") is not None:
        start, n = int(prof.start), int(prof.get("steps", 3))
        if start < 1 or n < 1 or start + n - 1 > int(t.max_steps):
            raise ConfigError(f"trainer.profile: steps start={start} .. {start + n - 1} must lie "
                              f"within 1 .. trainer.max_steps={t.max_steps} (steps >= 1)")
