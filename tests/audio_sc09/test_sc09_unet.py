"""The pooled U-Net: causal (no pooling leak), exact step decoding, the 6M config."""
import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf

from bytessm.nn import unet
from bytessm.nn.unet import PooledUNet


def tiny(**kw):
    torch.manual_seed(0)
    args = dict(d_model=8, n_layer=1, vocab_size=256, pool=(4, 4), d_state=4)
    return PooledUNet(**{**args, **kw}).eval()


# Positions around the pooling boundaries (pools 4 and 16), where a leak would show first.
PROBES = (0, 1, 2, 3, 4, 5, 11, 12, 14, 15, 16, 17, 19, 30, 31, 32, 33)


def first_leak(model, length=40):
    """The first probed position t whose output changes when only inputs after t change."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (1, length), generator=g)
    with torch.no_grad():
        y = model(x)
        for t in PROBES:
            x2 = x.clone()
            x2[:, t + 1:] = torch.randint(0, 256, (1, length - t - 1), generator=g)
            if not torch.equal(model(x2)[:, : t + 1], y[:, : t + 1]):
                return t
    return None


def test_causal():
    model = tiny()
    assert model.causal and first_leak(model) is None
    x = torch.randint(0, 256, (1, 48))                 # and the future is not ignored either
    x2 = x.clone()
    x2[:, 20] = (x2[:, 20] + 1) % 256
    with torch.no_grad():
        assert not torch.equal(model(x)[:, 20:], model(x2)[:, 20:])


def test_pooling_without_the_shift_leaks(monkeypatch):
    """The check above can fail: an UpPool without SaShiMi's shift leaks the future."""
    def unshifted(self, x):
        return unet.rearrange(self.linear(x).float(), "b l (s w) -> b (l s) w", s=self.pool)
    monkeypatch.setattr(unet.UpPool, "forward", unshifted)
    assert first_leak(tiny()) is not None


@pytest.mark.parametrize("pool,length", [((4, 4), 37), ((2, 3), 25)], ids=["4x4-L37", "2x3-L25"])
def test_step_matches_forward(pool, length):
    model = tiny(pool=pool)
    x = torch.randint(0, 256, (2, length))
    with torch.no_grad():
        y = model(x)                                    # (2, L, D); L padded internally
        states = model.new_states(2, "cpu")
        ys = torch.stack([model.step(x[:, t], states) for t in range(length)], 1)
        torch.testing.assert_close(ys, y, rtol=1e-4, atol=1e-5)
        # prefill through forward(states=...) hands over the same states
        h, st = model(x[:, :10], return_states=True)
        torch.testing.assert_close(h, y[:, :10], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.step(x[:, 10], st), y[:, 10], rtol=1e-4, atol=1e-5)


def test_backward():
    # (checkpoint_blocks=True is not exercised here: torch.utils.checkpoint's first call
    # costs ~10 s of one-time initialisation on this CPU-only torch build)
    model = tiny().train()
    x = torch.randint(0, 256, (1, 16))
    model(x).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_sashimi_6m_config():
    cfg = OmegaConf.load("configs/model/sashimi_6m.yaml")
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg).items()
              if k not in ("_target_", "name", "tie_embeddings")}
    model = get_class(cfg._target_)(vocab_size=256, **kwargs)
    n = sum(p.numel() for p in model.parameters()) + 64 * 256     # + the LM head
    assert 5.9e6 < n < 6.5e6


def test_bad_config():
    with pytest.raises(ValueError, match="causal"):
        tiny(bidirectional=True)
    with pytest.raises(ValueError, match="pool factors"):
        tiny(pool=(4, 1))


def _flat_state(states):
    from bytessm.generation import _tensors
    fills, st = [], states[0]
    while st is not None:
        fills.append(st.filled)
        st = st.inner
    return fills, _tensors(states)


@pytest.mark.parametrize("pool,chunks", [((4, 4), (37,)), ((4, 4), (3,)), ((4, 4), (16, 21)),
                                         ((4, 4), (5, 30, 1)), ((2, 3), (7, 18))],
                         ids=["L37", "L3-no-group", "16+21", "5+30+1", "2x3-7+18"])
def test_parallel_prefill_equals_stepping(pool, chunks):
    """Prefill through forward(states=...) (steps to the next period boundary, then each
    level in parallel) leaves the states and outputs of stepping position by position: the
    fill counts exactly, the buffers and Mamba states to float32 summation order. Chunks
    start at every kind of phase; a chunk shorter than a group skips the level below."""
    model = tiny(pool=pool)
    x = torch.randint(0, 256, (2, sum(chunks)), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        stepped = model.new_states(2, "cpu")
        ys = torch.stack([model.step(x[:, t], stepped) for t in range(x.shape[1])], 1)
        states, outs, start = model.new_states(2, "cpu"), [], 0
        for n in chunks:
            h, same = model(x[:, start:start + n], states=states, return_states=True)
            assert same is states                        # advanced in place
            outs.append(h)
            start += n
    torch.testing.assert_close(torch.cat(outs, 1), ys, rtol=1e-4, atol=1e-5)
    fills, tensors = _flat_state(states)
    ref_fills, ref_tensors = _flat_state(stepped)
    assert fills == ref_fills
    for t, r in zip(tensors, ref_tensors):
        torch.testing.assert_close(t, r, rtol=1e-4, atol=1e-5)
