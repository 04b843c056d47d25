"""Vim patch embedding: patch layout, middle class token, geometry errors, padding, and
position-embedding interpolation checked against a hand-written bicubic."""
import math

import pytest
import torch
from torch import nn

from bytessm.tasks.images import PatchGeometry, VimPatchEmbed, interpolate_pos_embed, patchify, unpatchify


def test_patchify_hand_computed():
    img = torch.arange(16.).reshape(1, 1, 4, 4)
    img = torch.cat([img, img + 100], dim=1)                                # (1, 2, 4, 4)
    p = patchify(img, 2)
    assert p.shape == (1, 4, 8)
    # row-major patches, pixels row-major, channels innermost
    assert p[0, 0].tolist() == [0, 100, 1, 101, 4, 104, 5, 105]
    assert p[0, 1].tolist() == [2, 102, 3, 103, 6, 106, 7, 107]
    assert p[0, 2].tolist() == [8, 108, 9, 109, 12, 112, 13, 113]
    assert p[0, 3].tolist() == [10, 110, 11, 111, 14, 114, 15, 115]
    assert torch.equal(unpatchify(p, 2, (2, 2)), img)


def test_round_trip_non_square():
    img = torch.randn(3, 3, 12, 20)
    assert torch.equal(unpatchify(patchify(img, 4), 4, (3, 5)), img)


def _identity_embed(**kw) -> VimPatchEmbed:
    """An embedding whose tokens are the raw patches (Linear = identity, positions zero)."""
    enc = VimPatchEmbed(**kw)
    lin = enc.proj[1]
    with torch.no_grad():
        lin.weight.copy_(torch.eye(lin.out_features, lin.in_features))
        lin.bias.zero_()
        enc.pos_embed.zero_()
    return enc


@pytest.mark.parametrize("grid", [(3, 3), (2, 2), (2, 3), (1, 1)], ids=lambda g: f"{g[0]}x{g[1]}")
def test_class_token_sits_in_the_middle(grid):
    p, c = 2, 1
    enc = _identity_embed(d_model=p * p * c, in_chans=c, image_size=(grid[0] * p, grid[1] * p),
                          patch_size=p)
    img = torch.randn(2, c, grid[0] * p, grid[1] * p)
    out = enc(img)
    n = grid[0] * grid[1]
    m = n // 2
    assert enc.cls_index == m and out.shape == (2, n + 1, p * p * c)
    patches = patchify(img, p)
    cls = (enc.cls_token + enc.cls_pos_embed)[0, 0]
    assert torch.allclose(out[:, m], cls.expand(2, -1))
    assert torch.equal(out[:, :m], patches[:, :m])
    assert torch.equal(out[:, m + 1:], patches[:, m:])


def test_position_embedding_added_per_grid_cell():
    enc = _identity_embed(d_model=4, in_chans=1, image_size=4, patch_size=2)
    with torch.no_grad():
        enc.pos_embed.copy_(torch.arange(16.).reshape(1, 4, 2, 2))          # (1, D, gh, gw)
    out = enc(torch.zeros(1, 1, 4, 4))
    # patch (row 1, col 0) is the third patch, sequence index 3 (after the class token at 2)
    assert out[0, 3].tolist() == [2.0, 6.0, 10.0, 14.0]


def test_linear_and_conv_embeddings_agree():
    lin = VimPatchEmbed(d_model=8, in_chans=3, image_size=8, patch_size=4, kind="linear")
    conv = VimPatchEmbed(d_model=8, in_chans=3, image_size=8, patch_size=4, kind="conv")
    conv.load_state_dict({k: v for k, v in lin.state_dict().items() if not k.startswith("proj")},
                         strict=False)
    w = lin.proj[1].weight                                                 # (D, p*p*C)
    with torch.no_grad():  # (D, (p1 p2 c)) -> (D, C, p1, p2)
        conv.proj.weight.copy_(w.reshape(8, 4, 4, 3).permute(0, 3, 1, 2))
        conv.proj.bias.copy_(lin.proj[1].bias)
    img = torch.randn(2, 3, 8, 8)
    assert torch.allclose(lin(img), conv(img), atol=1e-6)


def test_overlapping_patches_with_conv():
    enc = VimPatchEmbed(d_model=8, in_chans=1, image_size=16, patch_size=8, stride=4, kind="conv")
    assert enc.geometry.grid == (3, 3)
    assert enc(torch.randn(1, 1, 16, 16)).shape == (1, 10, 8)
    with pytest.raises(ValueError, match="non-overlapping"):
        VimPatchEmbed(d_model=8, in_chans=1, image_size=16, patch_size=8, stride=4, kind="linear")


