"""Training-step time and peak memory of whole models (Mamba vs same-size Transformer)
against sequence length 2^10 .. 2^20 at batch 1; see bytessm/bench/model.py.

    PYTHONPATH=. python scripts/bench_model.py --out results/bench_model       # GPU, ~5 min
    PYTHONPATH=. python scripts/bench_model.py --smoke --out /tmp/bench_smoke  # CPU, tiny

Prints the Markdown table; writes bench_model.{md,json,png} into --out.
"""
import sys

from bytessm.bench.model import main

if __name__ == "__main__":
    sys.exit(main())
