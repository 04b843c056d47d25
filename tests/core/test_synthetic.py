"""The synthetic tasks' samples: what each one asks, and that a sample is a function of its
index (and split)."""
import pytest
import torch

from bytessm.task import IGNORE, ConfigError
from bytessm.tasks.synthetic.data import BLANK, FIRST, MARKER, SyntheticDataset


def _ds(kind, split="train", **kw):
    return SyntheticDataset(kind=kind, size=10**9, seed=1, split=split, **kw)


def test_mqar_asks_each_key_for_its_value():
    vocab, pairs, length = 64, 8, 96
    ds = _ds("mqar", length=length, vocab=vocab, n_pairs=pairs)
    for i in range(50):
        inp, tgt = ds[i]["input"], ds[i]["target"]
        keys, values = inp[0:2 * pairs:2], inp[1:2 * pairs:2]
        assert len(set(keys.tolist())) == pairs                         # distinct keys
        assert ((keys >= FIRST) & (keys < FIRST + vocab // 2)).all()    # first half
        assert ((values >= FIRST + vocab // 2) & (values < FIRST + vocab)).all()
        asked = (tgt != IGNORE).nonzero().flatten()
        assert len(asked) == pairs and (asked >= 2 * pairs).all()       # after the pairs
        binding = dict(zip(keys.tolist(), values.tolist()))
        assert sorted(inp[asked].tolist()) == sorted(keys.tolist())     # each key once
        assert all(binding[k] == v for k, v in zip(inp[asked].tolist(), tgt[asked].tolist()))
        rest = torch.ones(length, dtype=torch.bool)
        rest[:2 * pairs] = False
        rest[asked] = False
        assert (inp[rest] == BLANK).all()


def test_induction_heads_ends_at_the_marker_asking_for_the_key():
    ds = _ds("induction_heads", length=40, vocab=16)
    for i in range(50):
        inp, tgt = ds[i]["input"], ds[i]["target"]
        markers = (inp == MARKER).nonzero().flatten().tolist()
        assert markers[-1] == 39 and len(markers) == 2
        assert tgt[-1] == inp[markers[0] + 1] and (tgt[:-1] == IGNORE).all()
        assert ((inp >= FIRST) | (inp == MARKER)).all()


def test_selective_copying_asks_for_the_tokens_in_order():
    n, length = 6, 30
    ds = _ds("selective_copying", length=length, vocab=8, n_memorize=n)
    for i in range(50):
        inp, tgt = ds[i]["input"], ds[i]["target"]
        context = inp[:length - n]
        tokens = context[context != BLANK]
        assert len(tokens) == n and (inp[length - n:] == MARKER).all()
        assert torch.equal(tgt[length - n:], tokens) and (tgt[:length - n] == IGNORE).all()


@pytest.mark.parametrize("kind,kw", [
    ("mqar", dict(length=64, vocab=64, n_pairs=4)),
    ("induction_heads", dict(length=64, vocab=16)),
    ("selective_copying", dict(length=64, vocab=16, n_memorize=8)),
])
def test_a_sample_is_a_function_of_its_index_and_split(kind, kw):
    a, b, valid = _ds(kind, **kw), _ds(kind, **kw), _ds(kind, split="valid", **kw)
    for i in (0, 7, 12345):
        assert torch.equal(a[i]["input"], b[i]["input"])
        assert torch.equal(a[i]["target"], b[i]["target"])
        assert a[i]["input"].dtype == torch.int64
    assert not torch.equal(a[0]["input"], a[1]["input"])
    assert not torch.equal(a[0]["input"], valid[0]["input"])


@pytest.mark.parametrize("kind,kw,match", [
    ("mqar", dict(length=64, vocab=8, n_pairs=5), r"n_pairs <= vocab/2=4, got 5"),
    ("mqar", dict(length=15, vocab=64, n_pairs=4), r"seq_len >= 4\*n_pairs=16, got 15"),
    ("induction_heads", dict(length=3, vocab=16), "seq_len >= 4, got 3"),
    ("selective_copying", dict(length=10, vocab=16, n_memorize=6), "seq_len >= 2\\*n_memorize"),
])
def test_impossible_settings_are_refused(kind, kw, match):
    with pytest.raises(ConfigError, match=match):
        _ds(kind, **kw)
