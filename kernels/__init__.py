"""bytessm.kernels: the selective scan shared by every modality.

`selective_scan` (forward/backward, parallel over the sequence), `causal_conv1d` (the
block's depthwise conv over a sequence), `selective_state_update` and `causal_conv1d_update`
(one decoding step), `gemv` (the decode step's matrix-vector products). The backend is
chosen in `ops.py` only.
"""
from .ops import (BACKENDS, causal_conv1d, causal_conv1d_update, gemv, selective_scan,
                  selective_state_update)

__all__ = ["BACKENDS", "selective_scan", "selective_state_update", "causal_conv1d",
           "causal_conv1d_update", "gemv"]
