"""The decode GEMV (`kernels/triton/gemv.py`) against the float32 reference `gemv_ref`: odd N
and K, 1/3/16 rows, each dtype, with bias, the residual epilogue and the RMSNorm prologue;
every multiply path and the split-K reduction forced; strided x; bad shapes; the custom op's
fake kernel. Runs on CUDA, or on CPU under TRITON_INTERPRET=1 (small shapes: ~20 s)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bytessm.kernels import gemv, reference
from bytessm.kernels.triton.gemv import GemvConfig, default_config, gemv_launch
from bytessm.nn.norm import RMSNorm

from kernel_helpers import assert_close

# the interpreter passes integer arguments as 1-element arrays and warns when a loop bound
# (K_TILES, K) turns one into an int; the compiled kernel has no such conversion
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
DTYPE_IDS = ["f32", "bf16", "f16"]
# what is fused: bias; residual (out_proj: float32 residual + y); norm (in_proj: RMSNorm of
# a float32 x); cast (a float32 x for low-precision weights, rounded to their dtype first)
VARIANTS = ["bare", "bias", "residual", "norm", "cast"]


def make(M, N, K, dtype, variant="bare", seed=0, full=False):
    """Random inputs (never zeros). `full`: bias, residual and norm all at once."""
    g = torch.Generator().manual_seed(seed + 1000 * M + 10 * N + K)
    r = lambda *s, dt=torch.float32: (torch.randn(*s, generator=g) + 0.1).to(DEVICE, dt)  # noqa: E731
    float_x = full or variant in ("norm", "cast")
    ins = dict(x=r(M, K, dt=torch.float32 if float_x else dtype),
               weight=r(N, K, dt=dtype) / K**0.5, bias=None, residual=None, norm_weight=None)
    if full or variant in ("bias", "residual"):
        ins["bias"] = r(N, dt=dtype)
    if full or variant == "residual":
        ins["residual"] = r(M, N)
    if full or variant == "norm":
        ins["norm_weight"] = 1.0 + 0.2 * r(K)
    return ins


def check(out, ins, dtype):
    ref = reference.gemv_ref(**ins)
    assert out.dtype == ref.dtype, (out.dtype, ref.dtype)
    assert_close("y", out.float(), ref.float(), dtype)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("N,K", [(7, 5), (97, 64), (300, 200)], ids=lambda v: str(v))
@pytest.mark.parametrize("M", [1, 3, 16], ids=lambda m: f"M{m}")
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_gemv_matches_reference(dtype, M, N, K, variant):
    """The public op with its default configuration (M=1: element-wise; M>1: tl.dot)."""
    ins = make(M, N, K, dtype, variant)
    out = gemv(ins["x"], ins["weight"], ins["bias"], residual=ins["residual"],
               norm_weight=ins["norm_weight"], backend="triton")
    check(out, ins, dtype)


# every multiply path, with and without the split-K reduction, whatever M
PATHS = {
    "row": GemvConfig(block_m=1, block_n=32, block_k=64),
    "rows-fma": GemvConfig(block_m=2, block_n=16, block_k=32),
    "dot": GemvConfig(block_m=16, block_n=16, block_k=32, dot=True),
    "row-split3": GemvConfig(block_m=1, block_n=32, block_k=32, split_k=3),
    "rows-fma-split2": GemvConfig(block_m=4, block_n=16, block_k=32, split_k=2),
    "dot-split4": GemvConfig(block_m=16, block_n=32, block_k=16, split_k=4, dot=True),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("M", [1, 3], ids=lambda m: f"M{m}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_forced_paths_match_reference(dtype, M, path):
    """Bias, residual and norm together (the reduction kernel runs the epilogue when split)."""
    ins = make(M, 97, 200, dtype, full=True)
    check(gemv_launch(**ins, config=PATHS[path]), ins, dtype)


def test_strided_rows_of_x():
    """dt_proj's input is a view of x_proj's output: rows of x are not contiguous."""
    g = torch.Generator().manual_seed(7)
    wide = torch.randn(3, 96, generator=g).to(DEVICE, torch.bfloat16)
    x = wide[:, :64]                                        # (3, 64), row stride 96
    w = torch.randn(300, 64, generator=g).to(DEVICE, torch.bfloat16)
    out = gemv(x, w, backend="triton")
    assert_close("y", out.float(), reference.gemv_ref(x.contiguous(), w).float(), torch.bfloat16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_reference_is_the_layers_composition(dtype):
    """gemv_ref is `residual + Linear(RMSNorm(x))` as the decode step computes it with the
    layers: RMSNorm in float32, the Linear's input cast to its weight dtype (the hook
    `cast_for_inference` installs), the output added to the float32 residual."""
    g = torch.Generator().manual_seed(3)
    norm = RMSNorm(64, eps=1e-5)
    linear = nn.Linear(64, 48, bias=True)
    with torch.no_grad():
        norm.weight.copy_(1.0 + 0.2 * torch.randn(64, generator=g))
    linear = linear.to(dtype)
    x, residual = torch.randn(3, 64, generator=g), torch.randn(3, 48, generator=g)
    with torch.no_grad():
        layers = residual + linear(norm(x).to(dtype))
    ref = reference.gemv_ref(x, linear.weight, linear.bias, residual, norm.weight, norm.eps)
    assert_close("composition", ref, layers, dtype)


def test_default_configs_at_the_353M_decode_shapes():
    """The choices `default_config` documents, on 132 SMs: batch 1 streams W in one
    iteration per program with at least one program per SM (no split); 16 rows use the
    tensor cores and split K where the N blocks alone leave SMs idle."""
    for (N, K), (block_n, block_k) in {(4096, 1024): (4, 1024), (1024, 2048): (2, 2048),
                                       (96, 2048): (1, 2048), (2048, 64): (8, 64)}.items():
        c = default_config(1, N, K, 2, sms=132)
        assert (c.block_n, c.block_k, c.split_k, c.dot) == (block_n, block_k, 1, False), c
        assert N // c.block_n >= 96
    c = default_config(16, 1024, 2048, 2, sms=132)
    assert c.dot and c.block_m == 16 and (1024 // c.block_n) * c.split_k >= 132, c
    c = default_config(16, 4096, 1024, 2, sms=132)
    assert c.dot and c.split_k == 1 and c.block_n * c.block_k * 2 <= 8192, c


@pytest.mark.parametrize("kwargs,message", [
    (dict(weight=(6, 5)), r"`x` must have shape \(M, K\) with K = weight.shape\[1\] = 5"),
    (dict(weight=(6,)), r"`weight` must have shape \(N, K\)"),
    (dict(bias=(5,)), r"`bias` must have shape \(6,\), got \(5,\)"),
    (dict(residual=(6, 3)), r"`residual` must have shape \(3, 6\), got \(6, 3\)"),
    (dict(norm_weight=(6,)), r"`norm_weight` must have shape \(4,\), got \(6,\)"),
], ids=["x", "weight", "bias", "residual", "norm_weight"])
@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_bad_shapes_name_the_argument(kwargs, message, backend):
    shapes = dict(x=(3, 4), weight=(6, 4), bias=None, residual=None, norm_weight=None)
    shapes.update(kwargs)
    args = {k: None if s is None else torch.randn(*s, device=DEVICE) for k, s in shapes.items()}
    with pytest.raises(ValueError, match=message):
        gemv(args["x"], args["weight"], args["bias"], residual=args["residual"],
             norm_weight=args["norm_weight"], backend=backend)


def test_residual_must_be_float32():
    x, w = torch.randn(2, 4, device=DEVICE), torch.randn(3, 4, device=DEVICE)
    with pytest.raises(TypeError, match="`residual`.*must be float32, got torch.bfloat16"):
        gemv(x, w, residual=torch.randn(2, 3, device=DEVICE).bfloat16(), backend="triton")


def test_custom_op_registration_is_consistent():
    ins = make(3, 20, 16, torch.bfloat16, full=True)
    args = (ins["x"], ins["weight"], ins["bias"], ins["residual"], ins["norm_weight"], 1e-5)
    torch.library.opcheck(torch.ops.bytessm.gemv.default, args,
                          test_utils=("test_schema", "test_faketensor"))
