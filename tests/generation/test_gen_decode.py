"""Recurrent decoding reproduces the parallel forward: step by step, after a prefill, through
the Decoder (graph-safe KV cache), with constant-size Mamba state."""
import pytest
import torch

from bytessm.generation import (Decoder, cast_for_inference, generate, new_states, prefill,
                                state_bytes)
from bytessm.sampling import SamplingParams
from bytessm.task import ConfigError
from gen_models import TOL, greedy_by_recompute, rel_err, tiny

MODELS = {"mamba": dict(attn=()), "hybrid": dict(attn=(1,))}
GREEDY = SamplingParams(temperature=0)


@pytest.mark.parametrize("static", [False, True], ids=["kvcache", "static_kv"])
@pytest.mark.parametrize("kind", MODELS)
def test_step_by_step_matches_parallel_logits(kind, static):
    model = tiny(**MODELS[kind])
    x = torch.randint(0, 256, (2, 13))
    with torch.no_grad():
        ref = model(x)                                                      # (B, L, V)
        states = new_states(model, 2, "cpu", max_len=16, static=static)
        out = torch.stack([model.step(x[:, t], states) for t in range(13)], dim=1)
    assert rel_err(out, ref) < TOL[torch.float32]


@pytest.mark.parametrize("kind", MODELS)
def test_bf16_step_rounds_where_the_parallel_forward_rounds(kind):
    """bf16 weights: the step stores the conv output in bf16 before its SiLU, as F.conv1d
    does in the parallel forward, so the two paths differ only by float32 summation order."""
    model = cast_for_inference(tiny(**MODELS[kind]), torch.bfloat16)
    assert model.backbone.blocks[0].mixer.in_proj.weight.dtype == torch.bfloat16
    assert model.head.proj.weight.dtype == model.backbone.norm_f.weight.dtype == torch.float32
    x = torch.randint(0, 256, (2, 40))
    with torch.no_grad():
        ref = model(x)
        states = new_states(model, 2, "cpu", max_len=40, static=True)
        out = torch.stack([model.step(x[:, t], states) for t in range(40)], dim=1)
    assert rel_err(out.float(), ref.float()) < TOL[torch.bfloat16]


# prompt lengths: 1 (nothing to prefill), 2 and 3 (shorter than d_conv=4: the conv window is
# partly zeros), 4, 9
@pytest.mark.parametrize("prompt_len", [1, 2, 3, 4, 9])
@pytest.mark.parametrize("kind", MODELS)
def test_prefill_then_step_equals_full_recompute(kind, prompt_len):
    model = tiny(**MODELS[kind])
    x = torch.randint(0, 256, (2, prompt_len + 6))
    with torch.no_grad():
        ref = model(x)
        states = prefill(model, x[:, :prompt_len], max_len=x.shape[1])
        out = torch.stack([model.step(x[:, t], states) for t in range(prompt_len, x.shape[1])], 1)
    assert rel_err(out, ref[:, prompt_len:]) < TOL[torch.float32]


@pytest.mark.parametrize("prompt_len", [1, 2, 5])
@pytest.mark.parametrize("kind", MODELS)
def test_greedy_generate_equals_recompute(kind, prompt_len):
    model = tiny(**MODELS[kind])
    prompt = torch.randint(0, 256, (prompt_len,)).tolist()
    res = generate(model, [prompt, prompt], max_new=12, params=GREEDY)
    ref = greedy_by_recompute(model, prompt, 12)
    assert res.samples == [ref, ref] and res.finished == ["length", "length"]


def test_prompts_of_different_lengths_in_one_mamba_batch():
    model = tiny()
    prompts = [[5], [7, 8, 9, 10, 11, 12], [1, 2]]
    res = generate(model, prompts, max_new=8, params=GREEDY)
    assert res.samples == [greedy_by_recompute(model, p, 8) for p in prompts]


def test_hybrid_refuses_prompts_of_different_lengths():
    with pytest.raises(ConfigError, match="different lengths"):
        generate(tiny(attn=(1,)), [[1, 2], [3]], max_new=2, params=GREEDY)


def test_per_sequence_stop_symbol_and_max_new():
    model = tiny()
    prompts = [[3, 1, 4], [1, 5, 9, 2]]
    ref = [greedy_by_recompute(model, p, 10) for p in prompts]
    stop = ref[0][4]                          # row 0 stops at its 5th symbol (not kept)
    first = ref[0].index(stop)
    res = generate(model, prompts, max_new=[10, 6], params=GREEDY, stop=[stop])
    assert res.samples[0] == ref[0][:first] and res.finished[0] == "stop"
    row1 = ref[1][:6]
    if stop in row1:
        assert res.samples[1] == row1[:row1.index(stop)] and res.finished[1] == "stop"
    else:
        assert res.samples[1] == row1 and res.finished[1] == "length"


def test_state_memory_does_not_grow_with_generated_length():
    model = tiny()
    sizes = []
    for max_new in (4, 32):
        dec = Decoder(model, batch=2, max_len=max_new + 4, max_new=max_new, params=GREEDY)
        dec.load([[1, 2, 3], [4, 5, 6]])
        before = state_bytes(dec.states)
        ptrs = [t.data_ptr() for s in dec.states for t in s]
        dec.run()
        assert state_bytes(dec.states) == before                      # updated in place
        assert [t.data_ptr() for s in dec.states for t in s] == ptrs
        sizes.append(before)
    assert sizes[0] == sizes[1]
    # 3 layers x batch 2 x d_inner 64 x (d_conv-1 + d_state) float32
    assert sizes[0] == 3 * 2 * 64 * (3 + 8) * 4


def test_decoder_can_be_reloaded_and_rerun():
    model = tiny()
    dec = Decoder(model, batch=1, max_len=20, max_new=6, params=GREEDY)
    outs = []
    for prompt in ([9, 8, 7], [1, 2], [9, 8, 7]):
        dec.load([prompt])
        steps = dec.run()
        outs.append(dec.out[0, :steps].tolist())
    assert outs[0] == outs[2] == greedy_by_recompute(model, [9, 8, 7], 6)
    assert outs[1] == greedy_by_recompute(model, [1, 2], 6)


def test_bidirectional_model_refuses_to_generate():
    model = tiny(bidirectional=True)
    with pytest.raises(ConfigError, match="bidirectional.*cannot generate"):
        generate(model, [[1, 2, 3]], max_new=4)


@pytest.mark.parametrize("prompts,message", [
    ([[]], "no symbols"),
    ([[1, 300]], r"prompt symbols must be in \[0, 256\)"),
])
def test_bad_prompts(prompts, message):
    with pytest.raises(ConfigError, match=message):
        generate(tiny(), prompts, max_new=2)


def test_pooled_unet_decodes_eagerly():
    from bytessm.backbone import SequenceModel
    from bytessm.nn.heads import LMHead
    from bytessm.nn.unet import PooledUNet

    torch.manual_seed(0)
    model = SequenceModel(PooledUNet(d_model=16, n_layer=1, vocab_size=256, d_state=4,
                                     scan_backend="reference"), LMHead(16, 256)).eval()
    prompt = [3, 1, 4, 1, 5, 9]
    res = generate(model, [prompt], max_new=10, params=GREEDY)
    assert res.samples[0] == greedy_by_recompute(model, prompt, 10)
    assert res.stats["cuda_graph"] is False
