"""Bytes <-> model symbols, for the two pipelines. Both know how many bytes each symbol
covers, which is what makes bits per byte comparable.

    ByteCodec   symbol = byte (0..255), BOS = 256: vocab 257
    BPECodec    byte-level BPE (HF `tokenizers`, GPT-2 style pre-tokenization without a
                prefix space, no normalizer), BOS = "<bos>" (id 0)

`encode(data: bytes) -> (ids, nbytes)`: int64 arrays of equal length, `nbytes[k]` the bytes
token k covers; `nbytes.sum() == len(data)` always (checked), and `decode(ids) == data`.

Bytes that are not valid UTF-8 (binary files, a window edge cutting a character in two)
cannot go through a `str` tokenizer: the BPE codec encodes the valid UTF-8 runs with the
tokenizer and each invalid byte as the vocabulary's single-byte token for it (a byte-level
BPE vocabulary holds all 256), so every byte sequence round-trips exactly.
"""
from __future__ import annotations

import re

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

BOS_TOKEN = "<bos>"
# bytes.decode(errors="surrogateescape") turns invalid byte b into chr(0xDC00 + b)
_ESCAPED = re.compile("([\udc80-\udcff]+)")


class ByteCodec:
    name = "bytes"
    bos = 256
    vocab_size = 257

    def encode(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        ids = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
        return ids, np.ones_like(ids)

    def decode(self, ids) -> bytes:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256)


def utf8_pieces(data: bytes) -> list[str | bytes]:
    """Valid UTF-8 runs as str, invalid bytes as bytes, in order."""
    text = data.decode("utf-8", errors="surrogateescape")
    out: list[str | bytes] = []
    for k, part in enumerate(_ESCAPED.split(text)):
        if not part:
            continue
        out.append(part if k % 2 == 0 else bytes(ord(c) - 0xDC00 for c in part))
    return out


def new_bpe_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE that maps text to bytes exactly (no normalizer, no prefix
    space: what goes in is what comes out)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def bpe_trainer(vocab_size: int, min_frequency: int) -> trainers.BpeTrainer:
    return trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                               special_tokens=[BOS_TOKEN], show_progress=False,
                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet())


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (what ByteLevel uses)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


class BPECodec:
    name = "bpe"

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        if BOS_TOKEN not in vocab:
            raise ValueError(f"the tokenizer has no {BOS_TOKEN} token")
        self.bos = vocab[BOS_TOKEN]
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        to_char = _byte_to_unicode()
        missing = [b for b, c in to_char.items() if c not in vocab]
        if missing:
            raise ValueError(f"not a byte-level vocabulary: no token for bytes {missing[:8]}")
        self.byte_token = np.array([vocab[to_char[b]] for b in range(256)], dtype=np.int64)
        specials = {t.content for t in tokenizer.get_added_tokens_decoder().values()}
        self.nbytes_table = np.zeros(self.vocab_size, dtype=np.int64)
        for token, i in vocab.items():
            self.nbytes_table[i] = 0 if token in specials else len(token)  # 1 char = 1 byte
        self._from_char = {c: b for b, c in to_char.items()}
        self.id_to_token = {i: t for t, i in vocab.items()}

    def encode_batch(self, datas: list[bytes]) -> list[tuple[np.ndarray, np.ndarray]]:
        pieces = [utf8_pieces(d) for d in datas]
        texts = [p for ps in pieces for p in ps if isinstance(p, str)]
        encoded = iter(self.tokenizer.encode_batch(texts, add_special_tokens=False))
        out = []
        for data, ps in zip(datas, pieces):
            parts = [np.asarray(next(encoded).ids, dtype=np.int64) if isinstance(p, str)
                     else self.byte_token[np.frombuffer(p, dtype=np.uint8)] for p in ps]
            ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
            nbytes = self.nbytes_table[ids]
            if int(nbytes.sum()) != len(data):
                raise RuntimeError(f"BPE tokens cover {int(nbytes.sum())} bytes of a "
                                   f"{len(data)}-byte text: the tokenizer is not byte-exact")
            out.append((ids, nbytes))
        return out

    def encode(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        return self.encode_batch([data])[0]

    def decode(self, ids) -> bytes:
        out = bytearray()
        for i in ids:
            token = self.id_to_token.get(int(i))
            if token is None or self.nbytes_table[int(i)] == 0:
                continue   # specials, and ids beyond the trained vocabulary
            out.extend(self._from_char[c] for c in token)
        return bytes(out)
