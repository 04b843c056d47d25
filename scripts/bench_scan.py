#!/usr/bin/env python3
"""Benchmark bytessm's Triton selective scan against mamba_ssm's kernels, in one process.

    python scripts/bench_scan.py --mamba-src .mamba/mamba_ssm-2.3.2.post1 --mamba-so .mamba/so \
        [--ssd] [--shapes 8x2048,2x16384,1x131072,1x1048576] [--rounds 3] [--out docs/benchmarks] \
        [--tune]

Workload (../shared/anchors/README.md): D=1536 channels, d_state 16, bf16 u/delta/B/C/z,
float32 A/D/delta_bias, softplus, B/C shared by all channels. Times are
`triton.testing.do_bench` medians (L2 flushed between repetitions) of the forward and of
forward+backward, each shape timed --rounds times with the implementations alternating,
and the median round reported; peak memory counts the inputs; "% floor" is the byte floor (each input
read once, each output written once, at the measured device-to-device copy bandwidth) over
the time. Also: one decoding step under a CUDA graph at batch 1/16/128, and the first-call
(compile) time of our kernels. mamba_ssm's CUDA scan is imported from a build of its sdist
(`build_mamba_scan.py` from the anchors folder; the .so is built once and carried), its
Triton SSD and state update from the same sdist without running its package __init__.
Writes scan.md and scan.json into --out and prints the table.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import triton
from triton.testing import do_bench

from bytessm.generation import capture_graphs
from bytessm.kernels import selective_scan, selective_state_update

GIB = 2**30
D_INNER, D_STATE = 1536, 16
BF16 = torch.bfloat16


# ---------------------------------------------------------------------------- mamba_ssm
def load_mamba(src: str | None, so_dir: str | None) -> dict:
    """mamba_ssm's selective_scan_fn, mamba_chunk_scan_combined and selective_state_update,
    or an empty dict (with the reason printed) when they cannot be imported."""
    if not src:
        return {}
    found = {}
    try:
        if so_dir:
            sys.path.insert(0, str(Path(so_dir).resolve()))
        pkg = types.ModuleType("mamba_ssm")
        pkg.__path__ = [str(Path(src, "mamba_ssm").resolve())]
        sys.modules["mamba_ssm"] = pkg
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update as ssu
        found["state_update"] = ssu
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
        found["ssd"] = mamba_chunk_scan_combined
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        found["cuda_scan"] = selective_scan_fn
    except Exception as e:  # report what is missing, benchmark the rest
        print(f"[mamba_ssm] partly unavailable: {type(e).__name__}: {e}", flush=True)
    return found


# ---------------------------------------------------------------------------- helpers
def warm_up(seconds: float = 3.0) -> None:
    """Keep the GPU busy for a few seconds before the first timing, so that the first
    shape is not timed while the clocks are still rising from idle."""
    x = torch.randn(4096, 4096, device="cuda", dtype=BF16)
    torch.cuda.synchronize()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(20):
            x @ x
        torch.cuda.synchronize()


def copy_bandwidth() -> float:
    """Device-to-device copy, bytes read + written per second."""
    x = torch.empty(2 * GIB // 4, device="cuda", dtype=torch.float32).normal_()
    y = torch.empty_like(x)
    ms = do_bench(lambda: y.copy_(x), return_mode="median")
    del x, y
    return 2 * 2 * GIB / (ms * 1e-3)


def scan_inputs(batch: int, length: int, grad: bool, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)

    def rnd(*shape, dtype=BF16, scale=1.0, shift=0.0):
        t = (torch.randn(*shape, device="cuda", generator=g) * scale + shift).to(dtype)
        return t.requires_grad_(grad)

    A = (-(torch.rand(D_INNER, D_STATE, device="cuda", generator=g) * 2.9 + 0.1)).requires_grad_(grad)
    return dict(u=rnd(batch, D_INNER, length), delta=rnd(batch, D_INNER, length, scale=0.5, shift=-1.0),
                A=A, B=rnd(batch, D_STATE, length), C=rnd(batch, D_STATE, length),
                D=rnd(D_INNER, dtype=torch.float32), z=rnd(batch, D_INNER, length),
                delta_bias=rnd(D_INNER, dtype=torch.float32, scale=0.3))


def floor_bytes(batch: int, length: int, backward: bool) -> int:
    bdl, bnl = batch * D_INNER * length, batch * D_STATE * length
    fwd = 2 * (4 * bdl + 2 * bnl)           # u, delta, z, B, C read; out written (bf16)
    bwd = 2 * (7 * bdl + 4 * bnl)           # u, delta, z, dout, B, C read; du, ddelta, dz, dB, dC written
    return fwd + (bwd if backward else 0)


def floor_pct(batch: int, length: int, backward: bool, bw: float, ms: float) -> float:
    """The byte floor's time (`floor_bytes` at copy bandwidth `bw`) as a % of `ms`."""
    return 100 * floor_bytes(batch, length, backward) / bw / (ms * 1e-3)


