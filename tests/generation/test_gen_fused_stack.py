"""Decoding with the Mamba stack fused into one kernel (`bytessm.nn.stack`, forced with
DECODE_STACK="triton" under TRITON_INTERPRET=1 on the CPU; opt-in on CUDA, at batch 1):
the logits of the blocks' own steps and of the parallel forward, greedy output equal to the
unfused decoder's, the switch, and the models it refuses."""
import pytest
import torch

import bytessm.nn.decode as decode
import bytessm.nn.stack as stack
from bytessm.generation import Decoder, cast_for_inference, generate, model_step
from bytessm.sampling import SamplingParams
from bytessm.task import ConfigError
from gen_models import TOL, rel_err, tiny

pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
GREEDY = SamplingParams(temperature=0)


def step_logits(model, x, fused):
    """Logits (B, L, V) of stepping through x (B, L) from zero states."""
    dec = Decoder(model, batch=x.shape[0], max_len=x.shape[1], max_new=1, params=GREEDY,
                  device=x.device, fused_stack=fused, compile_step=False)
    assert (dec.stack is not None) == fused
    with torch.no_grad():
        return torch.stack([model_step(model, x[:, t], dec.states, dec.block_step, dec.stack)
                            for t in range(x.shape[1])], 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_fused_stack_logits(dtype, monkeypatch):
    """Same logits as the unfused step (whose products are F.linear here) and as the parallel
    forward, to float32 summation order (the kernel rounds where the layers round)."""
    monkeypatch.setattr(decode, "DECODE_GEMV", "off")
    model = cast_for_inference(tiny().to(DEVICE), dtype)
    x = torch.randint(0, 256, (1, 9), generator=torch.Generator().manual_seed(4)).to(DEVICE)
    with torch.no_grad():
        ref = model(x)
    fused = step_logits(model, x, True)
    plain = step_logits(model, x, False)
    tol = TOL[dtype] if DEVICE == "cpu" else 5e-3
    assert rel_err(fused.float(), plain.float()) < tol
    assert rel_err(fused.float(), ref.float()) < tol


def test_generate_fused_equals_unfused_greedy():
    """`generate`: the same symbols with and without the fused stack, and the stats say
    which."""
    model = tiny(seed=1).to(DEVICE)
    prompts = [[5, 9, 200, 17, 3]]
    fused = generate(model, prompts, max_new=12, params=GREEDY, fused_stack=True)
    plain = generate(model, prompts, max_new=12, params=GREEDY, fused_stack=False)
    assert fused.stats["fused_stack"] and not plain.stats["fused_stack"]
    assert fused.samples == plain.samples


def test_switch(monkeypatch):
    """"off" (the default) never; "auto": CUDA decoders of one row of a plain Mamba stack;
    "triton" wherever the stack qualifies (one row); a bad value is named."""
    blocks = list(tiny().backbone.blocks)
    hybrid = list(tiny(attn=(1,)).backbone.blocks)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert decode.DECODE_STACK == "off" and not stack.use_fused_stack(blocks, 1, cuda)
    monkeypatch.setattr(decode, "DECODE_STACK", "auto")
    assert not stack.use_fused_stack(blocks, 1, cpu)
    assert stack.use_fused_stack(blocks, 1, cuda)
    assert not stack.use_fused_stack(blocks, 2, cuda)
    assert not stack.use_fused_stack(hybrid, 1, cuda)
    monkeypatch.setattr(decode, "DECODE_STACK", "triton")
    assert stack.use_fused_stack(blocks, 1, cpu) and not stack.use_fused_stack(hybrid, 1, cpu)
    assert not stack.use_fused_stack(blocks, 2, cpu)
    monkeypatch.setattr(decode, "DECODE_STACK", "off")
    assert not stack.use_fused_stack(blocks, 1, cuda)
    monkeypatch.setattr(decode, "DECODE_STACK", "on")
    with pytest.raises(ValueError, match="DECODE_STACK"):
        stack.use_fused_stack(blocks, 1, cuda)


def test_refused_models():
    hybrid = tiny(attn=(1,))
    with pytest.raises(ConfigError, match=r"cannot decode as one fused stack \(block 1 is not"):
        Decoder(hybrid, batch=1, max_len=4, max_new=1, params=GREEDY, fused_stack=True)
    with pytest.raises(ConfigError, match="one sequence at a time, got batch 2"):
        Decoder(tiny(), batch=2, max_len=4, max_new=1, params=GREEDY, fused_stack=True)
    with pytest.raises(ConfigError, match="exclude each other"):
        Decoder(tiny(), batch=1, max_len=4, max_new=1, params=GREEDY, fused_stack=True,
                compile_step=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_stack_in_cuda_graph():
    """A CUDA decoder at batch 1 with the fused stack captures it in the graph: its greedy
    symbols equal the unfused (GEMV) decoder's, float32 weights."""
    model = tiny(seed=2, n_layer=4).cuda()
    prompt = [[1, 2, 3, 250, 17, 99]]
    fused = generate(model, prompt, max_new=40, params=GREEDY, fused_stack=True)
    plain = generate(model, prompt, max_new=40, params=GREEDY)
    assert fused.stats["fused_stack"] and fused.stats["cuda_graph"]
    assert fused.samples == plain.samples
