import os, sys, json, torch
sys.path.insert(0, os.getcwd())
from bytessm.kernels.triton import scan
bt, L, cfg = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
os.environ["BYTESSM_SCAN_CONFIG"] = cfg
g = torch.Generator(device="cuda").manual_seed(0)
r = lambda *s, sc=1.0, sh=0.0: (torch.randn(*s, generator=g, device="cuda") * sc + sh).to(torch.bfloat16)
dim, N = 1536, 16
u, delta, z, B, C = r(bt, dim, L), r(bt, dim, L, sc=0.5, sh=-1.0), r(bt, dim, L), r(bt, N, L), r(bt, N, L)
A = -(torch.rand(dim, N, device="cuda") * 2.9 + 0.1); D = torch.randn(dim, device="cuda"); bias = torch.randn(dim, device="cuda") * 0.3
for _ in range(2):
    scan.scan_forward(u, delta, A, B, C, D, z, bias, None, None, True, False)
torch.cuda.synchronize()
