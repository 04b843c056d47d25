"""Tiny corpora and configs for the text tests."""
from __future__ import annotations

import random
from pathlib import Path

from omegaconf import OmegaConf

from bytessm.tasks.text import TextTask, split_of

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly hex "
         "jumbo packs of liquor boxes").split()
FRACTIONS = (0.6, 0.2, 0.2)


def text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words)) + ".\n"


def names_covering_splits(prefix: str = "doc", per_split: int = 3) -> list[str]:
    """File names whose hash puts at least `per_split` in each split."""
    names, seen = [], {"train": 0, "valid": 0, "test": 0}
    k = 0
    while min(seen.values()) < per_split:
        name = f"{prefix}{k:03d}.txt"
        seen[split_of(name, FRACTIONS)] += 1
        names.append(name)
        k += 1
    return names


def write_corpus(folder: Path, *, seed: int = 0, n_words=(40, 160), extra: dict | None = None) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names_covering_splits():
        (folder / name).write_text(text(rng, rng.randint(*n_words)))
    for name, data in (extra or {}).items():
        (folder / name).write_bytes(data)
    return folder


def make_cfg(path, *, tokenizer: str = "bytes", seq_len: int = 16, eval_bytes: int = 32,
             vocab_size: int = 300, max_spans=None, **task):
    tok = {"name": tokenizer}
    if tokenizer == "bpe":
        tok.update(vocab_size=vocab_size, min_frequency=2, max_train_bytes=10**7)
    return OmegaConf.create({
        "task": {"data": {"path": str(path), "cache_dir": None},
                 "split_fractions": list(FRACTIONS), "eval_bytes": eval_bytes,
                 "eval_max_spans": max_spans, **task},
        "trainer": {"seed": 0, "seq_len": seq_len},
        "tokenizer": tok})


def make_task(path, **kw) -> TextTask:
    return TextTask(make_cfg(path, **kw))
