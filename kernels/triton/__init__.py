"""Triton kernels of the selective scan (forward, backward, decode step, conv step).

    selective_scan_triton           the scan, differentiable: custom ops under `torch.compile`,
                                    a plain autograd.Function in eager mode (`autograd.py`)
    selective_state_update_triton   one decoding step, state updated in place
    causal_conv1d_update_triton     one step of the depthwise causal conv, window in place
    causal_conv1d_triton            the depthwise causal conv of a sequence, differentiable

Module map: `common.py` (scan monoids, tile loads), `scan_fwd.py` / `scan_bwd.py` /
`carry.py` (kernels), `scan_fwd_gluon.py` / `scan_bwd_gluon.py` (the forward's full pass
and the backward in Gluon, on CUDA where they apply), `pad.py` (rows copied into
zero-padded ones), `scan.py` (launchers),
`autograd.py` (custom ops + autograd), `decode.py` (decoding kernels), `pdl.py`
(programmatic dependent launch of the decode step's kernels), `conv.py` (the sequence
conv), `gemv.py` (the decode step's matrix-vector products, used through `ops.gemv`),
`configs.py` (launch configurations per shape class).
Under TRITON_INTERPRET=1 they run on CPU tensors (`_interpreter.py` speeds that up and makes
its bf16 casts and dots round as the GPU's do).
"""
from ._interpreter import install as _install_interpreter_scan

_install_interpreter_scan()

from .autograd import selective_scan_triton  # noqa: E402
from .conv import causal_conv1d_triton  # noqa: E402
from .decode import causal_conv1d_update_triton, selective_state_update_triton  # noqa: E402

__all__ = ["selective_scan_triton", "selective_state_update_triton",
           "causal_conv1d_update_triton", "causal_conv1d_triton"]
