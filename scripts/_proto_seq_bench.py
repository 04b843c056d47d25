"""Prototype: the per-thread sequential forward against the current forward on the GPU."""
import itertools, json, sys, time
import torch, triton
sys.path.insert(0, "scripts")
from _seqwrap import fwd_seq
from bytessm.kernels.triton.scan import scan_forward
torch.manual_seed(0)
D, N = 1536, 16
def inputs(b, L):
    g = torch.Generator(device="cuda"); g.manual_seed(0)
    r = lambda *s, scale=1.0, shift=0.0: (torch.randn(*s, device="cuda", generator=g) * scale + shift).to(torch.bfloat16)
    u = r(b, D, L); delta = r(b, D, L, scale=0.5, shift=-1.0); z = r(b, D, L)
    A = -(torch.rand(D, N, device="cuda", generator=g) * 2.9 + 0.1)
    B = r(b, N, L); C = r(b, N, L)
    Dv = torch.randn(D, device="cuda"); bias = torch.randn(D, device="cuda") * 0.1
    return u, delta, A, B, C, Dv, z, bias
def rel(a, b): return ((a.float() - b.float()).norm() / b.float().norm()).item()
rows = []
for b, L in [(8, 2048), (2, 16384), (1, 131072), (1, 1 << 20)]:
    u, delta, A, B, C, Dv, z, bias = inputs(b, L)
    old = lambda: scan_forward(u, delta, A, B, C, Dv, z, bias, None, None, True, False)
    ref_out, ref_last, ref_states = old()
    t_old = triton.testing.do_bench(old, warmup=5, rep=50)
    res = {"shape": f"{b}x{L}", "old_ms": round(t_old, 3)}
    for Qw, warps, progs in itertools.product((2, 4), (1, 2, 4), (2048, 4096)):
        bd = 32 // Qw * warps
        rows_ = b * triton.cdiv(D, bd)
        nc = triton.cdiv(L, 512)
        nseg = max(1, min(triton.cdiv(progs * 1, rows_ * warps), nc))
        seg = triton.cdiv(nc, nseg) * 512
        f = lambda: fwd_seq(u, delta, A, B, C, Dv, z, bias, None, True, chunk=512, seg=seg, warps=warps, Qw=Qw)
        try:
            out, last, states = f()
            err = (rel(out, ref_out), rel(last, ref_last), rel(states, ref_states))
            t = triton.testing.do_bench(f, warmup=5, rep=50)
        except Exception as e:
            print("fail", Qw, warps, progs, repr(e)[:300], flush=True); continue
        key = f"Q{Qw}_w{warps}_p{progs}"
        res[key] = round(t, 3); res[key + "_nseg"] = triton.cdiv(L, seg)
        res[key + "_err"] = [f"{e:.1e}" for e in err]
        print(b, L, key, f"{t:.3f} ms (old {t_old:.3f})", "nseg", triton.cdiv(L, seg), "err", [f"{e:.1e}" for e in err], flush=True)
    rows.append(res)
    del u, delta, z, B, C
    torch.cuda.empty_cache()
import os
json.dump(rows, open(os.path.join(os.environ.get("OUT", "/tmp"), "proto_seq.json"), "w"), indent=1)
