"""BED intervals (chrom, start, end, split) and how a window of a given length is cut from one.

The BED file is the HyenaDNA/Caduceus hg38 layout: tab-separated, 0-based half-open
coordinates, the split ("train", "valid" or "test"; "val"/"validation" accepted) in the
fourth column. "#", "track" and "browser" lines and blank lines are skipped. Every error
names the file and the 1-based line.

Windows (`window`): an interval shorter than the requested length is widened around its
centre; a longer one is cut to the length, at its centre for evaluation or at a random
offset for training; an optional random shift moves the window by up to `shift` bases
either way; the result is clipped to the chromosome, and what was clipped is reported as
left/right padding so the sample keeps its length.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bytessm.task import DataError

SPLITS = ("train", "valid", "test")
_SPLIT_NAMES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid",
                "test": "test"}


@dataclass(frozen=True)
class Interval:
    chrom: str
    start: int
    end: int
    split: str
    line: int    # 1-based line in the BED file, for messages


def read_bed(path: str | Path, lengths: dict[str, int]) -> list[Interval]:
    """Parse `path`; every interval is checked against the FASTA's record `lengths`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"BED file not found: {path}")
    intervals = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            text = line.strip()
            if not text or text.startswith(("#", "track", "browser")):
                continue
            where = f"{path}, line {n}"
            cols = text.split("\t") if "\t" in text else text.split()
            if len(cols) < 4:
                raise DataError(f"{where}: expected 4 columns (chrom, start, end, split), "
                                f"found {len(cols)}: {text!r}")
            chrom, start, end, split = cols[:4]
            try:
                start, end = int(start), int(end)
            except ValueError:
                raise DataError(f"{where}: start and end must be integers, found "
                                f"{cols[1]!r} and {cols[2]!r}") from None
            if not 0 <= start < end:
                raise DataError(f"{where}: expected 0 <= start < end, found start={start}, "
                                f"end={end}")
            if chrom not in lengths:
                known = ", ".join(list(lengths)[:5]) + (", ..." if len(lengths) > 5 else "")
                raise DataError(f"{where}: chromosome {chrom!r} is not in the FASTA "
                                f"(its records: {known})")
            if end > lengths[chrom]:
                raise DataError(f"{where}: interval {chrom}:{start}-{end} ends past the end of "
                                f"{chrom} (length {lengths[chrom]})")
            if split.lower() not in _SPLIT_NAMES:
                raise DataError(f"{where}: split must be train, valid or test, found {split!r}")
            intervals.append(Interval(chrom, start, end, _SPLIT_NAMES[split.lower()], n))
    if not intervals:
        raise DataError(f"{path} holds no interval")
    return intervals


@dataclass(frozen=True)
class Window:
    """Bases [start, end) of a chromosome, plus padding that makes up the requested length
    (pad_left + (end - start) + pad_right == length)."""
    start: int
    end: int
    pad_left: int
    pad_right: int


def window(start: int, end: int, *, length: int, chrom_len: int, shift: int = 0,
           generator: torch.Generator | None = None) -> Window:
    """The `length`-base window for interval [start, end); see the module docstring.
    With a generator (training) a long interval is cut at a random offset and the window
    moves by a uniform shift in [-shift, shift]; without one (evaluation) neither."""
    size = end - start
    if size <= length:                      # widen around the centre
        a = start - (length - size) // 2
    elif generator is not None:             # random cut inside the interval
        a = start + int(torch.randint(0, size - length + 1, (1,), generator=generator))
    else:                                   # centre cut
        a = start + (size - length) // 2
    if shift and generator is not None:
        a += int(torch.randint(-shift, shift + 1, (1,), generator=generator))
    a = min(max(a, 1 - length), chrom_len - 1)  # keep >= 1 base of the chromosome
    b = a + length
    lo, hi = max(a, 0), min(b, chrom_len)
    return Window(lo, hi, pad_left=lo - a, pad_right=b - hi)
