#!/usr/bin/env python3
"""Where a kernel's hot loop waits, instruction by instruction, from an Nsight Compute report.

    ncu --clock-control none --kernel-name regex:scan_ --launch-skip 2 --launch-count 2 \\
        --section SourceCounters --section WarpStateStats -o /tmp/prof \\
        python scripts/scan_once.py --length 131072
    ncu --import /tmp/prof.ncu-rep --page source --csv --print-source sass > /tmp/src.csv
    python scripts/ncu_stalls.py /tmp/src.csv [--kernel scan_bwd_gluon_kernel] [--top 25]

The CSV holds, for each profiled kernel, one row per SASS instruction: how often it ran and
how many of the warp-state samples found a warp stopped at it, by stall reason (a sample
names the instruction the warp is about to issue, so a wait shows at the instruction that
uses the late result). The hot loop is taken as the instructions that ran at least half as
often as the most frequent one. For each kernel this prints the loop's share of the samples,
its stall reasons, its samples by opcode, and its `--top` instructions with their two main
reasons (how the twenty-second session found the backward waiting on dA's sum across the
lanes and the forward on its next state's loads: docs/benchmarks/scan.md).
"""
from __future__ import annotations

import argparse
import collections
import csv
import re
import sys


def read_report(path: str) -> dict[str, list[dict[str, str]]]:
    """Kernel name -> its instruction rows (column name -> text)."""
    kernels: dict[str, list[dict[str, str]]] = {}
    name = header = None
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if not row:
                continue
            if row[0] == "Kernel Name":
                name, header = row[1], None
                kernels[name] = []
            elif row[0] == "Address":
                header = row
            elif name is not None and header is not None:
                kernels[name].append(dict(zip(header, row)))
    if not kernels:
        raise SystemExit(f"{path}: no 'Kernel Name' section; expected the output of "
                         "`ncu --import <report> --page source --csv --print-source sass`")
    return kernels


def _number(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def _opcode(sass: str) -> str:
    """'@!P0 LDG.E.128 R4, ...' -> 'LDG'."""
    return re.sub(r"^@!?U?P[0-9T]\s+", "", sass.strip()).split(" ")[0].split(".")[0]


def summarize(rows: list[dict[str, str]], top: int) -> list[str]:
    """The report's lines for one kernel (see the module docstring)."""
    samples = "Warp Stall Sampling (All Samples)"
    if not rows or samples not in rows[0]:
        return ["  no warp-state samples: profile with --section SourceCounters"]
    reasons = [k for k in rows[0] if k.startswith("stall_") and "Not Issued" not in k]
    most = max(_number(r["Instructions Executed"]) for r in rows)
    loop = [r for r in rows if _number(r["Instructions Executed"]) >= most / 2]
    total = sum(_number(r[samples]) for r in rows)
    in_loop = sum(_number(r[samples]) for r in loop) or 1.0
    lines = [f"  {len(rows)} instructions, {len(loop)} in the hot loop; "
             f"{in_loop / (total or 1.0):.0%} of {total:.0f} samples there"]
    by_reason = collections.Counter()
    by_opcode, count = collections.Counter(), collections.Counter()
    for r in loop:
        for k in reasons:
            by_reason[k[len("stall_"):]] += _number(r[k])
        by_opcode[_opcode(r["Source"])] += _number(r[samples])
        count[_opcode(r["Source"])] += 1
    lines.append("  stall reasons in the loop: " + ", ".join(
        f"{k} {v / in_loop:.1%}" for k, v in by_reason.most_common(8)))
    lines.append("  samples by opcode (share / instructions): " + ", ".join(
        f"{k} {v / in_loop:.1%}/{count[k]}" for k, v in by_opcode.most_common(10)))
    lines.append(f"  the loop's {top} most sampled instructions (position in the loop):")
    ranked = sorted(enumerate(loop), key=lambda ir: -_number(ir[1][samples]))[:top]
    for i, r in ranked:
        two = sorted(((_number(r[k]), k[len("stall_"):]) for k in reasons), reverse=True)[:2]
        why = ", ".join(f"{k} {v / in_loop:.1%}" for v, k in two if v)
        lines.append(f"  {i:4d} {_number(r[samples]) / in_loop:6.1%}  {why:<34} "
                     f"{r['Source'].strip()[:64]}")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("csv", help="ncu --page source --csv --print-source sass output")
    p.add_argument("--kernel", help="only this kernel (default: every kernel in the report)")
    p.add_argument("--top", type=int, default=20, help="instructions listed per kernel")
    a = p.parse_args(argv)
    kernels = read_report(a.csv)
    if a.kernel and a.kernel not in kernels:
        raise SystemExit(f"{a.csv}: no kernel {a.kernel!r}; it has {', '.join(kernels)}")
    for name, rows in kernels.items():
        if a.kernel in (None, name):
            print(name)
            print("\n".join(summarize(rows, a.top)))


if __name__ == "__main__":
    sys.exit(main())
