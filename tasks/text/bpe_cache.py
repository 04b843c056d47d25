"""The BPE tokenizer of a corpus, trained on its training split and cached beside the data.

    <cache_dir>/bpe-<vocab_size>/tokenizer.json    the HF tokenizer
    <cache_dir>/bpe-<vocab_size>/train-tokens.bin  the training split, tokenized (uint16/32)
    <cache_dir>/bpe-<vocab_size>/train-docs.npy    token offsets of its documents (N+1,)
    <cache_dir>/bpe-<vocab_size>/meta.json         the key it was built for; written last

The key hashes the training split (document names and content digests), the settings
(vocab_size, min_frequency, max_train_bytes), the `tokenizers` version and this format's
version. A cache whose meta.json names another key, or whose tokenizer.json does not hash
to what meta.json recorded, is rebuilt (and said so), never reused. meta.json is removed
before a rebuild and written after every other file is in place.

Training reads at most `max_train_bytes` of training text: whole documents, in the order
of a hash of their names (a deterministic sample of the split). The training split is then
tokenized document by document in pieces of about 64 KiB cut after a newline, so no
document is ever held whole.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tokenizers
from tokenizers import Tokenizer

from bytessm.io import atomic_open, atomic_write

from .codecs import BPECodec, bpe_trainer, new_bpe_tokenizer, utf8_pieces
from .corpus import Corpus

FORMAT_VERSION = 1
PIECE_BYTES = 1 << 16


@dataclass
class BPEBundle:
    codec: BPECodec
    folder: Path
    train_tokens: Path           # (T,) token ids, raw, of dtype `dtype`
    dtype: np.dtype
    train_docs: np.ndarray       # (N+1,) token offsets, one row per training document
    train_doc_ids: list[int]     # corpus document ids of those rows


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pieces(data: bytes) -> list[bytes]:
    """~64 KiB pieces of a document, cut after a newline where there is one."""
    out, start = [], 0
    while start < len(data):
        end = min(start + PIECE_BYTES, len(data))
        if end < len(data):
            nl = data.rfind(b"\n", start, end)
            end = nl + 1 if nl > start else end
        out.append(data[start:end])
        start = end
    return out


def _doc_chunks(corpus: Corpus, i: int):
    n = corpus.doc_len(i)
    for lo in range(0, n, 16 * PIECE_BYTES):   # read 1 MiB at a time, then cut into pieces
        block = corpus.doc_bytes(i, lo, min(lo + 16 * PIECE_BYTES, n))
        yield from _pieces(block)


def bpe_key(corpus: Corpus, *, vocab_size: int, min_frequency: int, max_train_bytes: int) -> str:
    payload = [FORMAT_VERSION, tokenizers.__version__, corpus.split_digest("train"),
               vocab_size, min_frequency, max_train_bytes]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:20]


def load_or_build(corpus: Corpus, *, vocab_size: int, min_frequency: int = 2,
                  max_train_bytes: int = 50_000_000, log=print) -> BPEBundle:
    folder = corpus.cache_dir / f"bpe-{vocab_size}"
    key = bpe_key(corpus, vocab_size=vocab_size, min_frequency=min_frequency,
                  max_train_bytes=max_train_bytes)
    meta_path = folder / "meta.json"
    train_ids = corpus.doc_ids("train")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    fresh = (meta is not None and meta.get("key") == key
             and (folder / "tokenizer.json").exists()
             and _sha(folder / "tokenizer.json") == meta.get("tokenizer_sha256")
             and (folder / "train-tokens.bin").exists())
    if not fresh:
        if meta is not None:
            log(f"[bytessm] text: the cached tokenizer in {folder} was built for another "
                f"corpus or other settings (key {meta.get('key')}, need {key}): rebuilding")
        meta = _build(corpus, folder, key, train_ids, vocab_size=vocab_size,
                      min_frequency=min_frequency, max_train_bytes=max_train_bytes, log=log)
    codec = BPECodec(Tokenizer.from_file(str(folder / "tokenizer.json")))
    docs = np.load(folder / "train-docs.npy")
    return BPEBundle(codec=codec, folder=folder, train_tokens=folder / "train-tokens.bin",
                     dtype=np.dtype(meta["dtype"]), train_docs=docs, train_doc_ids=train_ids)


def _build(corpus: Corpus, folder: Path, key: str, train_ids: list[int], *, vocab_size: int,
           min_frequency: int, max_train_bytes: int, log) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").unlink(missing_ok=True)  # written last: marks a complete cache

    # 1. train the tokenizer on a deterministic sample of whole training documents
    order = sorted(train_ids, key=lambda i: hashlib.sha256(corpus.names[i].encode()).digest())
    chosen, total = [], 0
    for i in order:
        if total >= max_train_bytes:
            break
        chosen.append(i)
        total += corpus.doc_len(i)
    invalid = {"docs": 0, "bytes": 0}

    def texts():
        for i in chosen:
            bad = False
            for piece in _doc_chunks(corpus, i):
                for p in utf8_pieces(piece):
                    if isinstance(p, str):
                        yield p
                    else:
                        bad = True
                        invalid["bytes"] += len(p)
            invalid["docs"] += bad

    log(f"[bytessm] text: training a {vocab_size}-token byte-level BPE on {total / 1e6:.1f} MB "
        f"of {len(chosen)}/{len(train_ids)} training documents -> {folder}")
    tok = new_bpe_tokenizer()
    tok.train_from_iterator(texts(), trainer=bpe_trainer(vocab_size, min_frequency))
    if invalid["docs"]:
        log(f"[bytessm] text: {invalid['docs']} training document(s) are not valid UTF-8 "
            f"({invalid['bytes']} invalid bytes): BPE merges are learned on their valid UTF-8 "
            f"runs, and every invalid byte is encoded as its single-byte token")
    tok_path = folder / "tokenizer.json"
    atomic_write(tok_path, tok.to_str(pretty=True))  # what tok.save(path) writes

    # 2. tokenize the whole training split, streaming, into a flat token file
    codec = BPECodec(tok)
    dtype = np.uint16 if codec.vocab_size <= 2**16 else np.uint32
    offsets, n = [0], 0
    with atomic_open(folder / "train-tokens.bin", "wb") as out:
        for i in train_ids:
            for piece in _doc_chunks(corpus, i):
                ids, _ = codec.encode(piece)
                out.write(ids.astype(dtype).tobytes())
                n += len(ids)
            offsets.append(n)
    with atomic_open(folder / "train-docs.npy", "wb") as f:
        np.save(f, np.asarray(offsets, dtype=np.int64))
    train_bytes = sum(corpus.doc_len(i) for i in train_ids)
    meta = {"key": key, "tokenizer_sha256": _sha(tok_path), "dtype": np.dtype(dtype).name,
            "vocab_size": codec.vocab_size, "requested_vocab_size": vocab_size,
            "min_frequency": min_frequency, "max_train_bytes": max_train_bytes,
            "train_split": corpus.split_digest("train"), "train_tokens": n,
            "train_bytes": train_bytes, "tokenizers": tokenizers.__version__}
    atomic_write(folder / "meta.json", json.dumps(meta, indent=1))
    log(f"[bytessm] text: BPE vocabulary {codec.vocab_size}; training split {train_bytes} bytes "
        f"-> {n} tokens ({train_bytes / max(n, 1):.2f} bytes/token)")
    return meta


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
