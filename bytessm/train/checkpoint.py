"""Checkpoints: written atomically, resumed exactly, loadable for inference.

Layout of a run folder's `checkpoints/`:

    step_00000500/          one complete checkpoint
        .metadata, *.distcp   model + optimizer, torch.distributed.checkpoint (DCP) format:
                              sharded under FSDP, resumable on another number of processes
        trainer_state.pt      step, scheduler, RNG states, best metric (rank 0)
        config.yaml           the run's resolved config
    last -> step_00000500   symlinks, replaced atomically
    best -> step_00000250

A checkpoint is written into `.tmp-step_...` and renamed only when every file is in place,
so a crash never leaves a half-written `step_*` folder, and `last` always points to a
complete one. Only the newest `keep` step folders (plus `best`) are kept.

Three ways to read one: `load_for_resume` (everything: the same run goes on),
`load_weights` (the model's weights only, into a model of this run's config, possibly at
another image size: `trainer.init_from`), `load_for_inference` (the model as it was saved).
"""
from __future__ import annotations

import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from .distributed import World, barrier, broadcast_object


# Single-process runs use DCP without a process group, which it allows but warns about.
warnings.filterwarnings("ignore",
                        message="torch.distributed is disabled, unavailable or uninitialized")


class CheckpointError(Exception):
    """A missing, corrupt or mismatched checkpoint. Nothing on disk was changed."""


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _symlink(target: str, link: Path) -> None:
    tmp = link.with_name(f".{link.name}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _plain_groups(optim_state: dict) -> dict:
    """The optimizer state with its param groups' one-element tensors (the learning rate of
    a `trainer.cuda_graph` run, graphs.py) as floats, so that every checkpoint loads into a
    fresh optimizer. New dicts: the live optimizer keeps the tensors its graph reads."""
    if "param_groups" not in optim_state:
        return optim_state
    groups = [{k: v.item() if torch.is_tensor(v) and v.numel() == 1 else v
               for k, v in group.items()} for group in optim_state["param_groups"]]
    return {**optim_state, "param_groups": groups}


def save(ckpt_dir: Path, *, model: nn.Module, optimizer, scheduler, step: int, cfg: DictConfig,
         world: World, extra: dict, is_best: bool = False, keep: int = 2) -> Path:
    """Every rank calls this (DCP writes each rank's shards); rank 0 publishes."""
    name = f"step_{step:08d}"
    tmp = ckpt_dir / f".tmp-{name}"
    if world.is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier(world)
    state = {"model": get_model_state_dict(model),
             "optim": _plain_groups(get_optimizer_state_dict(model, optimizer))}
    dcp.save(state, checkpoint_id=str(tmp))
    if world.is_main:
        torch.save({"step": step, "scheduler": scheduler.state_dict(), "rng": _rng_state(),
                    "world_size": world.size, **extra}, tmp / "trainer_state.pt")
        OmegaConf.save(cfg, tmp / "config.yaml")
        final = ckpt_dir / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _symlink(name, ckpt_dir / "last")
        if is_best:
            _symlink(name, ckpt_dir / "best")
        _prune(ckpt_dir, keep)
    barrier(world)
    return ckpt_dir / name


def _prune(ckpt_dir: Path, keep: int) -> None:
    protected = {os.readlink(ckpt_dir / n) for n in ("last", "best") if (ckpt_dir / n).is_symlink()}
    steps = sorted(p for p in ckpt_dir.glob("step_*") if p.is_dir())
    for p in steps[:-keep] if keep > 0 else []:
        if p.name not in protected:
            shutil.rmtree(p, ignore_errors=True)


def _check_complete(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    missing = [f for f in (".metadata", "trainer_state.pt", "config.yaml")
               if not (path / f).exists()]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete or corrupt: missing {missing}")


def _model_signature(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg.model, resolve=True)


def load_for_resume(path: Path, *, model: nn.Module, optimizer, scheduler, cfg: DictConfig,
                    world: World) -> dict:
    """Restore model, optimizer, scheduler and RNG from `path` (a step folder or `last`).

    Raises CheckpointError, without touching the files, when the checkpoint is incomplete,
    unreadable, or was made by a different model architecture.
    """
    path = path.resolve()
    _check_complete(path)
    saved_cfg = OmegaConf.load(path / "config.yaml")
    if _model_signature(saved_cfg) != _model_signature(cfg):
        raise CheckpointError(
            f"checkpoint {path} was written by model {_model_signature(saved_cfg)}, but this "
            f"run's model is {_model_signature(cfg)}; use another trainer.out_dir or the same "
            f"model settings")
    try:
        trainer_state = torch.load(path / "trainer_state.pt", weights_only=False)
        state = {"model": get_model_state_dict(model),
                 "optim": get_optimizer_state_dict(model, optimizer)}
        dcp.load(state, checkpoint_id=str(path))
        set_model_state_dict(model, state["model"])
        set_optimizer_state_dict(model, optimizer, state["optim"])
    except (Exception, CheckpointException) as e:  # any read failure: a corrupt checkpoint
        raise CheckpointError(f"checkpoint {path} could not be read "
                              f"({type(e).__name__}: {e})") from e
    scheduler.load_state_dict(trainer_state["scheduler"])
    _set_rng_state(trainer_state["rng"])
    return trainer_state


def find_checkpoint(path: str | os.PathLike) -> Path:
    """The complete step folder meant by `path`: a run folder, its `checkpoints/` folder, or a
    step folder / `last`. Raises CheckpointError when there is none."""
    p = Path(path)
    for cand in (p, p / "last", p / "checkpoints" / "last"):
        if (cand / "trainer_state.pt").exists() or (cand / ".metadata").exists():
            p = cand
            break
    p = p.resolve()
    _check_complete(p)
    return p


def _resized_on_load(model: nn.Module, name: str) -> bool:
    """Whether the module owning parameter `name` adapts a loaded value of another shape to
    its own (it lists the parameter in `resized_on_load` and resizes it in a load_state_dict
    pre-hook, as the Vision Mamba patch embedding does with its position grid)."""
    owner, _, leaf = name.rpartition(".")
    return leaf in getattr(model.get_submodule(owner), "resized_on_load", ())


def load_weights(path: str | os.PathLike, model: nn.Module) -> Path:
    """Start `model` (as build_model returns it, not yet wrapped) from a checkpoint's model
    weights only: not its optimizer, step, schedule or RNG (`trainer.init_from`).

    The model is this run's (its config may differ from the checkpoint's, e.g. in image
    size); every parameter must exist in both with the same shape, except those whose module
    resizes them on load (`_resized_on_load`). Otherwise CheckpointError names the parameter
    and both shapes. Returns the step folder read.
    """
    p = find_checkpoint(path)
    try:  # the saved tensors at their saved shapes (DCP loads in place, so allocate those)
        meta = dcp.FileSystemReader(str(p)).read_metadata().state_dict_metadata
        saved = {k.removeprefix("model."): torch.empty(m.size, dtype=m.properties.dtype)
                 for k, m in meta.items()
                 if k.startswith("model.") and isinstance(m, TensorStorageMetadata)}
        dcp.load({"model": saved}, checkpoint_id=str(p))
    except (Exception, CheckpointException) as e:
        raise CheckpointError(f"checkpoint {p} could not be read ({type(e).__name__}: {e})") from e
    own = model.state_dict()
    missing, unexpected = sorted(own.keys() - saved.keys()), sorted(saved.keys() - own.keys())
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {p} holds another architecture than this run's model: the model has "
            f"{len(missing)} parameter(s) the checkpoint lacks {missing[:3]} and the checkpoint "
            f"{len(unexpected)} the model lacks {unexpected[:3]}; build the model as in "
            f"{p / 'config.yaml'}")
    for name, t in own.items():
        if saved[name].shape != t.shape and not _resized_on_load(model, name):
            raise CheckpointError(
                f"checkpoint {p}: parameter {name} has shape {tuple(saved[name].shape)} there "
                f"but {tuple(t.shape)} in this run's model; only those a module resizes on load "
                f"(the Vision Mamba's pos_embed) may differ: build the model as in "
                f"{p / 'config.yaml'}")
    try:
        model.load_state_dict(saved)   # the modules' load hooks resize what they may
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {p} does not fit this run's model: {e}") from e
    return p


def load_for_inference(path: str | os.PathLike, device: str | torch.device = "cpu",
                       overrides: DictConfig | None = None):
    """(cfg, task, model) from a checkpoint folder, model in eval mode on `device`.

    `path` may be the run folder, its `checkpoints/` folder, or a step folder / `last`.
    """
    from .build import build_model, build_task

    p = find_checkpoint(path)
    cfg = OmegaConf.load(p / "config.yaml")
    if overrides is not None:
        cfg = OmegaConf.merge(cfg, overrides)
    task = build_task(cfg)
    model = build_model(cfg, task)
    try:
        sd = {"model": get_model_state_dict(model)}
        dcp.load(sd, checkpoint_id=str(p))
        set_model_state_dict(model, sd["model"], options=StateDictOptions(strict=True))
    except (Exception, CheckpointException) as e:
        raise CheckpointError(f"checkpoint {p} could not be read ({type(e).__name__}: {e})") from e
    return cfg, task, model.to(device).eval()


def find_resume(ckpt_dir: Path, world: World) -> Path | None:
    """The `last` checkpoint of a run folder, if any (decided on rank 0)."""
    last = ckpt_dir / "last"
    found = str(last) if last.exists() or last.is_symlink() else None
    found = broadcast_object(found, world)
    return Path(found) if found else None
