"""Synthetic long-range tasks: selective copying, induction heads, associative recall.

The default `bytessm train` job. Generated on the fly (no data), seeded, reproducible;
accuracy is measured on the answer positions only.
"""
from __future__ import annotations

from torch import Tensor, nn

from bytessm.nn import LMHead
from bytessm.task import Metrics, Task, next_symbol_nll

from .data import KINDS, SyntheticDataset

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
        nll, n, correct = next_symbol_nll(head_out, batch["target"])      # answers only
        return nll / n.clamp(min=1), {"loss": (nll.detach(), n), "accuracy": (correct, n)}
