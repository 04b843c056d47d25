"""Augmentation (torchvision.transforms.v2) and the map-style dataset the trainer reads.

Training:   RandomResizedCrop -> horizontal flip -> [RandAugment] -> float in [0, 1] ->
            Normalize, and optionally mixup with a second image of the split.
Evaluation: Resize (shorter side to size / crop_pct) -> CenterCrop -> float -> Normalize.

Determinism (the trainer's contract, bytessm/task.py): sample k is a pure function of
(seed, k). torchvision's v2 transforms draw their parameters from torch's global CPU
generator, so each training sample runs its transforms inside `torch.random.fork_rng`
with the global generator seeded from `index_generator(seed, k)`; the caller's RNG state is
left untouched. The index does not change between epochs, so by itself an image would get
the same crop every epoch: `views` > 1 makes the training set `views` times longer, index k
showing image k mod N with its own augmentation, so every pass over the (shuffled) longer
set shows each image under `views` different augmentations.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from bytessm.task import index_generator

from .data import Source

#: The trainer's sampler reads sets of at least 2^24 samples in index order, unshuffled
#: (bytessm/train/data.py): a training set made that long by `views` would not be shuffled.
MAX_TRAIN_LEN = 2**24 - 1


def _size(image_size) -> list[int]:
    return [int(image_size), int(image_size)] if isinstance(image_size, int) else \
        [int(s) for s in image_size]


def train_transform(*, image_size, mean, std, crop_scale=(0.08, 1.0),
                    crop_ratio=(3 / 4, 4 / 3), hflip: float = 0.5, randaugment: bool = False,
                    randaugment_ops: int = 2, randaugment_magnitude: int = 9) -> v2.Compose:
    """uint8 (C, H, W) -> float32 (C, *image_size), normalized. crop_scale None: no crop,
    resize only."""
    size = _size(image_size)
    ops = [v2.RandomResizedCrop(size, scale=tuple(crop_scale), ratio=tuple(crop_ratio),
                                antialias=True)
           if crop_scale is not None else v2.Resize(size, antialias=True)]
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(hflip))
    if randaugment:
        ops.append(v2.RandAugment(num_ops=randaugment_ops, magnitude=randaugment_magnitude))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(ops)


def eval_transform(*, image_size, mean, std, crop_pct: float = 1.0) -> v2.Compose:
    """Resize so the center crop keeps `crop_pct` of the shorter side, crop, normalize."""
    size = _size(image_size)
    resize = [round(s / crop_pct) for s in size]
    return v2.Compose([
        v2.Resize(resize[0] if size[0] == size[1] else resize, antialias=True),
        v2.CenterCrop(size), v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std))])


class ImageDataset(Dataset):
    """Samples {"input": (C, H, W) float32, "label": () int64}; with mixup also
    "mix_label" () int64 and "mix_lam" () float32, the weight of "label" (1 - of mix_label).

    `augment=False` (evaluation): the transform must be deterministic, length = N.
    `augment=True`: length N * views; index k shows image k % N, randomness from (seed, k).
    """

    def __init__(self, source: Source, transform: v2.Compose, *, augment: bool, seed: int = 0,
                 views: int = 1, mixup_alpha: float = 0.0, salt: str = "train"):
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        if not augment and (views != 1 or mixup_alpha > 0):
            raise ValueError("views and mixup are training augmentations (augment=True)")
        self.source, self.transform = source, transform
        self.augment, self.seed, self.views = augment, int(seed), int(views)
        self.mixup_alpha, self.salt = float(mixup_alpha), salt

    def __len__(self) -> int:
        return len(self.source) * self.views

    def _item(self, i: int) -> Tensor:
        return self.transform(self.source.image(i))

    def __getitem__(self, k: int) -> dict[str, Tensor]:
        if not 0 <= k < len(self):
            raise IndexError(f"index {k} out of range for {len(self)} samples")
        n = len(self.source)
        i = k % n
        label = self.source.labels[i]
        if not self.augment:
            return {"input": self._item(i), "label": label}
        seed = index_generator(self.seed, k, salt=f"images-{self.salt}").initial_seed()
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)      # CPU only; CUDA RNG untouched
            x = self._item(i)
            out = {"input": x, "label": label}
            if self.mixup_alpha > 0:
                # mixup (Zhang et al. 2018): x = lam x_i + (1 - lam) x_j, lam ~ Beta(a, a)
                j = int(torch.randint(n, ()))
                lam = torch.distributions.Beta(self.mixup_alpha, self.mixup_alpha).sample()
                out["input"] = lam * x + (1 - lam) * self._item(j)
                out["mix_label"] = self.source.labels[j]
                out["mix_lam"] = lam.float()
        return out
