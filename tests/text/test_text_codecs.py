"""Both codecs are byte-exact; the BPE cache is keyed by corpus and settings."""
import json

import numpy as np
import pytest
from text_fixtures import make_task, write_corpus

from bytessm.tasks.text import ByteCodec
from bytessm.tasks.text.codecs import utf8_pieces

SAMPLES = [b"", b"plain ascii", "caf\u00e9 \u00fcber \u4e2d\u6587 \U0001f600".encode(),
           bytes(range(256)), "\u00e9".encode()[:1] + b"half a character", b"\xff\xfe\x00bin"]


@pytest.fixture(scope="module")
def bpe_task(tmp_path_factory):
    folder = write_corpus(tmp_path_factory.mktemp("bpe") / "c")
    task = make_task(folder, tokenizer="bpe")
    task.build_datasets()
    return task


def test_utf8_pieces_split_valid_runs_from_invalid_bytes():
    assert utf8_pieces(b"ab\xffcd\xc3") == ["ab", b"\xff", "cd", b"\xc3"]
    assert utf8_pieces("\u00e9".encode()) == ["\u00e9"]


@pytest.mark.parametrize("data", SAMPLES, ids=["empty", "ascii", "multibyte", "all-bytes",
                                               "cut-char", "binary"])
def test_round_trip_and_byte_coverage(bpe_task, data):
    for codec in (ByteCodec(), bpe_task.codec):
        ids, nbytes = codec.encode(data)
        assert codec.decode(ids) == data
        assert int(nbytes.sum()) == len(data) and len(ids) == len(nbytes)
        assert (nbytes > 0).all() and (ids != codec.bos).all()


def test_bpe_matches_the_hf_tokenizer_on_valid_text(bpe_task):
    text = "the quick brown fox jumps over the lazy dog"
    ids, _ = bpe_task.codec.encode(text.encode())
    assert ids.tolist() == bpe_task.codec.tokenizer.encode(text).ids
    assert len(ids) < len(text)   # merges were learned


def test_cached_tokenizer_is_reused_then_rebuilt_when_corpus_or_settings_change(tmp_path, capsys):
    folder = write_corpus(tmp_path / "c")
    make_task(folder, tokenizer="bpe").build_datasets()
    meta_path = folder / ".bytessm-cache" / "bpe-300" / "meta.json"
    key = json.loads(meta_path.read_text())["key"]
    capsys.readouterr()

    make_task(folder, tokenizer="bpe").build_datasets()          # same corpus: reused
    assert "training a" not in capsys.readouterr().err

    task = make_task(folder, tokenizer="bpe")                    # a training document changes
    train_doc = task.corpus().names[task.corpus().doc_ids("train")[0]]
    (folder / train_doc).write_text("zebra zebra zebra quartz " * 40)
    task = make_task(folder, tokenizer="bpe")
    task.build_datasets()
    err = capsys.readouterr().err
    assert "was built for another corpus or other settings" in err and "training a" in err
    assert json.loads(meta_path.read_text())["key"] != key
    assert len(task.codec.encode(b"zebra zebra")[0]) <= 3        # the new text was learned

    tok = folder / ".bytessm-cache" / "bpe-300" / "tokenizer.json"   # a tampered tokenizer
    tok.write_text(tok.read_text().replace('"zebra"', '"zebr4"'))
    make_task(folder, tokenizer="bpe").build_datasets()
    assert "rebuilding" in capsys.readouterr().err

    cfg_task = make_task(folder, tokenizer="bpe")
    cfg_task.cfg.tokenizer.min_frequency = 3                     # tokenizer setting: rebuilt
    cfg_task.build_datasets()
    assert "rebuilding" in capsys.readouterr().err


def test_non_utf8_training_documents_are_said_so(tmp_path, capsys):
    names = {f"bin{k}.dat": bytes(np.random.default_rng(k).integers(0, 256, 400, dtype=np.uint8))
             for k in range(12)}
    folder = write_corpus(tmp_path / "c", extra=names)
    make_task(folder, tokenizer="bpe").build_datasets()
    err = capsys.readouterr().err
    assert "are not valid UTF-8" in err and "single-byte token" in err
