"""`scripts/bench_scan_ab.py`'s `--base-config`: a version's calls run under its own
BYTESSM_SCAN_CONFIG (here on the CPU, in the interpreter, at a chunk of 16 against the
interpreter's 32: the backward refuses states saved at another granularity, so both of
its passes must see the configuration), and the environment is left as it was."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import bench_scan_ab  # noqa: E402

from bytessm.kernels.triton import scan  # noqa: E402

from kernel_helpers import scan_inputs  # noqa: E402


def test_base_config_applies_to_both_passes(monkeypatch):
    monkeypatch.delenv("BYTESSM_SCAN_CONFIG", raising=False)
    ins = scan_inputs(batch=1, dim=4, length=40, dstate=4, dtype=torch.float32, has_D=True,
                      has_z=True, has_bias=True, initial_state=False, num_seqs=None,
                      softplus=True)
    config = '{"chunk": 16, "chunk_bwd": 16}'
    fwd, bwd = bench_scan_ab.passes(scan, ins, config=config)
    out, _last, states = fwd()
    assert states.shape[1] == 3                     # 40 positions in chunks of 16
    grads = bwd()
    assert grads[0].shape == ins["u"].shape
    assert "BYTESSM_SCAN_CONFIG" not in os.environ
    fwd_default, _ = bench_scan_ab.passes(scan, ins)
    assert fwd_default()[2].shape[1] == 2           # the interpreter's chunk of 32
    monkeypatch.setenv("BYTESSM_SCAN_CONFIG", '{"chunk": 32}')
    with bench_scan_ab.scan_config(config):
        assert os.environ["BYTESSM_SCAN_CONFIG"] == config
    assert os.environ["BYTESSM_SCAN_CONFIG"] == '{"chunk": 32}'
