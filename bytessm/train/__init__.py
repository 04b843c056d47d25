"""Training: the loop (`loop.py`) over small components (data, optim, checkpoint, logging,
evaluate, distributed)."""
from .loop import TrainingError, train

__all__ = ["train", "TrainingError"]
