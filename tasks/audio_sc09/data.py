"""The Speech Commands layout, restricted to the ten digits (SC09), and its datasets.

    ROOT/
        zero/ one/ ... nine/       WAV files (other word folders are ignored)
        validation_list.txt        one "word/file.wav" per line: the validation split
        testing_list.txt           the same for the test split; every other file trains

`scan(root)` reads the split lists and the ten folders and checks every file's header
(`codec.probe`): readable, not empty, a sample rate that resamples to 16 kHz. A problem
raises one `DataError` naming the file; with `skip_bad_files=True` the bad files are left
out instead and one warning counts and names them.

`SC09Dataset` decodes a clip when it is read (16,000 mu-law symbols; nothing is cached), so
a dataset of any size costs no memory, and sample i is a pure function of i.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from bytessm.task import DataError, index_generator

from .codec import CLIP_LEN, mulaw_encode, probe, read_clip, shift_right

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLIT_LISTS = {"valid": "validation_list.txt", "test": "testing_list.txt"}
_LAYOUT = ("the Speech Commands layout: folders zero/ .. nine/ of WAV files beside "
           "validation_list.txt and testing_list.txt (scripts/prepare_sc09.py writes one; "
           "docs/audio_sc09.md shows how to use the real SC09)")


@dataclass(frozen=True)
class Clip:
    path: str   # absolute path of the WAV file
    name: str   # "word/file.wav", as in the split lists
    label: int  # index of the word in DIGITS


def _read_list(root: str, filename: str, split: str) -> list[str]:
    """Entries of a split list that name digit files, in order ("word/file.wav")."""
    path = os.path.join(root, filename)
    if not os.path.isfile(path):
        raise DataError(f"{path}: split list not found; the {split} split of {_LAYOUT} is "
                        f"defined by this file (one 'word/file.wav' per line)")
    with open(path, encoding="utf-8") as f:
        entries = [line.strip().replace("\\", "/") for line in f]
    return [e for e in entries if e and e.split("/", 1)[0] in DIGITS]


def _list_folder(root: str, word: str) -> list[str]:
    folder = os.path.join(root, word)
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: digit folder not found; expected {_LAYOUT}")
    wavs = sorted(f for f in os.listdir(folder) if f.lower().endswith(".wav"))
    if not wavs:
        raise DataError(f"{folder}: the digit folder holds no .wav files; SC09 needs clips "
                        f"of all ten digits")
    return [f"{word}/{f}" for f in wavs]


def scan(root: str, *, skip_bad_files: bool = False) -> dict[str, list[Clip]]:
    """ROOT in the Speech Commands layout -> {"train", "valid", "test"}: lists of Clip,
    sorted by (digit, file name). Split membership is exactly the lists' entries."""
    if not root or not os.path.isdir(root):
        raise DataError(f"task.data.root={root!r}: no such folder; expected {_LAYOUT}")
    root = os.path.abspath(root)
    listed = {split: _read_list(root, name, split) for split, name in SPLIT_LISTS.items()}
    both = sorted(set(listed["valid"]) & set(listed["test"]))
    if both:
        raise DataError(f"{os.path.join(root, SPLIT_LISTS['valid'])} and "
                        f"{SPLIT_LISTS['test']} both list {len(both)} file(s), e.g. {both[0]}: "
                        f"a clip belongs to one split")
    names = [n for word in DIGITS for n in _list_folder(root, word)]
    present = set(names)

    bad: list[str] = []  # one "name: reason" per skipped file
    for split, entries in listed.items():
        for entry in entries:
            if entry not in present:
                msg = (f"{os.path.join(root, SPLIT_LISTS[split])} names {entry}, which does "
                       f"not exist under {root}")
                if not skip_bad_files:
                    raise DataError(msg)
                bad.append(msg)
    good = []
    for name in names:
        try:
            probe(os.path.join(root, name))
            good.append(name)
        except DataError as e:
            if not skip_bad_files:
                raise
            bad.append(str(e))
    if bad:
        shown = "\n  ".join(bad[:20]) + ("\n  ..." if len(bad) > 20 else "")
        warnings.warn(f"audio_sc09: skipped {len(bad)} bad file(s) under {root} "
                      f"(task.data.skip_bad_files=true):\n  {shown}", stacklevel=2)

    membership = {e: split for split, entries in listed.items() for e in entries}
    splits: dict[str, list[Clip]] = {"train": [], "valid": [], "test": []}
    for name in good:
        clip = Clip(os.path.join(root, name), name, DIGITS.index(name.split("/", 1)[0]))
        splits[membership.get(name, "train")].append(clip)
    for split, clips in splits.items():
        if not clips:
            raise DataError(f"{root}: the {split} split has no clips (after reading the split "
                            f"lists{' and skipping bad files' if bad else ''}); expected {_LAYOUT}")
    return splits


class SC09Dataset(Dataset):
    """Clips of one split as model samples.

    objective "autoregressive": {"input": (L,) shifted symbols, "target": (L,) symbols,
        "label": ()} — a window of length L = seq_len of the clip; training windows start
        at an offset drawn from (seed, index), evaluation windows at 0. L = 16,000 (the
        default) is the whole clip.
    objective "classify": {"input": (16000,) symbols, "label": ()}.
    """

    def __init__(self, clips: list[Clip], *, objective: str, seq_len: int = CLIP_LEN,
                 seed: int = 0, random_window: bool = False, split: str = "train"):
        self.clips, self.objective = clips, objective
        self.seed, self.random_window, self.split = seed, random_window, split
        self.set_seq_len(seq_len)

    def set_seq_len(self, n: int) -> None:
        """Sequence-length warmup hook: windows of n <= 16,000 samples from now on."""
        if not 0 < n <= CLIP_LEN:
            raise ValueError(f"audio_sc09 windows must be 1..{CLIP_LEN} samples, got {n}")
        self.seq_len = int(n)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        clip = self.clips[i]
        symbols = mulaw_encode(read_clip(clip.path))                 # (16000,) int64
        label = torch.tensor(clip.label, dtype=torch.long)
        if self.objective == "classify":
            return {"input": symbols, "label": label}
        inputs = shift_right(symbols)                                # (16000,)
        L, start = self.seq_len, 0
        if L < CLIP_LEN and self.random_window:
            g = index_generator(self.seed, i, salt=f"sc09-{self.split}")
            start = int(torch.randint(0, CLIP_LEN - L + 1, (), generator=g))
        return {"input": inputs[start:start + L], "target": symbols[start:start + L],
                "label": label}
