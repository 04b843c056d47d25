"""The decode step's kernel budget: kernels per Mamba block step (counted as aten ops that
launch one, with the decode kernels counted once each as on CUDA), the cached A, and the
torch.compile'd block step against the eager one."""
import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

import bytessm.nn.mamba as mamba
from bytessm.generation import Decoder, cast_for_inference, generate, model_step, new_states
from bytessm.sampling import SamplingParams
from gen_models import TOL, greedy_by_recompute, rel_err, tiny

# ops that launch no kernel (views, metadata, allocation)
NO_KERNEL = {"view", "_unsafe_view", "reshape", "t", "transpose", "permute", "unsqueeze",
             "squeeze", "expand", "slice", "select", "split", "split_with_sizes", "chunk",
             "alias", "detach", "as_strided", "unbind", "empty", "empty_like", "new_empty"}


class KernelCount(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__.split(".")[0]
        if name not in NO_KERNEL and not (name == "_to_copy" and out is args[0]):
            self.ops[name] += 1
        return out


@pytest.fixture
def one_kernel_decode_steps(monkeypatch):
    """The CPU reference of the conv / state steps counts as the one kernel it is on CUDA."""
    for name in ("causal_conv1d_update", "selective_state_update"):
        fn = getattr(mamba, name)

        def counted(*args, _fn=fn, _name=name, **kwargs):
            mode = torch.utils._python_dispatch._get_current_dispatch_mode()
            with _disable_current_modes():
                out = _fn(*args, **kwargs)
            if isinstance(mode, KernelCount):
                mode.ops[_name] += 1
            return out
        monkeypatch.setattr(mamba, name, counted)


def block_step_ops(device="cpu") -> collections.Counter:
    """Kernels of one eager step of the first block of a bf16 tiny model (after a first step
    has filled the A cache), by op name."""
    model = cast_for_inference(tiny().to(device), torch.bfloat16)
    block = model.backbone.blocks[0]
    state = new_states(model, 2, device, 4, static=True)[0]
    residual = torch.randn(2, 32, device=device)
    with torch.no_grad():
        block.step(residual, state)
        with KernelCount() as count:
            block.step(residual, state)
    return count.ops


def test_mamba_block_step_kernel_budget(one_kernel_decode_steps):
    """bf16 weights, eager: norm (6 pointwise/reduction ops), the in_proj input cast, in_proj,
    conv step with its SiLU, x_proj, state step with dt_proj, out_proj, residual add = 13
    kernels (20 before: a bf16 norm-weight cast, exp and neg of A, copies of B and C, a cast
    of y, the SiLU and dt_proj on their own)."""
    ops = block_step_ops()
    assert not {"clone", "contiguous", "exp", "neg", "copy_"} & set(ops), dict(ops)
    assert ops["_to_copy"] == 1, dict(ops)              # in_proj's input, float32 -> bf16
    assert ops["mm"] == 3 and ops["causal_conv1d_update"] == ops["selective_state_update"] == 1
    assert "silu" not in ops and sum(ops.values()) == 13, dict(ops)


def test_cached_A_follows_in_place_parameter_updates():
    model = tiny()
    x = torch.randint(0, 256, (2, 6))
    for _ in range(2):  # the second pass runs after an in-place update of every A_log
        with torch.no_grad():
            ref = model(x)
            states = new_states(model, 2, "cpu", 8, static=False)
            out = torch.stack([model.step(x[:, t], states) for t in range(6)], 1)
            for block in model.backbone.blocks:
                block.mixer.ssm.A_log.mul_(1.5)
        assert rel_err(out, ref) < TOL[torch.float32]


def test_compiled_block_step_decodes_like_eager():
    """torch.compile (inductor, fullgraph) of Block.step on the CPU: a hybrid stack (Mamba
    and attention blocks, two compiled graphs) decodes the same greedy symbols, with the
    same logits, as the eager step and as recompute. One graph serves every Mamba block."""
    model = tiny(attn=(1,))
    with torch.no_grad():  # A differs per layer: the compiled graph must read each block's own
        for block in model.backbone.blocks:
            if hasattr(block.mixer, "ssm"):
                block.mixer.ssm.A_log.add_(torch.randn_like(block.mixer.ssm.A_log))
    prompt = [7, 3, 250, 3, 9]
    res = generate(model, [prompt, prompt], max_new=8, params=SamplingParams(temperature=0),
                   compile_step=True)
    assert res.stats["compiled_step"] and not res.stats["cuda_graph"]
    assert res.samples == [greedy_by_recompute(model, prompt, 8)] * 2

    def logits(compile_step):
        dec = Decoder(model, batch=2, max_len=16, max_new=1,
                      params=SamplingParams(temperature=0), compile_step=compile_step)
        x = torch.randint(0, 256, (2, 6), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            return torch.stack([model_step(model, x[:, t], dec.states, dec.block_step)
                                for t in range(6)], 1)
    assert rel_err(logits(True), logits(False)) < TOL[torch.float32]
