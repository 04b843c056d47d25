"""The reference itself: the sequential specification, the chunked version and a
brute-force closed form of the recurrence agree, over every argument combination; the
gradients agree with those of a float64 brute force that passes gradcheck.

(`reference.py` upcasts with `.float()`, so it computes in float32 even on float64 inputs;
gradcheck therefore runs on the float64 brute force, and the reference's autograd is
compared with it.)
"""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from bytessm.kernels import reference

from kernel_helpers import assert_close, scan_inputs


def brute_force(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
                initial_state=None, reverse=False):
    """h_t = sum_s (prod_{k in (s, t]} a_k) x_s + (prod_{k <= t} a_k) h0, in the input dtype,
    each y_t from its own products (no recurrence shared between positions)."""
    batch, dim, length = u.shape
    dt = delta + (0 if delta_bias is None else delta_bias[None, :, None])
    dt = F.softplus(dt) if delta_softplus else dt
    per_ch = lambda M: M[:, None].expand(batch, dim, *M.shape[1:]) if M.dim() == 3 else \
        M.repeat_interleave(dim // M.shape[1], dim=1)  # noqa: E731
    Bc, Cc = per_ch(B), per_ch(C)                                   # (b, d, n, l)
    logd = dt[:, :, None, :] * A[None, :, :, None]                  # (b, d, n, l)
    x = (dt * u)[:, :, None, :] * Bc
    order = list(range(length - 1, -1, -1)) if reverse else list(range(length))
    ys, h = [], None
    for i, t in enumerate(order):
        seen = order[: i + 1]
        acc = 0
        for j, s in enumerate(seen):
            acc = acc + torch.exp(logd[..., seen[j + 1:]].sum(-1) if j + 1 < len(seen)
                                  else logd[..., :0].sum(-1)) * x[..., s]
        if initial_state is not None:
            acc = acc + torch.exp(logd[..., seen].sum(-1)) * initial_state
        ys.append((t, (acc * Cc[..., t]).sum(-1)))
        h = acc
    y = torch.stack([v for _, v in sorted(ys, key=lambda p: p[0])], -1)
    if D is not None:
        y = y + D[None, :, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y, h


COMBOS = list(itertools.product([False, True], [0, 2], [False, True], [False, True], [False, True]))


@pytest.mark.parametrize("reverse,groups,h0,full,softplus", COMBOS,
                         ids=lambda v: str(v))
def test_sequential_chunked_and_brute_force_agree(reverse, groups, h0, full, softplus):
    ins = {k: (v.detach() if v is not None else None) for k, v in scan_inputs(
        batch=2, dim=4, length=11, dstate=3, groups=groups, has_D=full, has_z=full,
        has_bias=full, initial_state=h0, softplus=softplus).items()}
    kw = dict(delta_softplus=softplus, reverse=reverse)
    y_seq, h_seq = reference.selective_scan_sequential(**ins, **kw, return_last_state=True)
    y_chk, h_chk = reference.selective_scan_chunked(**ins, **kw, return_last_state=True,
                                                    chunk_size=4)
    y_bf, h_bf = brute_force(**{k: v.double() if v is not None else None for k, v in ins.items()},
                             **kw)
    for name, a, b in (("out", y_seq, y_bf), ("last", h_seq, h_bf), ("chunked out", y_chk, y_bf),
                       ("chunked last", h_chk, h_bf)):
        assert_close(name, a, b, torch.float32)


def test_brute_force_gradcheck_float64():
    ins = scan_inputs(batch=1, dim=2, length=4, dstate=2, groups=2, initial_state=True)
    ins = {k: v.detach().double().requires_grad_() for k, v in ins.items()}
    names = list(ins)

    def fn(*args):
        y, h = brute_force(**dict(zip(names, args)), reverse=True)
        return y, h
    assert torch.autograd.gradcheck(fn, tuple(ins.values()))


@pytest.mark.parametrize("which", ["sequential", "chunked"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_reference_gradients_match_float64(which, reverse):
    ins = scan_inputs(batch=2, dim=4, length=9, dstate=3, groups=2, initial_state=True)
    fn = getattr(reference, f"selective_scan_{which}")
    kw = dict(chunk_size=4) if which == "chunked" else {}
    g = torch.Generator().manual_seed(2)
    y, h = fn(**ins, reverse=reverse, return_last_state=True, **kw)
    wy, wh = torch.randn(y.shape, generator=g), torch.randn(h.shape, generator=g)
    grads = torch.autograd.grad((y * wy).sum() + (h * wh).sum(), list(ins.values()))
    ins64 = {k: v.detach().double().requires_grad_() for k, v in ins.items()}
    y64, h64 = brute_force(**ins64, reverse=reverse)
    grads64 = torch.autograd.grad((y64 * wy).sum() + (h64 * wh).sum(), list(ins64.values()))
    for name, a, b in zip(ins, grads, grads64):
        assert_close(f"d{name}", a, b, torch.float32)


def test_cu_seqlens_equals_separate_sequences():
    ins = {k: v.detach() for k, v in scan_inputs(batch=1, dim=4, length=10, dstate=3,
                                                   initial_state=True, num_seqs=3).items()}
    cu = torch.tensor([0, 3, 3, 10])
    for fn in (reference.selective_scan_sequential, reference.selective_scan_chunked):
        y, h = fn(**ins, cu_seqlens=cu, return_last_state=True)
        for i, (s, e) in enumerate(((0, 3), (3, 3), (3, 10))):
            part = {k: (v[..., s:e] if k in ("u", "delta", "z", "B", "C") else v)
                    for k, v in ins.items()}
            part["initial_state"] = ins["initial_state"][i:i + 1]
            y_i, h_i = reference.selective_scan_sequential(**part, return_last_state=True)
            if e > s:
                assert_close(f"seq {i} out", y[..., s:e], y_i, torch.float32)
            assert_close(f"seq {i} last", h[i:i + 1], h_i, torch.float32)
