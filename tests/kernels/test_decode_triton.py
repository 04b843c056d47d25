"""Decoding kernels against the reference step: the selective state update and the causal
conv window update, in place, with and without a batch -> state-row map."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bytessm.kernels import causal_conv1d_update, reference, selective_scan, selective_state_update

from kernel_helpers import assert_close

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _step_inputs(batch, dim, dstate, groups, dtype, rows, g):
    r = lambda *s, dt=dtype: torch.randn(*s, generator=g).to(DEVICE, dt)  # noqa: E731
    bc = (batch, dstate) if groups == 0 else (batch, groups, dstate)
    return dict(state=torch.randn(rows, dim, dstate, generator=g).to(DEVICE),
                x=r(batch, dim), dt=r(batch, dim), A=-(torch.rand(dim, dstate, generator=g) + 0.1).to(DEVICE),
                B=r(*bc), C=r(*bc), D=r(dim, dt=torch.float32), z=r(batch, dim),
                dt_bias=r(dim, dt=torch.float32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("groups", [0, 2], ids=["shared", "g2"])
@pytest.mark.parametrize("indexed", [False, True], ids=["rows", "index-map"])
@pytest.mark.parametrize("full", [True, False], ids=["D-z-bias", "bare"])
@pytest.mark.parametrize("block_d", [None, 2], ids=["default-block", "block-2"])
def test_state_update_matches_reference(dtype, groups, indexed, full, block_d, monkeypatch):
    """The default block (16 channels, more than the 12 there are: masked) and blocks of 2
    channels (6 programs a row, each within one B/C group)."""
    if block_d:
        monkeypatch.setenv("BYTESSM_DECODE_CONFIG", f'{{"block_d": {block_d}}}')
    g = torch.Generator().manual_seed(3)
    batch, dim, dstate = 3, 12, 5
    ins = _step_inputs(batch, dim, dstate, groups, dtype, rows=7 if indexed else batch, g=g)
    if not full:
        ins.update(D=None, z=None, dt_bias=None)
    idx = torch.tensor([5, 0, 3], device=DEVICE) if indexed else None
    state_ref = ins.pop("state")
    state = state_ref.clone()
    y = selective_state_update(state, **ins, dt_softplus=full, state_batch_indices=idx,
                               backend="triton")
    y_ref = reference.selective_state_update_ref(state_ref, **ins, dt_softplus=full,
                                                 state_batch_indices=idx)
    assert y.dtype == dtype
    assert_close("y", y.float(), y_ref.float(), dtype)
    assert_close("state", state, state_ref, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("rank", [1, 5, 16])
def test_state_update_applies_dt_proj(dtype, rank):
    """With dt_proj_weight the step takes dt (batch, R), a strided view as the decode step's
    split of x_proj's output gives it, and projects it itself: the same as projecting first
    (F.linear in the weight's dtype) and stepping, on both backends."""
    g = torch.Generator().manual_seed(rank)
    batch, dim, dstate = 3, 12, 5
    ins = _step_inputs(batch, dim, dstate, 0, dtype, rows=batch, g=g)
    x_dbl = torch.randn(batch, rank + 7, generator=g).to(DEVICE, dtype)
    low = x_dbl[:, 2:2 + rank]                                   # (batch, R), row stride R + 7
    weight = (torch.randn(dim, rank, generator=g) / rank ** 0.5).to(DEVICE, dtype)
    state = ins.pop("state")
    ins.pop("dt")
    want_state = state.clone()
    want = reference.selective_state_update_ref(want_state, dt=F.linear(low, weight), **ins)
    for backend in ("reference", "triton"):
        got_state = state.clone()
        got = selective_state_update(got_state, dt=low, dt_proj_weight=weight, **ins,
                                     backend=backend)
        assert_close(f"y ({backend})", got.float(), want.float(), dtype)
        assert_close(f"state ({backend})", got_state, want_state, torch.float32)
    with pytest.raises(ValueError, match=r"dt must be \(batch, R\) = \(3, R\).*dt \(3, 12\)"):
        selective_state_update(state, dt=torch.zeros(batch, dim, device=DEVICE),
                               dt_proj_weight=weight, **ins)


def test_state_update_refuses_a_batch_past_the_grid():
    """The step's grid has the batch on its second axis (at most 65535 programs): a larger
    batch is refused with a message, not launched."""
    g = torch.Generator().manual_seed(0)
    ins = _step_inputs(65536, 1, 1, 0, torch.float32, rows=65536, g=g)
    with pytest.raises(ValueError, match="batch up to 65535 per call, got 65536"):
        selective_state_update(**ins, backend="triton")


def test_steps_continue_a_prefill():
    """Prefill with the parallel scan, then decode step by step: same outputs as one scan."""
    g = torch.Generator().manual_seed(4)
    batch, dim, dstate, length, cut = 2, 8, 16, 24, 17
    r = lambda *s: torch.randn(*s, generator=g).to(DEVICE)  # noqa: E731
    u, delta, z = r(batch, dim, length), r(batch, dim, length), r(batch, dim, length)
    B, C = r(batch, dstate, length), r(batch, dstate, length)
    A = -(torch.rand(dim, dstate, generator=g) + 0.1).to(DEVICE)
    D, bias = r(dim), r(dim)
    full = selective_scan(u, delta, A, B, C, D, z, bias, backend="triton")
    y, state = selective_scan(u[..., :cut], delta[..., :cut], A, B[..., :cut], C[..., :cut], D,
                              z[..., :cut], bias, return_last_state=True, backend="triton")
    steps = [selective_state_update(state, u[..., t], delta[..., t], A, B[..., t], C[..., t],
                                    D, z[..., t], bias, backend="triton")
             for t in range(cut, length)]
    assert_close("decoded", torch.cat([y, torch.stack(steps, -1)], -1), full, torch.float32)


@pytest.mark.parametrize("width", [2, 4])
@pytest.mark.parametrize("indexed", [False, True], ids=["rows", "index-map"])
@pytest.mark.parametrize("activation", ["silu", None], ids=["silu", "linear"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=lambda d: str(d)[6:])
def test_conv_update_matches_reference(width, indexed, activation, dtype):
    g = torch.Generator().manual_seed(5)
    batch, dim, rows = 3, 10, 6 if indexed else 3
    x = torch.randn(batch, dim, generator=g).to(DEVICE, dtype)
    state_ref = torch.randn(rows, dim, width - 1, generator=g).to(DEVICE)
    weight, bias = torch.randn(dim, width, generator=g).to(DEVICE), torch.randn(dim, generator=g).to(DEVICE)
    idx = torch.tensor([4, 1, 2], device=DEVICE) if indexed else None
    state = state_ref.clone()
    y = causal_conv1d_update(x, state, weight, bias, activation=activation,
                             state_batch_indices=idx, backend="triton")
    y_ref = reference.causal_conv1d_update_ref(x, state_ref, weight, bias, activation=activation,
                                               state_batch_indices=idx)
    assert y.dtype == dtype
    assert_close("y", y.float(), y_ref.float(), dtype)
    assert_close("conv_state", state, state_ref, torch.float32)


def test_conv_update_silu_sees_the_rounded_conv():
    """In bf16 the SiLU acts on the conv output rounded to bf16, as F.silu(F.conv1d(x)) does
    in the parallel forward: the step with its SiLU equals F.silu of the step without one."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(4, 64, generator=g).to(DEVICE, torch.bfloat16)
    window = torch.randn(4, 64, 3, generator=g).to(DEVICE)
    weight, bias = torch.randn(64, 4, generator=g).to(DEVICE), torch.randn(64, generator=g).to(DEVICE)
    for backend in ("reference", "triton"):
        plain = causal_conv1d_update(x, window.clone(), weight, bias, activation=None,
                                     backend=backend)
        fused = causal_conv1d_update(x, window.clone(), weight, bias, activation="silu",
                                     backend=backend)
        torch.testing.assert_close(fused.float(), F.silu(plain.float()).to(torch.bfloat16).float(),
                                   rtol=0, atol=0)


def test_conv_update_rejects_unknown_activation():
    x = torch.randn(1, 4, device=DEVICE)
    with pytest.raises(ValueError, match="activation"):
        causal_conv1d_update(x, torch.zeros(1, 4, 3, device=DEVICE), torch.ones(4, 4, device=DEVICE),
                             activation="relu", backend="triton")


def test_decode_config_by_batch_class(monkeypatch):
    """The state step's launch configuration by batch class (measured against mamba_ssm's
    step, configs.decode_config), capped at the channels there are; an override wins."""
    from bytessm.kernels.triton.configs import decode_config

    assert (decode_config(1, 1536, 16).block_d, decode_config(1, 1536, 16).warps) == (32, 4)
    assert (decode_config(16, 1536, 16).block_d, decode_config(16, 1536, 16).warps) == (32, 4)
    assert (decode_config(128, 1536, 16).block_d, decode_config(128, 1536, 16).warps) == (32, 1)
    assert decode_config(128, 12, 16).block_d == 16                 # next power of two of 12
    assert decode_config(128, 1536, 256).block_d == 2               # 512 elements at dstate 256
    monkeypatch.setenv("BYTESSM_DECODE_CONFIG", '{"block_d": 4, "warps": 2}')
    assert (decode_config(1, 1536, 16).block_d, decode_config(1, 1536, 16).warps) == (4, 2)

