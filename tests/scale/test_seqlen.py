"""Sequence-length warmup schedule (bytessm/train/seqlen.py), against hand-computed stages."""
from __future__ import annotations

import pytest

from bytessm.task import ConfigError
from bytessm.train.seqlen import seq_len_at, seq_len_stages


def schedule(n_steps, **kw):
    return [seq_len_at(s, **kw) for s in range(n_steps)]


def test_doubling_in_equal_stages():
    got = schedule(8, start=1024, target=8192, warmup_steps=6)
    assert got == [1024, 1024, 2048, 2048, 4096, 4096, 8192, 8192]


def test_target_not_a_power_of_two_times_start_is_capped():
    # 100 -> 200 -> 400 -> (800 capped) 500: stages 100, 200, 400, then the target
    got = schedule(5, start=100, target=500, warmup_steps=3)
    assert got == [100, 200, 400, 500, 500]


def test_uneven_stage_lengths_follow_integer_division():
    # 3 stages over 10 steps: stage = step * 3 // 10
    got = schedule(11, start=64, target=512, warmup_steps=10)
    assert got == [64] * 4 + [128] * 3 + [256] * 3 + [512]


def test_multiple_rounds_warmup_lengths_down_but_not_the_target():
    got = schedule(4, start=100, target=1000, warmup_steps=4, multiple=64)
    # 100 -> 64, 200 -> 192, 400 -> 384, 800 -> 768; target 1000 as configured
    assert got == [64, 192, 384, 768]
    assert seq_len_at(4, start=100, target=1000, warmup_steps=4, multiple=64) == 1000
    assert seq_len_at(0, start=10, target=1000, warmup_steps=4, multiple=64) == 64


@pytest.mark.parametrize("kw", [dict(start=4096, target=4096, warmup_steps=10),
                                dict(start=8192, target=4096, warmup_steps=10),
                                dict(start=1024, target=4096, warmup_steps=0)],
                         ids=["start-equals-target", "start-above-target", "no-warmup-steps"])
def test_no_warmup_is_the_target(kw):
    assert schedule(3, **kw) == [4096] * 3


def test_more_stages_than_steps_still_ends_at_target():
    got = schedule(3, start=1, target=2**10, warmup_steps=2)
    assert got == [1, 2**5, 2**10]


def test_stages_listing_matches_the_function():
    kw = dict(start=64, target=512, warmup_steps=10)
    assert seq_len_stages(**kw) == [(0, 64), (4, 128), (7, 256), (10, 512)]
    kw = dict(start=1, target=2**10, warmup_steps=2)
    stages = seq_len_stages(**kw)
    assert stages == [(0, 1), (1, 32), (2, 1024)]
    for first, length in stages:
        assert seq_len_at(first, **kw) == length
    assert seq_len_stages(start=8, target=8, warmup_steps=5) == [(0, 8)]


@pytest.mark.parametrize("kw,match", [
    (dict(start=0, target=64, warmup_steps=5), r"trainer.seq_len_warmup.start must be a "
                                               r"positive integer, got 0"),
    (dict(start=8, target=-1, warmup_steps=5), r"trainer.seq_len must be a positive integer"),
    (dict(start=8, target=64, warmup_steps=-2), r"trainer.seq_len_warmup.steps must be an "
                                                r"integer >= 0, got -2"),
    (dict(start=8.5, target=64, warmup_steps=5), r"start must be a positive integer, got 8.5"),
])
def test_bad_settings(kw, match):
    with pytest.raises(ConfigError, match=match):
        seq_len_at(0, **kw)
