"""Where numbers go: metrics.jsonl (one JSON object per logged step and split), TensorBoard,
and the progress bar. Only rank 0 writes."""
from __future__ import annotations

import json
import math
from pathlib import Path

from tqdm.auto import tqdm


class MetricsWriter:
    def __init__(self, out_dir: Path, *, enabled: bool, tensorboard: bool = True):
        self.enabled = enabled
        self.path = out_dir / "metrics.jsonl"
        self.tb = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(out_dir / "tensorboard"))

    def log(self, step: int, split: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, "split": split, **{k: _clean(v) for k, v in values.items()}}
        with open(self.path, "a") as f:  # append + flush: a crash loses at most this line
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{split}/{k}", v, step)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def progress(total: int, initial: int, enabled: bool, desc: str = "train", unit: str = "step",
             leave: bool = True):
    """A tqdm bar on stderr (stdout keeps the final JSON line); `leave=False` clears it when
    done (an evaluation's bar under the training bar)."""
    return tqdm(total=total, initial=initial, disable=not enabled, dynamic_ncols=True,
                desc=desc, unit=unit, leave=leave)
