"""Atomic file writes: a crash never leaves a half-written result behind.

`atomic_write(path, data)` writes a whole str/bytes; `atomic_open(path, mode)` is the same
for writers that stream into a file object (np.save, savefig, soundfile, a copy loop):

    with atomic_open(path, "wb") as f:
        np.save(f, array)

Both write a temporary file beside `path` (same filesystem, so the rename is atomic) and
rename it over `path` only when the block ends without an exception; otherwise the temporary
file is removed and any old `path` is left as it was. Folders are not created: the caller
makes `path.parent`. Swapping whole folders (checkpoints, prepared datasets) is not this.
"""
from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *,
                encoding: str | None = "utf-8") -> Iterator[IO]:
    """Yield a new file for writing (`mode` "w" text or "wb" binary) that becomes `path` when
    the block exits cleanly.

    The file is `.NAME.RANDOM.tmp` beside `path`, created exclusively (mode "x") so the umask
    applies as for a plain open() (tempfile.mkstemp would make every result private, 0o600).
    Its `.name` is that temporary path, for writers that re-read what they wrote (e.g. to check
    a header before publishing it).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            f = open(tmp, mode.replace("w", "x"), encoding=None if mode == "wb" else encoding)
            break
        except FileExistsError:
            continue
    try:
        with f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes, *,
                 encoding: str | None = "utf-8") -> None:
    """Write all of `data` (str as `encoding` text, bytes as they are) to `path` atomically."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w", encoding=encoding) as f:
        f.write(data)


def write_report(out_dir: str | os.PathLike, name: str, table: str, report: dict) -> None:
    """A benchmark's outputs: OUT_DIR/NAME.md (its Markdown table) and OUT_DIR/NAME.json (the
    whole report), each written atomically, and the table printed."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / f"{name}.md", table + "\n")
    atomic_write(out / f"{name}.json", json.dumps(report, indent=1))
    print(table)
