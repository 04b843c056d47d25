"""`scripts/ncu_stalls.py` on a small report in the format `ncu --page source --csv
--print-source sass` writes: a kernel's section, its header row, one row per instruction."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import ncu_stalls  # noqa: E402

HEADER = ["Address", "Source", "Warp Stall Sampling (All Samples)",
          "Warp Stall Sampling (Not-issued Samples)", "Instructions Executed",
          "stall_long_sb", "stall_short_sb", "stall_selected",
          "stall_long_sb (Not Issued)"]
ROWS = [  # address, SASS, samples, executed, long_sb, short_sb, selected
    ("0x10", "MOV R1, c[0x0][0x28]", 5, 1, 0, 0, 5),
    ("0x20", "FMUL R2, R0, 1.4426950216293334961", 60, 1000, 55, 0, 5),   # waits on a load
    ("0x30", "@!P0 LDG.E.128 R4, desc[UR4][R6.64]", 10, 1000, 0, 0, 10),
    ("0x40", "SHFL.UP PT, R8, R2, 0x1, RZ", 10, 1000, 0, 5, 5),
    ("0x50", "FADD R9, R8, R2", 20, 600, 0, 18, 2),
    ("0x60", "EXIT", 0, 1, 0, 0, 0),
]


def _write(tmp_path: Path) -> Path:
    path = tmp_path / "src.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        for kernel in ("scan_fwd_kernel", "scan_bwd_gluon_kernel"):
            w.writerow(["Kernel Name", kernel, ""])
            w.writerow(HEADER)
            for a, src, s, e, ls, ss, sel in ROWS:
                w.writerow([a, src, s, s - sel, e, ls, ss, sel, ls])
    return path


def test_hot_loop_reasons_and_top_instructions(tmp_path, capsys):
    ncu_stalls.main([str(_write(tmp_path)), "--kernel", "scan_fwd_kernel", "--top", "2"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "scan_fwd_kernel"
    # the loop: the 4 instructions run at least half as often as the most run; 100 of the
    # kernel's 105 samples
    assert "4 in the hot loop; 95% of 105 samples there" in out[1]
    assert "long_sb 55.0%, short_sb 23.0%, selected 22.0%" in out[2]        # (Not Issued) apart
    assert "FMUL 60.0%/1" in out[3] and "LDG 10.0%/1" in out[3]                # predicate dropped
    assert out[5].split()[:3] == ["0", "60.0%", "long_sb"] and "FMUL R2, R0" in out[5]
    assert out[6].split()[:3] == ["3", "20.0%", "short_sb"] and "FADD R9" in out[6]
    assert len(out) == 7


def test_every_kernel_by_default_and_clear_errors(tmp_path, capsys):
    path = _write(tmp_path)
    ncu_stalls.main([str(path)])
    out = capsys.readouterr().out
    assert "scan_fwd_kernel\n" in out and "scan_bwd_gluon_kernel\n" in out
    with pytest.raises(SystemExit, match="no kernel 'other'; it has scan_fwd_kernel"):
        ncu_stalls.main([str(path), "--kernel", "other"])
    empty = tmp_path / "empty.csv"
    empty.write_text("a,b\n")
    with pytest.raises(SystemExit, match="no 'Kernel Name' section"):
        ncu_stalls.main([str(empty)])
