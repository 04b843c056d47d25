"""Decode throughput and memory: a ~350M Mamba (MambaByte-353M shape) against a Transformer
of the same parameter count, generating `--new` symbols after prompts of 2K, 16K and 128K
at batch 1, 16 and 128. Same harness for both: `bytessm.generation.Decoder` (static
buffers, the decode step captured in a CUDA graph), bf16 weights, Transformer = core
Backbone with every layer attention + SwiGLU MLP, SDPA over a preallocated KV cache.

    PYTHONPATH=. python scripts/bench_generate.py --out results/bench_generate   # one H200, < 6 min
    PYTHONPATH=. python scripts/bench_generate.py --smoke --out /tmp/bench_gen   # CPU, tiny, ~5 s
    ... --smoke --compile on   # CPU, also through the compiled block step (~30 s)

On CUDA every decode step is a CUDA graph of the torch.compile'd block steps (compiled in
the capture's warm-up, once per block structure and shape; `--compile off` graphs the eager
step). The step's matrix-vector products run on the Triton GEMV at batch <= 16
(`bytessm.nn.decode`); `--decode-gemv off` runs them on F.linear (cuBLAS) for comparison.
There the step's kernels are captured with programmatic dependent launch (`--pdl off`
compares without it; `kernels/triton/pdl.py`). `--fused-stack auto` steps the Mamba's
whole stack of blocks as one persistent kernel at batch 1 (`bytessm.nn.stack`,
experimental and slower so far; no compiled block step then).
Order: the Mamba cases, the Transformer cases (each started only while the run is
under `--budget-s`), then the speculative rows (batch 1, prompt 2K, 512 new symbols,
greedy; the model as its own drafter and a small random Mamba; warm, capture excluded).
A case that fails with the compiled step is retried without it (the JSON row keeps the
error); out of memory is a skipped row.

The batch's sequences share one prompt (`bytessm generate num_samples=B`): the prompt is
prefilled once at batch 1 and its state copied to every row. Decode cost depends on the
state's shape, not its values, so a prompt longer than the model's `--prefill-limit`
(default: everything, but 4K for Mamba when the Triton scan is not installed and the
chunked reference scan would take minutes) starts from a random state of the right shape;
the `prefill` column says which. Transformer cases whose KV cache does not fit in GPU
memory are skipped and say how much they would need. Prints a Markdown table; writes
bench_generate.{md,json} into --out.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback

import torch
import torch._dynamo

import bytessm.nn.decode as decode
from bytessm.backbone import Backbone, SequenceModel
from bytessm.generation import Decoder, cast_for_inference, prefill, state_bytes, _load_rows
from bytessm.nn.attention import StaticKVCache
from bytessm.nn.heads import LMHead
from bytessm.nn.mamba import MambaState
from bytessm.sampling import SamplingParams
from bytessm.speculative import SpeculativeDecoder
from bytessm.io import write_report

GIB = 2**30
VOCAB = 256


def triton_available() -> bool:
    try:
        from bytessm.kernels.triton import (  # noqa: F401
            causal_conv1d_update_triton, selective_scan_triton, selective_state_update_triton)
        return True
    except ImportError:
        return False


def build(kind: str, *, d_model: int, n_layer: int, heads: int, mlp_ratio: float,
          scan_backend: str) -> SequenceModel:
    attn = dict(attn_layers="all", attn_heads=heads, attn_mlp_ratio=mlp_ratio) \
        if kind == "transformer" else {}
    backbone = Backbone(d_model=d_model, n_layer=n_layer, vocab_size=VOCAB,
                        scan_backend=scan_backend, **attn)
    return SequenceModel(backbone, LMHead(d_model, VOCAB)).eval()


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_transformer_layers(mamba_params: int, d_model: int, mlp_ratio: float) -> int:
    """Transformer depth whose parameter count is closest to the Mamba's."""
    per_layer = 4 * d_model**2 + 3 * int(mlp_ratio * d_model) * d_model + 2 * d_model
    fixed = 2 * VOCAB * d_model + d_model
    return max(1, round((mamba_params - fixed) / per_layer))


