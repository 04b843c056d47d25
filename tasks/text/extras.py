"""Evaluation extras of the MambaByte paper, for a trained text model of either pipeline.

    score(model, task, texts, window=W)   bits and bytes of byte strings, each read from BOS;
                                          with `window`, W symbols per forward and the
                                          recurrent state (Mamba) / KV cache (attention)
                                          carried across windows -- equal to one forward
                                          over the whole text (tested)
    length_extrapolation(...)             the same held-out bytes scored with contexts of
                                          f x base_bytes, f in factors (1, 4, 16)
    noise_robustness(...)                 bits per byte on drop / swap / case-flip noised
                                          held-out spans vs clean, per rate

From a checkpoint (either pipeline):

    python -m bytessm.tasks.text.extras RUN_DIR/checkpoints/last [--split test]
        [--factors 1 4 16] [--base-bytes N] [--rates 0.05 0.1] [--max-spans 64] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bytessm.io import atomic_write

from .datasets import IGNORE, held_out_spans
from .noise import KINDS, add_noise


@torch.no_grad()
def score(model: nn.Module, task, texts: list[bytes], *, batch_size: int = 8,
          device: str | torch.device = "cpu", window: int | None = None) -> dict[str, float]:
    """{"bits", "bytes", "tokens", "bits_per_byte"} over `texts`, each encoded on its own
    and predicted from BOS, every byte of every text covered exactly once."""
    codec, device = task.codec, torch.device(device)
    bits = nbytes = tokens = 0.0
    for lo in range(0, len(texts), batch_size):
        enc = [codec.encode(t) for t in texts[lo:lo + batch_size]]
        L = max(max(len(ids) for ids, _ in enc), 1)
        inp = torch.full((len(enc), L), codec.bos, dtype=torch.long)
        tgt = torch.full((len(enc), L), IGNORE, dtype=torch.long)
        for b, (ids, nb) in enumerate(enc):
            ids = torch.from_numpy(ids)
            inp[b, 1:len(ids)] = ids[:-1]
            tgt[b, :len(ids)] = ids
            nbytes += float(nb.sum())
        inp, tgt = inp.to(device), tgt.to(device)
        if window is None:
            logits = model(inp)                                              # (B, L, V)
        else:
            states = model.backbone.new_states(len(enc), device, max_len=L)
            pieces = []
            for w in range(0, L, window):
                out, states = model(inp[:, w:w + window], states=states, return_states=True)
                pieces.append(out)
            logits = torch.cat(pieces, dim=1)                                # (B, L, V)
        nll = F.cross_entropy(logits.float().flatten(0, 1), tgt.flatten(),
                              ignore_index=IGNORE, reduction="sum")
        bits += float(nll) / math.log(2)
        tokens += float((tgt != IGNORE).sum())
    return {"bits": bits, "bytes": nbytes, "tokens": tokens,
            "bits_per_byte": bits / max(nbytes, 1.0)}


def _texts(task, spans) -> list[bytes]:
    corpus = task.corpus()
    return [corpus.doc_bytes(d, lo, hi) for d, lo, hi in spans]


def length_extrapolation(model: nn.Module, task, *, split: str = "test",
                         factors=(1, 4, 16), base_bytes: int | None = None,
                         window: int | None = None, max_spans: int | None = 16,
                         batch_size: int = 4, device="cpu") -> list[dict]:
    """Bits per byte of the same held-out bytes read in contexts of f x base_bytes.

    Held-out text is cut into spans of max(factors) x base_bytes (whole spans only); at
    factor f each span is read as consecutive f x base_bytes pieces, each from BOS and a
    zero state, in windows of `window` symbols (default trainer.seq_len) carrying the state.
    base_bytes defaults to task.eval_bytes (set it to the training context in bytes)."""
    base = int(base_bytes or task.eval_bytes)
    window = int(window or task.cfg.trainer.seq_len)
    longest = max(factors) * base
    spans = [s for s in held_out_spans(task.corpus(), split, longest, None)
             if s[2] - s[1] == longest][:max_spans]
    if not spans:
        raise ValueError(f"no {split} document has {longest} bytes for factor {max(factors)} "
                         f"x {base}; use smaller factors or base_bytes")
    texts = _texts(task, spans)
    rows = []
    for f in factors:
        size = f * base
        pieces = [t[k:k + size] for t in texts for k in range(0, len(t), size)]
        r = score(model, task, pieces, batch_size=batch_size, device=device, window=window)
        rows.append({"factor": f, "context_bytes": size, "spans": len(spans), **r})
    return rows


def noise_robustness(model: nn.Module, task, *, split: str = "test", kinds=KINDS,
                     rates=(0.05, 0.1), seed: int = 0, max_spans: int | None = 64,
                     batch_size: int = 8, device="cpu") -> list[dict]:
    """Clean vs noised bits per byte on task.eval_bytes held-out spans; the noise is
    seeded by (seed, kind, rate) alone, so both pipelines read identical noised bytes."""
    spans = held_out_spans(task.corpus(), split, task.eval_bytes, max_spans)
    texts = _texts(task, spans)
    clean = score(model, task, texts, batch_size=batch_size, device=device)["bits_per_byte"]
    rows = []
    for kind in kinds:
        for rate in rates:
            rng = np.random.default_rng([seed, KINDS.index(kind), int(round(rate * 1e6))])
            noised = [add_noise(t, kind, rate, rng) for t in texts]
            r = score(model, task, noised, batch_size=batch_size, device=device)
            rows.append({"kind": kind, "rate": rate, "clean_bpb": clean,
                         "noisy_bpb": r["bits_per_byte"],
                         "increase": r["bits_per_byte"] - clean,
                         "increase_pct": 100 * (r["bits_per_byte"] / clean - 1)})
    return rows


def markdown(rows: list[dict], keys: list[str]) -> str:
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from bytessm.train.checkpoint import load_for_inference

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--split", default="test", choices=("valid", "test"))
    p.add_argument("--factors", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--base-bytes", type=int, default=None)
    p.add_argument("--rates", type=float, nargs="+", default=[0.05, 0.1])
    p.add_argument("--max-spans", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    _, task, model = load_for_inference(a.checkpoint, a.device)
    model.float()
    ext = length_extrapolation(model, task, split=a.split, factors=a.factors,
                               base_bytes=a.base_bytes, max_spans=a.max_spans,
                               batch_size=a.batch_size, device=a.device)
    noise = noise_robustness(model, task, split=a.split, rates=a.rates, max_spans=a.max_spans,
                             batch_size=a.batch_size, device=a.device)
    print(markdown(ext, ["factor", "context_bytes", "spans", "bits_per_byte"]))
    print()
    print(markdown(noise, ["kind", "rate", "clean_bpb", "noisy_bpb", "increase", "increase_pct"]))
    result = {"checkpoint": a.checkpoint, "tokenizer": task.kind, "extrapolation": ext,
              "noise": noise}
    if a.json:
        atomic_write(a.json, json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
