"""The public op around the kernels: bad input, non-finite input, empty input, and
`torch.compile(fullgraph=True)` through the custom ops (forward and backward)."""
from __future__ import annotations

import pytest
import torch

from bytessm.kernels import selective_scan

from kernel_helpers import assert_close, scan_inputs

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _ins(**kw):
    return {k: (v.detach().to(DEVICE) if v is not None else None)
            for k, v in scan_inputs(**kw).items()}


@pytest.mark.parametrize("name,bad,message", [
    ("delta", lambda t: t[..., :-1], "`delta` must have shape"),
    ("A", lambda t: t[:-1], "`A` must have shape"),
    ("B", lambda t: t[:, :-1], "`B` must have shape"),
    ("C", lambda t: t.unsqueeze(1).expand(-1, 3, -1, -1), "`C` must have shape"),
    ("D", lambda t: t[:-1], "`D` must have shape"),
    ("z", lambda t: t.int(), "`z` must be float32"),
    ("initial_state", lambda t: torch.zeros(3, 8, 16, device=t.device), "`initial_state` must have shape"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_input_names_the_argument(name, bad, message):
    ins = _ins(batch=2, dim=8, length=9, initial_state=True)
    ins[name] = bad(ins[name])
    with pytest.raises((ValueError, TypeError), match=message):
        selective_scan(**ins, backend="triton")


def test_bad_cu_seqlens():
    ins = _ins(batch=1, dim=4, length=9, has_z=False)
    with pytest.raises(ValueError, match="cu_seqlens"):
        selective_scan(**ins, cu_seqlens=torch.tensor([0, 5, 4, 9], device=DEVICE), backend="triton")


def test_too_large_dstate_is_refused():
    ins = _ins(batch=1, dim=2, length=3, dstate=300, has_z=False)
    with pytest.raises(ValueError, match="dstate up to 256"):
        selective_scan(**ins, backend="triton")


@pytest.mark.parametrize("name", ["u", "delta"])
def test_non_finite_input_propagates_as_nan(name):
    """A NaN in u, or in delta (through the softplus), reaches every later output of its
    channel and no other."""
    ins = _ins(batch=1, dim=4, length=40)
    ins[name][0, 1, 5] = float("nan")
    y = selective_scan(**ins, backend="triton")
    assert torch.isnan(y[0, 1, 5:]).all()                     # the state carries it onwards
    assert torch.isfinite(y[0, 1, :5]).all() and torch.isfinite(y[0, 0]).all()


def test_empty_length():
    ins = _ins(batch=2, dim=4, length=0, initial_state=True)
    y, last = selective_scan(**ins, return_last_state=True, backend="triton")
    assert y.shape == (2, 4, 0)
    assert torch.equal(last, ins["initial_state"])


def test_compiles_fullgraph_forward_and_backward():
    ins = {k: v.requires_grad_() if v is not None and v.is_floating_point() else v
           for k, v in _ins(batch=2, dim=8, length=21, initial_state=True).items()}

    def f(u, delta, A, B, C, D, z, delta_bias, initial_state):
        y, h = selective_scan(u, delta, A, B, C, D, z, delta_bias, initial_state=initial_state,
                              return_last_state=True, backend="triton")
        return (y * y).sum() + h.sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    loss = compiled(**ins)
    grads = torch.autograd.grad(loss, list(ins.values()))
    loss_eager = f(**ins)
    grads_eager = torch.autograd.grad(loss_eager, list(ins.values()))
    assert_close("loss", loss.detach(), loss_eager.detach(), torch.float32)
    for name, a, b in zip(ins, grads, grads_eager):
        assert_close(f"d{name}", a, b, torch.float32)


def test_compiles_fullgraph_with_cu_seqlens():
    """cu_seqlens' values are checked in eager mode only: reading them is a host sync that
    fullgraph compilation refuses. The reference backend slices per sequence in Python (it
    needs the values as ints), so the compiled path is the custom op, checked against the
    eager reference."""
    cu = torch.tensor([0, 7, 12, 21], device=DEVICE)
    ins = {k: v.requires_grad_() if v is not None and v.is_floating_point() else v
           for k, v in _ins(batch=1, dim=8, length=21, initial_state=True, num_seqs=3).items()}

    def f(u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens, backend="triton"):
        y, h = selective_scan(u, delta, A, B, C, D, z, delta_bias, initial_state=initial_state,
                              return_last_state=True, cu_seqlens=cu_seqlens, backend=backend)
        return (y * y).sum() + h.sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    loss = compiled(**ins, cu_seqlens=cu)
    grads = torch.autograd.grad(loss, list(ins.values()))
    loss_ref = f(**ins, cu_seqlens=cu, backend="reference")
    grads_ref = torch.autograd.grad(loss_ref, list(ins.values()))
    assert_close("loss", loss.detach(), loss_ref.detach(), torch.float32)
    for name, a, b in zip(ins, grads, grads_ref):
        assert_close(f"d{name}", a, b, torch.float32)
    with pytest.raises(ValueError, match="cu_seqlens must rise"):   # still checked in eager
        f(**ins, cu_seqlens=torch.tensor([0, 12, 7, 21], device=DEVICE))


def test_custom_op_registration_is_consistent():
    from bytessm.kernels.triton.autograd import selective_scan_fwd  # noqa: F401
    ins = _ins(batch=1, dim=4, length=5, initial_state=True)
    args = (ins["u"].requires_grad_(), ins["delta"], ins["A"], ins["B"], ins["C"], ins["D"],
            ins["z"], ins["delta_bias"], ins["initial_state"], None, True, False)
    torch.library.opcheck(torch.ops.bytessm.selective_scan_fwd.default, args,
                          test_utils=("test_schema", "test_faketensor",
                                      "test_aot_dispatch_dynamic"))


def test_unused_outputs_reach_the_backward_as_none(monkeypatch):
    """A loss on the output alone gives the backward no last-state gradient (None, not a
    zero tensor it would read), and a loss on the last state alone a zero output gradient;
    the gradients are those of the reference either way."""
    from bytessm.kernels import reference
    from bytessm.kernels.triton import scan
    seen = []
    backward = scan.scan_backward

    def spy(dout, dlast, *args, **kwargs):
        seen.append((dout.count_nonzero().item(), dlast))
        return backward(dout, dlast, *args, **kwargs)
    monkeypatch.setattr(scan, "scan_backward", spy)
    ins = {k: v.detach().to(DEVICE).requires_grad_() for k, v in
           scan_inputs(batch=1, dim=4, length=40, dstate=4).items() if v is not None}
    y = selective_scan(**ins, backend="triton")
    (g_out,) = torch.autograd.grad((y * y).sum(), [ins["u"]])
    _, last = selective_scan(**ins, return_last_state=True, backend="triton")
    (g_last,) = torch.autograd.grad(last.sum(), [ins["u"]])
    assert seen[0][1] is None and seen[0][0] > 0
    assert seen[1][0] == 0 and seen[1][1] is not None
    y_ref, last_ref = reference.selective_scan_chunked(**ins, return_last_state=True)
    (ref_out,) = torch.autograd.grad((y_ref * y_ref).sum(), [ins["u"]], retain_graph=True)
    assert_close("du (output)", g_out, ref_out, torch.float32)
    assert_close("du (last state)", g_last, torch.autograd.grad(last_ref.sum(), [ins["u"]])[0],
                 torch.float32)
