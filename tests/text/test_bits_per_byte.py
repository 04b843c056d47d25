"""Bits per byte by hand, for both pipelines, on exactly the same held-out bytes."""
import math

import torch
from text_fixtures import make_task, write_corpus
from torch import nn

from bytessm.train.distributed import World
from bytessm.train.evaluate import evaluate

E = 40   # held-out span length in bytes


class Bigram(nn.Module):
    """logits[b, t] = table[input[b, t]]: a model whose probabilities a loop can recompute."""

    def __init__(self, vocab: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(torch.randn(vocab, vocab, generator=g))

    def forward(self, inputs):
        return self.table[inputs]                                            # (B, L, V)


def hand_bits(table: torch.Tensor, bos: int, symbol_spans: list[list[int]]) -> float:
    logp = torch.log_softmax(table.double(), dim=-1)
    bits = 0.0
    for symbols in symbol_spans:
        prev = bos
        for s in symbols:
            bits -= float(logp[prev, s]) / math.log(2)
            prev = s
    return bits


def held_out_by_hand(folder, task, split):
    """Every document of the split, cut into E-byte spans, read straight from the files."""
    corpus = task.corpus()
    spans = []
    for i in corpus.doc_ids(split):
        data = (folder / corpus.names[i]).read_bytes()
        spans += [data[k:k + E] for k in range(0, len(data), E)]
    return spans


def test_bits_per_byte_by_hand_for_both_pipelines(tmp_path):
    folder = write_corpus(tmp_path / "c")
    results = {}
    for tok in ("bytes", "bpe"):
        task = make_task(folder, tokenizer=tok, eval_bytes=E)
        _, valid, _ = task.build_datasets()
        spans = held_out_by_hand(folder, task, "valid")
        assert sorted(spans) == sorted(task.corpus().doc_bytes(d, lo, hi)
                                       for d, lo, hi in valid.spans)
        if tok == "bytes":
            symbols = [list(s) for s in spans]
        else:   # the HF tokenizer on its own (the fixture text is ASCII: no byte fallback)
            symbols = [task.codec.tokenizer.encode(s.decode()).ids for s in spans]
        model = Bigram(task.vocab_size, seed=1)
        got = evaluate(model, task, valid, batch_size=3, device=torch.device("cpu"),
                       world=World())
        n_bytes = sum(len(s) for s in spans)
        n_tokens = sum(len(s) for s in symbols)
        bits = hand_bits(model.table.detach(), task.codec.bos, symbols)
        assert got["bytes"] == n_bytes
        assert math.isclose(got["bits_per_byte"], bits / n_bytes, rel_tol=1e-5)
        assert math.isclose(got["loss"], bits * math.log(2) / n_tokens, rel_tol=1e-5)
        if tok == "bpe":
            assert n_tokens < n_bytes
            assert math.isclose(got["bytes_per_token"], n_bytes / n_tokens, rel_tol=1e-9)
            assert math.isclose(got["token_perplexity"], math.exp(got["loss"]), rel_tol=1e-9)
        results[tok] = (valid.fingerprint, got["bytes"])
    assert results["bytes"] == results["bpe"]


def test_both_pipelines_score_the_same_held_out_bytes_even_when_capped(tmp_path):
    extra = {"zz_binary.bin": bytes(range(256)) * 2,
             "zz_utf8.txt": ("\u00e9t\u00e9 \u4e2d\u6587 " * 30).encode()}
    folder = write_corpus(tmp_path / "c", extra=extra)
    sets = {}
    for tok in ("bytes", "bpe"):
        for cap in (None, 7):
            task = make_task(folder, tokenizer=tok, eval_bytes=E, max_spans=cap)
            _, valid, test = task.build_datasets()
            for split, ds in (("valid", valid), ("test", test)):
                corpus = task.corpus()
                covered = []
                for k, (d, lo, hi) in enumerate(ds.spans):
                    ids, nbytes = ds.encoded[k]
                    text = corpus.doc_bytes(d, lo, hi)
                    assert task.codec.decode(ids) == text and int(nbytes.sum()) == len(text)
                    sample = ds[k]
                    assert int(sample["nbytes"].sum()) == len(text)
                    assert int(sample["input"][0]) == task.codec.bos
                    assert (sample["target"] >= 0).sum() == len(ids)
                    covered.append((d, lo, hi))
                if cap is None:   # every held-out byte exactly once
                    assert ds.total_bytes == corpus.split_bytes(split)
                    assert len(set(covered)) == len(covered)
                sets[tok, cap, split] = (covered, ds.fingerprint)
    for cap in (None, 7):
        for split in ("valid", "test"):
            assert sets["bytes", cap, split] == sets["bpe", cap, split]


def test_training_windows_are_deterministic_and_inside_documents(tmp_path):
    folder = write_corpus(tmp_path / "c")
    for tok in ("bytes", "bpe"):
        task = make_task(folder, tokenizer=tok, seq_len=12)
        train, _, _ = task.build_datasets()
        docs = [task.corpus().doc_bytes(i) for i in task.corpus().doc_ids("train")]
        for i in (0, 1, 999, 12345):
            a, b = train[i], train[i]
            assert all(torch.equal(a[k], b[k]) for k in a)
            assert a["input"].shape == (12,) and int(a["input"][0]) == task.codec.bos
            assert torch.equal(a["input"][1:], a["target"][:-1])
            text = task.codec.decode(a["target"].tolist())
            assert int(a["nbytes"].sum()) == len(text)
            assert any(text in d for d in docs)
        train.set_seq_len(4)
        assert train[0]["input"].shape == (4,)
