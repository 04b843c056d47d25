"""Layer properties: causality, the bidirectional mixer's definition, state carry."""
import pytest
import torch
from einops import rearrange

from bytessm.backbone import Backbone
from bytessm.nn import Attention, BiMamba, Mamba


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("kind", ["mamba", "attention", "hybrid"])
def test_causal_mixers_ignore_the_future(kind):
    if kind == "hybrid":
        model = Backbone(d_model=32, n_layer=3, vocab_size=256, attn_layers=[1], attn_heads=4)
        x = torch.randint(0, 256, (2, 29))
        y2_in = x.clone()
        y2_in[:, 17:] = torch.randint(0, 256, (2, 12))
    else:
        model = Mamba(32) if kind == "mamba" else Attention(32, n_heads=4, causal=True)
        x = torch.randn(2, 29, 32)
        y2_in = x.clone()
        y2_in[:, 17:] = torch.randn(2, 12, 32)
    y1, y2 = model(x), model(y2_in)
    torch.testing.assert_close(y1[:, :17], y2[:, :17])
    assert (y1[:, 17:] - y2[:, 17:]).abs().max() > 1e-4  # and it does see the present


def test_bidirectional_mixer_is_forward_plus_reverse_scan():
    """BiMamba == out_proj(mean of the causal branch and the causal branch on the reversed
    sequence, reversed back) — built here from the same parameters with flipped copies."""
    bi = BiMamba(24, d_state=8)
    x = torch.randn(2, 19, 24)
    x_in, z = rearrange(bi.in_proj(x), "b l e -> b e l").chunk(2, dim=1)
    y_f = bi.fwd(x_in, z)
    bi.bwd.reverse = False  # the same branch run causally on flipped inputs
    y_b = bi.bwd(x_in.flip(-1), z.flip(-1)).flip(-1)
    bi.bwd.reverse = True
    want = bi.out_proj(rearrange(0.5 * (y_f + y_b), "b d l -> b l d"))
    assert _rel(bi(x), want) < 1e-5


def test_bidirectional_output_depends_on_both_sides():
    bi = BiMamba(16)
    x = torch.randn(1, 21, 16)
    base = bi(x)
    for pos in (2, 18):
        x2 = x.clone()
        x2[:, pos] += 1.0
        assert (bi(x2)[:, 10] - base[:, 10]).abs().max() > 1e-5


@pytest.mark.parametrize("split", [1, 3, 10])
def test_state_carry_equals_one_pass(split):
    """forward(x[:k]) then forward(x[k:], state) == forward(x): conv window + SSM state."""
    model = Backbone(d_model=32, n_layer=2, vocab_size=256, attn_layers=[1], attn_heads=4)
    x = torch.randint(0, 256, (2, 23))
    full = model(x)
    states = model.new_states(2, "cpu", max_len=64)
    a, states = model(x[:, :split], states=states, return_states=True)
    b, _ = model(x[:, split:], states=states, return_states=True)
    assert _rel(torch.cat([a, b], 1), full) < 1e-5


def test_state_gradients_flow_into_previous_segment():
    m = Mamba(16)
    x = torch.randn(1, 12, 16, requires_grad=True)
    _, st = m(x[:, :6], state=m.new_state(1, "cpu"), return_state=True)
    y = m(x[:, 6:], state=st)
    y.sum().backward()
    assert x.grad[:, :6].abs().sum() > 0


def test_mamba_defaults_and_no_weight_decay_marks():
    m = Mamba(64)
    assert m.ssm.d_state == 16 and m.ssm.d_conv == 4 and m.d_inner == 128
    assert m.ssm.dt_rank == 4
    dt = torch.nn.functional.softplus(m.ssm.dt_proj.bias)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6
    assert m.ssm.A_log.dtype == torch.float32
    assert torch.allclose(m.ssm.A_log[5], torch.log(torch.arange(1, 17.0)))
    assert all(getattr(p, "_no_weight_decay", False)
               for p in (m.ssm.A_log, m.ssm.D, m.ssm.dt_proj.bias))


