#!/usr/bin/env python3
"""Correctness of the Triton scan on CUDA at real sizes, against the float32 chunked reference.

    python scripts/check_scan_gpu.py [--skip-1m] [--max-length N] [--json out.json]

D=1536, N=16, bf16 inputs (the reference runs in float32 on the same rounded inputs):
output, last state and every gradient at 8x2K, 2x16K (also reverse + initial state, and
4 groups), 1x128K, 1x32K at D=512 (a grid narrow enough that the chunks run in segments,
with the state-only and carry passes; also reverse + initial state), 32x197 and 4x2047
(lengths not a multiple of 16, whose rows the launcher pads; the latter reverse, with an
initial state and 4 groups), and the forward at 1x1M. At 1M the reference (one Python step
per position) runs on the first 64 channels only, which is exact because channels are
independent. Prints relative L2 errors; exits 1 if any exceeds the bf16 tolerance.
(The interpreter suite, `pytest tests/kernels`, also runs on CUDA when there is one.)
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from bytessm.io import atomic_write
from bytessm.kernels import reference, selective_scan

TOL = {torch.bfloat16: 1e-2, torch.float32: 1e-5}
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def rel(a, b):
    a, b = a.double(), b.double()
    return float("inf") if not torch.isfinite(a).all() else ((a - b).norm() / b.norm()).item()


def inputs(batch, length, dim=1536, n=16, groups=0, h0=False, dtype=torch.bfloat16, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s, dt=dtype, sc=1.0, sh=0.0: (torch.randn(*s, device="cuda", generator=g) * sc + sh).to(dt)  # noqa: E731
    bc = (batch, n, length) if not groups else (batch, groups, n, length)
    return dict(u=r(batch, dim, length), delta=r(batch, dim, length, sc=0.5, sh=-1.0),
                A=-(torch.rand(dim, n, device="cuda", generator=g) * 2.9 + 0.1),
                B=r(*bc), C=r(*bc), D=r(dim, dt=torch.float32), z=r(batch, dim, length),
                delta_bias=r(dim, dt=torch.float32, sc=0.3),
                initial_state=r(batch, dim, n, dt=torch.float32) if h0 else None)


def run(fn, ins, reverse, backward, upcast):
    leaves = {k: (v.float() if upcast else v).detach().requires_grad_(backward)
              for k, v in ins.items() if v is not None}
    args = {k: leaves.get(k) for k in ins}
    y, last = fn(**args, return_last_state=True, reverse=reverse)
    if not backward:
        return y.detach(), last.detach(), {}
    g = torch.Generator(device="cuda").manual_seed(9)
    loss = (y.float() * torch.randn(y.shape, device="cuda", generator=g)).sum() + \
        (last * torch.randn(last.shape, device="cuda", generator=g)).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return y.detach(), last.detach(), dict(zip(leaves, grads))


def check(label, batch, length, reverse=False, groups=0, h0=False, backward=True, channels=None,
          dim=1536):
    ins = inputs(batch, length, dim=dim, groups=groups, h0=h0)
    t0 = time.perf_counter()
    y, last, grads = run(lambda **k: selective_scan(**k, backend="triton"), ins, reverse, backward, False)
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    if channels is not None:  # the reference on a channel slice (channels are independent)
        sl = slice(0, channels)
        ins = {k: (v[:, sl] if k in ("u", "delta", "z", "initial_state") else
                   v[sl] if k in ("A", "D", "delta_bias") else v) if v is not None else None
               for k, v in ins.items()}
        y, last = y[:, sl], last[:, sl]
    y_ref, last_ref, g_ref = run(reference.selective_scan_chunked, ins, reverse, backward, True)
    torch.cuda.synchronize()
    errs = {"out": rel(y, y_ref), "last_state": rel(last, last_ref)}
    errs.update({f"d{k}": rel(grads[k], g_ref[k]) for k in NAMES if k in grads})
    worst = max(errs.values())
    ok = worst <= TOL[torch.bfloat16]
    print(f"{'ok  ' if ok else 'FAIL'} {label:<34} worst {worst:.2e}  "
          + " ".join(f"{k}={v:.1e}" for k, v in errs.items())
          + f"  (triton {t1 - t0:.2f}s, reference {time.perf_counter() - t1:.1f}s)", flush=True)
    return dict(label=label, errors=errs, ok=ok)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--skip-1m", action="store_true")
    p.add_argument("--max-length", type=int, default=2**20,
                   help="skip the cases longer than this (the 128K reference takes ~100 s)")
    p.add_argument("--min-length", type=int, default=0,
                   help="skip the cases shorter than this (to re-run only the long ones)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    cases = [("8x2K fwd+bwd", 8, 2048, {}),
             ("2x16K fwd+bwd", 2, 16384, {}),
             ("2x16K reverse, initial state", 2, 16384, dict(reverse=True, h0=True)),
             ("2x16K 4 groups", 2, 16384, dict(groups=4)),
             ("1x32K D=512 fwd+bwd (segments)", 1, 32768, dict(dim=512)),
             ("1x32K D=512 reverse, initial state", 1, 32768,
              dict(dim=512, reverse=True, h0=True)),
             ("32x197 fwd+bwd (rows padded to 208)", 32, 197, {}),
             ("4x2047 reverse, initial state, 4 groups (padded)", 4, 2047,
              dict(reverse=True, h0=True, groups=4)),
             ("1x128K fwd+bwd", 1, 131072, {})]
    if not a.skip_1m:
        cases.append(("1x1M fwd (64 channels checked)", 1, 2**20,
                      dict(backward=False, channels=64)))
    results = [check(label, batch, length, **kw) for label, batch, length, kw in cases
               if a.min_length <= length <= a.max_length]
    if a.json:
        atomic_write(a.json, json.dumps(results, indent=1))
    sys.exit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
