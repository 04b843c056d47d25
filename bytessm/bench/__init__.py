"""Benchmarks importable by the CLI (`bytessm bench what=...`) and by the thin scripts in
scripts/: each module has `run(**settings) -> list[dict]` and writes a Markdown table, JSON
and a plot. `model`: training step time and memory of whole models against length."""
