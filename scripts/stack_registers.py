#!/usr/bin/env python3
"""Registers and spills of the fused Mamba-stack decode kernel (`kernels/triton/stack.py`)
for sm_90, compiled on a machine without a GPU (the method of scripts/scan_registers.py).

    python scripts/stack_registers.py [--d-model 1024] [--expand 2] [--sms 132] [--batch-rows 1]

bf16 weights, conv bias, no in/out_proj bias: the MambaByte-353M decode step's kernel."""
from __future__ import annotations

import argparse

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from bytessm.kernels.triton.stack import mamba_stack_kernel
from scan_registers import ptxas_usage


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--d-model", type=int, default=1024)
    p.add_argument("--expand", type=int, default=2)
    p.add_argument("--d-state", type=int, default=16)
    p.add_argument("--sms", type=int, default=132)
    p.add_argument("--warps", type=int, default=8)
    args = p.parse_args()
    dm, e = args.d_model, args.expand * args.d_model
    rank = -(-dm // 16)
    nx = rank + 2 * args.d_state
    cb = triton.next_power_of_2(triton.cdiv(e, args.sms))
    nblk = triton.cdiv(e, cb)
    consts = dict(HAS_IN_BIAS=False, HAS_OUT_BIAS=False, HAS_CONV_BIAS=True, CONV_WIDTH=4,
                  W_PAD=4, CB=cb, DS=triton.next_power_of_2(triton.cdiv(dm, nblk)),
                  DM_PAD=triton.next_power_of_2(dm), NX_PAD=triton.next_power_of_2(nx),
                  R_PAD=triton.next_power_of_2(rank), N_PAD=triton.next_power_of_2(args.d_state),
                  ZB=64, ONE_BLOCK=True, TIMING=False)
    fn = mamba_stack_kernel
    types = dict(tab_ptr="*i64", times_ptr="*i64", xz_ptr="*bf16", wt_ptr="*bf16", sem_ptr="*u32", eps="fp32")
    sig = {n: "constexpr" if n in consts else types.get(n, "*fp32" if n.endswith("_ptr") else "i32")
           for n in fn.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names)
             if n not in consts and n != "eps"}
    src = ASTSource(fn=fn, signature=sig, attrs=attrs,
                    constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()})
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": args.warps})
    print(f"d_model {dm}, d_inner {e}: {nblk} programs of {cb} channels, {args.warps} warps: "
          f"{ptxas_usage(k)}, {k.metadata.shared} bytes of shared memory")


if __name__ == "__main__":
    main()
