"""Test setup shared by every test module.

Without CUDA, the Triton kernels run in Triton's interpreter: TRITON_INTERPRET must be
set before any kernel module is imported, which is why it is set here, at collection.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# Under pytest-xdist (the README's `-n auto`) each worker is a process of its own: give each
# its share of the cores, so that the workers' torch thread pools do not oversubscribe them
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _workers))


@pytest.fixture
def graph_matches_eager(tmp_path):
    """`graph_matches_eager(*overrides)`: `bytessm train` with the overrides for 8 steps on
    CUDA in float32, eagerly and with trainer.cuda_graph=true (fresh processes); the graphed
    run (three eager warm-up steps, then the captured step replayed) must take the eager
    run's losses (rel 1e-4: the scan's atomic adds are summed in another order). That a
    capture happens is checked in-process by tests/core/test_cuda_graph.py, not here.
    Returns the losses."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("bytessm")

    def check(*overrides: str, steps: int = 8) -> list[float]:
        losses = {}
        for graph in ("false", "true"):
            out = tmp_path / f"graph_{graph}"
            r = subprocess.run(
                [str(exe), "train", *overrides, f"trainer.max_steps={steps}",
                 "trainer.log_every=1", "trainer.device=cuda", "trainer.precision=fp32",
                 "trainer.progress=false", f"trainer.cuda_graph={graph}",
                 f"trainer.out_dir={out}"],
                capture_output=True, text=True, cwd=tmp_path, timeout=600,
                env={**os.environ, "PYTHONWARNINGS": "ignore"})
            assert r.returncode == 0, r.stderr[-3000:]
            losses[graph] = [row["loss"] for row in map(json.loads, open(out / "metrics.jsonl"))
                             if row["split"] == "train"]
        assert len(losses["true"]) == steps
        assert losses["true"] == pytest.approx(losses["false"], rel=1e-4)
        return losses["true"]

    return check
