"""atomic_write / atomic_open: complete files only, nothing left behind when the write fails."""
import os

import numpy as np
import pytest

from bytessm.io import atomic_open, atomic_write


def test_writes_text_and_bytes(tmp_path):
    atomic_write(tmp_path / "a.txt", "héllo")
    atomic_write(tmp_path / "b.bin", b"\x00\xff")
    atomic_write(tmp_path / "c.txt", "ACGT\n", encoding="ascii")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
    assert (tmp_path / "c.txt").read_text() == "ACGT\n"


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(TypeError):
        atomic_write(target, 123)  # not str or bytes: fails inside the write
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_open_streams_binary_and_publishes_only_on_success(tmp_path):
    target = tmp_path / "x.npy"
    with atomic_open(target, "wb") as f:
        assert os.path.dirname(f.name) == str(tmp_path) and f.name != str(target)
        np.save(f, np.arange(5))
        f.flush()
        assert not target.exists()  # not visible until the block ends
    np.testing.assert_array_equal(np.load(target), np.arange(5))

    with pytest.raises(RuntimeError, match="half way"):
        with atomic_open(target, "wb") as f:
            f.write(b"garbage")
            raise RuntimeError("half way")
    np.testing.assert_array_equal(np.load(target), np.arange(5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_file_mode_follows_the_umask_like_open(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644  # mkstemp would give 0o600


def test_only_write_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(tmp_path / "a", "a"):
            pass