def timed(fn, grads=None) -> float:
    return do_bench(fn, warmup=25, rep=200, grad_to_none=grads, return_mode="median")


def peak_gib(fn) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / GIB


# ---------------------------------------------------------------------------- scans
def scan_impls(mamba: dict, ssd: bool) -> dict:
    """name -> (make_inputs(batch, length, grad) -> args, run(args) -> output)."""
    impls = {"bytessm triton": (scan_inputs, lambda a: selective_scan(**a, backend="triton"))}
    if "cuda_scan" in mamba:
        impls["mamba_ssm CUDA scan"] = (scan_inputs, lambda a, fn=mamba["cuda_scan"]: fn(
            a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"], a["delta_bias"],
            delta_softplus=True))
    if ssd and "ssd" in mamba:
        def ssd_inputs(batch, length, grad, heads=24, headdim=64, n=64):
            g = torch.Generator(device="cuda").manual_seed(0)

            def rnd(*shape, dtype=BF16, scale=1.0, shift=0.0):
                t = (torch.randn(*shape, device="cuda", generator=g) * scale + shift).to(dtype)
                return t.requires_grad_(grad)
            return dict(x=rnd(batch, length, heads, headdim), dt=rnd(batch, length, heads, shift=-1.0),
                        A=(-torch.rand(heads, device="cuda", generator=g) - 0.5).requires_grad_(grad),
                        B=rnd(batch, length, 1, n), C=rnd(batch, length, 1, n),
                        D=rnd(heads, dtype=torch.float32), z=rnd(batch, length, heads, headdim),
                        dt_bias=rnd(heads, dtype=torch.float32, scale=0.3))
        impls["mamba_ssm Triton SSD (24x64, N=64)"] = (ssd_inputs, lambda a, fn=mamba["ssd"]: fn(
            a["x"], a["dt"], a["A"], a["B"], a["C"], 256, D=a["D"], z=a["z"],
            dt_bias=a["dt_bias"], dt_softplus=True))
    return impls


def bench_shape(name, make, run, batch, length, bw) -> dict:
    row = {"impl": name, "batch": batch, "length": length}
    args = make(batch, length, grad=False)
    with torch.no_grad():
        row["fwd_ms"] = timed(lambda: run(args))
        row["fwd_peak_gib"] = peak_gib(lambda: run(args))
    del args
    torch.cuda.empty_cache()
    args = make(batch, length, grad=True)
    leaves = [v for v in args.values() if isinstance(v, torch.Tensor) and v.requires_grad]
    out = run(args)
    out = out[0] if isinstance(out, tuple) else out
    dout = torch.randn_like(out)
    del out

    def fwd_bwd():
        o = run(args)
        (o[0] if isinstance(o, tuple) else o).backward(dout)
    row["fwd_bwd_ms"] = timed(fwd_bwd, grads=leaves)
    for t in leaves:
        t.grad = None
    row["fwd_bwd_peak_gib"] = peak_gib(fwd_bwd)
    del args, leaves, dout
    torch.cuda.empty_cache()
    for key in ("fwd", "fwd_bwd"):
        row[f"{key}_floor_pct"] = floor_pct(batch, length, key == "fwd_bwd", bw, row[f"{key}_ms"])
    return row


