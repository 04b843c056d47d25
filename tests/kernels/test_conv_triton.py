"""The Triton depthwise causal conv over a sequence against the PyTorch reference: output and
the gradients of x, weight and bias, both directions, odd lengths and dims, strided x.
Runs on CUDA, or on CPU under TRITON_INTERPRET=1."""
from __future__ import annotations

import pytest
import torch

from bytessm.kernels import causal_conv1d

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("length", [1, 7, 300])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("width,bias", [(4, True), (2, False)])
def test_conv_matches_reference(length, reverse, width, bias):
    g = torch.Generator().manual_seed(length * 10 + width)
    batch, dim = 2, 19                          # dim not a multiple of the channel block
    full = torch.randn(batch, 2 * dim, length, generator=g)
    x = full[:, :dim].to(DEVICE)                # strided along dim, as in_proj's halves are
    w = torch.randn(dim, width, generator=g).to(DEVICE)
    b = torch.randn(dim, generator=g).to(DEVICE) if bias else None
    dy = torch.randn(batch, dim, length, generator=g).to(DEVICE)

    def run(backend):
        leaves = [t.detach().clone().requires_grad_() if t is not None else None
                  for t in (x, w, b)]
        y = causal_conv1d(*leaves, reverse=reverse, backend=backend)
        grads = torch.autograd.grad(y, [t for t in leaves if t is not None], dy)
        return y.detach(), grads

    y_ref, g_ref = run("reference")
    y_tri, g_tri = run("triton")
    torch.testing.assert_close(y_tri, y_ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(g_tri, g_ref):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_conv_reference_is_the_causal_definition():
    """y[t] = bias + sum_k w[k] x[t - (W-1) + k] with zeros before the start; reversed: the
    causal conv of the time-reversed sequence, reversed back."""
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(1, 3, 9, generator=g), torch.randn(3, 4, generator=g), torch.randn(3, generator=g)
    xp = torch.nn.functional.pad(x, (3, 0))
    want = b[None, :, None] + sum(w[None, :, k, None] * xp[..., k:k + 9] for k in range(4))
    torch.testing.assert_close(causal_conv1d(x, w, b, backend="reference"), want)
    rev = causal_conv1d(x.flip(-1), w, b, backend="reference").flip(-1)
    torch.testing.assert_close(causal_conv1d(x, w, b, reverse=True, backend="reference"), rev)


def test_conv_rejects_bad_shapes():
    with pytest.raises(ValueError, match="weight .dim, width."):
        causal_conv1d(torch.zeros(1, 4, 5, device=DEVICE), torch.zeros(3, 4, device=DEVICE),
                      backend="triton")


@pytest.mark.parametrize("bias", [True, False])
def test_conv_compiles_fullgraph_as_the_custom_op(bias):
    """Under torch.compile(fullgraph=True) the conv is the `bytessm::causal_conv1d_fwd` custom
    op (with its registered backward); in eager mode the same launchers run through a plain
    autograd.Function: both give the same output and gradients, and the op passes
    torch.library's schema / fake-tensor / AOT checks."""
    from bytessm.kernels.triton import conv  # noqa: F401  (registers the ops)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 21, generator=g).to(DEVICE)
    w = torch.randn(6, 4, generator=g).to(DEVICE)
    b = torch.randn(6, generator=g).to(DEVICE) if bias else None
    leaves = [t.requires_grad_() for t in (x, w, b) if t is not None]

    def f(x, w, b):
        return (causal_conv1d(x, w, b, backend="triton") ** 2).sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    loss = compiled(x, w, b)
    eager = f(x, w, b)
    torch.testing.assert_close(loss, eager, rtol=1e-6, atol=1e-6)
    for got, want in zip(torch.autograd.grad(loss, leaves), torch.autograd.grad(eager, leaves)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    torch.library.opcheck(torch.ops.bytessm.causal_conv1d_fwd.default,
                          (x.detach(), w.detach(), None if b is None else b.detach(), False),
                          test_utils=("test_schema", "test_faketensor",
                                      "test_aot_dispatch_dynamic"))
