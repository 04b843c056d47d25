#!/usr/bin/env python3
"""Time this checkout's scan kernels against another version's, interleaved in one process.

    git archive <commit> kernels/triton | tar -x -C /tmp/base
    python scripts/bench_scan_ab.py --base /tmp/base/kernels/triton [--base OTHER ...] \
        [--shapes 1x131072] [--rounds 3] [--seqs 64] [--dim 512] [--reverse] \
        [--base-config '{"maxnreg_long": 128}']
    python scripts/bench_scan_ab.py --base /tmp/base/kernels/triton --decode 1,16,128 \
        [--mamba-src .mamba/mamba_ssm-2.3.2.post1]

Back-to-back runs of `bench_scan.py` drift by several percent on the same kernels (two
processes on one H200 gave 16.5 and 17.7 ms for one forward+backward at 1x128K), more than
most kernel changes gain. Here both versions' launchers (`scan.py`: forward and backward
without autograd, so the two are timed apart) run on the same inputs in the same process,
alternating round by round; the table gives each round's medians and, per version, the
ratio of its median to the first --base's. Each other version is imported from its folder
as a package of its own, without its `__init__` (which would register the custom ops a
second time). Workload as
`bench_scan.py`'s: D=1536, N=16, bf16, z, D, delta_bias, softplus; `--seqs K` packs each
batch-1 row as K sequences of equal length (cu_seqlens), the packed path; `--dim` sets the
channel count (d_inner) instead of bench_scan.py's 1536. `--decode` times the decode state
step instead (CUDA graphs of 16 steps, `bench_scan.py`'s decode inputs), with mamba_ssm's
step beside it when `--mamba-src` is given. `--base-config JSON` runs the base versions'
calls under BYTESSM_SCAN_CONFIG=JSON (the head's under the environment's): with `--base`
this checkout's own `kernels/triton`, two configurations of the same kernels in one
process (`configs.scan_config` reads the variable at each call).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import statistics
import sys
import types
from pathlib import Path

import torch
from triton.testing import do_bench

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_scan  # noqa: E402

from bytessm.kernels.triton import decode as head_decode  # noqa: E402
from bytessm.kernels.triton import scan as head_scan  # noqa: E402


def import_launchers(folder: str, name: str, module: str = "scan"):
    pkg = types.ModuleType(name)
    pkg.__path__ = [str(Path(folder).resolve())]
    sys.modules[name] = pkg
    return importlib.import_module(f"{name}.{module}")


@contextlib.contextmanager
def scan_config(config: str | None):
    """BYTESSM_SCAN_CONFIG set to `config` inside (untouched where None)."""
    if config is None:
        yield
        return
    old = os.environ.get("BYTESSM_SCAN_CONFIG")
    os.environ["BYTESSM_SCAN_CONFIG"] = config
    try:
        yield
    finally:
        if old is None:
            del os.environ["BYTESSM_SCAN_CONFIG"]
        else:
            os.environ["BYTESSM_SCAN_CONFIG"] = old


def passes(mod, a: dict, cu_seqlens=None, reverse: bool = False, config: str | None = None):
    """(forward, backward) closures of one version's launchers on the inputs `a` (packed
    sequences when `cu_seqlens` is given; scanned from the end when `reverse`; under
    BYTESSM_SCAN_CONFIG=`config` where given)."""
    args = (a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"], a["delta_bias"])
    with scan_config(config):
        out, _last, states = mod.scan_forward(*args, None, cu_seqlens, True, reverse)
    dout = torch.randn_like(out)

    def fwd():
        with scan_config(config):
            return mod.scan_forward(*args, None, cu_seqlens, True, reverse)

    def bwd():
        with scan_config(config):
            return mod.scan_backward(dout, None, *args, None, cu_seqlens, states, True,
                                     reverse)
    return fwd, bwd


def decode_steps(versions: dict, batches: list[int], rounds: int, mamba_step=None) -> None:
    """The decode state step of each version (and mamba_ssm's `selective_state_update`
    where given) at each batch, from CUDA graphs of 16 steps, interleaved round by round:
    back-to-back graph timings of a ~2 us step drift by more than versions differ."""
    print("| batch | version | us (rounds) | / base0 |\n|---|---|---|---:|")
    for batch in batches:
        args = bench_scan.decode_inputs(batch)
        steps = {v: (lambda fn=mod.selective_state_update_triton: fn(**args))
                 for v, mod in versions.items()}
        if mamba_step is not None:
            steps["mamba_ssm"] = lambda: mamba_step(**args)
        times = {v: [] for v in steps}
        for _ in range(rounds):
            for v, step in steps.items():
                times[v].append(bench_scan.graph_step_us(step))
        ref = statistics.median(times["base0"])
        for v, ts in times.items():
            print(f"| {batch} | {v} | {' '.join(f'{t:.3f}' for t in ts)} | "
                  f"{statistics.median(ts) / ref:.3f} |", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", action="append", required=True,
                   help="another version's kernels/triton folder (repeatable)")
    p.add_argument("--shapes", default="8x2048,1x131072")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dim", type=int, default=bench_scan.D_INNER,
                   help="channels (d_inner); bench_scan.py's workload has 1536")
    p.add_argument("--seqs", type=int, default=0,
                   help="pack each row of batch-1 shapes as this many sequences (cu_seqlens)")
    p.add_argument("--reverse", action="store_true", help="time reverse scans")
    p.add_argument("--base-config", default=None, metavar="JSON",
                   help="BYTESSM_SCAN_CONFIG for the base versions' calls")
    p.add_argument("--decode", default=None, metavar="BATCHES",
                   help="time the decode state step at these batches (e.g. 1,16,128) instead")
    p.add_argument("--mamba-src", default=None,
                   help="with --decode: mamba_ssm's sdist, to time its step beside")
    a = p.parse_args()
    bench_scan.D_INNER = a.dim      # scan_inputs reads it at each call
    if a.decode:
        versions = {f"base{i}": import_launchers(folder, f"bytessm_base{i}_kernels", "decode")
                    for i, folder in enumerate(a.base)}
        versions["head"] = head_decode
        mamba = bench_scan.load_mamba(a.mamba_src, None)
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; "
              + ", ".join(f"base{i} = {f}" for i, f in enumerate(a.base)), flush=True)
        decode_steps(versions, [int(b) for b in a.decode.split(",")], a.rounds,
                     mamba.get("state_update"))
        return
    versions = {f"base{i}": import_launchers(folder, f"bytessm_base{i}_kernels")
                for i, folder in enumerate(a.base)}
    versions["head"] = head_scan
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; "
          + ", ".join(f"base{i} = {f}" for i, f in enumerate(a.base)) + f"; D={a.dim}"
          + ("; reverse" if a.reverse else "")
          + (f"; base config {a.base_config}" if a.base_config else ""),
          flush=True)
    print("| shape | pass | version | ms (rounds) | / base0 |\n|---|---|---|---|---:|")
    for shape in a.shapes.split(","):
        batch, length = (int(v) for v in shape.split("x"))
        ins = {k: v.detach() for k, v in bench_scan.scan_inputs(batch, length, grad=False).items()}
        cu = None
        if a.seqs and batch == 1:
            cu = torch.linspace(0, length, a.seqs + 1, device="cuda").round().to(torch.int32)
        fns = {v: passes(mod, ins, cu, a.reverse, None if v == "head" else a.base_config)
               for v, mod in versions.items()}
        times = {(v, i): [] for v in fns for i in range(2)}
        for _ in range(a.rounds):
            for version, pair in fns.items():
                for i, fn in enumerate(pair):
                    times[version, i].append(do_bench(fn, warmup=25, rep=200,
                                                      return_mode="median"))
        for i, name in enumerate(("fwd", "bwd")):
            ref = statistics.median(times["base0", i])
            for version in fns:
                ts = times[version, i]
                print(f"| {shape} | {name} | {version} | {' '.join(f'{t:.3f}' for t in ts)} | "
                      f"{statistics.median(ts) / ref:.3f} |", flush=True)
        del ins, fns
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