def _random_state(decoder: Decoder, prompt: int, gen: torch.Generator) -> None:
    """The state after a `prompt`-symbol prefill, with random values (shape is all a decode
    step's cost depends on)."""
    for s in decoder.states:
        if isinstance(s, MambaState):
            s.conv.normal_(generator=gen).mul_(0.1)
            s.ssm.normal_(generator=gen).mul_(0.1)
        else:
            s.k[:, :, : prompt - 1].normal_(generator=gen)
            s.v[:, :, : prompt - 1].normal_(generator=gen)
            s.pos.fill_(prompt - 1)
    decoder.tok.random_(0, VOCAB, generator=gen)
    decoder.index.zero_()
    decoder.done.zero_()
    decoder.limit.fill_(decoder.max_new)


def kv_bytes(model, batch: int, length: int, dtype_bytes: int) -> int:
    b = model.backbone
    n_attn = sum(1 for blk in b.blocks if hasattr(blk.mixer, "qkv"))
    return 2 * n_attn * batch * length * b.d_model * dtype_bytes


def bench_case(model, *, prompt: int, batch: int, new: int, device, cuda_graph: bool,
               compile_step: bool, prefill_limit: int, gen: torch.Generator,
               pdl: bool = True) -> dict:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    decoder = Decoder(model, batch=batch, max_len=prompt - 1 + new, max_new=new,
                      params=SamplingParams(temperature=0), device=device, cuda_graph=cuda_graph,
                      compile_step=compile_step, programmatic_launch=None if pdl else False)
    row = {"prompt": prompt, "batch": batch, "new": new}
    t0 = time.perf_counter()
    if prompt <= prefill_limit:
        ctx = torch.randint(0, VOCAB, (1, prompt - 1), generator=gen, device=gen.device).to(device)
        _load_rows(decoder.states, prefill(model, ctx), torch.arange(batch, device=device))
        decoder.tok.fill_(1)
        decoder.index.zero_()
        decoder.limit.fill_(new)
        row["prefill"] = "real"
    else:
        _random_state(decoder, prompt, gen)
        row["prefill"] = "synthetic"
    sync()
    row["prefill_s"] = time.perf_counter() - t0 if row["prefill"] == "real" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_capture = time.perf_counter()
    if cuda_graph:
        decoder.capture()                         # compiles the block step first (once per shape)
    decoder.run(check_every=10**9, max_steps=16)  # warm: allocator, clocks
    sync()
    row["capture_s"] = time.perf_counter() - t_capture
    decoder.index.zero_()
    decoder.done.zero_()
    for s in decoder.states:  # rewind the KV position to the prompt's end
        if isinstance(s, StaticKVCache):
            s.pos.fill_(prompt - 1)
    sync()
    t1 = time.perf_counter()
    steps = decoder.run(check_every=10**9)
    sync()
    dt = time.perf_counter() - t1
    row.update(status="ok", fused_stack=decoder.stack is not None, decode_s=dt, steps=steps, ms_per_step=1e3 * dt / steps,
               tokens_per_s=batch * steps / dt, state_gib=state_bytes(decoder.states) / GIB,
               peak_decode_gib=(torch.cuda.max_memory_allocated() / GIB
                                if device.type == "cuda" else None))
    del decoder
    return row