def bench_rounds(impls: dict, batch: int, length: int, bw: float, rounds: int) -> list[dict]:
    """Every implementation at one shape, `rounds` times, alternating round by round; each
    time is the median over the rounds (every round's kept in `*_rounds_ms`). The first shape
    timed in a process read 28-62% slower in single runs (0.41-0.52 vs 0.32 ms for 8x2K's
    forward in interleaved A/Bs): the first round takes what the clocks and caches cost.
    An implementation out of memory at the shape is dropped from it."""
    runs = {name: [] for name in impls}
    for _ in range(rounds):
        for name, (make, run) in impls.items():
            if runs[name] is None:
                continue
            try:
                r = bench_shape(name, make, run, batch, length, bw)
            except torch.cuda.OutOfMemoryError:
                print(f"[{name}] {batch}x{length}: out of memory", flush=True)
                torch.cuda.empty_cache()
                runs[name] = None
                continue
            runs[name].append(r)
            print(f"[{name}] {batch}x{length}: fwd {r['fwd_ms']:.3f} ms, fwd+bwd "
                  f"{r['fwd_bwd_ms']:.3f} ms, peak {r['fwd_peak_gib']:.2f}/"
                  f"{r['fwd_bwd_peak_gib']:.2f} GiB", flush=True)
    rows = []
    for name, done in runs.items():
        if not done:
            continue
        row = dict(done[0])
        for key in ("fwd", "fwd_bwd"):
            times = [r[f"{key}_ms"] for r in done]
            row[f"{key}_ms"] = statistics.median(times)
            row[f"{key}_rounds_ms"] = times
            row[f"{key}_floor_pct"] = floor_pct(batch, length, key == "fwd_bwd", bw,
                                                row[f"{key}_ms"])
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------- decode
def decode_inputs(batch: int) -> dict:
    g = torch.Generator(device="cuda").manual_seed(batch)
    rnd = lambda *shape: torch.randn(*shape, device="cuda", generator=g)  # noqa: E731
    return dict(state=rnd(batch, D_INNER, D_STATE), x=rnd(batch, D_INNER).to(BF16),
                dt=rnd(batch, D_INNER).to(BF16),
                A=-(torch.rand(D_INNER, D_STATE, device="cuda", generator=g) + 0.1),
                B=rnd(batch, D_STATE).to(BF16), C=rnd(batch, D_STATE).to(BF16),
                D=rnd(D_INNER), z=rnd(batch, D_INNER).to(BF16), dt_bias=rnd(D_INNER) * 0.3,
                dt_softplus=True)


def graph_step_us(step, steps: int = 16) -> float:
    """Median time of one call of `step`, from a CUDA graph of `steps` calls."""
    graph = capture_graphs({"steps": lambda: [step() for _ in range(steps)]}, "cuda")["steps"]
    return 1e3 * do_bench(graph.replay, warmup=25, rep=200, return_mode="median") / steps


def bench_decode(mamba: dict, batches=(1, 16, 128), rounds: int = 1) -> list[dict]:
    """Per batch, both steps back to back, `rounds` times (medians reported; every round's
    time kept in `rounds_us`): a ~2 us step drifts between graph timings."""
    rows = []
    for batch in batches:
        args = decode_inputs(batch)
        impls = {"bytessm triton": lambda: selective_state_update(**args, backend="triton")}
        if "state_update" in mamba:
            impls["mamba_ssm selective_state_update"] = lambda: mamba["state_update"](**args)
        times = {name: [] for name in impls}
        for _ in range(rounds):
            for name, step in impls.items():
                times[name].append(graph_step_us(step))
        rows += [{"impl": name, "batch": batch, "step_us": statistics.median(t),
                  "rounds_us": t} for name, t in times.items()]
    return rows


