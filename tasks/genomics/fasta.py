"""FASTA reading through pyfaidx: random access by (record, start, end), normalised bytes.

    fa = FastaFile("hg38.fa", uppercase=True)
    fa.lengths["chr1"]                 # 248956422
    fa.fetch("chr1", 10_000, 10_512)   # (512,) uint8: bytes of A C G T N (alphabet.py)

The .fai index is built next to the FASTA (samtools' layout, so `samtools faidx` and
pyfaidx share it); when that location cannot be written (a read-only data folder), it is
built in a cache folder instead (`index_cache`, default $XDG_CACHE_HOME/bytessm/faidx),
and when neither works the error names both places. Bytes outside the IUPAC codes raise a
DataError naming the file, the record and the 0-based position; `validate()` scans a whole
file up front so such an error comes at start-up, not hours into training.

A file handle is opened lazily per process (DataLoader workers fork), so instances can be
passed to workers.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pyfaidx

from bytessm.task import DataError

from .alphabet import IUPAC, normalize_table

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas", ".ffn", ".fa.gz", ".fasta.gz", ".fna.gz")
_CHUNK = 1 << 22


def default_index_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bytessm" / "faidx"


def is_fasta(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and any(name.endswith(s) for s in FASTA_SUFFIXES)


class FastaFile:
    """Random access to one (multi-record) FASTA file; see the module docstring."""

    def __init__(self, path: str | os.PathLike, *, uppercase: bool = True,
                 index_cache: str | os.PathLike | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"FASTA file not found: {self.path}")
        with open(self.path, "rb") as f:
            magic = f.read(2)
        if magic == b"\x1f\x8b":
            raise DataError(f"{self.path} is gzip-compressed; decompress it first "
                            f"(gunzip -k {self.path}) so it can be indexed for random access")
        self.uppercase = uppercase
        self._table = normalize_table(uppercase=uppercase)
        self.index_path = self._build_index(Path(index_cache) if index_cache else
                                            default_index_cache())
        self._fa: pyfaidx.Fasta | None = None
        self._pid = -1
        fa = self._handle()
        #: record name -> length in bases, in file order
        self.lengths: dict[str, int] = {name: len(fa[name]) for name in fa.keys()}
        if not self.lengths:
            raise DataError(f"{self.path} holds no FASTA record (no '>' header line)")

    # -- index -------------------------------------------------------------------------
    def _open(self, index: Path) -> pyfaidx.Fasta:
        try:
            return pyfaidx.Fasta(str(self.path), indexname=str(index), as_raw=True,
                                 sequence_always_upper=False, rebuild=True)
        except pyfaidx.FastaIndexingError as e:
            raise DataError(f"{self.path} is not a well-formed FASTA file: {e}") from None
        except ValueError as e:  # duplicate record names, empty headers, ...
            raise DataError(f"{self.path}: {e}") from None

    def _build_index(self, cache: Path) -> Path:
        """Build (or reuse) the .fai next to the FASTA, else in `cache`; returns its path."""
        beside = Path(f"{self.path}.fai")
        try:
            self._open(beside).close()
            return beside
        except OSError as first:
            digest = hashlib.sha1(str(self.path.resolve()).encode()).hexdigest()[:16]
            cached = cache / f"{digest}-{self.path.name}.fai"
            try:
                cache.mkdir(parents=True, exist_ok=True)
                self._open(cached).close()
                return cached
            except OSError as second:
                raise DataError(
                    f"cannot write a FASTA index for {self.path}: tried {beside} "
                    f"({first.strerror or first}) and {cached} ({second.strerror or second}); "
                    f"set task.data.index_cache to a writable folder") from None

    def _handle(self) -> pyfaidx.Fasta:
        if self._fa is None or self._pid != os.getpid():
            self._fa = self._open(self.index_path)
            self._pid = os.getpid()
        return self._fa

    def __getstate__(self):
        return {**self.__dict__, "_fa": None, "_pid": -1}

    # -- reading -----------------------------------------------------------------------
    def fetch(self, name: str, start: int, end: int) -> np.ndarray:
        """Bases [start, end) (0-based, half-open) of record `name` -> (end - start,) uint8,
        normalised (alphabet.normalize_table). Bounds must lie inside the record."""
        length = self.lengths.get(name)
        if length is None:
            raise DataError(f"{self.path} has no record {name!r}")
        if not 0 <= start <= end <= length:
            raise DataError(f"{self.path}: [{start}, {end}) is outside record {name!r} "
                            f"of length {length}")
        raw = self._handle()[name][start:end]
        codes = self._table[np.frombuffer(raw.encode("latin-1"), dtype=np.uint8)]
        bad = np.flatnonzero(codes < 0)
        if bad.size:
            i = int(bad[0])
            raise DataError(f"{self.path}: record {name!r}, position {start + i} (0-based): "
                            f"{raw[i]!r} is not an IUPAC nucleotide code (expected one of "
                            f"{IUPAC.decode()}, either case)")
        return codes.astype(np.uint8)

    def validate(self) -> None:
        """Read every record once, in chunks; the first non-IUPAC byte raises (fetch)."""
        for name, length in self.lengths.items():
            for a in range(0, length, _CHUNK):
                self.fetch(name, a, min(a + _CHUNK, length))

    def close(self) -> None:
        if self._fa is not None:
            self._fa.close()
            self._fa = None


def find_fastas(folder: Path) -> list[Path]:
    """FASTA files directly inside `folder`, sorted by name (indexes and others ignored)."""
    return sorted(p for p in folder.iterdir() if is_fasta(p))
