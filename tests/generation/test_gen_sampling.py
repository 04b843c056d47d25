"""Sampling: masks on hand-checked distributions, the penalty, seeded reproducibility."""

import pytest
import torch

from bytessm.generation import generate
from bytessm.sampling import (SamplingParams, apply_repetition_penalty, draw_noise, min_p_mask,
                              pick, process_logits, sample, top_k_mask, top_p_mask)
from bytessm.task import ConfigError
from gen_models import tiny

INF = float("-inf")
# probabilities 0.5, 0.3, 0.15, 0.05 in a shuffled order
PROBS = torch.tensor([[0.15, 0.5, 0.05, 0.3]])
LOGITS = PROBS.log()


def kept(masked: torch.Tensor) -> list[int]:
    return torch.isfinite(masked[0]).nonzero().flatten().tolist()


def test_top_k_mask():
    assert kept(top_k_mask(LOGITS, 1)) == [1]
    assert kept(top_k_mask(LOGITS, 2)) == [1, 3]
    assert kept(top_k_mask(LOGITS, 3)) == [0, 1, 3]
    assert torch.equal(top_k_mask(LOGITS, 0), LOGITS)     # off
    masked = top_k_mask(torch.tensor([[1.0, 3.0, 2.0, 0.0]]), 2)
    assert masked.tolist() == [[INF, 3.0, 2.0, INF]]


@pytest.mark.parametrize("p,expected", [
    (0.3, [1]),            # the most likely symbol alone already has 0.5
    (0.5, [1]),
    (0.79, [1, 3]),        # 0.5 + 0.3 = 0.8 >= 0.79
    (0.85, [0, 1, 3]),     # needs 0.15 more
    (0.99, [0, 1, 2, 3]),
    (1.0, [0, 1, 2, 3]),   # off
])
def test_top_p_mask(p, expected):
    assert kept(top_p_mask(LOGITS, p)) == expected


@pytest.mark.parametrize("min_p,expected", [
    (0.05, [0, 1, 2, 3]),  # threshold 0.025
    (0.2, [0, 1, 3]),      # threshold 0.1
    (0.5, [1, 3]),         # threshold 0.25
    (0.9, [1]),            # threshold 0.45
])
def test_min_p_mask(min_p, expected):
    assert kept(min_p_mask(LOGITS, min_p)) == expected


def test_repetition_penalty_divides_positive_multiplies_negative():
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    seen = torch.tensor([[True, True, False, False]])
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -4.0, 1.0, -1.0]]


def test_process_order_temperature_then_masks():
    # temperature 0.5 sharpens 0.5/0.3/0.15/0.05 to p^2 normalised: 0.25/0.09/0.0225/0.0025
    # over 0.365 -> 0.685, 0.247, 0.062, 0.007: top_p 0.9 keeps two
    params = SamplingParams(temperature=0.5, top_p=0.9)
    out = process_logits(LOGITS, params)
    assert kept(out) == [1, 3]
    sharp = PROBS[0, [1, 3]] ** 2
    assert torch.allclose(out.softmax(-1)[0, [1, 3]], sharp / sharp.sum(), atol=1e-6)


def test_exponential_race_draws_from_the_distribution():
    n = 20000
    gen = torch.Generator().manual_seed(0)
    processed = LOGITS.expand(n, 4)
    noise = draw_noise(torch.empty(n, 4), gen)
    counts = torch.bincount(pick(processed, SamplingParams(), noise), minlength=4) / n
    assert torch.allclose(counts, PROBS[0], atol=0.015)


def test_greedy_is_argmax_after_penalty():
    logits = torch.tensor([[3.0, 2.5, -1.0]])
    seen = torch.tensor([[True, False, False]])
    params = SamplingParams(temperature=0, repetition_penalty=1.5)
    assert sample(logits, params, seen=seen).tolist() == [1]     # 3 / 1.5 = 2 < 2.5
    assert sample(logits, SamplingParams(temperature=0)).tolist() == [0]


def test_seeded_generation_is_reproducible():
    model = tiny()
    params = SamplingParams(temperature=1.0, top_k=50, top_p=0.95, repetition_penalty=1.2)
    run = lambda seed: generate(model, [[1, 2, 3]] * 3, max_new=12, params=params,  # noqa: E731
                                seed=seed).samples
    a, b, c = run(7), run(7), run(8)
    assert a == b
    assert a != c
    assert len({tuple(s) for s in a}) > 1          # rows draw different noise


@pytest.mark.parametrize("kwargs,message", [
    (dict(temperature=-1), "temperature must be >= 0"),
    (dict(top_k=-2), "top_k must be an integer >= 0"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(min_p=1.0), r"min_p must be in \[0, 1\)"),
    (dict(repetition_penalty=0), "repetition_penalty must be > 0"),
])
def test_bad_sampling_params(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SamplingParams(**kwargs)
