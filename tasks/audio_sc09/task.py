"""`AudioSC09Task`: raw-waveform modeling of spoken digits (SC09), or a digit classifier.

Config (configs/task/audio_sc09.yaml, audio_sc09_classifier.yaml):

    task.objective        autoregressive (default) | classify
    task.data.root        the Speech Commands folder (data.py describes the layout)
    task.data.skip_bad_files   leave unreadable files out with a warning instead of failing
    task.eval_seq_len     autoregressive: window evaluated on valid/test; null = the whole
                          1-s clip (the benchmark's number)
    task.n_mels           classify: mel bins of the classifier's front end
    trainer.seq_len       autoregressive training window (<= 16000); classify: 16000
    trainer.seed          seeds the training windows

Autoregressive: the 256 mu-law levels are the byte alphabet; the model reads the clip
shifted right by one (zero level first) and predicts every sample. Metrics: "loss" (nats per
sample) and "bits_per_sample" (summed NLL / ln 2 over the count of samples), the number the
SC09 literature reports (Mamba: 1.852 bits with a 6.1M SaShiMi-style U-Net).
Classify: the clip -> one of ten digits; metrics "loss" and "accuracy".
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bytessm.nn import ClassifierHead, LMHead
from bytessm.task import ConfigError, Metrics, Task

from .classifier import MelEncoder
from .codec import CLIP_LEN, MU_CHANNELS, ZERO_LEVEL, mulaw_decode, mulaw_encode, read_clip, write_wav
from .data import DIGITS, SC09Dataset, scan

OBJECTIVES = ("autoregressive", "classify")


class AudioSC09Task(Task):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.objective = cfg.task.get("objective", "autoregressive")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"task.objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.objective == "classify":
            self.vocab_size, self.causal = None, False   # mel front end; any backbone
        else:
            self.vocab_size, self.causal = MU_CHANNELS, True

    # -- data -----------------------------------------------------------------------------
    def build_datasets(self):
        t, tr = self.cfg.task, self.cfg.trainer
        seq_len = int(tr.seq_len)
        if self.objective == "classify" and seq_len != CLIP_LEN:
            raise ConfigError(f"trainer.seq_len must be {CLIP_LEN} (whole 1-s clips) for the "
                              f"SC09 classifier, got {seq_len}")
        if not 0 < seq_len <= CLIP_LEN:
            raise ConfigError(f"trainer.seq_len must be 1..{CLIP_LEN} (a window of a 1-s "
                              f"clip), got {seq_len}")
        eval_len = int(t.get("eval_seq_len") or CLIP_LEN)
        if not 0 < eval_len <= CLIP_LEN:
            raise ConfigError(f"task.eval_seq_len must be 1..{CLIP_LEN} or null, got {eval_len}")
        data = t.get("data") or {}
        splits = scan(data.get("root"), skip_bad_files=bool(data.get("skip_bad_files", False)))
        kw = dict(objective=self.objective, seed=int(tr.seed))
        return (SC09Dataset(splits["train"], seq_len=seq_len, random_window=True,
                            split="train", **kw),
                SC09Dataset(splits["valid"], seq_len=eval_len, split="valid", **kw),
                SC09Dataset(splits["test"], seq_len=eval_len, split="test", **kw))

    # -- model pieces ---------------------------------------------------------------------
    def build_encoder(self, d_model: int) -> nn.Module | None:
        if self.objective == "classify":
            return MelEncoder(d_model, n_mels=int(self.cfg.task.get("n_mels", 64)))
        return None  # the mu-law symbols go through the core byte embedding

    def build_head(self, d_model: int) -> nn.Module:
        if self.objective == "classify":
            return ClassifierHead(d_model, len(DIGITS), pool="mean")
        return LMHead(d_model, MU_CHANNELS)

    def loss_and_metrics(self, head_out: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        if self.objective == "classify":
            logits, label = head_out.float(), batch["label"]              # (B, 10), (B,)
            nll = F.cross_entropy(logits, label, reduction="sum")
            n = torch.full((), float(label.numel()), device=logits.device)  # no host copy
            correct = (logits.argmax(-1) == label).sum()
            return nll / n, {"loss": (nll.detach(), n), "accuracy": (correct, n)}
        logits, target = head_out.float(), batch["target"]                # (B, L, 256), (B, L)
        nll = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="sum")
        n = torch.full((), float(target.numel()), device=logits.device)
        nll_d = nll.detach()
        return nll / n, {"loss": (nll_d, n), "bits_per_sample": (nll_d / math.log(2), n)}

    # -- generation -----------------------------------------------------------------------
    def encode_prompt(self, prompt: str) -> list[int]:
        """"" -> [128] (unconditional: the zero level starts every clip). A path to a WAV
        file -> [128] + that clip's mu-law symbols, so the model continues the clip."""
        if not prompt:
            return [ZERO_LEVEL]
        clip = read_clip(prompt)
        return [ZERO_LEVEL] + mulaw_encode(clip).tolist()

    def write_samples(self, samples: list[list[int]], out: str | None) -> list[str]:
        """Generated mu-law symbols -> 16 kHz mono 16-bit WAV files `out`/sample_0000.wav, ...
        (written atomically). A sample that starts with the prompt's zero-level symbol keeps
        it: it decodes to silence at t = 0."""
        folder = out or "samples"
        paths = []
        for i, symbols in enumerate(samples):
            bad = [s for s in symbols if not 0 <= int(s) < MU_CHANNELS]
            if bad:
                raise ValueError(f"sample {i} holds symbols outside 0..255 (e.g. {bad[0]}): "
                                 f"not mu-law audio")
            wave = mulaw_decode(torch.tensor(symbols, dtype=torch.long))  # (L,) in [-1, 1]
            paths.append(write_wav(os.path.join(folder, f"sample_{i:04d}.wav"), wave))
        return paths
