"""Tiny SC09 fixtures in the real Speech Commands layout, written into a test's tmp_path."""
from __future__ import annotations

import os

import numpy as np
import soundfile as sf
from omegaconf import OmegaConf

from bytessm.tasks.audio_sc09.data import DIGITS


def tone(freq: float, *, rate: int = 16000, seconds: float = 1.0, channels: int = 1,
         amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return x if channels == 1 else np.stack([x] * channels, axis=1)


def make_sc09(root, *, per_digit: int = 3, valid: int = 1, test: int = 1,
              seconds: float = 1.0, rate: int = 16000, extra_words=("dog",)) -> dict:
    """per_digit clips per digit folder (a tone at 200 + 50 * digit Hz); the first `valid`
    of each go to validation_list.txt, the next `test` to testing_list.txt. Returns the
    expected {split: sorted names}."""
    root = str(root)
    expected = {"train": [], "valid": [], "test": []}
    for d, word in enumerate(list(DIGITS) + list(extra_words)):
        os.makedirs(os.path.join(root, word), exist_ok=True)
        for k in range(per_digit):
            name = f"{word}/spk{k:02d}_nohash_0.wav"
            sf.write(os.path.join(root, name), tone(200 + 50 * d, rate=rate, seconds=seconds),
                     rate, subtype="PCM_16")
            split = "valid" if k < valid else "test" if k < valid + test else "train"
            expected[split].append(name)
    lists = {"valid": "validation_list.txt", "test": "testing_list.txt"}
    for split, filename in lists.items():
        with open(os.path.join(root, filename), "w") as f:
            f.write("".join(n + "\n" for n in expected[split]))
    return {k: sorted(n for n in v if n.split("/")[0] in DIGITS) for k, v in expected.items()}


def config(root, *, objective: str = "autoregressive", seq_len: int = 16000, **task):
    return OmegaConf.create({
        "task": {"_target_": "bytessm.tasks.audio_sc09.AudioSC09Task", "name": "audio_sc09",
                 "objective": objective, "data": {"root": str(root), "skip_bad_files": False},
                 "eval_seq_len": None, "n_mels": 32, **task},
        "trainer": {"seq_len": seq_len, "seed": 0},
    })
