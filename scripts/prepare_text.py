"""Build the text task's prose and code corpora from Debian packages and the Python
standard library, one document per file, with the sources' licences.

    python scripts/prepare_text.py [--out data/text] [--no-install] [--max-mb N]

Installs (apt-get, as root; --no-install when they are already there):
    linux-doc-6.1     the kernel's Documentation/ (.rst/.txt, gzipped)    GPL-2.0
    dict-gcide        GCIDE, Webster's 1913 + WordNet, dictd format         GPL-2.0-or-later
    rust-src          Rust 1.63 library/ and compiler/ sources (.rs)        MIT OR Apache-2.0
    golang-1.19-src   Go 1.19 standard library and tools (.go)              BSD-3-Clause
and copies the running interpreter's standard library (.py)                 PSF-2.0

Writes
    <out>/prose/linux-doc/<path>.rst|.txt      decompressed
    <out>/prose/gcide/<NNNNN>.txt              runs of consecutive dictionary entries, about
                                               64 KiB each, cut at entry boundaries (dictd
                                               index order), the database header dropped
    <out>/code/{rust,go,python}/<path>         sources as shipped
    <out>/LICENSES.md                          each source, its package version and licence
    <out>/licenses/<package>.copyright         the packages' Debian copyright files
The whole tree is built in a temporary folder beside <out> and moved into place at the end,
so an interrupted run leaves nothing half-written; an existing <out> is replaced.
"""
from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

PACKAGES = ("linux-doc-6.1", "dict-gcide", "rust-src", "golang-1.19-src")
LINUX_DOC = Path("/usr/share/doc/linux-doc-6.1/Documentation")
GCIDE = Path("/usr/share/dictd/gcide")
RUST = Path("/usr/src")            # rustc-<version>/{library,compiler}
GO = Path("/usr/share/go-1.19/src")
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
GCIDE_DOC_BYTES = 1 << 16

LICENCES = {
    "linux-doc-6.1": "GPL-2.0 (the Linux kernel documentation; see licenses/linux-doc-6.1.copyright)",
    "dict-gcide": "GPL-2.0-or-later (GCIDE, from Webster's Revised Unabridged Dictionary 1913, "
                  "public domain, and WordNet 1.5, Princeton licence)",
    "rust-src": "MIT OR Apache-2.0 (the Rust project)",
    "golang-1.19-src": "BSD-3-Clause (the Go Authors)",
    "python-stdlib": "PSF-2.0 (Python Software Foundation License Version 2)",
}


def install() -> None:
    if os.geteuid() != 0:
        sys.exit("prepare_text.py: apt-get needs root; run as root or pass --no-install")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
                   check=True, env=env)


def version(package: str) -> str:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True,
                       text=True)
    if r.returncode:
        sys.exit(f"prepare_text.py: Debian package {package} is not installed (run without "
                 f"--no-install, as root)")
    return r.stdout.strip()


class Budget:
    """Stops copying a source after --max-mb megabytes (None: everything)."""

    def __init__(self, max_mb: float | None):
        self.left = None if max_mb is None else int(max_mb * 1e6)

    def take(self, n: int) -> bool:
        if self.left is None:
            return True
        if self.left <= 0:
            return False
        self.left -= n
        return True


def copy_tree(src: Path, dst: Path, suffixes: tuple[str, ...], budget: Budget,
              skip_dirs=("__pycache__", "site-packages", "dist-packages")) -> int:
    n = 0
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in skip_dirs and not d.startswith("."))
        for f in sorted(files):
            p = Path(root) / f
            if not f.endswith(suffixes) or not p.is_file():
                continue
            if not budget.take(p.stat().st_size):
                return n
            out = dst / p.relative_to(src)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, out)
            n += 1
    return n


def linux_doc(dst: Path, budget: Budget) -> int:
    n = 0
    for p in sorted(LINUX_DOC.rglob("*")):
        name = p.name[:-3] if p.name.endswith(".gz") else p.name
        if not p.is_file() or not name.endswith((".rst", ".txt")):
            continue
        data = gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes()
        if not budget.take(len(data)):
            break
        out = dst / p.relative_to(LINUX_DOC).with_name(name)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        n += 1
    return n


