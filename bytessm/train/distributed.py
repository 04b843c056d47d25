"""torch.distributed plumbing: process group from torchrun's environment, DDP / FSDP2 wrapping,
and the reductions the loop needs. Parallelism is applied to the model here, never inside
`forward`."""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, ContextManager

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world(device_type: str) -> World:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return World(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size())


def pick_device(setting: str, world: World) -> torch.device:
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and world.distributed:
        setting = f"cuda:{world.local_rank}"
    device = torch.device(setting)
    if device.type == "cuda":
        if device.index is None:  # plain "cuda": torch.cuda.set_device refuses an unindexed
            device = torch.device("cuda", torch.cuda.current_device())  # device (torch 2.11)
        torch.cuda.set_device(device)
    return device


def wrap_model(model: nn.Module, world: World, parallel: str, device: torch.device,
               grad_reduce: str = "fp32", bucket_mb: float = 25.0,
               reshard_after_forward: bool = True, param_dtype: str = "fp32") -> nn.Module:
    """DDP or FSDP2 (`fully_shard` per block, then the whole model) under torchrun; the model
    itself otherwise. grad_reduce="bf16" communicates gradients in bfloat16 (half the bytes;
    the optimizer still sees float32 gradients): DDP through PyTorch's `bf16_compress_hook`,
    FSDP2 through `MixedPrecisionPolicy(reduce_dtype=bfloat16)` (parameters stay float32).
    bucket_mb is DDP's gradient bucket size. reshard_after_forward=False keeps each FSDP2
    block's gathered parameters from its forward to its backward (one all-gather a block
    fewer per step, the block's full parameters held meanwhile). param_dtype="bf16" (FSDP2
    only) all-gathers the parameters in bfloat16 and runs the forward and backward with them
    (`MixedPrecisionPolicy(param_dtype=bfloat16)`, half the all-gather bytes; each block's
    floating inputs are cast to bfloat16 too); the sharded parameters, the optimizer and the
    checkpoint stay float32, and gradients are reduced in float32 unless grad_reduce="bf16"."""
    if not world.distributed:
        return model
    bf16 = grad_reduce == "bf16"
    if parallel == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # the mesh on the model's device type: without one, fully_shard builds it on the
        # machine's accelerator, and a run on the CPU (gloo) of a machine with one GPU failed
        # on rank 1 with "invalid device ordinal" (torch 2.11)
        mesh = init_device_mesh(device.type, (world.size,))
        gathered = torch.bfloat16 if param_dtype == "bf16" else None
        # with bf16 parameters FSDP2 would reduce in bf16 too; fp32 unless asked otherwise
        reduce = torch.bfloat16 if bf16 else (torch.float32 if gathered is not None else None)
        policy = MixedPrecisionPolicy(param_dtype=gathered, reduce_dtype=reduce)
        for block in model.backbone.blocks:
            fully_shard(block, mesh=mesh, mp_policy=policy,
                        reshard_after_forward=reshard_after_forward)
        fully_shard(model, mesh=mesh, mp_policy=policy)
        return model
    ddp = nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None,
        bucket_cap_mb=bucket_mb)
    if bf16:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        ddp.register_comm_hook(None, default_hooks.bf16_compress_hook)
    return ddp


def gradient_sync_pause(model: nn.Module) -> Callable[[], ContextManager] | None:
    """A context factory under which backward passes keep their gradients on this rank
    instead of reducing them across ranks (gradient accumulation, segment-wise training):
    DDP's `model.no_sync`, or for an FSDP2 (`fully_shard`) model a toggle of its
    `set_requires_gradient_sync` (gradients then accumulate unsharded until the last
    backward, which reduce-scatters them). None for a model that is not wrapped."""
    if hasattr(model, "no_sync"):
        return model.no_sync
    if hasattr(model, "set_requires_gradient_sync"):
        @contextmanager
        def paused():
            model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)
        return paused
    return None


def broadcast_object(obj, world: World):
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def close(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
