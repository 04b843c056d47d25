"""Synthetic long-range tasks, generated on the fly and deterministic in the sample index.

Symbols: 0 = blank/noise-free filler, 1 = marker (recall / trigger / query separator),
2 .. 2+vocab-1 = content tokens. Targets are -100 (ignored) except at answer positions.

- selective copying (Gu & Dao 2023, §4.1.1): `n_memorize` content tokens scattered at random
  positions of a blank context; then `n_memorize` markers, at which the tokens must be
  output in order. The model has to select what to keep, not just shift.
- induction heads (Olsson et al. 2022; Mamba §4.1.2): random content; somewhere a marker is
  followed by a key token; the sequence ends with the marker, and the answer is the key.
  Evaluated at any length (the Mamba paper extrapolates to 2^20).
- multi-query associative recall (Arora et al. 2023, "Zoology"): `n_pairs` key-value pairs
  up front, then queries of those keys scattered in filler; at each query the answer is
  its value. Keys and values come from disjoint halves of the content vocabulary.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from bytessm.task import IGNORE, ConfigError, index_generator

BLANK, MARKER, FIRST = 0, 1, 2

KINDS = ("selective_copying", "induction_heads", "mqar")


# Each generator draws its random numbers from torch (the same calls, in the same order, as
# before: a sample is the same function of its index) and assembles the sample in numpy,
# where a small array operation costs about a microsecond against torch's five: 44 against
# 64 us a sample for MQAR, 20 against 31 for induction heads, 28 against 52 for selective
# copying (one core of this project's CPU machine). A graphed training step
# (trainer.cuda_graph) at a large batch waits for them.

def selective_copying(g: torch.Generator, *, length: int, vocab: int, n_memorize: int, **_):
    context = length - n_memorize
    if context < n_memorize:
        raise ConfigError(f"selective copying needs seq_len >= 2*n_memorize={2 * n_memorize}, "
                          f"got {length}")
    tokens = torch.randint(FIRST, FIRST + vocab, (n_memorize,), generator=g).numpy()
    pos = np.sort(torch.randperm(context, generator=g)[:n_memorize].numpy())
    inp = np.full(length, BLANK, dtype=np.int64)
    inp[pos] = tokens
    inp[context:] = MARKER
    tgt = np.full(length, IGNORE, dtype=np.int64)
    tgt[context:] = tokens
    return torch.from_numpy(inp), torch.from_numpy(tgt)


def induction_heads(g: torch.Generator, *, length: int, vocab: int, **_):
    if length < 4:
        raise ConfigError(f"induction heads needs seq_len >= 4, got {length}")
    inp = torch.randint(FIRST, FIRST + vocab, (length,), generator=g).numpy()
    p = int(torch.randint(0, length - 3, (1,), generator=g))
    key = inp[p + 1]
    inp[p] = MARKER
    inp[-1] = MARKER
    tgt = np.full(length, IGNORE, dtype=np.int64)
    tgt[-1] = key
    return torch.from_numpy(inp), torch.from_numpy(tgt)


def mqar(g: torch.Generator, *, length: int, vocab: int, n_pairs: int, **_):
    half = vocab // 2
    if n_pairs > half:
        raise ConfigError(f"mqar needs task.n_pairs <= vocab/2={half}, got {n_pairs}")
    if length < 4 * n_pairs:
        raise ConfigError(f"mqar needs seq_len >= 4*n_pairs={4 * n_pairs}, got {length}")
    keys = FIRST + torch.randperm(half, generator=g)[:n_pairs].numpy()
    values = FIRST + half + torch.randint(0, vocab - half, (n_pairs,), generator=g).numpy()
    inp = np.full(length, BLANK, dtype=np.int64)
    inp[0 : 2 * n_pairs : 2] = keys
    inp[1 : 2 * n_pairs : 2] = values
    tgt = np.full(length, IGNORE, dtype=np.int64)
    # queries at distinct random positions after the pairs; each asks one key again
    slots = 2 * n_pairs + torch.randperm(length - 2 * n_pairs, generator=g)[:n_pairs].numpy()
    order = torch.randperm(n_pairs, generator=g).numpy()
    inp[slots] = keys[order]
    tgt[slots] = values[order]
    return torch.from_numpy(inp), torch.from_numpy(tgt)


GENERATORS = {"selective_copying": selective_copying, "induction_heads": induction_heads,
              "mqar": mqar}


class SyntheticDataset(Dataset):
    """`size` samples of one kind at `length`; sample i is generated from (seed, split, i)."""

    def __init__(self, *, kind: str, length: int, size: int, seed: int, split: str,
                 vocab: int, n_memorize: int = 16, n_pairs: int = 8):
        if kind not in GENERATORS:
            raise ConfigError(f"task.kind must be one of {KINDS}, got {kind!r}")
        if length <= 0:
            raise ConfigError(f"trainer.seq_len must be positive, got {length}")
        if not 2 <= vocab <= 254:
            raise ConfigError(f"task.vocab must be in [2, 254], got {vocab}")
        self.kind, self.length, self.size, self.seed, self.split = kind, length, size, seed, split
        self.kw = dict(vocab=vocab, n_memorize=n_memorize, n_pairs=n_pairs)
        self[0]  # validate the settings now, not in the first batch

    def set_seq_len(self, n: int) -> None:
        self.length = n

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        g = index_generator(self.seed, i, salt=f"{self.kind}/{self.split}")
        inp, tgt = GENERATORS[self.kind](g, length=self.length, **self.kw)
        return {"input": inp, "target": tgt}
