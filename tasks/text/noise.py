"""Character noise for robustness evaluation (MambaByte, Wang et al. 2024, sec. 4.4).

Each function takes bytes and returns noised bytes. Characters are UTF-8 code points
(bytes that are not valid UTF-8 are characters of their own), so a drop removes a whole
character, never half of one. Randomness comes from a numpy Generator the caller seeds, so
both pipelines see identical noised text.

    drop(data, rate, rng)   every character removed with probability `rate`
    swap(data, rate, rng)   left to right, a character is swapped with the next one with
                            probability `rate` (a swapped pair is not swapped again), so
                            about 2*rate of the characters move
    case(data, rate, rng)   every character that has a case (c.upper() != c.lower()) is
                            flipped with probability `rate`; others are untouched
"""
from __future__ import annotations

import numpy as np

KINDS = ("drop", "swap", "case")


def _chars(data: bytes) -> list[str]:
    return list(data.decode("utf-8", errors="surrogateescape"))


def _bytes(chars: list[str]) -> bytes:
    return "".join(chars).encode("utf-8", errors="surrogateescape")


def drop(data: bytes, rate: float, rng: np.random.Generator) -> bytes:
    chars = _chars(data)
    keep = rng.random(len(chars)) >= rate
    return _bytes([c for c, k in zip(chars, keep) if k])


def swap(data: bytes, rate: float, rng: np.random.Generator) -> bytes:
    chars = _chars(data)
    hits = rng.random(len(chars)) < rate
    i = 0
    while i < len(chars) - 1:
        if hits[i]:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
            i += 2
        else:
            i += 1
    return _bytes(chars)


def case(data: bytes, rate: float, rng: np.random.Generator) -> bytes:
    chars = _chars(data)
    hits = rng.random(len(chars)) < rate
    out = []
    for c, hit in zip(chars, hits):
        flipped = c.swapcase()
        # only characters whose flip is one character that flips back (not "ß" -> "SS")
        if hit and c.upper() != c.lower() and len(flipped) == 1 and flipped.swapcase() == c:
            c = flipped
        out.append(c)
    return _bytes(out)


def add_noise(data: bytes, kind: str, rate: float, rng: np.random.Generator) -> bytes:
    if kind not in KINDS:
        raise ValueError(f"noise kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not 0 <= rate <= 1:
        raise ValueError(f"noise rate must be in [0, 1], got {rate}")
    return {"drop": drop, "swap": swap, "case": case}[kind](data, rate, rng)
