"""Images: a bidirectional Vision Mamba (Vim, Zhu et al. 2024) classifier over patches.

    images (B, C, H, W) --VimPatchEmbed--> tokens (B, N + 1, D), class token at N // 2
      --Backbone(bidirectional=True): BiMamba blocks, RMSNorm--> hidden (B, N + 1, D)
      --ClassifierHead(pool="index", index=N // 2)--> logits (B, classes)

Data: task.data.dataset = imagefolder | cifar10 | cifar100 | mnist | fashion_mnist read
from task.data.root in the published layouts (data.py), augmented with torchvision v2
(transforms.py). Metrics: cross-entropy, top-1 and top-5 accuracy.

The sequence length is set by the image geometry: (image_size / patch)^2 + 1 tokens for
non-overlapping patches. trainer.seq_len plays no part; task.seq_len is only a record of
the default geometry's length.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from bytessm.nn import ClassifierHead
from bytessm.task import ConfigError, Metrics, Task

from . import data as image_data
from .patch import PatchGeometry, VimPatchEmbed, interpolate_pos_embed, patchify, unpatchify
from .transforms import MAX_TRAIN_LEN, ImageDataset, eval_transform, train_transform

__all__ = ["ImagesTask", "VimPatchEmbed", "PatchGeometry", "ImageDataset", "patchify",
           "unpatchify", "interpolate_pos_embed"]


class ImagesTask(Task):
    vocab_size = None     # images come in through the task's patch embedding
    causal = False        # classification of a whole image: the model is bidirectional

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        t = cfg.task
        model = cfg.get("model")
        if model is not None and not model.get("bidirectional", False):
            raise ConfigError(
                f"task images needs a bidirectional model (BiMamba blocks, Vision Mamba): "
                f"model {model.get('name')!r} has model.bidirectional=false; use model=vim_cpu "
                f"or vim_tiny/vim_small/vim_base, or set model.bidirectional=true")
        d = t.data
        self.dataset = str(d.dataset)
        if self.dataset not in image_data.DATASETS:
            raise ConfigError(f"task.data.dataset must be one of "
                              f"{', '.join(image_data.DATASETS)}, got {self.dataset!r}")
        self.channels = int(d.get("channels") or image_data.NATIVE_CHANNELS[self.dataset])
        if self.channels not in (1, 3):
            raise ConfigError(f"task.data.channels must be 1 or 3, got {self.channels}")
        self.mean, self.std = self._stats(d)
        try:
            self.geometry = PatchGeometry.build(t.image_size, int(t.patch_size),
                                                t.get("patch_stride"),
                                                pad=bool(t.get("pad_to_patch", False)))
        except ValueError as e:
            raise ConfigError(f"task.image_size={t.image_size}, task.patch_size={t.patch_size}: "
                              f"{e}") from e
        if t.patch_embed not in ("linear", "conv"):
            raise ConfigError(f"task.patch_embed must be linear or conv, got {t.patch_embed!r}")
        if t.patch_embed == "linear" and self.geometry.stride != self.geometry.patch_size:
            raise ConfigError(f"task.patch_stride={self.geometry.stride} differs from "
                              f"task.patch_size={self.geometry.patch_size}: overlapping patches "
                              "need task.patch_embed=conv")
        a = t.augment
        if int(a.views) < 1:
            raise ConfigError(f"task.augment.views must be >= 1, got {a.views}")
        if float(a.mixup_alpha) < 0:
            raise ConfigError(f"task.augment.mixup_alpha must be >= 0, got {a.mixup_alpha}")
        if not 0 < float(t.get("eval_crop_pct", 1.0)) <= 1:
            raise ConfigError(f"task.eval_crop_pct must be in (0, 1], got {t.eval_crop_pct}")
        self._num_classes: int | None = None

    def _stats(self, d) -> tuple[tuple[float, ...], tuple[float, ...]]:
        mean, std = image_data.STATS[self.dataset]
        if len(mean) != self.channels:  # RGB statistics for a grayscale model: luminance
            lum = (0.299, 0.587, 0.114)
            mean = (sum(w * m for w, m in zip(lum, mean)),)
            std = (sum(w * s for w, s in zip(lum, std)),)
            if self.channels == 3:
                mean, std = mean * 3, std * 3
        mean = tuple(d.get("mean") or mean)
        std = tuple(d.get("std") or std)
        if len(mean) != self.channels or len(std) != self.channels or min(std) <= 0:
            raise ConfigError(f"task.data.mean / task.data.std need {self.channels} values "
                              f"(std > 0), got {list(mean)} / {list(std)}")
        return mean, std

    @property
    def num_classes(self) -> int:
        if self._num_classes is None:
            n = self.cfg.task.get("num_classes")
            self._num_classes = int(n) if n else image_data.num_classes(
                self.dataset, str(self.cfg.task.data.root))
        return self._num_classes

    def build_datasets(self):
        t, seed = self.cfg.task, int(self.cfg.trainer.seed)
        train, valid, test = image_data.read_splits(
            self.dataset, str(t.data.root), self.channels, valid_size=int(t.data.valid_size))
        top = int(max(train.labels.max(), valid.labels.max(), test.labels.max()))
        if top >= self.num_classes:
            raise ConfigError(f"the {self.dataset} data at {t.data.root} has label {top} but "
                              f"the head has task.num_classes={self.num_classes}")
        a = t.augment
        if len(train) * int(a.views) > MAX_TRAIN_LEN:
            raise ConfigError(f"task.augment.views={a.views} x {len(train)} training images "
                              f"exceeds {MAX_TRAIN_LEN} samples, past which the trainer stops "
                              "shuffling; use fewer views")
        stats = dict(image_size=self.geometry.image_size, mean=self.mean, std=self.std)
        tt = train_transform(**stats, crop_scale=a.crop_scale, crop_ratio=a.crop_ratio,
                             hflip=float(a.hflip), randaugment=bool(a.randaugment),
                             randaugment_ops=int(a.randaugment_ops),
                             randaugment_magnitude=int(a.randaugment_magnitude))
        et = eval_transform(**stats, crop_pct=float(t.get("eval_crop_pct", 1.0)))
        return (ImageDataset(train, tt, augment=True, seed=seed, views=int(a.views),
                             mixup_alpha=float(a.mixup_alpha)),
                ImageDataset(valid, et, augment=False),
                ImageDataset(test, et, augment=False))

    def build_encoder(self, d_model: int) -> nn.Module:
        g, t = self.geometry, self.cfg.task
        return VimPatchEmbed(d_model=d_model, in_chans=self.channels, image_size=g.image_size,
                             patch_size=g.patch_size, stride=g.stride, kind=str(t.patch_embed),
                             pad=g.padded_size != g.image_size)

    def build_head(self, d_model: int) -> nn.Module:
        return ClassifierHead(d_model, self.num_classes, pool="index",
                              index=self.geometry.cls_index)

    def num_symbols(self, batch: dict[str, Tensor]) -> int:
        """Patches: images (B, C, H, W) x patches per image. The class token is not counted,
        so symbols_per_s is the rate at which image content is read."""
        return batch["input"].shape[0] * self.geometry.num_patches

    def loss_and_metrics(self, head_out: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        logits, label = head_out.float(), batch["label"]                 # (B, K), (B,)
        smoothing = float(self.cfg.task.get("label_smoothing", 0.0))
        nll = F.cross_entropy(logits, label, reduction="none", label_smoothing=smoothing)
        if "mix_label" in batch:   # mixup: the same mixture of the two labels' losses
            lam = batch["mix_lam"].to(logits)
            nll = lam * nll + (1 - lam) * F.cross_entropy(
                logits, batch["mix_label"], reduction="none", label_smoothing=smoothing)
        n = torch.full((), float(len(label)), device=logits.device)  # a fill: no host copy
        k = min(5, logits.shape[-1])
        topk = logits.topk(k, dim=-1).indices                                # (B, k)
        hit = topk == label[:, None]
        total = nll.sum()
        return total / n, {"loss": (total.detach(), n),
                           "accuracy": (hit[:, 0].sum().float(), n),
                           "top5_accuracy": (hit.any(-1).sum().float(), n)}
