"""The fused Mamba-stack decode kernel (`kernels/triton/stack.py`, `bytessm.nn.stack.FusedStack`)
against the blocks' own steps (`Block.step` with the reference kernels and F.linear):
residual out, every layer's conv window and SSM state, several steps in a row from random
(non-zero) states; float32 and bf16 weights; batch 1 (the kernel's); with and without the optional
biases; conv widths 2-4; d_inner that does not fill the last channel block. Under
TRITON_INTERPRET=1 one program takes every block; on a GPU the grid barrier is real."""
from __future__ import annotations

import pytest
import torch

import bytessm.nn.decode as decode
from bytessm.generation import cast_for_inference
from bytessm.nn import Block, Mamba
from bytessm.nn.mamba import MambaState
from bytessm.nn.stack import FusedStack, stack_blocker

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# relative L2 error, per weight dtype: both paths round at the same points, only the order
# of the float32 sums differs. Measured on the CPU (interpreter: one program, its atomics in
# a fixed order): <= 4e-7 in float32; in bf16 0 for the residual and the windows, <= 3e-7
# for the float32 SSM states, where dropping the rounding of x_proj's output gives 3.6e-5.
# On a GPU the atomics' order varies and a bf16 rounding can flip by one unit.
TOL = {torch.float32: 1e-5, torch.bfloat16: 5e-3 if DEVICE == "cuda" else 2e-6}


def rel_err(out, ref):
    return float((out.float() - ref.float()).norm() / ref.float().norm())