def run(a) -> dict:
    t_start = time.perf_counter()
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if a.device == "auto" else a.device))
    cuda = device.type == "cuda"
    compile_step = cuda if a.compile is None else a.compile
    backend = "triton" if cuda and triton_available() else "reference"
    dtype = torch.bfloat16 if cuda else torch.float32
    d, n_mamba, heads, mlp = (32, 2, 4, 8 / 3) if a.smoke else (1024, 53, 16, 8 / 3)
    torch.manual_seed(0)
    mamba = build("mamba", d_model=d, n_layer=n_mamba, heads=heads, mlp_ratio=mlp,
                  scan_backend=backend)
    n_tf = matched_transformer_layers(n_params(mamba), d, mlp)
    transformer = build("transformer", d_model=d, n_layer=n_tf, heads=heads, mlp_ratio=mlp,
                        scan_backend=backend)
    models = {"mamba": mamba, "transformer": transformer}
    info = {name: {"params": n_params(m), "n_layer": m.backbone.n_layer, "d_model": d}
            for name, m in models.items()}
    limits = {"mamba": a.prefill_limit or (10**9 if backend == "triton" or not cuda else 4096),
              "transformer": a.prefill_limit or 10**9}
    total_mem = torch.cuda.get_device_properties(device).total_memory if cuda else None
    gen = torch.Generator(device=device).manual_seed(0)
    rows, spec = [], []
    for name, model in models.items():
        model = cast_for_inference(model.to(device), dtype)
        for prompt in a.prompts:
            for batch in a.batches:
                base = {"model": name, **info[name], "prompt": prompt, "batch": batch,
                        "new": a.new}
                need = kv_bytes(model, batch, prompt + a.new, dtype.itemsize)
                if total_mem and need > 0.8 * total_mem - 2 * n_params(model) * dtype.itemsize:
                    rows.append({**base, "status": f"skipped: KV cache needs {need / GIB:.0f} GiB"})
                elif time.perf_counter() - t_start > a.budget_s:
                    rows.append({**base, "status": "skipped: time budget spent"})
                else:
                    rows.append({**base, **guarded(
                        lambda compile_step: bench_case(
                            model, prompt=prompt, batch=batch, new=a.new, device=device,
                            cuda_graph=cuda, compile_step=compile_step,
                            prefill_limit=limits[name], gen=gen, pdl=a.pdl), compile_step)})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        models[name] = model.cpu() if cuda else model
        if cuda:
            torch.cuda.empty_cache()
    if a.speculative and time.perf_counter() - t_start > a.budget_s + 30:
        spec = [{"status": "skipped: time budget spent"}]
    elif a.speculative:  # ~15 s on an H200 (the block step is already compiled for batch 1)
        spec = guarded(lambda compile_step: {"rows": speculative_rows(
            models["mamba"].to(device), a, device, backend, dtype, compile_step)}, compile_step)
        spec = spec.get("rows", [spec])
    return {"meta": {"torch": torch.__version__, "python": platform.python_version(),
                     "device": torch.cuda.get_device_name(device) if cuda else "cpu",
                     "scan_backend": backend, "dtype": str(dtype), "models": info,
                     "compiled_step": compile_step, "decode_gemv": decode.DECODE_GEMV,
                     "programmatic_launch": "auto" if a.pdl else "off",
                     "decode_stack": decode.DECODE_STACK,
                     "command": " ".join(sys.argv), "wall_s": time.perf_counter() - t_start,
                     "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")},
            "results": rows, "speculative": spec}


def guarded(fn, compile_step: bool) -> dict:
    """fn(compile_step) -> row; out of memory -> a skipped row; any other error with the
    compiled step -> one retry with the eager step (the row says why), else an error row.
    One failing case must not cost the whole GPU run."""
    try:
        return fn(compile_step)
    except torch.OutOfMemoryError:
        return {"status": "skipped: out of memory"}
    except Exception as e:  # noqa: BLE001 -- reported in the row and on stderr
        traceback.print_exc()
        error = f"{type(e).__name__}: {str(e)[:300]}"
        if not compile_step:
            return {"status": f"error: {error}"}
        torch._dynamo.reset()
        row = guarded(fn, False)
        row["compile_error"] = error
        return row


