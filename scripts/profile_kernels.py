"""Where a model step's GPU time goes: the CUDA kernels of one step, by total time.

    python scripts/profile_kernels.py vim --resolution 224 --batch 126 [--train]
    python scripts/profile_kernels.py decode --batch 1
    python scripts/profile_kernels.py genomics --model caduceus-ps-6x256-ckpt --log2 20
    python scripts/profile_kernels.py scan --log2 17 --batch 1 [--train]

`vim` profiles Vim-Ti (bench_vision's model) at a resolution; `genomics` one training step
of a bench_genomics model at 2^log2 bases (--batch rows, bf16 autocast); `decode` one eager
decode step of bench_generate's 354M Mamba (bf16 weights), whose CUDA-graph replay costs
about the sum of its kernels plus a launch gap per kernel; `scan` one call of bench_scan's
scan (D=1536, N=16, bf16) at batch x 2^log2, forward alone or (--train) forward+backward,
every launch the call makes beside the kernels themselves. Prints the step's kernel count,
the sum of kernel times, the step's time unprofiled, and the top kernels (torch.profiler,
averaged over --steps steps).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def vim_step(a):
    bv = _script("bench_vision")
    model = bv.build(bv.SPECS[a.model], a.resolution, 16).cuda()
    x = torch.randn(a.batch, 3, a.resolution, a.resolution, device="cuda")
    y = torch.randint(0, 1000, (a.batch,), device="cuda")
    if a.train:
        model.train()

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(x).float(), y)
            loss.backward()
        return step
    model.eval()

    def step():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            model(x)
    return step


def genomics_step(a):
    bg = _script("bench_genomics")
    model = bg.build(a.model, torch.device("cuda"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    bases = torch.tensor(list(b"ACGT"), device="cuda")
    x = bases[torch.randint(0, 4, (a.batch, 1 << a.log2), device="cuda")]
    y = torch.randint(0, bg.NUM_CLASSES, (a.batch,), device="cuda")
    return lambda: bg.step(model, optimizer, x, y, use_bf16=True)


def decode_step(a):
    bg = _script("bench_generate")
    from bytessm.generation import Decoder, cast_for_inference
    from bytessm.sampling import SamplingParams

    model = bg.build("mamba", d_model=1024, n_layer=53, heads=16, mlp_ratio=8 / 3,
                     scan_backend="triton")
    model = cast_for_inference(model.cuda(), torch.bfloat16)
    dec = Decoder(model, batch=a.batch, max_len=4096, max_new=4096,
                  params=SamplingParams(temperature=0), device="cuda")
    return lambda: dec.run(check_every=10**9, max_steps=1)


def scan_step(a):
    bs = _script("bench_scan")
    from bytessm.kernels import selective_scan

    args = bs.scan_inputs(a.batch, 1 << a.log2, grad=a.train)
    if not a.train:
        def step():
            with torch.no_grad():
                selective_scan(**args, backend="triton")
        return step
    leaves = [v for v in args.values() if isinstance(v, torch.Tensor) and v.requires_grad]
    dout = torch.randn(a.batch, bs.D_INNER, 1 << a.log2, device="cuda", dtype=torch.bfloat16)

    def step():
        for t in leaves:
            t.grad = None
        selective_scan(**args, backend="triton").backward(dout)
    return step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["vim", "genomics", "decode", "scan"])
    p.add_argument("--model", default=None,
                   help="vim: bench_vision's (vim-ti); genomics: bench_genomics's (mamba-6x256)")
    p.add_argument("--log2", type=int, default=17, help="genomics: 2^log2 bases; scan: positions")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--train", action="store_true")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args(argv)
    a.model = a.model or {"vim": "vim-ti", "genomics": "mamba-6x256"}.get(a.what)
    step = {"vim": vim_step, "genomics": genomics_step, "decode": decode_step,
            "scan": scan_step}[a.what](a)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(a.steps):
        step()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - start) / a.steps
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(a.steps):
            step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    total = sum(e.self_device_time_total for e in events) / a.steps
    count = sum(e.count for e in events) / a.steps
    print(f"{a.what} {vars(a)}: {count:.0f} kernels per step, {total / 1e3:.3f} ms of kernel "
          f"time per step, {wall * 1e3:.3f} ms a step unprofiled")
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[: a.top]:
        t = e.self_device_time_total / a.steps
        print(f"{t / 1e3:9.3f} ms {100 * t / total:5.1f}%  x{e.count / a.steps:5.0f}  {e.key[:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