def tune_decode(mamba: dict, batches=(1, 16, 128), grid=None) -> list[dict]:
    """Sweep the state step's launch configuration (configs.DecodeConfig). Each configuration
    is timed right after mamba_ssm's step at the same batch, and compared by the ratio, since
    back-to-back graph timings of a ~2 us step drift by more than the configurations differ."""
    grid = grid or [(bd, w) for bd in (4, 8, 16, 32, 64) for w in (1, 2, 4)]
    rows = []
    for batch in batches:
        args = decode_inputs(batch)
        for block_d, warps in grid:
            if block_d * D_STATE < 32 * warps:
                continue
            os.environ["BYTESSM_DECODE_CONFIG"] = json.dumps(dict(block_d=block_d, warps=warps))
            theirs = graph_step_us(lambda: mamba["state_update"](**args)) \
                if "state_update" in mamba else float("nan")
            ours = graph_step_us(lambda: selective_state_update(**args, backend="triton"))
            rows.append(dict(batch=batch, block_d=block_d, warps=warps, ours_us=ours,
                             mamba_us=theirs, ratio=ours / theirs))
            print(f"[tune-decode] batch {batch} block_d {block_d} warps {warps}:"
                  f" ours {ours:.2f} us, mamba_ssm {theirs:.2f} us, ratio {ours / theirs:.3f}",
                  flush=True)
    os.environ.pop("BYTESSM_DECODE_CONFIG", None)
    return rows


def first_call_seconds() -> dict:
    """Wall time of the first forward and the first backward (Triton compiles here)."""
    args = scan_inputs(2, 4096, grad=True, seed=1)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = selective_scan(**args, backend="triton")
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    out.sum().backward()
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    return {"first_fwd_s": t1 - t0, "first_bwd_s": t2 - t1}


# ---------------------------------------------------------------------------- tuning
def tune(shapes, bw, grid: list[dict] | None = None):
    """Sweep launch configurations (configs.ScanConfig fields; a field left out keeps the
    tuned value); prints fwd and fwd+bwd per shape."""
    fields = ("chunk", "block_d", "warps", "block_d_bwd", "warps_bwd", "programs")
    grid = grid or [dict(zip(fields, v)) for v in (
        (256, 1, 1, 1, 1, 256), (256, 4, 4, 1, 1, 256), (128, 1, 1, 1, 1, 256),
        (512, 1, 2, 1, 2, 256), (256, 1, 1, 1, 1, 1024))]
    run = lambda a: selective_scan(**a, backend="triton")  # noqa: E731
    results = []
    for cfg in grid:
        os.environ["BYTESSM_SCAN_CONFIG"] = json.dumps(cfg)
        for batch, length in shapes:
            try:
                r = bench_shape("tune", scan_inputs, run, batch, length, bw)
            except Exception as e:  # out of resources etc.: skip the config
                print(f"[tune] {cfg} {batch}x{length}: {type(e).__name__}: {e}"[:300], flush=True)
                continue
            results.append({**cfg, **r})
            print(f"[tune] {cfg} {batch}x{length}: fwd {r['fwd_ms']:.3f} fwd+bwd {r['fwd_bwd_ms']:.3f}"
                  f" peak {r['fwd_bwd_peak_gib']:.2f} GiB", flush=True)
    os.environ.pop("BYTESSM_SCAN_CONFIG")
    return results


