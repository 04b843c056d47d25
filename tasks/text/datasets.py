"""Training windows and held-out spans, for both pipelines.

Every sample is a dict of (L,) int64 tensors:
    input   [BOS, s_0, ..., s_{L-2}]  the model reads a BOS and then the symbols
    target  [s_0, ..., s_{L-1}]       every symbol is predicted, the first one from BOS alone
    nbytes  bytes each target symbol covers (1 per byte; a BPE token's length; 0 on padding)
Padding has target IGNORE (-100).

Training (`TrainWindows`): sample i is a random window of L = seq_len symbols inside one
document, drawn from a generator seeded by (seed, i): the document with probability
proportional to its number of window positions, then the position. Symbols are bytes (the
corpus cache) or the training split's BPE tokens (the tokenizer cache); both memory-mapped.

Held-out (`EvalSpans`): each valid/test document is cut into consecutive spans of
`span_bytes` BYTES (the last one shorter), so every held-out byte is in exactly one span.
The spans depend on the corpus, the split and span_bytes only -- not on the tokenizer --
and are ordered by a fixed permutation (capped at `max_spans`), so a capped evaluation is a
uniform sample and both pipelines score exactly the same bytes. Each span is encoded on its
own (a BPE span is the tokenization of those bytes), so it starts from BOS in both.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch.utils.data import Dataset

from bytessm.task import IGNORE, DataError, index_generator

from .corpus import Corpus

VIRTUAL_SIZE = 2**40   # training windows are drawn on the fly: index i -> one window
SPAN_ORDER_SEED = 20240521


def pack(ids: np.ndarray, nbytes: np.ndarray, *, bos: int, length: int) -> dict[str, torch.Tensor]:
    """Encoded symbols -> the sample dict, padded to `length` (>= len(ids))."""
    n = len(ids)
    inp = np.full(length, bos, dtype=np.int64)
    tgt = np.full(length, IGNORE, dtype=np.int64)
    nb = np.zeros(length, dtype=np.int64)
    inp[1:n] = ids[:n - 1]
    tgt[:n] = ids
    nb[:n] = nbytes
    return {"input": torch.from_numpy(inp), "target": torch.from_numpy(tgt),
            "nbytes": torch.from_numpy(nb)}


class MappedArray:
    """A memory-mapped file as a callable returning the map, opened on first use per process."""

    def __init__(self, path, dtype):
        self.path, self.dtype, self._map = str(path), np.dtype(dtype), None

    def __getstate__(self):
        return {**self.__dict__, "_map": None}

    def __call__(self) -> np.ndarray:
        if self._map is None:
            self._map = np.memmap(self.path, dtype=self.dtype, mode="r")
        return self._map


class TrainWindows(Dataset):
    """Random windows of `seq_len` symbols within documents (module docstring)."""

    def __init__(self, *, symbols, starts, lengths, seq_len: int, bos: int,
                 nbytes_table: np.ndarray | None, seed: int, what: str):
        # `symbols()` returns the (memory-mapped) symbol array; a callable so DataLoader
        # workers reopen the map instead of receiving a pickled copy of it. Document k is
        # symbols()[starts[k]:starts[k] + lengths[k]].
        self.symbols = symbols
        self.starts = np.asarray(starts, dtype=np.int64)                     # (N,)
        self.lengths = np.asarray(lengths, dtype=np.int64)                   # (N,)
        self.bos, self.nbytes_table, self.seed, self.what = bos, nbytes_table, seed, what
        self.set_seq_len(seq_len)

    def set_seq_len(self, n: int) -> None:
        lengths = self.lengths
        positions = np.maximum(lengths - n + 1, 0)
        if positions.sum() == 0:
            raise DataError(
                f"no training document is long enough for a window of {n} symbols: the "
                f"{len(lengths)} training documents have at most {int(lengths.max(initial=0))} "
                f"{self.what}; lower trainer.seq_len or add longer documents")
        self.seq_len = n
        self.cum = np.cumsum(positions)                                      # (N,)

    def __len__(self) -> int:
        return VIRTUAL_SIZE

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = index_generator(self.seed, int(i), "text-train")
        r = int(torch.randint(int(self.cum[-1]), (1,), generator=g))
        doc = int(np.searchsorted(self.cum, r, side="right"))
        start = r - (int(self.cum[doc - 1]) if doc else 0)
        lo = int(self.starts[doc]) + start
        ids = np.asarray(self.symbols()[lo:lo + self.seq_len], dtype=np.int64)
        nbytes = np.ones_like(ids) if self.nbytes_table is None else self.nbytes_table[ids]
        return pack(ids, nbytes, bos=self.bos, length=self.seq_len)


def held_out_spans(corpus: Corpus, split: str, span_bytes: int,
                   max_spans: int | None) -> list[tuple[int, int, int]]:
    """(doc, start, end) byte spans of a split, in the fixed evaluation order, capped."""
    spans = [(d, lo, min(lo + span_bytes, corpus.doc_len(d)))
             for d in corpus.doc_ids(split) for lo in range(0, corpus.doc_len(d), span_bytes)]
    if not spans:
        raise DataError(
            f"task.data.path={corpus.spec!r}: the {split} split has no text ({len(corpus)} "
            f"documents, split by a hash of each file's name with task.split_fractions="
            f"{list(corpus.fractions)}); add documents or raise the {split} fraction")
    order = np.random.default_rng(SPAN_ORDER_SEED).permutation(len(spans))
    if max_spans is not None:
        order = order[:max_spans]
    return [spans[k] for k in order]


class EvalSpans(Dataset):
    """The held-out spans of a split, encoded by `codec` (module docstring)."""

    def __init__(self, *, corpus: Corpus, split: str, span_bytes: int, max_spans: int | None,
                 codec, log=None):
        self.spans = held_out_spans(corpus, split, span_bytes, max_spans)
        texts = [corpus.doc_bytes(d, lo, hi) for d, lo, hi in self.spans]
        self.encoded = codec.encode_batch(texts) if hasattr(codec, "encode_batch") \
            else [codec.encode(t) for t in texts]
        self.bos = codec.bos
        self.length = max(len(ids) for ids, _ in self.encoded)
        self.total_bytes = sum(len(t) for t in texts)
        h = hashlib.sha256()
        for t in texts:
            h.update(len(t).to_bytes(8, "little") + t)
        self.fingerprint = h.hexdigest()[:16]   # equal in both pipelines: same bytes scored
        bad = sum(1 for t in texts if not _is_utf8(t))
        if bad and log is not None and codec.name == "bpe":
            log(f"[bytessm] text: {bad} of {len(texts)} {split} spans are not valid UTF-8 (binary "
                f"data, or a span edge cutting a character): their invalid bytes are scored as "
                f"single-byte BPE tokens")

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids, nbytes = self.encoded[i]
        return pack(ids, nbytes, bos=self.bos, length=self.length)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False
