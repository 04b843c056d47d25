"""Training: the loop (`loop.py`) over small components (data, optim, checkpoint, logging,
evaluate, distributed); one step (`step.py`), eager or replayed from a CUDA graph
(`graphs.py`)."""
from .loop import TrainingError, train

__all__ = ["train", "TrainingError"]
