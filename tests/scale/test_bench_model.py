"""The model benchmark's machinery on the CPU at toy size: rows, OOM/error/budget handling,
the same-size claim of the presets, and the written table / JSON / plot."""
from __future__ import annotations

import json

import pytest
import torch

from bytessm.bench.model import (PRESETS, SMOKE_PRESETS, _predict, build, markdown_table, run,
                                 write_outputs)

FAST = dict(min_time_s=0.0, max_repeats=1, log=lambda msg: None)


def test_smoke_rows():
    rows = run(smoke=True, models=["mamba-2x32", "transformer-1x32"], lengths=[16, 8], **FAST)
    assert [(r["model"], r["length"]) for r in rows] == [
        ("mamba-2x32", 8), ("mamba-2x32", 16), ("transformer-1x32", 8),
        ("transformer-1x32", 16)]
    for r in rows:
        assert r["status"] == "ok", r
        assert r["step_ms"] > 0 and r["repeats"] == 1 and r["peak_gib"] is None
        assert r["tokens"] == r["length"] and r["device"] == "cpu" and r["dtype"] == "fp32"
    tiny = build(SMOKE_PRESETS["mamba-2x32"])
    assert rows[0]["params"] == sum(p.numel() for p in tiny.parameters())


def test_presets_transformer_is_the_same_size_as_mamba_6x256():
    n_mamba = sum(p.numel() for p in build(PRESETS["mamba-6x256"]).parameters())
    n_tf = sum(p.numel() for p in build(PRESETS["transformer-3x256"]).parameters())
    assert abs(n_tf - n_mamba) / n_mamba < 0.05, (n_tf, n_mamba)


def _no_op_step(model, optimizer, x, y, **kw):
    return None


def test_oom_is_reported_and_longer_lengths_skipped():
    def step(model, optimizer, x, y, **kw):
        if model.backbone.blocks[0].mixer.__class__.__name__ == "Mamba" and x.shape[1] >= 32:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    rows = run(smoke=True, models=["mamba-2x32", "transformer-1x32"], lengths=[16, 32, 64],
               step_fn=step, **FAST)
    status = [(r["model"], r["length"], r["status"]) for r in rows]
    assert status == [("mamba-2x32", 16, "ok"), ("mamba-2x32", 32, "OOM"),
                      ("mamba-2x32", 64, "skipped"), ("transformer-1x32", 16, "ok"),
                      ("transformer-1x32", 32, "ok"), ("transformer-1x32", 64, "ok")]
    assert rows[1]["note"].startswith("CUDA out of memory")
    assert rows[2]["note"] == "OOM at length 32"
    line = markdown_table(rows).splitlines()[3]                      # length 2^5
    assert line.startswith("| 2^5 | OOM | ") and line.endswith(" ms | — |"), line


def test_other_errors_are_reported_not_raised():
    def step(model, optimizer, x, y, **kw):
        raise ValueError("kernel exploded")

    rows = run(smoke=True, models=["mamba-2x32"], lengths=[16, 32], step_fn=step, **FAST)
    assert [r["status"] for r in rows] == ["error", "skipped"]
    assert rows[0]["note"] == "ValueError: kernel exploded"


def test_budget_and_prediction_skip():
    rows = run(smoke=True, models=["mamba-2x32"], lengths=[16, 32], step_fn=_no_op_step,
               budget_s=-1.0, **FAST)
    assert [r["status"] for r in rows] == ["skipped", "skipped"]
    assert rows[0]["note"] == "time budget -1 s spent"
    # quadratic growth extrapolates x4 per doubling; sub-linear growth is taken as linear
    assert _predict([(10, 1.0), (20, 4.0)], 40) == pytest.approx(16.0)
    assert _predict([(10, 1.0), (20, 1.5)], 40) == pytest.approx(3.0)
    assert _predict([(10, 1.0)], 40) is None


def test_markdown_ratio_column():
    base = dict(batch=1, device="cuda", dtype="bf16-autocast", note="", peak_gib=1.0,
                params=2_000_000, d_model=256)
    rows = [dict(base, model="m", kind="mamba", length=1024, status="ok", step_ms=10.0),
            dict(base, model="t", kind="transformer", length=1024, status="ok", step_ms=125.0),
            dict(base, model="m", kind="mamba", length=2048, status="ok", step_ms=20.0),
            dict(base, model="t", kind="transformer", length=2048, status="OOM", step_ms=None)]
    lines = markdown_table(rows).splitlines()
    assert lines[0] == "| length | m (2.00M) | t (2.00M) | t / m |"
    assert lines[2] == "| 2^10 | 10.0 ms / 1.00 GiB | 125.0 ms / 1.00 GiB | 12.5x |"
    assert lines[3] == "| 2^11 | 20.0 ms / 1.00 GiB | OOM | — |"


def test_write_outputs(tmp_path):
    rows = run(smoke=True, models=["mamba-2x32"], lengths=[16], step_fn=_no_op_step, **FAST)
    paths = write_outputs(rows, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["results"] == rows
    assert paths["md"].read_text().startswith("| length | mamba-2x32")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "bench_model.json", "bench_model.md", "bench_model.png"]


