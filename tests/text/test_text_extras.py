"""Noise rates, and state-carrying evaluation equal to one forward over the whole text."""
import math

import numpy as np
import pytest
import torch
from text_fixtures import make_task, write_corpus

from bytessm.backbone import Backbone, SequenceModel
from bytessm.nn import LMHead
from bytessm.tasks.text.extras import length_extrapolation, noise_robustness, score
from bytessm.tasks.text.flops import forward_flops_per_symbol, param_counts
from bytessm.tasks.text.noise import add_noise, case, drop, swap

TEXT = ("Hello World, \u00e9t\u00e9 \u00c9T\u00c9 stra\u00dfe 123 \u4e2d\u6587! " * 250).encode()


def rng(k=0):
    return np.random.default_rng(k)


@pytest.mark.parametrize("rate", [0.05, 0.2])
def test_drop_hits_its_rate_and_keeps_characters_whole(rate):
    n = len(TEXT.decode())
    out = drop(TEXT, rate, rng()).decode()          # still valid UTF-8: whole characters
    dropped = (n - len(out)) / n
    assert abs(dropped - rate) < 4 * math.sqrt(rate * (1 - rate) / n)


@pytest.mark.parametrize("rate", [0.05, 0.2])
def test_swap_hits_its_rate(rate):
    chars = TEXT.decode()
    out = swap(TEXT, rate, rng()).decode()
    assert sorted(out) == sorted(chars)
    i, swaps = 0, 0
    while i < len(chars) - 1:     # count the swapped pairs back
        if out[i] != chars[i] and out[i] == chars[i + 1] and out[i + 1] == chars[i]:
            swaps, i = swaps + 1, i + 2
        else:
            i += 1
    # swaps of two equal characters are invisible: count the rate over unequal neighbours
    unequal = sum(a != b for a, b in zip(chars, chars[1:])) / (len(chars) - 1)
    expected = rate * unequal * len(chars) / (1 + rate)   # a hit skips the next position
    assert abs(swaps - expected) < 4 * math.sqrt(expected)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_case_flips_hit_their_rate_on_cased_characters_only(rate):
    chars, out = TEXT.decode(), case(TEXT, rate, rng()).decode()
    assert len(out) == len(chars)
    cased = [k for k, c in enumerate(chars) if c.lower() != c.upper() and c != "\u00df"]
    flipped = sum(out[k] != chars[k] for k in cased)
    assert all(out[k] == chars[k] for k in range(len(chars)) if k not in set(cased))
    assert abs(flipped / len(cased) - rate) < 4 * math.sqrt(rate * (1 - rate) / len(cased))


def test_noise_is_seeded_and_checks_its_arguments():
    assert add_noise(TEXT, "drop", 0.1, rng(3)) == add_noise(TEXT, "drop", 0.1, rng(3))
    assert add_noise(TEXT, "drop", 0.0, rng()) == TEXT
    with pytest.raises(ValueError, match="noise kind must be one of drop, swap, case"):
        add_noise(TEXT, "shuffle", 0.1, rng())
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\]"):
        add_noise(TEXT, "drop", 1.5, rng())


def tiny_model(vocab, attn_layers=()):
    torch.manual_seed(0)
    bb = Backbone(d_model=32, n_layer=2, vocab_size=vocab, attn_layers=list(attn_layers),
                  attn_heads=4, attn_mlp_ratio=2.0)
    return SequenceModel(bb, LMHead(32, vocab)).eval()


@pytest.mark.parametrize("tok", ["bytes", "bpe"])
@pytest.mark.parametrize("layers", [(), (1,)], ids=["mamba", "hybrid"])
def test_state_carry_across_windows_equals_the_whole_sequence(tmp_path_factory, tok, layers):
    folder = write_corpus(tmp_path_factory.mktemp(tok) / "c")
    task = make_task(folder, tokenizer=tok, seq_len=16, eval_bytes=24)
    model = tiny_model(task.vocab_size, layers)
    texts = [TEXT[:90], TEXT[7:60], TEXT[50:51]]
    whole = score(model, task, texts, batch_size=2)
    for window in (3, 16):
        carried = score(model, task, texts, batch_size=2, window=window)
        assert carried["bytes"] == whole["bytes"] == sum(len(t) for t in texts)
        assert math.isclose(carried["bits"], whole["bits"], rel_tol=1e-5)


def test_length_extrapolation_scores_the_same_bytes_at_every_factor(tmp_path):
    folder = write_corpus(tmp_path / "c", n_words=(150, 300))
    task = make_task(folder, seq_len=16, eval_bytes=16)
    rows = length_extrapolation(tiny_model(task.vocab_size), task, split="valid",
                                factors=(1, 4, 16), base_bytes=8, max_spans=2)
    assert [r["factor"] for r in rows] == [1, 4, 16]
    assert [r["context_bytes"] for r in rows] == [8, 32, 128]
    assert len({r["bytes"] for r in rows}) == 1 and rows[0]["bytes"] == 2 * 128
    with pytest.raises(ValueError, match="use smaller factors"):
        length_extrapolation(tiny_model(task.vocab_size), task, split="valid",
                             factors=(1, 10**6))


def test_noise_robustness_reports_increase_over_clean(tmp_path):
    folder = write_corpus(tmp_path / "c")
    task = make_task(folder, seq_len=16, eval_bytes=32)
    rows = noise_robustness(tiny_model(task.vocab_size), task, split="valid", rates=(0.0, 0.3),
                            max_spans=8)
    assert {(r["kind"], r["rate"]) for r in rows} == {(k, r) for k in ("drop", "swap", "case")
                                                      for r in (0.0, 0.3)}
    for r in rows:
        assert math.isclose(r["increase"], r["noisy_bpb"] - r["clean_bpb"])
        if r["rate"] == 0.0:
            assert r["increase"] == 0.0


def test_flops_and_parameter_counts_by_hand():
    d, v, ctx = 32, 257, 64
    model = tiny_model(v, attn_layers=(0, 1))    # a Transformer: attention + SwiGLU MLP
    linears = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert forward_flops_per_symbol(model, ctx) == 2 * linears + 2 * (2 * ctx * d)
    counts = param_counts(model)
    assert counts["total"] - counts["non_embedding"] == 2 * v * d
