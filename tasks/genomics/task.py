"""The genomics tasks: DNA pretraining on FASTA + BED, and species/sequence classification.

    task=genomics           GenomicsPretrainTask
        objective "next"    causal next-base prediction; bits per base and perplexity
        objective "masked"  Caduceus/BERT masked prediction (15%), bidirectional models
    task=genomics_species   GenomicsSpeciesTask
        format "fasta"      one FASTA (or folder of FASTAs) per species, random windows of
                            trainer.seq_len, splits separated by genomic position
        format "genomic_benchmarks"  train/<class>/*.txt, test/<class>/*.txt
        accuracy and Matthews correlation (multiclass, Gorodkin 2004)

Inputs are the bases' bytes through the core byte embedding (alphabet.py); lengths come
from trainer.seq_len (sequence-length warmup through the datasets' set_seq_len), seeds
from trainer.seed. model._target_=bytessm.tasks.genomics.rc.RCPSBackbone selects the
reverse-complement-equivariant model (rc.py) and the matching heads.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from bytessm.nn import LMHead
from bytessm.task import ConfigError, DataError, Metrics, Task, next_symbol_nll

from . import alphabet
from .alphabet import VOCAB_SIZE
from .datasets import (VIRTUAL_SIZE, IntervalDataset, Region, SequenceDataset,
                       WindowDataset, check_options, split_regions)
from .fasta import FastaFile
from .intervals import SPLITS, read_bed
from .rc import RCLMHead, RCPositionClassifier, is_rc_model
from .sources import open_species, read_benchmark, species_fastas

FORMATS = ("fasta", "genomic_benchmarks")
POOLS = ("mean", "last")


def _model_is_bidirectional(cfg: DictConfig) -> bool:
    model = cfg.get("model")
    return model is not None and (bool(model.get("bidirectional", False)) or is_rc_model(model))


class GenomicsPretrainTask(Task):
    """Next-base or masked pretraining on the BED intervals of a FASTA (module docstring)."""

    vocab_size = VOCAB_SIZE

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        t = cfg.task
        self.objective = str(t.get("objective", "next"))
        check_options(n_mode=str(t.get("n_mode", "keep")), objective=self.objective)
        self.causal = self.objective == "next"
        self.rc_model = is_rc_model(cfg.get("model"))
        if self.causal and self.rc_model:
            raise ConfigError("task.objective=next needs a causal model, but the RC-equivariant "
                              "model (RCPSBackbone) reads both strands of the whole input; use "
                              "task.objective=masked with it")
        if not self.causal and cfg.get("model") is not None and not _model_is_bidirectional(cfg):
            raise ConfigError(f"task.objective=masked needs a bidirectional model, but model "
                              f"{cfg.model.get('name')!r} has model.bidirectional=false; set "
                              f"model.bidirectional=true")
        rate = float(t.get("mask_rate", 0.15))
        if not 0 < rate < 1:
            raise ConfigError(f"task.mask_rate must be in (0, 1), got {rate}")
        self.mask_rate = rate

    def build_datasets(self):
        t, tr = self.cfg.task, self.cfg.trainer
        d = t.data
        fasta = FastaFile(d.fasta, uppercase=bool(t.uppercase),
                          index_cache=d.get("index_cache"))
        if d.get("validate", True):
            fasta.validate()
        intervals = read_bed(d.bed, fasta.lengths)
        kw = dict(fasta=fasta, objective=self.objective, seed=int(tr.seed),
                  shift=int(t.get("shift", 0)), rc_aug=bool(t.rc_aug),
                  n_mode=str(t.n_mode), mask_rate=self.mask_rate, length=int(tr.seq_len))
        return tuple(IntervalDataset(intervals=[iv for iv in intervals if iv.split == s],
                                     split=s, **kw) for s in SPLITS)

    def build_head(self, d_model: int) -> nn.Module:
        return RCLMHead(d_model, VOCAB_SIZE) if self.rc_model else LMHead(d_model, VOCAB_SIZE)

    def loss_and_metrics(self, head_out: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        nll, n, correct = next_symbol_nll(head_out, batch["target"])      # (B, L, V), (B, L)
        return nll / n.clamp(min=1), {"loss": (nll.detach(), n), "accuracy": (correct, n)}

    def summarize(self, totals: dict[str, tuple[float, float]]) -> dict[str, float]:
        out = super().summarize(totals)
        if "loss" in out:   # nats per predicted base
            out["bits_per_base"] = out["loss"] / math.log(2)
            out["perplexity"] = math.exp(min(out["loss"], 700.0))
        return out

    def encode_prompt(self, prompt: str) -> list[int]:
        try:
            return alphabet.encode(prompt, uppercase=bool(self.cfg.task.uppercase))
        except ValueError as e:
            raise DataError(f"prompt: {e}") from None

    def write_samples(self, samples: list[list[int]], out: str | None) -> list[str]:
        """Samples as FASTA records (60 bases a line): printed, or written to out/samples.fa."""
        text = "".join(f">sample_{i} length={len(s)}\n" + "".join(
            alphabet.decode(s[j:j + 60]) + "\n" for j in range(0, len(s), 60))
            for i, s in enumerate(samples))
        if out is None:
            print(text, end="")
            return []
        path = Path(out) / "samples.fa" if not str(out).endswith((".fa", ".fasta")) else Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        return [str(path)]


class PositionClassifier(nn.Module):
    """hidden (B, L, D) -> per-position class logits (B, L, C); the task pools them over the
    positions a sample keeps (mean of logits == logits of the mean hidden state)."""

    def __init__(self, d_model: int, num_classes: int):
        super().__init__()
        self.proj = nn.Linear(d_model, num_classes)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.proj(hidden)


class GenomicsSpeciesTask(Task):
    """Sequence classification: species from FASTA windows, or Genomic Benchmarks."""

    vocab_size = VOCAB_SIZE
    causal = False   # a label per sequence: causal and bidirectional models both fit

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        t = cfg.task
        self.format = str(t.data.get("format", "fasta"))
        if self.format not in FORMATS:
            raise ConfigError(f"task.data.format must be one of {', '.join(FORMATS)}, got "
                              f"{self.format!r}")
        check_options(n_mode=str(t.n_mode))
        self.pool = str(t.get("pool", "mean"))
        if self.pool not in POOLS:
            raise ConfigError(f"task.pool must be one of {', '.join(POOLS)}, got {self.pool!r}")
        self.rc_model = is_rc_model(cfg.get("model"))
        if self.rc_model and self.pool != "mean":
            raise ConfigError("the RC-equivariant model's output is strand-invariant only "
                              "under task.pool=mean")
        fr = tuple(float(x) for x in t.get("split_fractions", (0.8, 0.1, 0.1)))
        if len(fr) != 3 or min(fr) <= 0 or abs(sum(fr) - 1) > 1e-6:
            raise ConfigError(f"task.split_fractions must be three positive fractions (train, "
                              f"valid, test) summing to 1, got {list(fr)}")
        self.fractions = fr
        # Classes are known before any sequence is read: the head is built from them.
        if self.format == "fasta":
            self.classes = species_fastas(t.data.species_dir)[0]
        else:
            root = Path(t.data.benchmark_dir)
            if not (root / "train").is_dir():
                raise DataError(f"Genomic Benchmarks folder {root} has no train/ folder "
                                f"(expected {root}/train/<class>/*.txt)")
            self.classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())

    def build_datasets(self):
        t, tr = self.cfg.task, self.cfg.trainer
        d, seed, length = t.data, int(tr.seed), int(tr.seq_len)
        common = dict(seed=seed, n_mode=str(t.n_mode), length=length)
        if self.format == "genomic_benchmarks":
            classes, data = read_benchmark(d.benchmark_dir, uppercase=bool(t.uppercase),
                                           valid_fraction=float(d.get("valid_fraction", 0.1)),
                                           seed=seed)
            self.classes = classes
            return tuple(SequenceDataset(sequences=data[s][0], labels=data[s][1], split=s,
                                         rc_aug=bool(t.rc_aug) and s == "train", **common)
                         for s in SPLITS)
        names, fastas = open_species(d.species_dir, uppercase=bool(t.uppercase),
                                     index_cache=d.get("index_cache"),
                                     validate=bool(d.get("validate", True)))
        self.classes = names
        out = []
        for s in SPLITS:
            regions = [[Region(f, rec, *split_regions(n, self.fractions)[s])
                        for f in fs for rec, n in f.lengths.items()] for fs in fastas]
            size = VIRTUAL_SIZE if s == "train" else int(t.eval_size)
            out.append(WindowDataset(classes=names, regions=regions, split=s, size=size,
                                     rc_aug=bool(t.rc_aug) and s == "train", **common))
        return tuple(out)

    def build_head(self, d_model: int) -> nn.Module:
        cls = RCPositionClassifier if self.rc_model else PositionClassifier
        return cls(d_model, len(self.classes))

    def pooled_logits(self, head_out: Tensor, keep: Tensor) -> Tensor:
        """Per-position logits (B, L, C) -> (B, C): mean over kept positions, or the last."""
        keep = keep.to(head_out.dtype)
        if self.pool == "mean":
            return (head_out * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1)
        L = keep.shape[1]
        last = L - 1 - keep.flip(1).argmax(1)                              # (B,) last kept
        return head_out[torch.arange(len(last), device=last.device), last]

    def loss_and_metrics(self, head_out: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        logits = self.pooled_logits(head_out.float(), batch["keep"])       # (B, C)
        label = batch["label"]                                              # (B,)
        nll = F.cross_entropy(logits, label, reduction="sum")
        pred = logits.argmax(-1)
        n = torch.full((), float(len(label)), device=label.device)  # a fill: no host copy
        metrics = {"loss": (nll.detach(), n), "accuracy": ((pred == label).sum(), n)}
        C = len(self.classes)
        # (C*C,) counts of (true, predicted) pairs, without bincount's wait for the host
        # (its output size depends on the values), so that a CUDA graph can capture it
        cells = torch.arange(C * C, device=label.device)
        confusion = ((label * C + pred)[:, None] == cells).sum(0)
        for k in range(C * C):   # summed over batches and ranks like any metric; see summarize
            metrics[f"_cm_{k // C}_{k % C}"] = (confusion[k], n)
        return nll / n, metrics

    def summarize(self, totals: dict[str, tuple[float, float]]) -> dict[str, float]:
        cm = {k: v for k, v in totals.items() if k.startswith("_cm_")}
        out = super().summarize({k: v for k, v in totals.items() if k not in cm})
        if cm:
            C = len(self.classes)
            m = torch.zeros(C, C, dtype=torch.float64)
            for k, (s, _) in cm.items():
                i, j = map(int, k[4:].split("_"))
                m[i, j] = s
            out["mcc"] = matthews_corrcoef(m)
        return out


def matthews_corrcoef(confusion: Tensor) -> float:
    """Multiclass MCC (Gorodkin 2004; scikit-learn's) from a (true, predicted) count matrix:
    (c s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)), c correct, s total, t/p true/predicted counts
    per class. 0 when undefined (a single predicted or true class)."""
    m = confusion.double()
    t, p = m.sum(1), m.sum(0)
    c, s = m.trace(), m.sum()
    denom = math.sqrt(float((s * s - p @ p) * (s * s - t @ t)))
    return float((c * s - t @ p) / denom) if denom > 0 else 0.0
