"""Rows copied into zero-padded rows: what `scan._pad` does on CUDA.

The scan kernels read rows whose length is a multiple of 16 (`scan.row_length`); other
lengths are copied into such rows first. Written as an empty tensor, its tail zeroed and its
head copied into (`Tensor.copy_` between rows of different lengths), the copy of a (1, 1536,
131071) bf16 tensor took 0.46 ms on an H200, where a clone of it takes 0.20. Here a program
copies BLOCK positions of one row, loads as the source's alignment allows and stores aligned
vectors, zeros included, in one pass: 0.24 ms (twenty-third session).
"""
import triton
import triton.language as tl


@triton.jit
def pad_rows_kernel(src_ptr, dst_ptr, NB, L, LP, s_a, s_b, s_l, BLOCK: tl.constexpr):
    """dst (rows, LP), contiguous <- row (a, b) of src (A, NB, L), strides (s_a, s_b, s_l),
    zero from position L on. Grid: (rows * cdiv(LP, BLOCK),), one axis (the second and
    third take at most 65535)."""
    per_row = tl.cdiv(LP, BLOCK)
    r = tl.program_id(0) // per_row
    a = (r // NB).to(tl.int64)
    b = (r % NB).to(tl.int64)
    t = (tl.program_id(0) % per_row) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(src_ptr + a * s_a + b * s_b + t * s_l, mask=t < L, other=0)
    tl.store(dst_ptr + r.to(tl.int64) * LP + t, x, mask=t < LP)