@pytest.mark.parametrize("mixer", [Mamba, BiMamba])
@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_scan_inputs_are_laid_out_for_the_backend(monkeypatch, mixer, backend):
    """The Triton kernels load u, delta, z, B, C along the length: the mixers must hand them
    over with unit stride there (a (B, L, D) tensor seen as (B, D, L) has stride D, and each
    load then touches its own cache line), every row 16-byte aligned. The reference scan
    reads time-major: it gets the projections (delta, z, B, C) as transposed views of their
    (B, L, channels) outputs, no copies (the CPU default job trained at 8.1-9.5K symbols/s so,
    against 4.8-5.7K with copies)."""
    import bytessm.nn.mamba as mamba_module

    seen = []
    real = mamba_module.selective_scan

    def spy(u, delta, A, B, C, **kw):
        seen.append({"u": u, "delta": delta, "B": B, "C": C, "z": kw["z"]})
        return real(u, delta, A, B, C, **kw)

    monkeypatch.setattr(mamba_module, "selective_scan", spy)
    device = "cuda" if torch.cuda.is_available() else "cpu"   # the Triton kernels run there
    layer = mixer(16, d_state=4, scan_backend=backend).to(device)
    x = torch.randn(3, 11, 16, device=device)
    y = layer(x)
    assert y.shape == x.shape and seen
    for call in seen:
        for name, t in call.items():
            shape = tuple(t.shape)
            if backend == "reference":   # the projections: views of (B, L, channels) tensors
                assert name == "u" or t.stride(-2) == 1, \
                    f"{name} has stride {t.stride()} for shape {shape}"
                continue
            assert t.stride(-1) == 1, f"{name} has stride {t.stride()} for shape {shape}"
            # every row starts on a 16-byte boundary (length 11 is padded to 16)
            assert all(st % mamba_module.ALIGN == 0 for st in t.stride()[:-1]), \
                f"{name} has stride {t.stride()} for shape {shape}"


@pytest.mark.parametrize("x_first", [True, False])
@pytest.mark.parametrize("out_first", [True, False])
def test_position_linear_keeps_each_layout(x_first, out_first):
    """`position_linear` is F.linear at every position, whichever layout x and the output
    take ((B, channels, L) or (B, L, channels)), and each gradient comes out contiguous in
    its input's layout: a channels-first gradient of a (B, L, d) input, or the reverse,
    would be copied by the next op or read across cache lines by the scan's backward (the
    out_proj's gradient is the scan's dout: 0.8x the Gluon backward's time at 2^20 once it
    came channels-first)."""
    from bytessm.nn.mamba import position_linear

    torch.manual_seed(0)
    batch, length, d, e = 3, 20, 6, 5
    x = torch.randn(batch, d, length) if x_first else torch.randn(batch, length, d)
    weight, bias = torch.randn(e, d), torch.randn(e)
    g = torch.randn(batch, e, length) if out_first else torch.randn(batch, length, e)

    def grads(f):
        xi, wi, bi = (t.clone().requires_grad_() for t in (x, weight, bias))
        arrived = []   # x's gradient as it arrives (a leaf's .grad is made contiguous)
        xi.register_hook(arrived.append)
        out = f(xi, wi, bi)
        out.backward(g)
        return out, arrived[0], wi.grad, bi.grad

    got = grads(lambda xi, wi, bi: position_linear(xi, wi, bi, x_first=x_first,
                                                   out_first=out_first))

    def expected(xi, wi, bi):
        out = torch.nn.functional.linear(xi.mT if x_first else xi, wi, bi)     # (B, L, e)
        return out.mT if out_first else out
    want = grads(expected)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    out, gx = got[0], got[1]
    assert out.is_contiguous() and gx.is_contiguous(), (out.stride(), gx.stride())


