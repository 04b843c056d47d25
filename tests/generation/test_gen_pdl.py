"""Programmatic dependent launch of the decode kernels (`kernels/triton/pdl.py`).

On the CPU: the switch (scoped, nesting, off under the interpreter). On CUDA (run on the
GPU machine; skipped in CI): a CUDA-graph decode with PDL produces the very same symbols
and states as without it, for a model wide enough that kernels overlap."""
import pytest
import torch

import bytessm.nn.decode as decode
from bytessm.backbone import Backbone, SequenceModel
from bytessm.generation import Decoder, cast_for_inference
from bytessm.kernels.triton import pdl
from bytessm.nn.heads import LMHead
from bytessm.sampling import SamplingParams
from gen_models import tiny


def test_switch_is_scoped_and_nests():
    t = torch.zeros(1)
    assert not pdl._ENABLED
    with pdl.programmatic_launch():
        assert pdl._ENABLED
        with pdl.programmatic_launch(False):
            assert not pdl._ENABLED
        assert pdl._ENABLED
        assert not pdl.use_pdl(t)          # CPU tensors never launch with PDL
    assert not pdl._ENABLED
    with pytest.raises(RuntimeError):
        with pdl.programmatic_launch():
            raise RuntimeError("inside")
    assert not pdl._ENABLED                # restored on errors too


def test_decoder_pdl_default_follows_the_gemv(monkeypatch):
    """On only in CUDA-graph steps whose products run on the GEMV kernels (batch <=
    MAX_ROWS, GEMV not off); an explicit choice wins."""
    from bytessm.generation import default_programmatic_launch as default
    monkeypatch.setattr(decode, "DECODE_GEMV", "auto")
    assert default(True, 1) and default(True, decode.MAX_ROWS)
    assert not default(True, decode.MAX_ROWS + 1) and not default(False, 1)
    monkeypatch.setattr(decode, "DECODE_GEMV", "off")
    assert not default(True, 1)
    params = SamplingParams(temperature=0)
    assert Decoder(tiny(), batch=1, max_len=4, max_new=2, params=params).pdl is False
    assert Decoder(tiny(), batch=1, max_len=4, max_new=2, params=params,
                   programmatic_launch=True).pdl is True


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("batch", [1, 5])
def test_pdl_decode_equals_plain_decode_cuda(batch, monkeypatch):
    """Greedy decoding from the same random states, CUDA graph with and without PDL: equal
    symbols and equal final states, bit for bit (the same kernels, only launched earlier).
    A race (a kernel reading its input before the previous kernel wrote it) would change
    them: d_model 512 gives the GEMVs hundreds of programs, so kernels do overlap. The
    blocks step on their own kernels (the fused stack's atomics are not bitwise
    reproducible, and it has no PDL)."""
    monkeypatch.setattr(decode, "DECODE_GEMV", "auto")
    torch.manual_seed(0)
    backbone = Backbone(d_model=512, n_layer=4, vocab_size=256, scan_backend="triton")
    model = cast_for_inference(SequenceModel(backbone, LMHead(512, 256)).eval().cuda(),
                               torch.bfloat16)
    runs = []
    for use_pdl in (False, True):
        dec = Decoder(model, batch=batch, max_len=80, max_new=64,
                      params=SamplingParams(temperature=0), device="cuda", cuda_graph=True,
                      compile_step=False, programmatic_launch=use_pdl, fused_stack=False)
        g = torch.Generator(device="cuda").manual_seed(3)
        for s in dec.states:
            s.conv.copy_(torch.randn(s.conv.shape, generator=g, device="cuda"))
            s.ssm.copy_(torch.randn(s.ssm.shape, generator=g, device="cuda"))
        dec.tok.copy_(torch.randint(0, 256, (batch,), generator=g, device="cuda"))
        dec.run(check_every=10**9)
        torch.cuda.synchronize()
        runs.append((dec.out.clone(), [(s.conv.clone(), s.ssm.clone()) for s in dec.states]))
    (out0, st0), (out1, st1) = runs
    assert torch.equal(out0, out1)
    for (c0, h0), (c1, h1) in zip(st0, st1):
        assert torch.equal(c0, c1) and torch.equal(h0, h1)
