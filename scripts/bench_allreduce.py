"""All-reduce bandwidth between the GPUs of one host: what DDP's gradient reduction can reach.

    torchrun --nproc_per_node 2 scripts/bench_allreduce.py                  # NCCL, the GPUs
    NCCL_DEBUG=INFO torchrun --nproc_per_node 2 scripts/bench_allreduce.py  # + NCCL's transports
    torchrun --nproc_per_node 2 scripts/bench_allreduce.py --smoke          # CPU, gloo

For each size: the median time of `dist.all_reduce` over --iters calls (after a warm-up),
the algorithm bandwidth (bytes / time) and the bus bandwidth (algorithm bandwidth x
2 (n - 1) / n, the bytes each GPU's links carry in a ring), in float32 and bfloat16. The
353M model's float32 gradients are 1.42 GB: at a bus bandwidth B GB/s their reduction on
two GPUs takes about 1.42 / B seconds, which `bench_scale.py`'s step times can be held
against. NVLink multicast stays off (NCCL_NVLS_ENABLE=0), as everywhere in this project.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes-mb", type=float, nargs="+", default=[1, 25, 100, 400, 1416])
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--smoke", action="store_true", help="CPU tensors over gloo, small sizes")
    a = p.parse_args(argv)
    cuda = not a.smoke and torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    sizes = [0.25, 1.0] if a.smoke else a.sizes_mb
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if rank == 0:
        name = torch.cuda.get_device_name(device) if cuda else "cpu"
        print(f"all_reduce over {world} x {name}, backend {dist.get_backend()}, "
              f"torch {torch.__version__}")
        print("| dtype | MB | median ms | algbw GB/s | busbw GB/s |")
        print("|---|---:|---:|---:|---:|")
    for dtype in (torch.float32, torch.bfloat16):
        for mb in sizes:
            n = int(mb * 2**20) // dtype.itemsize
            x = torch.ones(n, dtype=dtype, device=device)
            for _ in range(2):
                dist.all_reduce(x)
            sync()
            times = []
            for _ in range(a.iters):
                dist.barrier()
                sync()
                t0 = time.perf_counter()
                dist.all_reduce(x)
                sync()
                times.append(time.perf_counter() - t0)
            t = statistics.median(times)
            alg = n * dtype.itemsize / t / 1e9
            if rank == 0:
                # four significant digits: gloo's small all-reduces on a busy CPU run below
                # 0.05 GB/s, which one decimal printed as 0.0
                print(f"| {str(dtype).split('.')[-1]} | {mb:g} | {t * 1e3:.3f} | {alg:.4g} | "
                      f"{alg * 2 * (world - 1) / world:.4g} |", flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