@pytest.mark.parametrize("mixer", [Mamba, BiMamba])
def test_lengthwise_projections_copy_no_activation(monkeypatch, mixer):
    """In the Triton layout (rows along the length) at batch > 1, from POSITION_GEMM_FROM
    positions (here from any), the projections (in_proj, x_proj, dt_proj, out_proj) run as
    strided-batched GEMMs: forward and backward make no copy of a whole activation, and
    every output and gradient equals the time-major layout's. Below that length (and
    before) F.linear over a transposed (B, L, d) view copies x_proj's and out_proj's
    inputs for B > 1, and in_proj's gradient is copied out of a (B, d_out, L) view of one
    (d_out, B*L) product: whole-activation transposed copies, a third of a Caduceus-PS step
    at 2^20 positions on an H200. Both layouts run on the reference scan here; only the
    layout differs."""
    import bytessm.nn.mamba as mamba_module
    from torch.utils._python_dispatch import TorchDispatchMode

    monkeypatch.setattr(mamba_module, "POSITION_GEMM_FROM", 1)
    torch.manual_seed(0)
    batch, length, d_model = 3, 32, 16
    layer = mixer(d_model, d_state=4, scan_backend="reference")
    x = torch.randn(batch, length, d_model)
    weights = torch.linspace(-1, 1, x.numel()).view_as(x)
    activation = batch * length * d_model           # d_inner = 2 d_model: all of them larger

    class Copies(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            if name in ("clone", "copy_", "contiguous", "_to_copy") and out.numel() >= activation:
                self.seen.append((name, tuple(out.shape)))
            return out

    def run(lengthwise):
        monkeypatch.setattr(mamba_module, "lengthwise_layout", lambda backend, t: lengthwise)
        layer.zero_grad()
        xi = x.clone().requires_grad_()
        with Copies() as copies:
            y = layer(xi)
            (y * weights).sum().backward()
        return copies.seen, [y.detach(), xi.grad] + [p.grad.clone() for p in layer.parameters()]

    copies, lengthwise = run(True)
    _, time_major = run(False)
    assert copies == [], copies
    for a, b in zip(lengthwise, time_major):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mixer", [Mamba, BiMamba])
@pytest.mark.parametrize("length", [1, 3, 13])
@pytest.mark.parametrize("bias", [False, True])
def test_length_padding_changes_nothing(monkeypatch, mixer, length, bias):
    """Padding the length to a multiple of ALIGN (for aligned scan rows) gives the outputs and
    gradients of the unpadded computation: the forward scan reaches the padding last, the
    reverse scan starts there from a zero input, and the reverse conv sees zeros past the end."""
    import bytessm.nn.mamba as mamba_module

    torch.manual_seed(0)
    layer = mixer(16, d_state=4, bias=bias)
    x = torch.randn(2, length, 16)

    def run(align):
        monkeypatch.setattr(mamba_module, "ALIGN", align)
        layer.zero_grad()
        xi = x.clone().requires_grad_()
        y = layer(xi)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        return y.detach(), xi.grad, [p.grad.clone() for p in layer.parameters()]

    y1, gx1, gp1 = run(1)
    y8, gx8, gp8 = run(8)
    assert y8.shape == y1.shape
    for a, b in zip([y8, gx8, *gp8], [y1, gx1, *gp1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_zero_window_conv_picks_the_measured_kernel(monkeypatch):
    """The Triton sequence conv serves inference at every length and training only from
    TRITON_CONV_TRAIN_FROM positions (where it was measured faster than F.conv1d); both give
    the reference conv's output."""
    import bytessm.nn.mamba as mamba_module

    from bytessm.kernels.reference import causal_conv1d_ref

    calls = []

    def spy(x, weight, bias, reverse, backend):  # records the lengths given to Triton
        if backend == "triton":
            calls.append(x.shape[-1])
        return causal_conv1d_ref(x, weight, bias, reverse)

    monkeypatch.setattr(mamba_module, "causal_conv1d", spy)
    monkeypatch.setattr(mamba_module, "resolve_backend", lambda backend, device: "triton")
    monkeypatch.setattr(mamba_module, "TRITON_CONV_TRAIN_FROM", 32)
    branch = BiMamba(8, d_state=4, scan_backend="reference").bwd
    x = torch.randn(1, branch.d_inner, 16)
    with torch.no_grad():
        y, _ = branch._conv(x, None)
    assert calls == [16]
    y_train, _ = branch._conv(x.requires_grad_(), None)           # training, short: F.conv1d
    assert calls == [16]
    torch.testing.assert_close(y_train.detach(), y)
    branch._conv(torch.randn(1, branch.d_inner, 32, requires_grad=True), None)
    assert calls == [16, 32]


def test_length_padding_with_an_initial_state(monkeypatch):
    """A causal mixer started from a state and returning none pads too: its outputs equal
    the unpadded computation's."""
    import bytessm.nn.mamba as mamba_module

    torch.manual_seed(0)
    layer = Mamba(16, d_state=4)
    x = torch.randn(2, 13, 16)
    state = layer.new_state(2, "cpu")
    state.conv.normal_()
    state.ssm.normal_()

    def run(align):
        monkeypatch.setattr(mamba_module, "ALIGN", align)
        return layer(x, state=mamba_module.MambaState(state.conv.clone(), state.ssm.clone()))

    torch.testing.assert_close(run(16), run(1), rtol=1e-5, atol=1e-6)


def test_checkpointed_blocks_give_the_same_gradients():
    """Backbone(checkpoint_blocks=True) recomputes each block in the backward (without
    keeping an RNG state: blocks draw none): the same output and gradients as without."""
    torch.manual_seed(0)
    plain = Backbone(d_model=16, n_layer=2, vocab_size=256).train()
    ckpt = Backbone(d_model=16, n_layer=2, vocab_size=256, checkpoint_blocks=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randint(0, 256, (2, 24))
    outs = [m(x) for m in (plain, ckpt)]
    torch.testing.assert_close(outs[1], outs[0])
    for out in outs:
        out.square().mean().backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)
