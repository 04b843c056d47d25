"""Map-style genomics datasets, deterministic in the index (bytessm/task.py's contract).

    IntervalDataset   BED intervals of a FASTA -> pretraining samples
        objective "next":   input (L,) bases, target (L,) the next base (IGNORE at padding)
        objective "masked": input (L,) with 15% of positions corrupted (80% MASK, 10% a
                            random base, 10% unchanged; BERT/Caduceus), target (L,) the
                            original base there, IGNORE elsewhere
    WindowDataset     species classification: random windows of length L from the genomic
                      region of a split; input (L,), label (), keep (L,) positions to pool
    SequenceDataset   short labelled sequences (Genomic Benchmarks): cropped or PAD-padded
                      to L; input (L,), label (), keep (L,)

Every sample draws its randomness (window offset, shift, reverse complement, masking, N
replacement) from index_generator(seed, index, split). Training sets implement
`set_seq_len(n)` for sequence-length warmup. N handling (`n_mode`): "keep" N as a symbol,
"replace" each N by a random base, "skip" keeps N in the input but removes its positions
from the objective (no target, not pooled).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from bytessm.task import ConfigError, DataError, index_generator

from .alphabet import BASES, IGNORE, MASK, PAD, reverse_complement
from .fasta import FastaFile
from .intervals import Interval, window

N_MODES = ("keep", "replace", "skip")
OBJECTIVES = ("next", "masked")
VIRTUAL_SIZE = 1 << 30    # training sets of random windows: every index is a fresh sample

_BASES = torch.tensor(list(BASES))
_N = (ord("N"), ord("n"))


def is_n(x: Tensor) -> Tensor:
    return (x == _N[0]) | (x == _N[1])


def to_symbols(bases: np.ndarray, pad_left: int = 0, pad_right: int = 0) -> Tensor:
    """Normalised base bytes (n,) uint8 -> symbols (pad_left + n + pad_right,) int64."""
    x = torch.from_numpy(bases.astype(np.int64))
    if pad_left or pad_right:
        x = torch.cat([torch.full((pad_left,), PAD), x, torch.full((pad_right,), PAD)])
    return x


def augment(x: Tensor, g: torch.Generator, *, n_mode: str, rc: bool) -> Tensor:
    """Reverse-complement x with probability 1/2 (when `rc`), then replace N's if asked."""
    if rc and torch.rand((), generator=g) < 0.5:
        x = reverse_complement(x)
    if n_mode == "replace":
        where = is_n(x)
        if where.any():
            draws = _BASES[torch.randint(0, 4, (int(where.sum()),), generator=g)]
            lower = x[where] == _N[1]
            x = x.clone()
            x[where] = torch.where(lower, draws + 32, draws)   # keep soft-mask case
    return x


def mask_tokens(x: Tensor, maskable: Tensor, g: torch.Generator, *, rate: float = 0.15
                ) -> tuple[Tensor, Tensor]:
    """BERT/Caduceus masking: each maskable position is chosen with probability `rate`;
    chosen positions become MASK (80%), a random base (10%) or stay (10%). Returns
    (input (L,), target (L,): the original symbol at chosen positions, IGNORE elsewhere)."""
    chosen = (torch.rand(x.shape, generator=g) < rate) & maskable
    target = torch.where(chosen, x, torch.full_like(x, IGNORE))
    r = torch.rand(x.shape, generator=g)
    random_base = _BASES[torch.randint(0, 4, x.shape, generator=g)]
    inp = torch.where(chosen & (r < 0.8), torch.full_like(x, MASK), x)
    inp = torch.where(chosen & (r >= 0.8) & (r < 0.9), random_base, inp)
    return inp, target


def check_options(*, n_mode: str, objective: str | None = None) -> None:
    if n_mode not in N_MODES:
        raise ConfigError(f"task.n_mode must be one of {', '.join(N_MODES)}, got {n_mode!r}")
    if objective is not None and objective not in OBJECTIVES:
        raise ConfigError(f"task.objective must be one of {', '.join(OBJECTIVES)}, got "
                          f"{objective!r}")


class IntervalDataset(Dataset):
    """Pretraining windows from BED intervals of one split (module docstring)."""

    def __init__(self, *, fasta: FastaFile, intervals: list[Interval], length: int,
                 objective: str, split: str, seed: int, shift: int = 0, rc_aug: bool = False,
                 n_mode: str = "keep", mask_rate: float = 0.15):
        check_options(n_mode=n_mode, objective=objective)
        if not intervals:
            raise DataError(f"the BED file has no interval in split {split!r}")
        self.fasta, self.intervals, self.objective, self.split = fasta, intervals, objective, split
        self.seed, self.shift, self.rc_aug, self.n_mode = seed, shift, rc_aug, n_mode
        self.mask_rate = mask_rate
        self.train = split == "train"
        self.set_seq_len(length)

    def set_seq_len(self, n: int) -> None:
        self.length = int(n)

    def __len__(self) -> int:
        return len(self.intervals)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        iv = self.intervals[i]
        g = index_generator(self.seed, i, self.split)
        span = self.length + (self.objective == "next")     # one more base: the last target
        w = window(iv.start, iv.end, length=span, chrom_len=self.fasta.lengths[iv.chrom],
                   shift=self.shift if self.train else 0, generator=g if self.train else None)
        x = to_symbols(self.fasta.fetch(iv.chrom, w.start, w.end), w.pad_left, w.pad_right)
        x = augment(x, g, n_mode=self.n_mode, rc=self.rc_aug and self.train)
        counted = x != PAD
        if self.n_mode == "skip":
            counted &= ~is_n(x)
        if self.objective == "next":
            target = torch.where(counted[1:], x[1:], torch.full_like(x[1:], IGNORE))
            return {"input": x[:-1], "target": target}                 # (L,), (L,)
        inp, target = mask_tokens(x, counted, g, rate=self.mask_rate)
        return {"input": inp, "target": target}


