"""Speculative decoding: greedy acceptance gives exactly plain greedy decoding; a drafter
identical to the model has every draft accepted, greedy or sampling."""
import collections
import types

import pytest
import torch

from bytessm import speculative
from bytessm.generation import cast_for_inference, generate, prefill
from bytessm.sampling import SamplingParams
from bytessm.speculative import SpeculativeDecoder, speculative_generate
from bytessm.task import ConfigError
from gen_models import tiny

MODELS = {"mamba": dict(attn=()), "hybrid": dict(attn=(1,))}


@pytest.mark.parametrize("penalty", [1.0, 1.3], ids=["plain", "rep_penalty"])
@pytest.mark.parametrize("drafter", ["small", "self"])
@pytest.mark.parametrize("kind", MODELS)
def test_greedy_speculative_equals_plain_greedy(kind, drafter, penalty):
    target = tiny(**MODELS[kind])
    draft = target if drafter == "self" else tiny(1, n_layer=1, d_model=16)
    params = SamplingParams(temperature=0, repetition_penalty=penalty)
    prompt = [7, 3, 250, 3, 9]
    plain = generate(target, [prompt], max_new=10, params=params).samples[0]
    spec, finished, stats = speculative_generate(target, draft, prompt, max_new=10, k=4,
                                                 params=params)
    assert spec == plain and finished == "length"
    assert stats.generated == 10 and stats.accepted + stats.rounds >= 10
    if drafter == "self":
        assert stats.acceptance_rate == 1.0


@pytest.mark.parametrize("drafter", ["small", "self"])
def test_bf16_greedy_speculative_equals_plain_greedy(drafter):
    """bf16 weights (float32 head): verification and stepping round at the same points."""
    target = cast_for_inference(tiny(), torch.bfloat16)
    draft = target if drafter == "self" else cast_for_inference(tiny(1, n_layer=1, d_model=16),
                                                                torch.bfloat16)
    params = SamplingParams(temperature=0)
    for prompt in ([7, 3, 250, 3, 9], [1, 2, 3]):
        plain = generate(target, [prompt], max_new=40, params=params).samples[0]
        assert speculative_generate(target, draft, prompt, max_new=40, params=params)[0] == plain


def test_agreeing_drafter_accepts_everything_when_sampling():
    target = tiny()
    out, _, stats = speculative_generate(target, target, [1, 2, 3], max_new=16, k=3,
                                         params=SamplingParams(temperature=1.0), seed=0)
    assert len(out) == 16 and stats.acceptance_rate == 1.0 and stats.mean_accepted > 2


def test_speculative_sampling_is_seeded():
    target, draft = tiny(), tiny(1, n_layer=1, d_model=16)
    params = SamplingParams(temperature=1.0, top_k=20)
    run = lambda seed: speculative_generate(target, draft, [4, 2], max_new=6,  # noqa: E731
                                            params=params, seed=seed)[0]
    assert run(3) == run(3)


def test_speculative_stops_at_stop_symbol():
    target = tiny()
    plain = generate(target, [[5, 6]], max_new=12, params=SamplingParams(temperature=0)).samples[0]
    stop = plain[6]
    out, finished, _ = speculative_generate(target, tiny(1, n_layer=1, d_model=16), [5, 6],
                                            max_new=12, params=SamplingParams(temperature=0),
                                            stop=[stop])
    assert out == plain[:plain.index(stop)] and finished == "stop"


def test_drafter_with_another_alphabet_is_refused():
    with pytest.raises(ConfigError, match="drafter's alphabet"):
        speculative_generate(tiny(), tiny(vocab=64), [1], max_new=3)


def test_bidirectional_target_is_refused():
    with pytest.raises(ConfigError, match="bidirectional"):
        speculative_generate(tiny(bidirectional=True), tiny(), [1], max_new=3)


