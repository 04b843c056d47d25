#!/bin/bash
# Graphed training throughput of several checkouts of bytessm, alternated (CUDA):
#
#     bash scripts/bench_graph_trees.sh ROUNDS TREE [TREE ...]
#
# Each TREE is a checkout (e.g. `git archive <commit> | tar -x -C /tmp/old`) whose
# `bytessm` package imports from the tree itself (kernels/, tasks/ and configs/ linked into
# bytessm/ as the package's own install does). Per round and per case (the default job;
# MQAR with 4 pairs at batch 256), every tree runs `bytessm train trainer.cuda_graph=true`
# for 1000 steps in a fresh process, and the line gives the symbols/s it logged over steps
# 901-1000 and 801-900. Runs of one tree differ by tens of percent on one machine where the
# step is host-bound (the default job): read the rounds, not one run.
set -euo pipefail
ROUNDS=$1; shift
run() {  # tree overrides...
  local tree=$1; shift
  local out; out=$(mktemp -d)
  (cd "$tree" && PYTHONPATH="$tree:${PYTHONPATH:-}" timeout 300 python3 -m bytessm.cli train "$@" \
      trainer.out_dir="$out" trainer.max_steps=1000 trainer.log_every=100 trainer.eval_every=0 \
      trainer.save_every=0 trainer.progress=false trainer.cuda_graph=true > "$out/log.txt" 2>&1)
  python3 - "$out/metrics.jsonl" <<'PY'
import json, sys
rows = [r for r in map(json.loads, open(sys.argv[1])) if r["split"] == "train"]
print(f"{rows[-1]['symbols_per_s']:,.0f} / {rows[-2]['symbols_per_s']:,.0f}  loss {rows[-1]['loss']:.4f}")
PY
  rm -rf "$out"
}
for r in $(seq "$ROUNDS"); do
  for c in default mqar; do
    args=()
    if [ "$c" = mqar ]; then
      args=(task=mqar task.vocab=64 task.n_pairs=4 task.seq_len=64 trainer.batch_size=256)
    fi
    for tree in "$@"; do
      echo "round $r $c $(basename "$tree"): $(run "$tree" "${args[@]}")"
    done
  done
done
