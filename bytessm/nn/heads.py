"""Task heads shared by the modalities: next-symbol LM head and a pooled classifier."""
from __future__ import annotations

from torch import Tensor, nn

from .decode import gemv_backend, step_linear


class LMHead(nn.Module):
    """hidden (B, L, D) -> logits (B, L, vocab). `weight` can be tied to the byte embedding."""

    def __init__(self, d_model: int, vocab_size: int):
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size, bias=False)

    @property
    def weight(self) -> nn.Parameter:
        return self.proj.weight

    def forward(self, hidden: Tensor) -> Tensor:
        return self.proj(hidden)

    def step(self, hidden: Tensor) -> Tensor:
        """hidden (B, D) at one decode position -> logits (B, vocab), on the GEMV kernel when
        the decode step uses it (`bytessm.nn.decode`)."""
        return step_linear(self.proj, hidden, gemv_backend(hidden))


def head_step(head: nn.Module, hidden: Tensor) -> Tensor:
    """The head's output at one decode position: hidden (B, D) -> (B, ...). A head with a
    `step` (LMHead) gives it; others run on a length-1 sequence."""
    step = getattr(head, "step", None)
    return step(hidden) if step is not None else head(hidden[:, None])[:, 0]


class ClassifierHead(nn.Module):
    """hidden (B, L, D) -> logits (B, classes), pooling by `pool`:

    "mean" over positions, "last" position (causal models), or "index" (a fixed position,
    e.g. a class token in the middle of the sequence).
    """

    def __init__(self, d_model: int, num_classes: int, *, pool: str = "mean",
                 index: int | None = None):
        super().__init__()
        if pool not in ("mean", "last", "index"):
            raise ValueError(f"pool must be 'mean', 'last' or 'index', got {pool!r}")
        if pool == "index" and index is None:
            raise ValueError("pool='index' needs `index`")
        self.pool, self.index = pool, index
        self.proj = nn.Linear(d_model, num_classes)

    def forward(self, hidden: Tensor) -> Tensor:
        if self.pool == "mean":
            feat = hidden.mean(1)
        elif self.pool == "last":
            feat = hidden[:, -1]
        else:
            feat = hidden[:, self.index]
        return self.proj(feat)