@dataclass(frozen=True)
class Region:
    """Bases [start, end) of `record` in `fasta`, the part of the record a split reads."""
    fasta: FastaFile
    record: str
    start: int
    end: int


def split_regions(length: int, fractions: tuple[float, float, float]) -> dict[str, tuple[int, int]]:
    """A record of `length` bases -> disjoint contiguous [start, end) per split, in order
    train | valid | test, sized by `fractions` (which sum to 1)."""
    a = int(round(length * fractions[0]))
    b = int(round(length * (fractions[0] + fractions[1])))
    return {"train": (0, a), "valid": (a, b), "test": (b, length)}


class WindowDataset(Dataset):
    """Species classification: random `length`-base windows inside each class's regions.

    Sample i is of class i % C (balanced), from a region chosen with probability
    proportional to the number of windows it holds, at a uniform offset. `size` samples;
    training uses VIRTUAL_SIZE (each index a fresh window)."""

    def __init__(self, *, classes: list[str], regions: list[list[Region]], length: int,
                 split: str, seed: int, size: int, rc_aug: bool = False, n_mode: str = "keep"):
        check_options(n_mode=n_mode)
        self.classes, self.regions, self.split = classes, regions, split
        self.seed, self.size, self.rc_aug, self.n_mode = seed, size, rc_aug, n_mode
        self.train = split == "train"
        self.set_seq_len(length)

    def set_seq_len(self, n: int) -> None:
        """Window length n; recomputes which regions can hold a window."""
        self.length = int(n)
        self._weights = []
        for name, regions in zip(self.classes, self.regions):
            w = torch.tensor([max(r.end - r.start - n + 1, 0) for r in regions], dtype=torch.float64)
            if not regions or w.sum() == 0:
                longest = max((r.end - r.start for r in regions), default=0)
                raise DataError(f"species {name!r} has no sequence long enough for a {n}-base "
                                f"window in the {self.split} split (its longest {self.split} "
                                f"region is {longest} bases); use a shorter trainer.seq_len "
                                f"or more sequence for this species")
            self._weights.append(w)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        g = index_generator(self.seed, i, self.split)
        label = i % len(self.classes)
        k = int(torch.multinomial(self._weights[label], 1, generator=g))
        r = self.regions[label][k]
        a = r.start + int(torch.randint(0, r.end - r.start - self.length + 1, (1,), generator=g))
        x = to_symbols(r.fasta.fetch(r.record, a, a + self.length))
        x = augment(x, g, n_mode=self.n_mode, rc=self.rc_aug and self.train)
        keep = ~is_n(x) if self.n_mode == "skip" else torch.ones_like(x, dtype=torch.bool)
        return {"input": x, "label": torch.tensor(label), "keep": keep}


class SequenceDataset(Dataset):
    """Labelled short sequences (Genomic Benchmarks): a sequence longer than `length` is
    cut (training: at a random offset; evaluation: at its centre), a shorter one is padded
    on the right with PAD, which `keep` leaves out of the pooling."""

    def __init__(self, *, sequences: list[np.ndarray], labels: list[int], length: int,
                 split: str, seed: int, rc_aug: bool = False, n_mode: str = "keep"):
        check_options(n_mode=n_mode)
        self.sequences, self.labels, self.split = sequences, labels, split
        self.seed, self.rc_aug, self.n_mode = seed, rc_aug, n_mode
        self.train = split == "train"
        self.set_seq_len(length)

    def set_seq_len(self, n: int) -> None:
        self.length = int(n)

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        g = index_generator(self.seed, i, self.split)
        s, n = self.sequences[i], self.length
        if len(s) > n:
            extra = len(s) - n
            a = int(torch.randint(0, extra + 1, (1,), generator=g)) if self.train else extra // 2
            s = s[a:a + n]
        x = augment(to_symbols(s), g, n_mode=self.n_mode, rc=self.rc_aug and self.train)
        x = torch.cat([x, torch.full((n - len(x),), PAD)])                 # (L,)
        keep = x != PAD
        if self.n_mode == "skip":
            keep &= ~is_n(x)
        return {"input": x, "label": torch.tensor(self.labels[i]), "keep": keep}
