"""The DNA alphabet as bytes: validation, normalisation, reverse complement, special symbols.

Token-free input: a base is its ASCII byte (b"A" = 65, ...), fed through the core byte
embedding, whose vocabulary is 256 bytes plus this task's specials:

    0..255   bytes; a normalised genome uses only A C G T N (and a c g t n when soft-masked
             bases are kept lowercase)
    256      MASK  (masked pretraining, Caduceus/BERT style)
    257      PAD   (windows clipped at a chromosome end, short benchmark sequences)

Normalisation (`normalize_table`) maps each IUPAC code (A C G T U R Y S W K M B D H V N,
either case, and "-" gaps) to one of A C G T N: U -> T, the ambiguity codes and gaps -> N;
lowercase (soft-masked repeats) is uppercased unless `uppercase=False`, in which case it
stays lowercase. Any other byte is invalid (-1 in the table) and the reader names its record
and position. The complement maps A<->T, C<->G, N->N in both cases and leaves the specials
alone, so reverse_complement(reverse_complement(x)) == x for every symbol.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from bytessm.task import IGNORE  # noqa: F401  re-exported: the target the losses skip

MASK = 256
PAD = 257
VOCAB_SIZE = 258          # 256 bytes + MASK + PAD

BASES = b"ACGT"
IUPAC = b"ACGTURYSWKMBDHVN-"
_AMBIGUOUS = b"RYSWKMBDHVN-"


def normalize_table(*, uppercase: bool = True) -> np.ndarray:
    """(256,) int16: raw FASTA byte -> normalised base byte, or -1 for a non-IUPAC byte."""
    table = np.full(256, -1, dtype=np.int16)
    for lower in (False, True):
        def put(src: int, dst: int) -> None:
            if lower:
                src = ord(chr(src).lower())
                dst = dst if uppercase else ord(chr(dst).lower())
            table[src] = dst
        for b in BASES:
            put(b, b)
        put(ord("U"), ord("T"))
        for b in _AMBIGUOUS:
            put(b, ord("N"))
    return table


def complement_table(vocab_size: int = VOCAB_SIZE) -> Tensor:
    """(vocab_size,) int64: symbol -> its complement. A<->T, C<->G (both cases); every other
    symbol (N, other bytes, MASK, PAD) maps to itself. An involution."""
    table = torch.arange(vocab_size)
    for a, b in (("A", "T"), ("C", "G"), ("a", "t"), ("c", "g")):
        table[ord(a)], table[ord(b)] = ord(b), ord(a)
    return table


_COMPLEMENT = complement_table()


def reverse_complement(x: Tensor) -> Tensor:
    """Symbols (..., L) -> their reverse complement (..., L): the other DNA strand read 5'->3'.
    Padding moves with its bases (it stays PAD, at the mirrored position)."""
    return _COMPLEMENT.to(x.device)[x.flip(-1)]


_DNA = frozenset(b"ACGTNacgtn")


def decode(symbols) -> str:
    """Symbols -> a DNA string. Anything but A C G T N (either case) — MASK, PAD, other
    bytes a model may sample — prints as N, so the output is always valid FASTA."""
    return "".join(chr(s) if s in _DNA else "N" for s in symbols)


def encode(text: str, *, uppercase: bool = True) -> list[int]:
    """A DNA string (IUPAC codes) -> normalised base bytes; ValueError names a bad character."""
    table = normalize_table(uppercase=uppercase)
    out = []
    for i, ch in enumerate(text):
        code = int(table[ord(ch)]) if ord(ch) < 256 else -1
        if code < 0:
            raise ValueError(f"{ch!r} at position {i} is not an IUPAC nucleotide code "
                             f"(expected one of {IUPAC.decode()}, either case)")
        out.append(code)
    return out
