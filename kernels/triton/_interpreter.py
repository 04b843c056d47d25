"""Make `tl.associative_scan` with a user combine function usable under TRITON_INTERPRET=1.

Triton's interpreter runs a custom-combine scan one element at a time in Python (about
10 us per element), which makes a (4, 16, 64) tile take a second. The combine functions are
elementwise, so the scan can be run as log2(n) rounds of combines over whole numpy slices
(Hillis-Steele; the first argument always the earlier segment, as the compiled scan's
tree does it), ~1000x faster. Installed only when the interpreter is on; the compiled path is untouched.
"""
from __future__ import annotations

import os

import numpy as np


def _sliced_scan(self, input):
    """Hillis-Steele: log2(n) rounds, each one combine over whole slices (earlier first)."""
    outs = [np.moveaxis(arg.handle.data, self.axis, 0).copy() for arg in input]
    n, step = outs[0].shape[0], 1
    while step < n:
        # full-length operands (block shapes must stay powers of two); rows < step unused
        first = tuple(self.to_tensor(np.roll(o, step, axis=0), arg.dtype)
                      for o, arg in zip(outs, input))
        second = tuple(self.to_tensor(o, arg.dtype) for o, arg in zip(outs, input))
        ret = self.combine_fn.fn(*first, *second)
        ret = ret if isinstance(ret, tuple) else (ret,)
        for o, r in zip(outs, ret):
            o[step:] = np.asarray(r.handle.data).reshape(o.shape)[step:]
        step *= 2
    return [self.to_tensor(np.moveaxis(o, 0, self.axis), arg.dtype) for o, arg in zip(outs, input)]


def install() -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        return
    from triton.runtime import interpreter

    if getattr(interpreter.ScanOps, "_bytessm_sliced", False):
        return
    interpreter.ScanOps.generic_scan = _sliced_scan
    interpreter.ScanOps._bytessm_sliced = True