def test_bytessm_bench_entry_point(tmp_path, capsys):
    """`bytessm bench what=model` goes through run_bench(cfg) with the model's section."""
    from omegaconf import OmegaConf

    from bytessm.bench import available, run_bench
    from bytessm.task import ConfigError

    assert "model" in available()
    cfg = OmegaConf.create({"what": "model", "out": str(tmp_path), "smoke": True,
                            "model": {"models": ["mamba-2x32"], "lengths": [16],
                                      "budget_s": None}})
    rows = run_bench(cfg)
    assert [(r["model"], r["length"], r["status"]) for r in rows] == [("mamba-2x32", 16, "ok")]
    assert capsys.readouterr().out.startswith("| length | mamba-2x32 (0.04M) |\n")
    assert (tmp_path / "bench_model.json").exists()
    with pytest.raises(ConfigError, match=r"bench what='nope' is not a benchmark; available: "):
        run_bench(OmegaConf.create({"what": "nope"}))
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['length'\]"):
        run_bench(OmegaConf.create({"what": "model", "model": {"length": [16]}}))
    with pytest.raises(ConfigError, match=r"give either lengths or min_log2/max_log2"):
        run_bench(OmegaConf.create({"what": "model", "model": {"lengths": [16], "max_log2": 5}}))
    with pytest.raises(ConfigError, match=r"lengths must be positive integers, got \[16, 0\]"):
        run_bench(OmegaConf.create({"what": "model", "model": {"lengths": [16, 0]}}))
    with pytest.raises(ConfigError, match=r"min_log2 <= max_log2"):
        run_bench(OmegaConf.create({"what": "model", "model": {"min_log2": 9, "max_log2": 8}}))


def test_script_exit_code_on_bad_preset(tmp_path, capsys):
    from bytessm.bench.model import main

    assert main(["--smoke", "--models", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown benchmark model 'nope'" in capsys.readouterr().err


def test_segmented_spec_takes_the_same_step_as_full_length():
    """The -seg presets train in segments: one SGD step lands on the same parameters."""
    import contextlib

    from bytessm.bench.model import _train_step

    x = torch.randint(0, 256, (1, 40))                                   # (B, L)
    y = torch.randint(0, 256, (1, 40))
    init = {k: v.clone() for k, v in build(SMOKE_PRESETS["mamba-2x32"]).state_dict().items()}
    flat = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])  # noqa: E731
    after = []
    for segment_len in (None, 16):
        model = build(SMOKE_PRESETS["mamba-2x32"])
        model.load_state_dict(init)
        start = flat(model)
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        _train_step(model, opt, x, y, autocast_dtype=None,
                    attention_ctx=contextlib.nullcontext, segment_len=segment_len)
        after.append(flat(model))
    rel = (after[0] - after[1]).norm() / (after[0] - start).norm()
    assert rel < 1e-4, float(rel)


def test_cuda_graph_needs_cuda():
    with pytest.raises(ValueError, match="cuda_graph=true .* needs a CUDA device, got cpu"):
        run(smoke=True, models=["mamba-2x32"], lengths=[16], cuda_graph=True, **FAST)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs")
def test_graphed_step_trains_as_the_eager_one():
    """Three replays of the captured step (after its two warm-up steps) move the weights as
    five eager steps do: Mamba in float32, the Transformer in bf16 (FlashAttention has no
    float32 kernel). The rows of a graphed run are complete."""
    from bytessm.bench.model import _Graphed, _attention_ctx, _train_step

    for name, dtype, tol in (("mamba-2x32", None, 1e-3), ("mamba-2x32-ckpt", None, 1e-3),
                             ("transformer-1x32", torch.bfloat16, 2e-2)):
        spec = SMOKE_PRESETS[name]
        g = torch.Generator().manual_seed(0)
        x, y = (torch.randint(0, 256, (2, 77), generator=g).cuda() for _ in range(2))
        kw = dict(autocast_dtype=dtype, attention_ctx=lambda spec=spec: _attention_ctx(spec))
        moved = []
        for step in (_train_step, _Graphed(_train_step)):
            torch.manual_seed(0)
            model = build(spec).cuda()
            start = [p.detach().clone() for p in model.parameters()]
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
            for _ in range(5 if step is _train_step else 3):
                step(model, opt, x, y, **kw)
            torch.cuda.synchronize()
            moved.append(torch.cat([(p.detach() - p0).flatten()
                                    for p, p0 in zip(model.parameters(), start)]))
        eager, graphed = moved
        err = (graphed - eager).norm() / eager.norm()
        assert eager.norm() > 0 and err < tol, (name, float(err))
    rows = run(smoke=True, device="cuda", models=["mamba-2x32", "mamba-2x32-seg"],
               lengths=[64, 128], cuda_graph=True, **FAST)
    assert [r["status"] for r in rows] == ["ok"] * 4
    assert [r["cuda_graph"] for r in rows] == [True, True, False, False]
    assert all(r["peak_gib"] > 0 for r in rows)
    assert "replayed from a CUDA graph" in markdown_table(rows)
    assert "Eager (not captured): mamba-2x32-seg" in markdown_table(rows)