# ---------------------------------------------------------------------------- report
def markdown(meta, rows, decode, first) -> str:
    shapes = sorted({(r["batch"], r["length"]) for r in rows}, key=lambda s: s[0] * s[1])

    def label(b, n):  # 2×16K, 1×1M; lengths that are not whole K or M as they are
        return (f"{b}×{n >> 20}M" if n % 2**20 == 0 else f"{b}×{n >> 10}K" if n % 1024 == 0
                else f"{b}×{n}")
    head = "| kernel | pass | " + " | ".join(label(*s) for s in shapes) + " |\n"
    head += "|---|---|" + "---:|" * len(shapes) + "\n"
    lines = []
    for impl in dict.fromkeys(r["impl"] for r in rows):
        get = {(r["batch"], r["length"]): r for r in rows if r["impl"] == impl}
        for key, unit in (("fwd_ms", "fwd ms"), ("fwd_bwd_ms", "fwd+bwd ms"),
                          ("fwd_floor_pct", "fwd % of byte floor"),
                          ("fwd_bwd_floor_pct", "fwd+bwd % of byte floor"),
                          ("fwd_peak_gib", "fwd peak GiB"), ("fwd_bwd_peak_gib", "fwd+bwd peak GiB")):
            cells = [f"{get[s][key]:.3g}" if s in get else "—" for s in shapes]
            lines.append(f"| {impl} | {unit} | " + " | ".join(cells) + " |")
    text = ["# Selective scan benchmark\n",
            f"Device: {meta['device']}; torch {meta['torch']}, triton {meta['triton']}; "
            f"{meta['date']}.  ",
            f"Command: `{meta['command']}`  ",
            f"Copy bandwidth (read + write): {meta['copy_gbs']:.0f} GB/s. D={D_INNER}, N={D_STATE}, "
            "bf16 inputs, softplus, shared B/C; do_bench medians, L2 flushed; peak memory "
            "includes the inputs.\n", head + "\n".join(lines) + "\n"] if rows else [
            "# Decode step benchmark\n", f"Device: {meta['device']}; torch {meta['torch']}, "
            f"triton {meta['triton']}; {meta['date']}.  ", f"Command: `{meta['command']}`\n"]
    if decode:
        text.append("\nDecode step (µs per step, CUDA graph of 16 steps, D=1536, N=16):\n")
        text.append("| kernel | " + " | ".join(f"batch {b}" for b in sorted({d['batch'] for d in decode})) + " |")
        text.append("|---|" + "---:|" * len({d['batch'] for d in decode}))
        for impl in dict.fromkeys(d["impl"] for d in decode):
            text.append(f"| {impl} | " + " | ".join(f"{d['step_us']:.2f}" for d in decode
                                                    if d["impl"] == impl) + " |")
    if first:
        text.append(f"\nFirst call (compile included, 2×4K): forward {first['first_fwd_s']:.1f} s, "
                    f"backward {first['first_bwd_s']:.1f} s.\n")
    return "\n".join(text) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mamba-src", default=None)
    p.add_argument("--mamba-so", default=None)
    p.add_argument("--ssd", action="store_true", help="also time mamba_ssm's Triton SSD")
    p.add_argument("--shapes", default="8x2048,2x16384,1x131072,1x1048576")
    p.add_argument("--rounds", type=int, default=3,
                   help="time every implementation this many times per shape, alternating; "
                        "report the medians")
    p.add_argument("--no-decode", action="store_true")
    p.add_argument("--decode-only", action="store_true",
                   help="only the decode-step table (written as decode.md / decode.json)")
    p.add_argument("--tune", action="store_true", help="sweep configurations instead")
    p.add_argument("--tune-grid", default=None,
                   help='with --tune: a JSON list of ScanConfig overrides, e.g. \'[{}, {"maxnreg": 128}]\'; '
                        'with --tune-decode: [block_d, warps] pairs')
    p.add_argument("--tune-decode", action="store_true",
                   help="sweep the decode step's configuration instead")
    p.add_argument("--out", default=None, help="folder for scan.md / scan.json")
    a = p.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    first = first_call_seconds()
    print(f"[first call] {first}", flush=True)
    bw = copy_bandwidth()
    print(f"[copy] {bw / 1e9:.0f} GB/s", flush=True)
    if a.tune:
        res = tune(shapes, bw, json.loads(a.tune_grid) if a.tune_grid else None)
        if a.out:
            Path(a.out).mkdir(parents=True, exist_ok=True)
            Path(a.out, "tune.json").write_text(json.dumps(res, indent=1))
        return
    mamba = load_mamba(a.mamba_src, a.mamba_so)
    if a.tune_decode:
        res = tune_decode(mamba, grid=json.loads(a.tune_grid) if a.tune_grid else None)
        if a.out:
            Path(a.out).mkdir(parents=True, exist_ok=True)
            Path(a.out, "tune_decode.json").write_text(json.dumps(res, indent=1))
        return
    warm_up()
    rows = []
    for batch, length in [] if a.decode_only else shapes:
        rows += bench_rounds(scan_impls(mamba, a.ssd), batch, length, bw, a.rounds)
    decode = [] if a.no_decode else bench_decode(mamba, rounds=5 if a.decode_only else 1)
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                triton=triton.__version__, python=platform.python_version(),
                date=datetime.date.today().isoformat(), copy_gbs=bw / 1e9,
                command="python " + " ".join(sys.argv))
    text = markdown(meta, rows, decode, first)
    print(text)
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        name = "decode" if a.decode_only else "scan"
        Path(a.out, f"{name}.md").write_text(text)
        Path(a.out, f"{name}.json").write_text(json.dumps(
            dict(meta=meta, scan=rows, decode=decode, first_call=first), indent=1))


if __name__ == "__main__":
    main()
