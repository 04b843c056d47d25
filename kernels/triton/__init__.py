"""Triton kernels of the selective scan (forward, backward, decode step, conv step).

    selective_scan_triton           the scan, differentiable, `torch.compile`-able custom ops
    selective_state_update_triton   one decoding step, state updated in place
    causal_conv1d_update_triton     one step of the depthwise causal conv, window in place
    causal_conv1d_triton            the depthwise causal conv of a sequence, differentiable

Module map: `common.py` (scan monoids, tile loads), `scan_fwd.py` / `scan_bwd.py` /
`carry.py` (kernels), `scan.py` (launchers), `autograd.py` (custom ops + autograd),
`decode.py` (decoding kernels), `conv.py` (the sequence conv), `configs.py` (launch configurations per shape class).
Under TRITON_INTERPRET=1 they run on CPU tensors (`_interpreter.py` speeds that up).
"""
from ._interpreter import install as _install_interpreter_scan

_install_interpreter_scan()

from .autograd import selective_scan_triton  # noqa: E402
from .conv import causal_conv1d_triton  # noqa: E402
from .decode import causal_conv1d_update_triton, selective_state_update_triton  # noqa: E402

__all__ = ["selective_scan_triton", "selective_state_update_triton",
           "causal_conv1d_update_triton", "causal_conv1d_triton"]