def speculative_rows(target, a, device, backend, dtype, compile_step: bool) -> list[dict]:
    """Greedy speculative decoding at batch 1 against plain decoding of the same symbols
    (both warm: compilation and graph capture excluded, prefill included). With random
    weights a separate drafter is almost never right, so two bounds: the drafter is the
    model itself (every draft accepted: the verification path's best case, costing k+1
    target steps and one verification per k+1 symbols) and a small random Mamba (nearly
    nothing accepted: its worst case)."""
    from bytessm.generation import generate

    small = cast_for_inference(build("mamba", d_model=max(target.backbone.d_model // 4, 16),
                                     n_layer=2, heads=4, mlp_ratio=0, scan_backend=backend)
                               .to(device), dtype)
    prompt = torch.randint(0, VOCAB, (min(a.prompts),)).tolist()
    new = min(a.new, 512)
    params = SamplingParams(temperature=0)
    graphs = device.type == "cuda"
    kw = dict(params=params, cuda_graph=graphs, compile_step=compile_step)
    generate(target, [prompt], max_new=8, **kw)                                   # warm
    plain = generate(target, [prompt], max_new=new, **kw)
    plain_s = plain.stats["prefill_s"] + plain.stats["decode_s"]
    out = []
    for label, drafter in (("self (upper bound)", target), ("small random (lower bound)", small)):
        spec = SpeculativeDecoder(target, drafter, k=a.draft_k, params=params,
                                  max_len=len(prompt) + new + 2 * (a.draft_k + 1),
                                  cuda_graph=graphs, compile_step=compile_step)
        spec.generate(prompt, max_new=min(8, new))                                # capture
        symbols, _, st = spec.generate(prompt, max_new=new)
        out.append({"drafter": label, "k": a.draft_k, "prompt": len(prompt), "new": new,
                    "same_as_greedy": symbols == plain.samples[0],
                    "first_difference": next((i for i, (x, y) in enumerate(
                        zip(symbols, plain.samples[0])) if x != y), None),
                    **st.as_dict(), "plain_s": plain_s,
                    "plain_symbols_per_s": new / plain_s, "speedup": plain_s / st.seconds,
                    "decode_speedup": plain.stats["decode_s"] / (st.seconds - st.prefill_s)})
        print(json.dumps(out[-1]), file=sys.stderr, flush=True)
        del spec
    return out


def _k(n: int) -> str:
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


def markdown(report: dict) -> str:
    m = report["meta"]
    lines = [f"Decode: {report['results'][0]['new'] if report['results'] else '?'} new symbols; "
             f"{m['device']}, {m['dtype']}, scan backend {m['scan_backend']}; "
             + ", ".join(f"{k} {v['params'] / 1e6:.0f}M params ({v['n_layer']} layers)"
                         for k, v in m["models"].items()), "",
             "| model | prompt | batch | tokens/s | ms/step | state GiB | peak GiB | prefill |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        if r["status"] != "ok":
            lines.append(f"| {r['model']} | {_k(r['prompt'])} | {r['batch']} | {r['status']} "
                         f"| | | | |")
            continue
        peak = "" if r["peak_decode_gib"] is None else f"{r['peak_decode_gib']:.2f}"
        pre = r["prefill"] + ("" if r["prefill_s"] is None else f" {r['prefill_s']:.1f}s")
        name = r["model"] + (" (fused stack)" if r.get("fused_stack") else "")
        lines.append(f"| {name} | {_k(r['prompt'])} | {r['batch']} | {r['tokens_per_s']:,.0f} "
                     f"| {r['ms_per_step']:.2f} | {r['state_gib']:.3f} | {peak} | {pre} |")
    ok = {(r["model"], r["prompt"], r["batch"]): r["tokens_per_s"]
          for r in report["results"] if r["status"] == "ok"}
    ratios = [(p, b, v / ok[("transformer", p, b)]) for (mod, p, b), v in ok.items()
              if mod == "mamba" and ("transformer", p, b) in ok]
    if ratios:
        lines += ["", "| prompt | batch | Mamba / Transformer tokens/s |", "|---|---|---|"]
        lines += [f"| {_k(p)} | {b} | {x:.1f}x |" for p, b, x in ratios]
    if report["speculative"]:
        lines += ["", "Speculative decoding, greedy, batch 1 (prefill included, capture excluded):", "",
                  "| drafter | k | mean accepted | symbols/s | plain symbols/s | speedup vs plain "
                  "| decode-only speedup | == greedy (first difference) |",
                  "|---|---|---|---|---|---|---|---|"]
        for s in report["speculative"]:
            if "drafter" not in s:
                lines.append(f"| {s.get('status', '?')} | | | | | | | |")
                continue
            diff = "" if s["first_difference"] is None else f" ({s['first_difference']})"
            lines.append(f"| {s['drafter']} | {s['k']} | {s['mean_accepted']:.2f} | "
                         f"{s['symbols_per_s']:,.0f} | {s['plain_symbols_per_s']:,.0f} | "
                         f"{s['speedup']:.2f}x | {s['decode_speedup']:.2f}x | "
                         f"{s['same_as_greedy']}{diff} |")
    lines += ["", f"Wall time of the whole run: {m['wall_s']:.0f} s; compiled block step: "
              f"{m['compiled_step']}; decode GEMV: {m.get('decode_gemv', 'auto')}; programmatic "
              f"launch: {m.get('programmatic_launch', 'off')}; fused Mamba stack: "
              f"{m.get('decode_stack', 'off')}."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/bench_generate")
    p.add_argument("--smoke", action="store_true", help="tiny models, short prompts, CPU")
    p.add_argument("--device", default="auto")
    p.add_argument("--prompts", type=int, nargs="+")
    p.add_argument("--batches", type=int, nargs="+")
    p.add_argument("--new", type=int)
    p.add_argument("--prefill-limit", type=int, default=0,
                   help="longer prompts start from a random state (0: the default rule)")
    p.add_argument("--budget-s", type=float, default=300.0,
                   help="no decode case starts after this many seconds of the run (the longest "
                        "case takes ~30 s on an H200: the whole run stays under 6 min)")
    p.add_argument("--draft-k", type=int, default=4)
    p.add_argument("--no-speculative", dest="speculative", action="store_false")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="torch.compile the block step (auto: on CUDA; off: CUDA graphs of the "
                        "eager step; on: also on a CPU, which checks the compiled path)")
    p.add_argument("--decode-gemv", choices=["auto", "off"], default=decode.DECODE_GEMV,
                   help="the decode step's products on the Triton GEMV (auto: CUDA, batch <= "
                        "16) or on F.linear (off); bytessm.nn.decode")
    p.add_argument("--pdl", choices=["auto", "off"], default="auto",
                   help="programmatic dependent launch in the captured step (Hopper+; "
                        "kernels/triton/pdl.py): auto is the Decoder's default (batch <= 16)")
    p.add_argument("--fused-stack", choices=["auto", "off"], default=decode.DECODE_STACK,
                   help="step a Mamba stack as one kernel at batch 1 (auto, CUDA; "
                        "experimental) or each block on its own kernels (off, the default); "
                        "bytessm.nn.stack")
    a = p.parse_args(argv)
    decode.DECODE_GEMV = a.decode_gemv
    decode.DECODE_STACK = a.fused_stack
    a.pdl = a.pdl == "auto"
    a.compile = {"on": True, "off": False}.get(a.compile)
    if a.smoke and a.device == "auto":
        a.device = "cpu"
    a.prompts = a.prompts or ([8, 64] if a.smoke else [2048, 16384, 131072])
    a.batches = a.batches or ([1, 3] if a.smoke else [1, 16, 128])
    a.new = a.new or (16 if a.smoke else 1024)
    report = run(a)
    write_report(a.out, "bench_generate", markdown(report), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
