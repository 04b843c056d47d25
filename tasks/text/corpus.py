"""A text corpus on disk: a file, a folder or a glob of documents, split by document,
concatenated once into a memory-mapped byte cache.

    corpus = Corpus.open("data/text/prose", fractions=(0.9, 0.05, 0.05))
    corpus.data()                       # np.memmap (total_bytes,) uint8, never read whole
    corpus.doc_ids("valid")             # documents of a split
    corpus.doc_bytes(i)                 # one document's bytes (a memmap slice)

Documents are files. `path` is a file, a folder (walked recursively; names starting with
"." are skipped, which keeps the cache folder out) or a glob (`**` recursive). A document's
name is its path relative to the folder (or to the glob's fixed prefix).

Splits: a document goes to train / valid / test by a hash of its name alone (sha256 ->
uniform in [0, 1) -> the cumulative `fractions`), so adding or removing files never moves
another document to a different split.

Cache: `<cache_dir>/corpus-<key>.bin` holds every document's bytes back to back and
`corpus-<key>.json` their names, byte offsets and content digests. The key hashes each
file's (name, size, mtime): change a file and the cache is rebuilt. The default cache_dir
is `.bytessm-cache` beside the data (in the folder, or beside the file / the glob's fixed
prefix); when that is not writable, `$XDG_CACHE_HOME/bytessm/text/<hash of the path>`.
Both files are written to temporary names and moved into place (index last).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bytessm.io import atomic_open, atomic_write
from bytessm.task import DataError

SPLITS = ("train", "valid", "test")
CACHE_VERSION = 1
CACHE_DIRNAME = ".bytessm-cache"


@dataclass(frozen=True)
class SourceFile:
    name: str    # relative, "/"-separated: what the split hash reads
    path: Path
    size: int
    mtime_ns: int


def split_of(name: str, fractions: tuple[float, float, float]) -> str:
    """train / valid / test for a document name: a function of the name alone."""
    u = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") / 2**64
    if u < fractions[0]:
        return "train"
    return "valid" if u < fractions[0] + fractions[1] else "test"


def _stat(path: Path, base: Path) -> SourceFile:
    st = path.stat()
    return SourceFile(path.relative_to(base).as_posix(), path, st.st_size, st.st_mtime_ns)


def _walk(folder: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out.extend(Path(root) / f for f in sorted(files) if not f.startswith("."))
    return out


def find_sources(spec: str) -> tuple[Path, list[SourceFile]]:
    """(base folder, files) for a file, a folder or a glob; DataError when nothing is there."""
    if glob.has_magic(spec):
        parts = Path(spec).parts
        fixed = [p for p in parts[:next(i for i, p in enumerate(parts) if glob.has_magic(p))]]
        base = Path(*fixed) if fixed else Path(".")
        matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
        paths = []
        for m in matches:
            paths.extend(_walk(m) if m.is_dir() else [m] if m.is_file() else [])
        if not paths:
            raise DataError(f"task.data.path={spec!r}: the glob matched no files "
                            f"(relative to {Path.cwd()})")
    else:
        p = Path(spec)
        if p.is_file():
            base, paths = p.parent, [p]
        elif p.is_dir():
            base, paths = p, _walk(p)
            if not paths:
                raise DataError(f"task.data.path={spec!r}: the folder {p.absolute()} holds no "
                                f"files (expected text documents, one per file)")
        else:
            raise DataError(f"task.data.path={spec!r}: no such file or folder ({p.absolute()}); "
                            f"scripts/prepare_text.py builds the default corpora")
    base = base.absolute()
    files = [_stat(Path(x).absolute(), base) for x in paths]
    return base, sorted(files, key=lambda f: f.name)


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
        return True
    except OSError:
        return False


def default_cache_dir(base: Path) -> Path:
    beside = base / CACHE_DIRNAME
    if _writable(beside):
        return beside
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "bytessm" / "text" / hashlib.sha256(str(base).encode()).hexdigest()[:16]


class Corpus:
    """The documents of `spec`, their splits, and the memory-mapped byte cache."""

    def __init__(self, *, spec: str, names: list[str], offsets: np.ndarray, digests: list[str],
                 bin_path: Path, cache_dir: Path, fractions: tuple[float, float, float]):
        self.spec, self.names, self.offsets, self.digests = spec, names, offsets, digests
        self.bin_path, self.cache_dir, self.fractions = bin_path, cache_dir, fractions
        self.splits = [split_of(n, fractions) for n in names]
        self._data: np.memmap | None = None

    # -- building / opening ----------------------------------------------------------------
    @classmethod
    def open(cls, spec: str, *, fractions=(0.9, 0.05, 0.05), cache_dir: str | None = None,
             log=print) -> "Corpus":
        fractions = tuple(float(f) for f in fractions)
        base, files = find_sources(str(spec))
        cdir = Path(cache_dir) if cache_dir else default_cache_dir(base)
        cdir.mkdir(parents=True, exist_ok=True)
        listing = [(f.name, f.size, f.mtime_ns) for f in files]
        key = hashlib.sha256(json.dumps([CACHE_VERSION, str(base), listing]).encode()
                             ).hexdigest()[:20]
        bin_path, idx_path = cdir / f"corpus-{key}.bin", cdir / f"corpus-{key}.json"
        index = None
        if idx_path.exists() and bin_path.exists():
            index = json.loads(idx_path.read_text())
            if bin_path.stat().st_size != index["offsets"][-1]:
                index = None   # a torn or foreign file: rebuild
        if index is None:
            log(f"[bytessm] text: caching {len(files)} documents of {spec} in {cdir}")
            index = cls._build(files, bin_path, idx_path)
        total = index["offsets"][-1]
        if total == 0:
            raise DataError(f"task.data.path={spec!r}: the corpus is empty (all {len(files)} "
                            f"file(s) under {base} have 0 bytes)")
        return cls(spec=str(spec), names=index["names"], offsets=np.asarray(index["offsets"],
                   dtype=np.int64), digests=index["digests"], bin_path=bin_path,
                   cache_dir=cdir, fractions=fractions)

    @staticmethod
    def _build(files: list[SourceFile], bin_path: Path, idx_path: Path) -> dict:
        offsets, digests = [0], []
        with atomic_open(bin_path, "wb") as out:
            for f in files:
                h, n = hashlib.sha256(), 0
                with open(f.path, "rb") as src:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                        h.update(chunk)
                        n += len(chunk)
                offsets.append(offsets[-1] + n)
                digests.append(h.hexdigest()[:32])
        index = {"version": CACHE_VERSION, "names": [f.name for f in files],
                 "offsets": offsets, "digests": digests}
        atomic_write(idx_path, json.dumps(index).encode())
        return index

    # -- reading -----------------------------------------------------------------------------
    def __getstate__(self):   # DataLoader workers reopen the memmap instead of copying it
        return {**self.__dict__, "_data": None}

    def data(self) -> np.memmap:
        if self._data is None:
            self._data = np.memmap(self.bin_path, dtype=np.uint8, mode="r")
        return self._data

    def __len__(self) -> int:
        return len(self.names)

    def doc_len(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])

    def doc_bytes(self, i: int, start: int = 0, end: int | None = None) -> bytes:
        lo = int(self.offsets[i])
        hi = int(self.offsets[i + 1]) if end is None else lo + end
        return self.data()[lo + start:hi].tobytes()

    def doc_ids(self, split: str) -> list[int]:
        return [i for i, s in enumerate(self.splits) if s == split]

    def split_bytes(self, split: str) -> int:
        return sum(self.doc_len(i) for i in self.doc_ids(split))

    def split_digest(self, split: str) -> str:
        """A hash of a split's documents (names and contents): keys caches built from it."""
        h = hashlib.sha256()
        for i in self.doc_ids(split):
            h.update(f"{self.names[i]}\0{self.digests[i]}\n".encode())
        return h.hexdigest()[:20]
