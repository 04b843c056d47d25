"""Make the interpreter (TRITON_INTERPRET=1) usable and faithful for the bytessm kernels.

Two bfloat16 fixes, so that interpreter tests see the compiled kernels' numbers: the
interpreter stores bf16 as raw uint16 bits and (a) rounds float32 -> bf16 casts by
truncation where the compiled cast rounds to nearest even (`cvt.rn.bf16.f32`), which
moved the decode GEMV's outputs by up to an ulp from PyTorch's; (b) feeds those raw bits to
np.matmul in `tl.dot`, which returns garbage for bf16 operands. Both are patched below.

And the scan: `tl.associative_scan` with a user combine function.

Triton's interpreter runs a custom-combine scan one element at a time in Python (about
10 us per element), which makes a (4, 16, 64) tile take a second. The combine functions are
elementwise, so the scan can be run as log2(n) rounds of combines over whole numpy slices
(Hillis-Steele; the first argument always the earlier segment, as the compiled scan's
tree does it), ~1000x faster. Installed only when the interpreter is on; the compiled path
is untouched.
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


def _bf16_bits(f32: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, rounded to nearest even (NaN stays a quiet NaN)."""
    bits = np.ascontiguousarray(f32, dtype=np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(f32), np.uint16(0x7FC0), rounded)


def _bf16_values(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _install_bf16(interpreter) -> None:
    import triton.language as tl

    builder = interpreter.InterpreterBuilder
    if getattr(builder, "_bytessm_bf16", False):
        return
    cast_impl, create_dot = builder.cast_impl, builder.create_dot

    def rounded_cast(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            return interpreter.TensorHandle(_bf16_bits(src.data), tl.bfloat16)
        return cast_impl(self, src, dst_type)

    def bf16_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if a.dtype.scalar == tl.bfloat16:
            a = interpreter.TensorHandle(_bf16_values(a.data), tl.float32)
        if b.dtype.scalar == tl.bfloat16:
            b = interpreter.TensorHandle(_bf16_values(b.data), tl.float32)
        return create_dot(self, a, b, d, input_precision, max_num_imprecise_acc)

    builder.cast_impl, builder.create_dot = rounded_cast, bf16_dot
    builder._bytessm_bf16 = True


def install() -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        return
    from triton.runtime import interpreter

    _install_bf16(interpreter)

    if getattr(interpreter.ScanOps, "_bytessm_sliced", False):
        return
    interpreter.ScanOps.generic_scan = _sliced_scan
    interpreter.ScanOps._bytessm_sliced = True
