"""Vision Mamba's encoder: patch embedding, absolute position embedding, middle class token.

    images (B, C, H, W)
      -> [pad right/bottom to a patch-aligned size, when asked]
      -> patches: einops `b c (h p1) (w p2) -> b (h w) (p1 p2 c)` + Linear   (stride == patch)
                  or a Conv2d(kernel=patch, stride=stride)                 (any stride)
      -> + position embedding of each patch's grid cell
      -> class token (+ its own position embedding) inserted at index N // 2
    tokens (B, N + 1, D), N = grid_h * grid_w, patches in row-major order

Vim (Zhu et al. 2024, `vim/models_mamba.py`, `use_middle_cls_token=True`) puts the class
token in the middle so that both scan directions reach it after about half the patches.
Vim keeps one (1, N + 1, D) position table indexed by sequence position; here the patch
positions are kept as a grid (1, D, grid_h, grid_w) and the class token's as (1, 1, D),
the same parameters laid out so that resizing the grid needs no index bookkeeping.

Resolution changes: the encoder reads images of exactly `image_size` (the class token's
index, hence the classifier, depends on it). To fine-tune or evaluate at another
resolution, build the model at the new size and load the old weights: the position grid
in the state dict is resized bicubically on load (DeiT's/Vim's `interpolate_pos_embed`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from einops.layers.torch import Rearrange
from torch import Tensor, nn

__all__ = ["PatchGeometry", "VimPatchEmbed", "patchify", "unpatchify", "interpolate_pos_embed"]


def _pair(x) -> tuple[int, int]:
    if isinstance(x, int):
        return (x, x)
    h, w = x
    return (int(h), int(w))


@dataclass(frozen=True)
class PatchGeometry:
    """How an image of `image_size` is cut into patches.

    `padded_size` is the image size after zero padding on the right and bottom (equal to
    `image_size` unless `pad=True` and the size does not fit the patch/stride); the grid is
    ((H' - patch) / stride + 1, (W' - patch) / stride + 1).
    """

    image_size: tuple[int, int]
    patch_size: int
    stride: int
    padded_size: tuple[int, int]

    @classmethod
    def build(cls, image_size, patch_size: int, stride: int | None = None, *,
              pad: bool = False) -> "PatchGeometry":
        """Raises ValueError naming both numbers when the size does not fit and pad=False."""
        size = _pair(image_size)
        stride = patch_size if stride is None else int(stride)
        if patch_size <= 0 or stride <= 0 or min(size) <= 0:
            raise ValueError(f"image size {size}, patch size {patch_size} and stride {stride} "
                             "must be positive")
        if stride > patch_size:
            raise ValueError(f"patch stride {stride} is larger than the patch size "
                             f"{patch_size}: pixels between patches would be skipped")
        padded = []
        for side, name in zip(size, ("height", "width")):
            fits = side >= patch_size and (side - patch_size) % stride == 0
            if fits:
                padded.append(side)
            elif pad:
                n = max(0, -(-(side - patch_size) // stride))   # ceil, >= 0
                padded.append(patch_size + n * stride)
            else:
                what = (f"divisible by the patch size {patch_size}" if stride == patch_size else
                        f"of the form {patch_size} + k*{stride} (patch {patch_size}, stride "
                        f"{stride})")
                raise ValueError(f"image {name} {side} is not {what}; pick another image size "
                                 f"or patch size, or pad the image (pad_to_patch=true)")
        return cls(size, patch_size, stride, (padded[0], padded[1]))

    @property
    def grid(self) -> tuple[int, int]:
        H, W = self.padded_size
        return ((H - self.patch_size) // self.stride + 1, (W - self.patch_size) // self.stride + 1)

    @property
    def num_patches(self) -> int:
        gh, gw = self.grid
        return gh * gw

    @property
    def cls_index(self) -> int:
        """The class token's position in the (N + 1)-token sequence: N // 2 (Vim)."""
        return self.num_patches // 2

    @property
    def seq_len(self) -> int:
        return self.num_patches + 1


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """images (B, C, H, W) -> patches (B, N, p*p*C), row-major over the grid, each patch's
    pixels row-major with the channels innermost (ViT's layout)."""
    return rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size)


def unpatchify(patches: Tensor, patch_size: int, grid: tuple[int, int]) -> Tensor:
    """The inverse of `patchify`: patches (B, N, p*p*C) -> images (B, C, gh*p, gw*p)."""
    return rearrange(patches, "b (h w) (p1 p2 c) -> b c (h p1) (w p2)",
                     h=grid[0], w=grid[1], p1=patch_size, p2=patch_size)


