"""scripts/bench_vision.py: the crossover rule on hand-made rows, and a --smoke run on the CPU."""
import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_vision.py"
spec = importlib.util.spec_from_file_location("bench_vision", SCRIPT)
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench          # dataclasses look their module up
spec.loader.exec_module(bench)


def _row(model, res, ips, gib, status="ok"):
    return {"model": model, "resolution": res, "mode": "infer", "status": status,
            "images_per_s": ips, "peak_gib": gib}


def test_crossover_is_where_vim_wins_from_then_on():
    rows = [_row("vim", 224, 100, 1.0), _row("vit", 224, 200, 0.5),
            _row("vim", 512, 30, 2.0), _row("vit", 512, 20, 3.0),     # wins
            _row("vim", 768, 10, 3.0), _row("vit", 768, 12, 9.0),     # slower again
            _row("vim", 1024, 6, 4.0), _row("vit", 1024, 4, 20.0),
            _row("vim", 1248, 4, 5.0), _row("vit", 1248, None, None, status="OOM")]
    assert bench.crossover(rows, "infer", "images_per_s", "vim", "vit") == 1024
    assert bench.crossover(rows, "infer", "peak_gib", "vim", "vit") == 512
    rows[6]["images_per_s"] = 1                                        # Vim slower at 1024
    assert bench.crossover(rows, "infer", "images_per_s", "vim", "vit") == 1248
    rows[-1].update(status="ok", images_per_s=9, peak_gib=1.0)
    assert bench.crossover(rows, "infer", "images_per_s", "vim", "vit") is None


def test_smoke_run_writes_table_and_json(tmp_path, capsys):
    assert bench.main(["--smoke", "--out", str(tmp_path), "--resolutions", "32"]) == 0
    out = capsys.readouterr().out
    assert "| infer | 32x32 | 5 | 2 |" in out and "| train | 32x32 | 5 | 2 |" in out
    data = json.loads((tmp_path / "bench_vision.json").read_text())
    rows = data["results"]
    assert {(r["model"], r["mode"]) for r in rows} == {
        ("vim-smoke", "infer"), ("vit-smoke", "infer"), ("vim-smoke", "train"),
        ("vit-smoke", "train")}
    assert all(r["status"] == "ok" and r["images_per_s"] > 0 and r["tokens"] == 5 for r in rows)
    assert (tmp_path / "bench_vision.md").read_text().startswith("| mode |")