def test_indivisible_size_names_both_numbers():
    with pytest.raises(ValueError, match=r"image height 30 is not divisible by the patch size 16"):
        PatchGeometry.build(30, 16)
    with pytest.raises(ValueError, match=r"image width 21 .* 8 \+ k\*6"):
        PatchGeometry.build((14, 21), 8, 6)


def test_padding_to_the_next_patch_multiple():
    g = PatchGeometry.build((30, 33), 16, pad=True)
    assert g.padded_size == (32, 48) and g.grid == (2, 3)
    enc = _identity_embed(d_model=4, in_chans=1, image_size=(3, 5), patch_size=2, pad=True)
    img = torch.arange(1, 16.).reshape(1, 1, 3, 5)
    out = enc(img)                                                          # grid 2x3
    padded = torch.zeros(1, 1, 4, 6)
    padded[..., :3, :5] = img
    p = patchify(padded, 2)
    assert torch.equal(out[:, :3], p[:, :3]) and torch.equal(out[:, 4:], p[:, 3:])


def test_wrong_input_size_is_refused():
    enc = VimPatchEmbed(d_model=8, in_chans=1, image_size=8, patch_size=4)
    with pytest.raises(ValueError, match=r"expected images \(B, 1, 8, 8\), got \(2, 1, 12, 12\)"):
        enc(torch.randn(2, 1, 12, 12))


def _keys_cubic(t: float, a: float = -0.75) -> float:
    """Keys' cubic convolution kernel (PyTorch's bicubic uses a = -0.75)."""
    t = abs(t)
    if t <= 1:
        return (a + 2) * t**3 - (a + 3) * t**2 + 1
    if t < 2:
        return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return 0.0


def _resize_1d(v: list[float], n_out: int) -> list[float]:
    """Half-pixel-centred cubic resampling with edge replication, by the definition."""
    n = len(v)
    out = []
    for i in range(n_out):
        x = (i + 0.5) * n / n_out - 0.5
        f = math.floor(x)
        out.append(sum(_keys_cubic(x - k) * v[min(max(k, 0), n - 1)] for k in range(f - 1, f + 3)))
    return out


def test_interpolation_matches_hand_written_bicubic():
    pos = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    got = interpolate_pos_embed(pos, (5, 7))
    for d in range(2):
        rows = [_resize_1d(pos[0, d, r].tolist(), 7) for r in range(3)]    # along width
        cols = [_resize_1d([rows[r][c] for r in range(3)], 5) for c in range(7)]
        want = torch.tensor(cols, dtype=torch.float64).T                   # (5, 7)
        assert torch.allclose(got[0, d], want, atol=1e-10)
    assert interpolate_pos_embed(pos, (3, 4)) is pos


def test_loading_weights_from_another_resolution_resizes_the_grid():
    small = VimPatchEmbed(d_model=8, in_chans=1, image_size=16, patch_size=4)   # grid 4x4
    big = VimPatchEmbed(d_model=8, in_chans=1, image_size=24, patch_size=4)     # grid 6x6
    state = small.state_dict()
    big.load_state_dict(state)                                           # strict
    assert big.pos_embed.shape == (1, 8, 6, 6)
    assert torch.allclose(big.pos_embed, interpolate_pos_embed(small.pos_embed, (6, 6)))
    assert torch.equal(big.cls_token, small.cls_token)
    assert torch.equal(big.cls_pos_embed, small.cls_pos_embed)
    assert torch.equal(big.proj[1].weight, small.proj[1].weight)
    assert big(torch.randn(1, 1, 24, 24)).shape == (1, 37, 8) and big.cls_index == 18
    # the state dict passed in is the caller's: not modified
    assert state["pos_embed"].shape == (1, 8, 4, 4)
    # a constant grid stays constant (the weights sum to one)
    with torch.no_grad():
        small.pos_embed.fill_(0.25)
    big.load_state_dict(small.state_dict())
    assert torch.allclose(big.pos_embed, torch.full_like(big.pos_embed, 0.25))


def test_loading_into_a_wrapping_model():
    """The hook works under a prefix (as inside SequenceModel's backbone.encoder)."""
    a = nn.Sequential(VimPatchEmbed(d_model=8, in_chans=3, image_size=8, patch_size=4))
    b = nn.Sequential(VimPatchEmbed(d_model=8, in_chans=3, image_size=12, patch_size=4))
    b.load_state_dict(a.state_dict())
    assert b[0].pos_embed.shape == (1, 8, 3, 3)
