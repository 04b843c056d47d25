"""Corpus reading: file / folder / glob, the hash split, the byte cache, bad input."""
import numpy as np
import pytest
from text_fixtures import FRACTIONS, make_task, write_corpus

from bytessm.task import DataError
from bytessm.tasks.text import Corpus, split_of


def test_split_is_stable_when_a_file_is_added(tmp_path):
    folder = write_corpus(tmp_path / "c")
    before = Corpus.open(str(folder), fractions=FRACTIONS)
    old = dict(zip(before.names, before.splits))
    for k in range(20):
        (folder / f"new{k}.txt").write_text("added later\n" * 3)
    after = Corpus.open(str(folder), fractions=FRACTIONS)
    new = dict(zip(after.names, after.splits))
    assert len(new) == len(old) + 20
    assert {n: new[n] for n in old} == old
    assert {split_of(n, FRACTIONS) for n in new} == {"train", "valid", "test"}


def test_split_fractions_are_respected_in_expectation():
    names = [f"d{k}.txt" for k in range(20000)]
    counts = {s: 0 for s in ("train", "valid", "test")}
    for n in names:
        counts[split_of(n, (0.8, 0.1, 0.1))] += 1
    assert abs(counts["train"] / 20000 - 0.8) < 0.015
    assert abs(counts["valid"] / 20000 - 0.1) < 0.01


def test_folder_file_and_glob(tmp_path):
    folder = write_corpus(tmp_path / "c")
    (folder / "sub").mkdir()
    (folder / "sub" / "x.md").write_text("markdown\n")
    (folder / ".hidden").write_text("skipped\n")
    c = Corpus.open(str(folder), fractions=FRACTIONS)
    assert "sub/x.md" in c.names and ".hidden" not in c.names
    assert not any(n.startswith(".bytessm-cache") for n in c.names)
    g = Corpus.open(str(folder / "**" / "*.md"), fractions=FRACTIONS)
    assert g.names == ["sub/x.md"]
    one = Corpus.open(str(folder / "sub" / "x.md"), fractions=FRACTIONS)
    assert one.names == ["x.md"] and one.doc_bytes(0) == b"markdown\n"


def test_byte_cache_is_a_memmap_of_every_document_and_is_rebuilt_on_change(tmp_path):
    folder = write_corpus(tmp_path / "c")
    c = Corpus.open(str(folder), fractions=FRACTIONS)
    assert isinstance(c.data(), np.memmap)
    for i, name in enumerate(c.names):
        assert c.doc_bytes(i) == (folder / name).read_bytes()
    (folder / c.names[0]).write_text("changed\n")
    c2 = Corpus.open(str(folder), fractions=FRACTIONS)
    assert c2.bin_path != c.bin_path and c2.doc_bytes(0) == b"changed\n"


def test_empty_corpus(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.txt").write_bytes(b"")
    with pytest.raises(DataError, match=r"the corpus is empty \(all 1 file\(s\)"):
        Corpus.open(str(tmp_path / "c"))
    (tmp_path / "e").mkdir()
    with pytest.raises(DataError, match="holds no files"):
        Corpus.open(str(tmp_path / "e"))


def test_glob_matching_nothing(tmp_path):
    with pytest.raises(DataError, match=r"the glob matched no files"):
        Corpus.open(str(tmp_path / "*.nothing"))


def test_missing_path_names_the_key_and_the_prep_script(tmp_path):
    with pytest.raises(DataError, match=r"task.data.path=.*no such file or folder.*prepare_text"):
        Corpus.open(str(tmp_path / "absent"))


@pytest.mark.parametrize("tokenizer", ["bytes", "bpe"])
def test_all_documents_shorter_than_seq_len(tmp_path, tokenizer):
    folder = write_corpus(tmp_path / "c", n_words=(2, 4))
    task = make_task(folder, tokenizer=tokenizer, seq_len=4096)
    with pytest.raises(DataError, match=r"no training document is long enough for a window of "
                                        r"4096 symbols.*lower trainer.seq_len"):
        task.build_datasets()


def test_a_split_without_documents(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    name = next(f"d{k}" for k in range(100) if split_of(f"d{k}", FRACTIONS) == "train")
    (folder / name).write_text("only training text here\n" * 10)
    with pytest.raises(DataError, match=r"the valid split has no text \(1 documents.*"
                                        r"raise the valid fraction"):
        make_task(folder).build_datasets()
