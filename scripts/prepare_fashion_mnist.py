"""Install Debian's Fashion-MNIST and place it where torchvision's FashionMNIST reader looks.

    python scripts/prepare_fashion_mnist.py [--root data/fashion_mnist]

1. `apt-get install dataset-fashion-mnist` (the full 60k/10k set in idx format, gzipped;
   needs root, skipped when the package is already installed);
2. finds the four idx files through `dpkg -L dataset-fashion-mnist`;
3. checks each header (idx magic, 60000/10000 items of 28x28) and writes them, uncompressed,
   to <root>/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, each through a
   temporary file renamed once its header checks out (bytessm.io.atomic_open), so an
   interrupted run or a bad file leaves no half-written file;
4. reads them back with torchvision.datasets.FashionMNIST(root, download=False).

Then: `bytessm train task=images model=vim_cpu task.data.root=<root>`.
`--source DIR` takes the files from DIR instead of the Debian package (no apt-get).
"""
from __future__ import annotations

import argparse
import gzip
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

from bytessm.io import atomic_open

PACKAGE = "dataset-fashion-mnist"
FILES = {  # name -> (idx dimensions, items) of the published set
    "train-images-idx3-ubyte": (3, 60000),
    "train-labels-idx1-ubyte": (1, 60000),
    "t10k-images-idx3-ubyte": (3, 10000),
    "t10k-labels-idx1-ubyte": (1, 10000),
}


class PrepareError(RuntimeError):
    pass


def install_package() -> None:
    if subprocess.run(["dpkg", "-s", PACKAGE], capture_output=True).returncode == 0:
        return
    if os.geteuid() != 0:
        raise PrepareError(f"{PACKAGE} is not installed and installing it needs root: run "
                           f"`sudo apt-get install {PACKAGE}`, or this script as root")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", PACKAGE]):
        r = subprocess.run(cmd, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if r.returncode != 0:
            raise PrepareError(f"`{' '.join(cmd)}` failed with status {r.returncode}")


def package_files() -> list[str]:
    r = subprocess.run(["dpkg", "-L", PACKAGE], capture_output=True, text=True)
    if r.returncode != 0:
        raise PrepareError(f"dpkg -L {PACKAGE} failed: {r.stderr.strip()}")
    return r.stdout.splitlines()


def find_sources(paths: list[str]) -> dict[str, Path]:
    """The four idx files (gzipped or not) among `paths`, by file name."""
    found = {}
    for p in paths:
        name = os.path.basename(p)
        base = name[:-3] if name.endswith(".gz") else name
        if base in FILES and os.path.isfile(p) and (base not in found or not name.endswith(".gz")):
            found[base] = Path(p)
    missing = sorted(set(FILES) - set(found))
    if missing:
        raise PrepareError(f"could not find {', '.join(missing)} (or .gz) among "
                           f"{len(paths)} files; looked for {', '.join(FILES)}")
    return found


def check_header(path: Path, name: str, expected_items: int | None) -> None:
    """idx header: two zero bytes, 0x08 (unsigned bytes), ndim; then ndim big-endian int32."""
    ndim, items = FILES[name]
    with open(path, "rb") as f:
        head = f.read(4 + 4 * ndim)
    if len(head) < 4 + 4 * ndim:
        raise PrepareError(f"{path}: too short for an idx header")
    zero, dtype, nd = struct.unpack(">HBB", head[:4])
    dims = struct.unpack(f">{ndim}I", head[4:]) if nd == ndim else ()
    if zero != 0 or dtype != 0x08 or nd != ndim:
        raise PrepareError(f"{path}: not an idx file of unsigned bytes with {ndim} dimension(s) "
                           f"(header {head[:4].hex()})")
    want = items if expected_items is None else expected_items
    if (want and dims[0] != want) or (ndim == 3 and dims[1:] != (28, 28)):
        raise PrepareError(f"{path}: expected {want} items"
                           f"{' of 28x28' if ndim == 3 else ''}, found dimensions {dims}")


def place(sources: dict[str, Path], root: Path, *, check_counts: bool = True) -> list[Path]:
    """Write the files, uncompressed, under root/FashionMNIST/raw; returns their paths."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = []
    for name, src in sorted(sources.items()):
        dst = raw / name
        opener = gzip.open if src.name.endswith(".gz") else open
        with opener(src, "rb") as fin, atomic_open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout, length=1 << 20)
            fout.flush()
            check_header(Path(fout.name), name, None if check_counts else 0)  # before publishing
        out.append(dst)
    return out


def verify(root: Path) -> tuple[int, int]:
    from torchvision.datasets import FashionMNIST

    train = FashionMNIST(str(root), train=True, download=False)
    test = FashionMNIST(str(root), train=False, download=False)
    return len(train), len(test)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="data/fashion_mnist", type=Path,
                    help="task.data.root for task=images (default: data/fashion_mnist)")
    ap.add_argument("--source", type=Path, default=None,
                    help="take the idx files from this folder instead of the Debian package")
    args = ap.parse_args(argv)
    try:
        if args.source is None:
            install_package()
            paths = package_files()
        else:
            paths = [str(p) for p in sorted(args.source.iterdir())]
        written = place(find_sources(paths), args.root)
        n_train, n_test = verify(args.root)
    except (PrepareError, OSError) as e:
        print(f"prepare_fashion_mnist: error: {e}", file=sys.stderr)
        return 2
    for p in written:
        print(f"wrote {p} ({p.stat().st_size} bytes)")
    print(f"Fashion-MNIST ready at {args.root}: {n_train} training and {n_test} test images "
          f"(task.data.dataset=fashion_mnist task.data.root={args.root})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