class FakeGraphs:
    """CPU stand-in for `capture_graphs`: warms every function up as the real one does
    (running it twice before any state is loaded), and `replay()` runs it again. Tests the
    graph path's ordering: capture first, fixed shapes, results through static buffers."""

    def __init__(self):
        self.captures, self.replays = 0, collections.Counter()

    def __call__(self, fns, device):
        self.captures += 1
        for fn in fns.values():
            fn()
            fn()
        return {name: types.SimpleNamespace(replay=lambda n=name, f=fn: (self.replays.update([n]), f()))
                for name, fn in fns.items()}


@pytest.mark.parametrize("sampling", [False, True], ids=["greedy", "sampling"])
@pytest.mark.parametrize("drafter", ["small", "self"])
def test_graph_path_equals_eager_path(monkeypatch, drafter, sampling):
    fake = FakeGraphs()
    monkeypatch.setattr(speculative, "capture_graphs", fake)
    target = tiny()
    draft = target if drafter == "self" else tiny(1, n_layer=1, d_model=16)
    params = SamplingParams(temperature=1.0, top_k=20) if sampling else \
        SamplingParams(temperature=0, repetition_penalty=1.3)
    eager = SpeculativeDecoder(target, draft, k=3, params=params, max_len=64)
    graphs = SpeculativeDecoder(target, draft, k=3, params=params, max_len=64)
    graphs.cuda_graph = True            # capture_graphs is the fake: no CUDA needed
    for prompt in ([7, 3, 250, 3, 9], [1]):   # the second run reuses the captured graphs
        want = eager.generate(prompt, max_new=11, seed=5)
        got = graphs.generate(prompt, max_new=11, seed=5)
        assert got[:2] == want[:2]
        assert (got[2].rounds, got[2].accepted) == (want[2].rounds, want[2].accepted)
        if not sampling:
            assert got[0] == generate(target, [prompt], max_new=11, params=params).samples[0]
    assert fake.captures == 1
    st = got[2]
    assert set(fake.replays) <= {"draft", "verify", 1, 2, 3}
    # a round replays draft and verify, and a re-run graph unless all k were accepted
    assert fake.replays["draft"] == fake.replays["verify"] >= st.rounds
    if drafter == "self" and not sampling:
        assert sum(fake.replays[m] for m in (1, 2, 3)) == 0


def test_graphs_need_cuda_and_mamba_only_models():
    with pytest.raises(ConfigError, match="CUDA graphs"):
        SpeculativeDecoder(tiny(), tiny(), cuda_graph=True)


def test_speculative_state_is_restored_exactly_after_a_rejection():
    """After every round the target's flat state equals a prefill of all committed symbols
    (the re-run of an accepted prefix and the commit of a full acceptance are exact)."""
    target, draft = tiny(), tiny(1, n_layer=1, d_model=16)
    dec = SpeculativeDecoder(target, draft, k=3, params=SamplingParams(temperature=0), max_len=64)
    prompt = [5, 6, 7]
    out, _, st = dec.generate(prompt, max_new=7)
    assert st.accepted < st.drafted                   # some rounds re-ran a prefix
    committed = torch.tensor([prompt + out[:-1]])     # the last symbol is pending
    ref = prefill(target, committed)
    for s, r in zip(dec.T.layers, ref):
        assert torch.allclose(s.ssm, r.ssm, atol=1e-5) and torch.allclose(s.conv, r.conv, atol=1e-5)


def test_compiled_drafter_steps_on_flat_state_views(monkeypatch):
    """The drafter's compiled block step (the CUDA default) on states that are views of the
    flat buffers, through the graph path's ordering: same symbols as plain greedy."""
    monkeypatch.setattr(speculative, "capture_graphs", FakeGraphs())
    target = tiny()
    params = SamplingParams(temperature=0)
    dec = SpeculativeDecoder(target, tiny(1, n_layer=2, d_model=16), k=2, params=params,
                             max_len=64, compile_step=True)
    dec.cuda_graph = True
    assert dec.block_step is not None
    out, _, _ = dec.generate([3, 1, 4, 1, 5], max_new=9)
    assert out == generate(target, [[3, 1, 4, 1, 5]], max_new=9, params=params).samples[0]
