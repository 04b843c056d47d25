"""scripts/prepare_fashion_mnist.py without apt: placing gzipped or plain idx files where
torchvision's FashionMNIST reads them, header checks, and no half-written files."""
import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from torchvision.datasets import FashionMNIST

from image_fixtures import make_idx

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "prepare_fashion_mnist.py"
spec = importlib.util.spec_from_file_location("prepare_fashion_mnist", SCRIPT)
prep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prep)


def _package_like(tmp_path: Path) -> tuple[Path, dict]:
    """Tiny idx files, gzipped like Debian's /usr/share/datasets/fashion-mnist."""
    arrays = make_idx(tmp_path / "made", "FashionMNIST", n_train=6, n_test=4)
    src = tmp_path / "pkg"
    src.mkdir()
    for f in (tmp_path / "made" / "FashionMNIST" / "raw").iterdir():
        (src / (f.name + ".gz")).write_bytes(gzip.compress(f.read_bytes()))
    return src, arrays


def test_place_gzipped_files_for_torchvision(tmp_path):
    src, arrays = _package_like(tmp_path)
    listing = ["/usr/share/doc/x", *map(str, sorted(src.iterdir()))]
    written = prep.place(prep.find_sources(listing), tmp_path / "root", check_counts=False)
    assert sorted(p.name for p in written) == sorted(prep.FILES)
    ds = FashionMNIST(str(tmp_path / "root"), train=False, download=False)
    assert np.array_equal(ds.data.numpy(), arrays["t10k"][0])
    assert ds.targets.tolist() == arrays["t10k"][1].tolist()
    assert not [p for p in (tmp_path / "root" / "FashionMNIST" / "raw").iterdir()
                if p.name.startswith(".")]


def test_published_counts_are_enforced(tmp_path):
    src, _ = _package_like(tmp_path)
    with pytest.raises(prep.PrepareError, match=r"expected 10000 items of 28x28, found "
                                                r"dimensions \(4, 28, 28\)"):
        prep.place(prep.find_sources(list(map(str, src.iterdir()))), tmp_path / "root")
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    assert not list(raw.iterdir())                            # nothing half-written


def test_not_an_idx_file(tmp_path):
    src, _ = _package_like(tmp_path)
    (src / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x1f\x8b\x08\x00junkjunk"))
    with pytest.raises(prep.PrepareError, match="not an idx file of unsigned bytes"):
        prep.place(prep.find_sources(list(map(str, src.iterdir()))), tmp_path / "root",
                   check_counts=False)


def test_missing_files_are_named(tmp_path, capsys):
    src, _ = _package_like(tmp_path)
    (src / "t10k-labels-idx1-ubyte.gz").unlink()
    assert prep.main(["--source", str(src), "--root", str(tmp_path / "root")]) == 2
    err = capsys.readouterr().err
    assert "could not find t10k-labels-idx1-ubyte (or .gz)" in err
