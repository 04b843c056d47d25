"""The pooled U-Net's decode step as one CUDA graph per phase (`Decoder.capture`).

On the CPU: the phase arithmetic, and the Decoder's bookkeeping with each "graph" replaced
by a call of the function it would capture (so picking the wrong phase's graph, or a step
that kept Python-side state outside the phase, would change the symbols). On CUDA (run on
the GPU machine; skipped in CI): real graphs produce the symbols of eager decoding."""
import pytest
import torch

import bytessm.generation as generation
from bytessm.backbone import SequenceModel
from bytessm.generation import Decoder, generate
from bytessm.nn.heads import LMHead
from bytessm.nn.unet import PooledUNet
from bytessm.sampling import SamplingParams


def tiny_lm(pool=(4, 4), device="cpu"):
    torch.manual_seed(0)
    backbone = PooledUNet(d_model=16, n_layer=1, vocab_size=256, pool=pool, d_state=4)
    model = SequenceModel(backbone, LMHead(16, 256)).eval().to(device)
    with torch.no_grad():
        model.head.proj.weight.mul_(8.0)    # sharper logits: no greedy near-ties
    return model


@pytest.mark.parametrize("pool", [(4, 4), (2, 3)], ids=["4x4", "2x3"])
def test_phase_is_the_position_modulo_the_period(pool):
    model = tiny_lm(pool)
    unet = model.backbone
    assert unet.decode_period == pool[0] * pool[1]
    states = unet.new_states(1, "cpu")
    x = torch.randint(0, 256, (1, 30))
    with torch.no_grad():
        for t in range(30):
            assert unet.decode_phase(states) == t % unet.decode_period
            unet.step(x[:, t], states)
    for n in range(2 * unet.decode_period):
        unet.set_decode_phase(states, n)
        assert unet.decode_phase(states) == n % unet.decode_period


class CallGraph:
    """Stands in for a CUDA graph on the CPU: replay() calls the captured function."""
    def __init__(self, fn):
        self.fn = fn

    def replay(self):
        self.fn()


@pytest.mark.parametrize("prompt_len", [1, 6, 16, 23])
def test_phase_graphs_bookkeeping_matches_eager(prompt_len, monkeypatch):
    """Prompts ending in every kind of phase; greedy symbols equal eager decoding's.
    capture() warms every phase's function up (which advances the states) and must restore
    the buffers and the phase; run() must replay the graph of the current phase."""
    model = tiny_lm()
    prompt = torch.randint(0, 256, (prompt_len,), generator=torch.Generator().manual_seed(4)).tolist()
    params = SamplingParams(temperature=0)
    eager = Decoder(model, batch=2, max_len=64, max_new=40, params=params)
    eager.load([prompt, prompt[::-1]])
    eager.run()

    monkeypatch.setattr(generation, "capture_graphs",
                        lambda fns, device: {k: (fn(), fn(), CallGraph(fn))[2]
                                             for k, fn in fns.items()})
    graphed = Decoder(model, batch=2, max_len=64, max_new=40, params=params)
    graphed.load([prompt, prompt[::-1]])
    phase = graphed._phase()
    graphed.capture()                                   # what cuda_graph=True does on CUDA
    assert len(graphed.graphs) == 16 and graphed._phase() == phase == (prompt_len - 1) % 16
    graphed.run()
    assert torch.equal(graphed.out, eager.out)
    graphed.load([prompt, prompt[::-1]])                # loading again keeps the graphs valid
    graphed.run()
    assert torch.equal(graphed.out, eager.out)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compile_step", [False, True], ids=["eager-step", "compiled-step"])
def test_unet_cuda_graphs_match_eager_cuda(compile_step):
    """Real per-phase CUDA graphs, of the eager step or of the compiled block step
    (opt-in), give the symbols of eager decoding."""
    model = tiny_lm(device="cuda")
    prompts = [[5, 9, 200, 31, 7], [1, 2, 3, 4, 5]]
    params = SamplingParams(temperature=0)
    eager = generate(model, prompts, max_new=50, params=params, cuda_graph=False)
    graphed = generate(model, prompts, max_new=50, params=params, cuda_graph=True,
                       compile_step=compile_step)
    assert graphed.stats["cuda_graph"] and graphed.stats["compiled_step"] == compile_step
    assert graphed.samples == eager.samples


def test_compiled_block_step_decodes_like_eager():
    """compile_step=True on the U-Net (opt-in): its blocks step through the compiled
    `Block.step` (one graph per block width, 16 and 32 and 64 here), on the CPU: the same
    greedy symbols and the same logits as the eager step, across pooling boundaries."""
    from bytessm.generation import model_step
    model = tiny_lm()
    params = SamplingParams(temperature=0)
    prompts = [[5, 9, 200, 31, 7], [1, 2, 3, 4, 5]]
    eager = generate(model, prompts, max_new=24, params=params)
    compiled = generate(model, prompts, max_new=24, params=params, compile_step=True)
    assert compiled.stats["compiled_step"] and compiled.samples == eager.samples

    calls = []

    def logits(compile_step):
        dec = Decoder(model, batch=2, max_len=40, max_new=1, params=params,
                      compile_step=compile_step)
        step = dec.block_step and (lambda *a: (calls.append(1), dec.block_step(*a))[1])
        x = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            return torch.stack([model_step(model, x[:, t], dec.states, step)
                                for t in range(20)], 1)
    torch.testing.assert_close(logits(True), logits(False), rtol=1e-5, atol=1e-5)
    assert len(calls) == 20 + 5 + 1    # every level's block: each position, every 4th, 16th