def interpolate_pos_embed(pos: Tensor, grid: tuple[int, int]) -> Tensor:
    """A position grid (1, D, gh, gw) resized bicubically to (1, D, *grid) (computed in at
    least float32; half-pixel centres, edges replicated, as DeiT's `interpolate_pos_embed`)."""
    if tuple(pos.shape[-2:]) == tuple(grid):
        return pos
    x = pos if pos.dtype == torch.float64 else pos.float()
    out = F.interpolate(x, size=tuple(grid), mode="bicubic", align_corners=False)
    return out.to(pos.dtype)


class VimPatchEmbed(nn.Module):
    """images (B, C, H, W) float -> tokens (B, N + 1, D) with the class token at `cls_index`.

    `kind="linear"`: einops Rearrange into (p*p*C)-vectors + nn.Linear (non-overlapping
    patches only, stride == patch); `kind="conv"`: Conv2d(kernel=patch, stride=stride),
    which also allows overlapping patches (Vim's stride-8 fine-tuning). Both compute the
    same function when stride == patch (the conv kernel is the Linear's weight reshaped).
    """

    #: Resized to this model's grid by the load hook below (checkpoint.load_weights asks).
    resized_on_load = ("pos_embed",)

    def __init__(self, *, d_model: int, in_chans: int, image_size, patch_size: int,
                 stride: int | None = None, kind: str = "linear", pad: bool = False):
        super().__init__()
        self.geometry = g = PatchGeometry.build(image_size, patch_size, stride, pad=pad)
        if kind not in ("linear", "conv"):
            raise ValueError(f"patch embedding kind must be 'linear' or 'conv', got {kind!r}")
        if kind == "linear" and g.stride != g.patch_size:
            raise ValueError(f"a linear patch embedding needs non-overlapping patches (stride "
                             f"{g.stride} != patch size {g.patch_size}); use the conv one")
        self.kind, self.in_chans = kind, in_chans
        if kind == "linear":
            self.proj = nn.Sequential(
                Rearrange("b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size),
                nn.Linear(patch_size * patch_size * in_chans, d_model))
        else:
            self.proj = nn.Conv2d(in_chans, d_model, kernel_size=patch_size, stride=g.stride)
        gh, gw = g.grid
        self.pos_embed = nn.Parameter(torch.zeros(1, d_model, gh, gw))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model))
        self.cls_pos_embed = nn.Parameter(torch.zeros(1, 1, d_model))
        for p in (self.pos_embed, self.cls_token, self.cls_pos_embed):
            nn.init.trunc_normal_(p, std=0.02)          # Vim / DeiT init
            p._no_weight_decay = True
        self.register_load_state_dict_pre_hook(self._resize_loaded_pos_embed)

    @property
    def cls_index(self) -> int:
        return self.geometry.cls_index

    def _resize_loaded_pos_embed(self, module, state_dict, prefix, *args) -> None:
        """Weights trained at another resolution: resize their position grid to ours."""
        key = prefix + "pos_embed"
        pos = state_dict.get(key)
        if pos is not None and pos.dim() == 4 and pos.shape[:2] == self.pos_embed.shape[:2]:
            state_dict[key] = interpolate_pos_embed(pos, tuple(self.pos_embed.shape[-2:]))

    def forward(self, images: Tensor) -> Tensor:
        g = self.geometry
        if images.dim() != 4 or images.shape[1] != self.in_chans \
                or tuple(images.shape[-2:]) != g.image_size:
            raise ValueError(f"expected images (B, {self.in_chans}, {g.image_size[0]}, "
                             f"{g.image_size[1]}), got {tuple(images.shape)}; to run at another "
                             "resolution build the model at that image size and load these "
                             "weights (position embeddings are interpolated on load)")
        pad_h, pad_w = g.padded_size[0] - g.image_size[0], g.padded_size[1] - g.image_size[1]
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h))                   # (B, C, H', W')
        x = self.proj(images)
        if self.kind == "conv":
            x = rearrange(x, "b d h w -> b (h w) d")                        # (B, N, D)
        x = x + rearrange(self.pos_embed, "one d h w -> one (h w) d")      # (B, N, D)
        cls = (self.cls_token + self.cls_pos_embed).expand(x.shape[0], -1, -1)  # (B, 1, D)
        m = g.cls_index
        return torch.cat([x[:, :m], cls, x[:, m:]], dim=1)                 # (B, N + 1, D)
