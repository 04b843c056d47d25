#!/usr/bin/env python3
"""Print the fastest configuration of a `bench_scan.py --tune` run as BYTESSM_SCAN_CONFIG JSON.

    python scripts/pick_scan_config.py tune.json [--shape 1x131072]

"Fastest" is the smallest forward+backward time at the given shape (the forward's ranking
agrees closely); the result goes into kernels/triton/configs.py's TUNED table.
"""
import argparse
import dataclasses
import json

from bytessm.kernels.triton.configs import ScanConfig

FIELDS = [f.name for f in dataclasses.fields(ScanConfig)]

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("tune_json")
p.add_argument("--shape", default="1x131072")
a = p.parse_args()
batch, length = (int(v) for v in a.shape.split("x"))
rows = [r for r in json.load(open(a.tune_json)) if (r["batch"], r["length"]) == (batch, length)]
best = min(rows, key=lambda r: r["fwd_bwd_ms"])
print(json.dumps({k: best[k] for k in FIELDS if k in best}))