def _b64(s: str) -> int:
    v = 0
    for c in s:
        v = v * 64 + B64.index(c)
    return v


def gcide(dst: Path, budget: Budget) -> int:
    """Dictionary entries (byte ranges from gcide.index) in runs of ~64 KiB per document."""
    text = gzip.decompress(GCIDE.with_suffix(".dict.dz").read_bytes())
    starts = set()
    for line in GCIDE.with_suffix(".index").read_text(encoding="utf-8").splitlines():
        word, off, _length = line.rsplit("\t", 2)
        if not word.startswith("00-database"):
            starts.add(_b64(off))
    starts = sorted(starts)
    bounds = list(zip(starts, starts[1:] + [len(text)]))
    dst.mkdir(parents=True, exist_ok=True)
    n, doc, size = 0, [], 0
    for lo, hi in bounds:
        doc.append(text[lo:hi])
        size += hi - lo
        if size >= GCIDE_DOC_BYTES or hi == len(text):
            if not budget.take(size):
                break
            (dst / f"{n:05d}.txt").write_bytes(b"".join(doc))
            n, doc, size = n + 1, [], 0
    return n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="data/text")
    p.add_argument("--no-install", action="store_true", help="use the installed packages")
    p.add_argument("--max-mb", type=float, default=None,
                   help="at most this many MB from each source (default: all)")
    a = p.parse_args(argv)
    if not a.no_install:
        install()
    versions = {pkg: version(pkg) for pkg in PACKAGES}
    rust = sorted(RUST.glob("rustc-*"))
    if not rust:
        sys.exit(f"prepare_text.py: no rustc-* sources under {RUST} (package rust-src)")
    stdlib = Path(sysconfig.get_paths()["stdlib"])

    out = Path(a.out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        counts = {
            "linux-doc-6.1": linux_doc(tmp / "prose" / "linux-doc", Budget(a.max_mb)),
            "dict-gcide": gcide(tmp / "prose" / "gcide", Budget(a.max_mb)),
        }
        rust_budget = Budget(a.max_mb)
        counts["rust-src"] = sum(copy_tree(rust[-1] / part, tmp / "code" / "rust" / part,
                                           (".rs",), rust_budget)
                                 for part in ("library", "compiler"))
        counts["golang-1.19-src"] = copy_tree(GO, tmp / "code" / "go", (".go",),
                                              Budget(a.max_mb))
        counts["python-stdlib"] = copy_tree(stdlib, tmp / "code" / "python", (".py",),
                                            Budget(a.max_mb))
        lic = tmp / "licenses"
        lic.mkdir()
        for pkg in PACKAGES:
            shutil.copyfile(f"/usr/share/doc/{pkg}/copyright", lic / f"{pkg}.copyright")
        shutil.copyfile(stdlib / "LICENSE.txt", lic / "python-stdlib.LICENSE.txt")
        where = {"linux-doc-6.1": "prose/linux-doc", "dict-gcide": "prose/gcide",
                 "rust-src": "code/rust", "golang-1.19-src": "code/go",
                 "python-stdlib": "code/python"}
        rows = [f"| {src} | {versions.get(src, sys.version.split()[0])} | {where[src]} | "
                f"{counts[src]} | {LICENCES[src]} |" for src in where]
        (tmp / "LICENSES.md").write_text(
            "# Text corpora: sources and licences\n\n"
            "Built by scripts/prepare_text.py from Debian bookworm packages and the Python "
            "standard library. Each source keeps its own licence; the full Debian copyright "
            "files are in licenses/.\n\n"
            "| source | version | folder | documents | licence |\n|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for src, n in counts.items():
        print(f"{src}: {n} documents")
    for part in ("prose", "code"):
        size = sum(f.stat().st_size for f in (out / part).rglob("*") if f.is_file())
        print(f"{out / part}: {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
