"""The decode step on the GEMV kernel (`bytessm.nn.decode`, forced with DECODE_GEMV="triton",
under TRITON_INTERPRET=1 on the CPU, on the GPU where there is one): same logits as the
step without it and as the parallel forward, float32 and bf16 weights, eager and
torch.compile'd; 4 kernels per Mamba block step; the switch's choices."""
import pytest
import torch

import bytessm.nn.decode as decode
from bytessm.generation import Decoder, cast_for_inference, model_step
from bytessm.sampling import SamplingParams
from gen_models import TOL, rel_err, tiny
from test_gen_step_kernels import block_step_ops, one_kernel_decode_steps  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0")
MODELS = {"mamba": dict(attn=()), "hybrid": dict(attn=(1,))}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def decode_logits(model, x, mode, monkeypatch, compile_step=False):
    """Logits (B, L, V) of stepping through x (B, L) from zero states, DECODE_GEMV = mode."""
    monkeypatch.setattr(decode, "DECODE_GEMV", mode)
    dec = Decoder(model, batch=x.shape[0], max_len=x.shape[1], max_new=1,
                  params=SamplingParams(temperature=0), compile_step=compile_step,
                  fused_stack=False)
    with torch.no_grad():
        return torch.stack([model_step(model, x[:, t], dec.states, dec.block_step)
                            for t in range(x.shape[1])], 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("kind", MODELS)
def test_gemv_step_matches_step_without_it(kind, dtype, monkeypatch):
    """in_proj (+ norm), x_proj, dt_proj, out_proj (+ residual) and the LM head on the GEMV:
    the logits of the step without it and of the parallel forward, to float32 summation
    order (the kernel rounds where the layers round)."""
    model = cast_for_inference(tiny(**MODELS[kind]).to(DEVICE), dtype)
    x = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(2)).to(DEVICE)
    with torch.no_grad():
        ref = model(x)
    gemv = decode_logits(model, x, "triton", monkeypatch)
    plain = decode_logits(model, x, "off", monkeypatch)
    assert rel_err(gemv.float(), plain.float()) < TOL[dtype]
    assert rel_err(gemv.float(), ref.float()) < TOL[dtype]


@pytest.mark.parametrize("kind", MODELS)
def test_compiled_gemv_step_matches_eager_step_without_it(kind, monkeypatch):
    """Block.step through torch.compile (fullgraph: the GEMV is an opaque custom op), bf16;
    the hybrid's attention and MLP steps too (the Transformer baseline's path). The hybrid
    used to differ by 1.8e-3: inductor fused SwiGLU's silu and product in float32 where
    eager rounds silu(a) to bf16 first (`block.swiglu` now rounds once in both)."""
    model = cast_for_inference(tiny(**MODELS[kind]).to(DEVICE), torch.bfloat16)
    x = torch.randint(0, 256, (2, 6), generator=torch.Generator().manual_seed(3)).to(DEVICE)
    compiled = decode_logits(model, x, "triton", monkeypatch, compile_step=True)
    plain = decode_logits(model, x, "off", monkeypatch)
    assert rel_err(compiled.float(), plain.float()) < TOL[torch.bfloat16]


def test_gemv_block_step_kernel_budget(one_kernel_decode_steps, monkeypatch):  # noqa: F811
    """bf16, eager: in_proj with the norm and the conv step with its SiLU, x_proj, state
    step with dt_proj, out_proj with the residual add = 4 kernels (13 without the GEMV, 7
    compiled)."""
    monkeypatch.setattr(decode, "DECODE_GEMV", "triton")
    ops = block_step_ops(DEVICE)
    assert ops["gemv_conv"] == 1 and ops["gemv"] == 2 and "silu" not in ops, dict(ops)
    assert "causal_conv1d_update" not in ops, dict(ops)
    assert sum(ops.values()) == 4, dict(ops)


def test_switch(monkeypatch):
    """"auto": CUDA steps of at most MAX_ROWS rows only; "off" never; "triton" always."""
    cpu, many = torch.zeros(2, 8), torch.zeros(decode.MAX_ROWS + 1, 8)
    for mode, want in (("auto", None), ("off", None), ("triton", "triton")):
        monkeypatch.setattr(decode, "DECODE_GEMV", mode)
        assert decode.gemv_backend(cpu) == want
    monkeypatch.setattr(decode, "DECODE_GEMV", "auto")
    assert decode.gemv_backend(many) is None
    if torch.cuda.is_available():
        assert decode.gemv_backend(cpu.cuda()) == "triton"
        assert decode.gemv_backend(many.cuda()) is None
    monkeypatch.setattr(decode, "DECODE_GEMV", "on")
    with pytest.raises(ValueError, match="DECODE_GEMV.*must be one of"):
        decode.gemv_backend(cpu)
