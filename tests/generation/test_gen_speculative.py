"""Speculative decoding: greedy acceptance gives exactly plain greedy decoding; a drafter
identical to the model has every draft accepted, greedy or sampling."""
import pytest
import torch

from bytessm.generation import generate
from bytessm.sampling import SamplingParams
from bytessm.speculative import speculative_generate
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