def mamba_stack(n_layer=3, d_model=24, *, bias=False, conv_bias=True, d_conv=4, d_state=8,
                dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    blocks = torch.nn.ModuleList(
        Block(d_model, Mamba(d_model, d_state=d_state, d_conv=d_conv, bias=bias,
                             conv_bias=conv_bias, scan_backend="reference"))
        for _ in range(n_layer))
    with torch.no_grad():  # not the init's ones and zeros: every parameter matters
        for p in blocks.parameters():
            if p.dim() == 1:
                p.add_(0.3 * torch.randn_like(p))
    blocks = cast_for_inference(blocks.to(DEVICE), dtype)
    return list(blocks)


def random_states(blocks, batch=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [MambaState(torch.randn(batch, b.mixer.d_inner, b.mixer.ssm.d_conv - 1, generator=g),
                       0.5 * torch.randn(batch, b.mixer.d_inner, b.mixer.ssm.d_state, generator=g))
            for b in blocks]


def to_device(states):
    return [MambaState(s.conv.to(DEVICE), s.ssm.to(DEVICE)) for s in states]


def compare(blocks, steps, dtype, monkeypatch, **launch):
    monkeypatch.setattr(decode, "DECODE_GEMV", "off")
    ref_states = to_device(random_states(blocks))
    states = [MambaState(s.conv.clone(), s.ssm.clone()) for s in ref_states]
    fused = FusedStack(blocks, states)
    g = torch.Generator().manual_seed(2)
    d_model = blocks[0].norm.weight.shape[0]
    for t in range(steps):
        residual = torch.randn(1, d_model, generator=g).to(DEVICE)
        with torch.no_grad():
            ref = residual.clone()
            for b, s in zip(blocks, ref_states):
                ref = b.step(ref, s)
        out = fused(residual, states, **launch)
        assert rel_err(out, ref) < TOL[dtype], (t, rel_err(out, ref))
        for i, (s, r) in enumerate(zip(states, ref_states)):
            assert rel_err(s.conv, r.conv) < TOL[dtype], (t, i)
            assert rel_err(s.ssm, r.ssm) < TOL[dtype], (t, i)
    ws = fused.workspace   # left zero for the next launch
    assert not ws.acc.any() and not ws.dbc.any()
    return fused, states, ref_states


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_fused_stack_matches_block_steps(dtype, monkeypatch):
    compare(mamba_stack(dtype=dtype), steps=3, dtype=dtype, monkeypatch=monkeypatch)


def test_fused_stack_one_block_per_program(monkeypatch):
    """d_model 8 -> d_inner 16, one channel block: the interpreter's one program takes the GPU
    path (each tile requested a phase ahead, carried across the barrier)."""
    compare(mamba_stack(3, 8), steps=3, dtype=torch.bfloat16, monkeypatch=monkeypatch)


@pytest.mark.parametrize("d_conv", [2, 3])
def test_fused_stack_biases_and_conv_widths(d_conv, monkeypatch):
    """in_proj and out_proj biases (added before their rounding), no conv bias, narrower
    windows; d_model 20 -> d_inner 40: the last block of 16 channels is partly masked."""
    blocks = mamba_stack(2, 20, bias=True, conv_bias=False, d_conv=d_conv, d_state=5,
                         dtype=torch.bfloat16)
    compare(blocks, steps=2, dtype=torch.bfloat16, monkeypatch=monkeypatch)


def test_fused_stack_follows_weight_changes(monkeypatch):
    """The address table and the float32 copies are rebuilt when a parameter changes in place
    (its version) and when other states are passed."""
    blocks = mamba_stack(2)
    fused, states, ref_states = compare(blocks, steps=1, dtype=torch.float32,
                                        monkeypatch=monkeypatch)
    with torch.no_grad():
        blocks[1].mixer.ssm.D.mul_(-2.0)
        blocks[0].norm.weight.add_(0.5)
    residual = torch.randn(1, 24).to(DEVICE)
    with torch.no_grad():
        ref = residual.clone()
        for b, s in zip(blocks, ref_states):
            ref = b.step(ref, s)
    other = [MambaState(s.conv.clone(), s.ssm.clone()) for s in states]
    before = states[1].ssm.clone()
    assert rel_err(fused(residual, other), ref) < TOL[torch.float32]
    assert rel_err(other[1].ssm, ref_states[1].ssm) < TOL[torch.float32]
    assert torch.equal(states[1].ssm, before)      # the states it was built with: untouched


def test_misaligned_weights_are_copied(monkeypatch):
    """A parameter whose storage starts off a 16-byte boundary (a view into a larger buffer)
    is copied for the kernel, whose vector loads assume alignment (the interpreter does not
    care, a GPU faults): every address in the table aligned, the same results."""
    blocks = mamba_stack(2)
    for p in (blocks[1].norm.weight, blocks[0].mixer.ssm.D, blocks[1].mixer.out_proj.weight):
        buf = torch.empty(p.numel() + 1, device=DEVICE)
        buf[1:].copy_(p.data.flatten())
        p.data = buf[1:].view_as(p.data)
        assert p.data_ptr() % 16
    fused, _, _ = compare(blocks, steps=2, dtype=torch.float32, monkeypatch=monkeypatch)
    assert not (fused.layers.table.cpu() % 16).any()


def test_which_stacks_qualify():
    blocks = mamba_stack(2)
    assert stack_blocker(blocks) is None
    assert "no blocks" in stack_blocker([])
    with_mlp = Block(24, Mamba(24), mlp=torch.nn.Linear(2, 2))
    assert "not a Mamba block without MLP" in stack_blocker(blocks + [with_mlp])
    other = Block(24, Mamba(24, d_state=4))
    assert "differ" in stack_blocker(blocks + [other.to(DEVICE)])


def test_bad_states_are_refused():
    blocks = mamba_stack(2)
    states = to_device(random_states(blocks))
    with pytest.raises(ValueError, match=r"layer 0's conv window must be a contiguous, 16-byte "
                                         r"aligned float32 \(1, 48, 3\) tensor"):
        FusedStack(blocks, to_device(random_states(blocks, batch=2)))
    bad = list(states)
    bad[1] = MambaState(states[1].conv, states[1].ssm.double())
    with pytest.raises(ValueError, match="layer 1's SSM state must be a contiguous, 16-byte"):
        FusedStack(blocks, bad)
    shifted = torch.zeros(states[0].ssm.numel() + 1, device=DEVICE)[1:].view_as(states[0].ssm)
    with pytest.raises(ValueError, match="layer 0's SSM state must be a contiguous, 16-byte"):
        FusedStack(blocks, [MambaState(states[0].conv, shifted), states[1]])
    with pytest.raises(ValueError, match="2 blocks but 1 states"):
        FusedStack(blocks, states[:1])
    fused = FusedStack(blocks, states)
    with pytest.raises(ValueError, match=r"residual must be \(1, 24\) float32"):
        fused(torch.zeros(2, 24, device=DEVICE), states)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_stack_at_the_353m_width(monkeypatch):
    """Four layers of the MambaByte-353M shape (d_model 1024, d_inner 2048: 128 programs of
    16 channels on an H100/H200, each at the barrier twice a layer, with the next phase's
    inputs requested between arrival and wait), bf16, 20 steps."""
    blocks = mamba_stack(4, 1024, d_state=16, dtype=torch.bfloat16)
    compare(blocks, steps=20, dtype=torch.bfloat16, monkeypatch=monkeypatch)
