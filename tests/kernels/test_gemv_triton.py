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


# -- the conv epilogue (Mamba's in_proj with the conv step and SiLU of its x half) ---------

def make_conv(M, N, C, width, seed=0, bias=True):
    """A conv over the first C of N outputs: window (M, C, width-1) float32, weights, bias."""
    g = torch.Generator().manual_seed(seed + 7 * C + width)
    r = lambda *s: (torch.randn(*s, generator=g) + 0.1).to(DEVICE)  # noqa: E731
    return dict(conv_state=r(M, C, width - 1), conv_weight=r(C, width) / width,
                conv_bias=r(C) if bias else None)


def conv_reference(ins, conv):
    """The unfused composition: gemv_ref, then the conv step kernel's reference on y[:, :C]."""
    y = reference.gemv_ref(**ins)
    state = conv["conv_state"].clone()
    C = conv["conv_weight"].shape[0]
    xc = reference.causal_conv1d_update_ref(y[:, :C], state, conv["conv_weight"],
                                            conv["conv_bias"], "silu")
    return torch.cat([xc, y[:, C:]], 1), state


CONV_PATHS = {"default": None, "dot": PATHS["dot"], "row-split3": PATHS["row-split3"],
              "dot-split4": PATHS["dot-split4"]}


@pytest.mark.parametrize("path", CONV_PATHS)
@pytest.mark.parametrize("M", [1, 3], ids=lambda m: f"M{m}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_conv_epilogue_matches_product_then_conv_step(dtype, M, path):
    """Output (conv'd rows and plain rows) and the updated window against the product
    followed by the conv step's reference; C = 51 of N = 97 rows (not a block multiple),
    RMSNorm prologue and bias on, width 4; every multiply path and the split reduction."""
    ins = make(M, 97, 200, dtype, "norm")
    ins["bias"] = make(M, 97, 200, dtype, "bias")["bias"]
    conv = make_conv(M, 97, 51, 4)
    want, want_state = conv_reference(ins, conv)
    out = gemv_launch(**ins, **conv, config=CONV_PATHS[path])
    assert out.dtype == want.dtype
    assert_close("y", out.float(), want.float(), dtype)
    assert_close("conv_state", conv["conv_state"], want_state, torch.float32)


@pytest.mark.parametrize("width,bias", [(2, False), (3, True), (4, False)])
def test_conv_epilogue_widths_through_the_public_op(width, bias):
    """Window widths 2 (no held column shifts), 3 (odd, padded), 4 without bias; all N rows
    convolved; the reference backend and the kernel agree, window included."""
    ins = make(2, 64, 48, torch.bfloat16, "norm")
    conv_k, conv_r = make_conv(2, 64, 64, width, bias=bias), make_conv(2, 64, 64, width, bias=bias)
    out = gemv(**{k: v for k, v in ins.items() if k != "residual"}, **conv_k, backend="triton")
    ref = gemv(**{k: v for k, v in ins.items() if k != "residual"}, **conv_r,
               backend="reference")
    assert_close("y", out.float(), ref.float(), torch.bfloat16)
    assert_close("conv_state", conv_k["conv_state"], conv_r["conv_state"], torch.float32)
    # a second step reads the window the first wrote
    out2 = gemv(**{k: v for k, v in ins.items() if k != "residual"}, **conv_k, backend="triton")
    ref2 = gemv(**{k: v for k, v in ins.items() if k != "residual"}, **conv_r,
                backend="reference")
    assert_close("y2", out2.float(), ref2.float(), torch.bfloat16)
    assert not torch.equal(out2, out)


@pytest.mark.parametrize("kwargs,message", [
    (dict(conv_state=(3, 5, 3)), r"`conv_state` must have shape \(3, 4, 3\), got \(3, 5, 3\)"),
    (dict(conv_weight=(7, 4)), r"C <= N = 6"),
    (dict(conv_bias=(5,)), r"`conv_bias` must have shape \(4,\), got \(5,\)"),
    (dict(residual=(3, 6)), r"`residual` add are exclusive"),
], ids=["state", "weight", "bias", "residual"])
@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_conv_bad_shapes_name_the_argument(kwargs, message, backend):
    shapes = dict(conv_state=(3, 4, 3), conv_weight=(4, 4), conv_bias=(4,), residual=None)
    shapes.update(kwargs)
    if "conv_weight" in kwargs:
        shapes["conv_state"] = (3, 7, 3)
    args = {k: None if s is None else torch.randn(*s, device=DEVICE) for k, s in shapes.items()}
    with pytest.raises(ValueError, match=message):
        gemv(torch.randn(3, 4, device=DEVICE), torch.randn(6, 4, device=DEVICE), **args,
             backend=backend)


def test_conv_state_must_be_updatable_in_place():
    state = torch.randn(2, 3, 4, device=DEVICE).transpose(1, 2)[:, :, :3]      # (2, 4, 3) strided
    with pytest.raises(ValueError, match="unit stride along its last dimension"):
        gemv(torch.randn(2, 4, device=DEVICE), torch.randn(6, 4, device=DEVICE),
             conv_state=state, conv_weight=torch.randn(4, 4, device=DEVICE), backend="triton")


def test_gemv_conv_op_registration_is_consistent():
    ins = make(3, 20, 16, torch.bfloat16, "norm")
    conv = make_conv(3, 20, 12, 4)
    args = (ins["x"], ins["weight"], None, ins["norm_weight"], 1e-5, conv["conv_state"],
            conv["conv_weight"], conv["conv_bias"])
    torch.library.opcheck(torch.ops.bytessm.gemv_conv.default, args,
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("M", [1, 5], ids=lambda m: f"M{m}")
def test_conv_epilogue_equals_the_two_kernels_bitwise(M):
    """bf16, the 353M model's rounding points: the fused kernel gives exactly what the GEMV
    followed by the conv-step kernel gives (outputs and window), so fusing changes no
    decoded symbol; a tolerance would miss a dropped rounding before the SiLU."""
    from bytessm.kernels import causal_conv1d_update
    ins = make(M, 96, 64, torch.bfloat16, "norm")
    ins["bias"] = None
    fused, split = make_conv(M, 96, 48, 4), make_conv(M, 96, 48, 4)
    out = gemv(ins["x"], ins["weight"], norm_weight=ins["norm_weight"], **fused,
               backend="triton")
    y = gemv(ins["x"], ins["weight"], norm_weight=ins["norm_weight"], backend="triton")
    xc = causal_conv1d_update(y[:, :48], split["conv_state"], split["conv_weight"],
                              split["conv_bias"], activation="silu", backend="triton")
    assert torch.equal(out[:, :48], xc) and torch.equal(out[:, 48:], y[:, 48:])
    assert torch.equal(fused["conv_state"], split["conv_state"])
