"""The contract between the trainer and a modality: every task package implements `Task`.

The trainer knows no modality. It builds a task from the config (`cfg.task._target_` is
the Task subclass's import path), asks it for datasets, an encoder (optional) and a head,
and hands the head's output and the batch back to it for the loss and metrics.

Datasets
    `build_datasets()` returns (train, valid, test), map-style `torch.utils.data.Dataset`s.
    `ds[i]` returns a dict of CPU tensors of fixed shapes (the default collate stacks them)
    and must be deterministic in i: derive any randomness (window position, augmentation)
    from a generator seeded by (seed, i) — `index_generator` below. That is what makes
    resume exact and per-rank sampling simple. Key "input" is what the model reads:
    (L,) int64 symbols or (L, F) float vectors. Other keys are the task's (targets, masks).
    A training set may implement `set_seq_len(n)`; the trainer calls it for sequence-length
    warmup. Batches are yielded on CPU; the trainer moves them to the device.

Metrics
    `loss_and_metrics(head_out, batch)` returns (loss, metrics): `loss` is the scalar to
    backpropagate; `metrics` maps names to (sum, count) pairs of tensors, one of them
    "loss" (so loss == sum / count). The trainer adds sums and counts over batches and
    ranks, then `summarize(totals)` turns them into the reported numbers (default:
    sum / count; override for perplexity, MCC, ...). Bits per byte is the summed NLL in
    bits over the count of real bytes, never a mean of per-batch means.
    `num_symbols(batch)` is how many symbols a batch holds, for the trainer's throughput
    (`symbols_per_s`); the default, batch x length of "input", fits sequence tasks, and a
    task whose "input" is not (B, L, ...) overrides it (images count patches).
"""
from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import Dataset

Metrics = dict[str, tuple[Tensor, Tensor]]

#: Target value that next-symbol losses skip (padding, prompt, non-answer positions).
IGNORE = -100


class DataError(Exception):
    """Missing or malformed data: the CLI prints the message and exits with status 2."""


class ConfigError(ValueError):
    """A config value out of range: the CLI prints the message (naming the key), exit 2."""


def index_generator(seed: int, index: int, salt: str = "") -> torch.Generator:
    """A torch.Generator seeded from (seed, index, salt): stable across runs and processes."""
    g = torch.Generator()
    g.manual_seed(zlib.crc32(f"{salt}:{seed}:{index}".encode()) + (int(seed) << 32))
    return g


def next_symbol_nll(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Summed cross-entropy (nats) over the positions whose target is not IGNORE.

    logits (B, L, V), target (B, L) -> (nll_sum, count, correct): the sum to report and to
    divide by the count, the number of counted positions, and how many argmax hits.
    """
    counted = target != IGNORE
    nll = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), ignore_index=IGNORE,
                          reduction="sum")
    correct = ((logits.argmax(-1) == target) & counted).sum()
    return nll, counted.sum(), correct


class Task:
    """Base class of the per-modality tasks. `cfg` is the whole resolved config."""

    #: The model's input alphabet (256 bytes + the task's specials) when inputs are symbols;
    #: None when the task supplies its own encoder (`build_encoder`).
    vocab_size: int | None = 256
    #: Whether the task needs a causal model (next-symbol objectives).
    causal: bool = True

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    def build_datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        raise NotImplementedError

    def build_encoder(self, d_model: int) -> nn.Module | None:
        """An encoder replacing the byte embedding (patch embeddings, ...), or None."""
        return None

    def build_head(self, d_model: int) -> nn.Module:
        raise NotImplementedError

    def loss_and_metrics(self, head_out: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        raise NotImplementedError

    def summarize(self, totals: dict[str, tuple[float, float]]) -> dict[str, float]:
        """(sum, count) per metric, over the whole split -> reported values."""
        return {k: s / max(c, 1e-12) for k, (s, c) in totals.items()}

    def num_symbols(self, batch: dict[str, Tensor]) -> int:
        """Symbols in `batch`, for `symbols_per_s`: "input" is (B, L) symbols or (B, L, F)
        vectors, so B * L."""
        x = batch["input"]
        return x.shape[0] * x.shape[1]

    # -- generation (tasks with a causal next-symbol objective) -------------------------
    def encode_prompt(self, prompt: str) -> list[int]:
        """A user's prompt string -> input symbols. Default: its UTF-8 bytes."""
        return list(prompt.encode("utf-8"))

    def write_samples(self, samples: list[list[int]], out: str | None) -> list[str]:
        """Turn generated symbols into the task's output (print, text files, WAV, ...).
        Returns the paths written (empty when printed)."""
        raise NotImplementedError(f"{type(self).__name__} does not generate")
