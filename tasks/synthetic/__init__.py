"""Synthetic long-range tasks: selective copying, induction heads, associative recall.

The default `bytessm train` job. Generated on the fly (no data), seeded, reproducible;
accuracy is measured on the answer positions only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bytessm.nn import LMHead
from bytessm.task import Metrics, Task

from .data import IGNORE, KINDS, SyntheticDataset

__all__ = ["SyntheticTask", "SyntheticDataset", "KINDS"]

TRAIN_SIZE = 10**9  # virtual: sample i is generated from i, nothing is stored


class SyntheticTask(Task):
    vocab_size = 256

    def build_datasets(self):
        t, tr = self.cfg.task, self.cfg.trainer
        kw = dict(kind=t.kind, vocab=t.vocab, n_memorize=t.get("n_memorize", 16),
                  n_pairs=t.get("n_pairs", 8), seed=tr.seed)
        eval_len = t.get("eval_seq_len") or tr.seq_len
        return (SyntheticDataset(length=tr.seq_len, size=TRAIN_SIZE, split="train", **kw),
                SyntheticDataset(length=eval_len, size=t.eval_size, split="valid", **kw),
                SyntheticDataset(length=eval_len, size=t.eval_size, split="test", **kw))

    def build_head(self, d_model: int) -> nn.Module:
        return LMHead(d_model, self.vocab_size)

    def loss_and_metrics(self, head_out: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        logits, target = head_out, batch["target"]                       # (B, L, V), (B, L)
        mask = target != IGNORE
        n = mask.sum()
        nll = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(),
                              ignore_index=IGNORE, reduction="sum")
        correct = ((logits.argmax(-1) == target) & mask).sum()
        loss = nll / n.clamp(min=1)
        return loss, {"loss": (nll.detach(), n), "accuracy": (correct, n)}
