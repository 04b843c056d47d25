"""SC09 audio benchmark: training throughput and generation time, U-Net vs flat stack.

    python scripts/bench_audio.py --out bench/audio            # GPU: 16,000-sample clips
    python scripts/bench_audio.py --out /tmp/b --smoke         # CPU, toy sizes (a test run)

Models (random weights; speed does not depend on them), both over the 256 mu-law symbols:
  - unet: configs/model/sashimi_6m.yaml (SaShiMi-style pooled U-Net of Mamba blocks, 6.2M)
  - flat: a flat Mamba stack of about the same size (d_model 256, 14 layers, 6.2M)
Training: forward + backward + AdamW step on batches of whole 1-s clips (bf16 autocast on
CUDA), after warm-up; reported as clips (samples) per second and seconds per step.
Generation: a batch of 1-s clips (16,000 decode steps) with `bytessm.generation.generate`
(on CUDA in CUDA graphs: one for the flat stack's step, one per pooling phase for the
U-Net's; `--eager-unet` decodes the U-Net eagerly through its own step, for comparison).
Prints a Markdown table and writes OUT/bench_audio.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
from omegaconf import OmegaConf

from bytessm.backbone import Backbone, SequenceModel
from bytessm.generation import generate
from bytessm.io import atomic_write
from bytessm.nn import LMHead
from bytessm.nn.unet import PooledUNet
from bytessm.sampling import SamplingParams

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "model")


def build(kind: str, smoke: bool) -> SequenceModel:
    if kind == "unet":
        cfg = OmegaConf.to_container(OmegaConf.load(os.path.join(
            CONFIGS, "sashimi_tiny.yaml" if smoke else "sashimi_6m.yaml")))
        kw = {k: v for k, v in cfg.items() if k not in ("_target_", "name", "tie_embeddings")}
        backbone = PooledUNet(vocab_size=256, **kw)
    else:
        backbone = Backbone(vocab_size=256, d_model=32 if smoke else 256, n_layer=2 if smoke else 14)
    return SequenceModel(backbone, LMHead(backbone.d_model, 256))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_train(model, *, batch: int, length: int, steps: int, warmup: int, device) -> dict:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, 256, (batch, length), device=device)
    y = torch.randint(0, 256, (batch, length), device=device)
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
           else torch.autocast("cpu", enabled=False))

    def step():
        with amp:
            logits = model(x)                                              # (B, L, 256)
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    model.train()
    for _ in range(warmup):
        step()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    dt = (time.perf_counter() - t) / steps
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    return {"s_per_step": dt, "samples_per_s": batch / dt, "peak_mem_gib": mem}


def bench_generate(model, *, batch: int, length: int, device, cuda_graph=None,
                   compile_step=None) -> dict:
    model.eval()
    params = SamplingParams(temperature=1.0)
    kw = dict(params=params, seed=0, cuda_graph=cuda_graph, compile_step=compile_step)
    generate(model, [[128]] * batch, max_new=min(length, 32), **kw)  # warm-up
    sync(device)
    t = time.perf_counter()
    res = generate(model, [[128]] * batch, max_new=length, **kw)
    sync(device)
    dt = time.perf_counter() - t
    return {"gen_s": dt, "gen_symbols_per_s": batch * length / dt,
            "gen_realtime_factor": (batch * length / 16000) / dt,
            "cuda_graph": bool(res.stats.get("cuda_graph", False)),
            "compiled_step": bool(res.stats.get("compiled_step", False))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="CPU, toy sizes")
    ap.add_argument("--batch", type=int, default=16, help="training batch (1-s clips)")
    ap.add_argument("--gen-batch", type=int, default=8, help="clips generated at once")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--eager-unet", action="store_true",
                    help="decode the U-Net eagerly instead of in its per-phase CUDA graphs")
    ap.add_argument("--compile-unet", action="store_true",
                    help="the U-Net's blocks step through the compiled Block.step (opt-in)")
    args = ap.parse_args(argv)
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    length, gen_len = (256, 64) if args.smoke else (16000, 16000)
    batch, steps, warmup = (2, 2, 1) if args.smoke else (args.batch, args.steps, 3)

    rows = []
    for kind in ("unet", "flat"):
        torch.manual_seed(0)
        model = build(kind, args.smoke).to(device)
        row = {"model": kind, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
               "batch": batch, "length": length, "device": torch.cuda.get_device_name()
               if device.type == "cuda" else "cpu"}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        row.update(bench_train(model, batch=batch, length=length, steps=steps, warmup=warmup,
                               device=device))
        row.update(gen_batch=args.gen_batch if not args.smoke else 2, gen_len=gen_len)
        graph = False if kind == "unet" and args.eager_unet else None   # None: generate's default
        compiled = True if kind == "unet" and args.compile_unet else None
        row.update(bench_generate(model, batch=row["gen_batch"], length=gen_len, device=device,
                                  cuda_graph=graph, compile_step=compiled))
        rows.append(row)
        del model

    print("| model | params (M) | train clips/s | s/step | peak GiB | gen batch x len | gen s | x realtime |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['params_m']:.2f} | {r['samples_per_s']:.2f} | "
              f"{r['s_per_step']:.3f} | {r['peak_mem_gib']:.1f} | {r['gen_batch']} x "
              f"{r['gen_len']} | {r['gen_s']:.1f} | {r['gen_realtime_factor']:.3f} |")
    os.makedirs(args.out, exist_ok=True)
    atomic_write(os.path.join(args.out, "bench_audio.json"),
                 json.dumps({"smoke": args.smoke, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
