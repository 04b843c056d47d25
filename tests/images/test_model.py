"""The Vim classifier built as the trainer builds it: bidirectional context, the head reads
the class token, and the loss / top-k metrics against hand-computed values."""
import math

import pytest
import torch
import torch.nn.functional as F

from bytessm.backbone import Backbone
from bytessm.tasks.images import ImagesTask, VimPatchEmbed
from bytessm.train.build import build_model


def _backbone(bidirectional: bool) -> Backbone:
    torch.manual_seed(0)
    enc = VimPatchEmbed(d_model=16, in_chans=1, image_size=(4, 20), patch_size=4)  # 5 patches
    return Backbone(d_model=16, n_layer=2, encoder=enc, bidirectional=bidirectional).eval()


@pytest.mark.parametrize("bidirectional", [True, False], ids=["bidirectional", "causal"])
def test_output_at_a_patch_depends_on_both_sides(bidirectional):
    """Sequence: [p0, p1, cls, p2, p3, p4]. Position 3 (patch p2) sees p0 (left) always and
    p4 (right) only when bidirectional; the causal model is the control."""
    model = _backbone(bidirectional)
    img = torch.randn(1, 1, 4, 20)
    base = model(img)
    left, right = img.clone(), img.clone()
    left[..., 0:4] += 1.0                                                  # patch p0
    right[..., 16:20] += 1.0                                               # patch p4
    d_left = (model(left)[0, 3] - base[0, 3]).abs().max()
    d_right = (model(right)[0, 3] - base[0, 3]).abs().max()
    assert d_left > 1e-4
    assert (d_right > 1e-4) == bidirectional
    if not bidirectional:
        assert d_right == 0


def test_head_reads_the_middle_class_token(images_cfg):
    cfg = images_cfg("task.num_classes=7", "task.image_size=12", "task.patch_size=4")
    task = ImagesTask(cfg)
    model = build_model(cfg, task).eval()
    assert task.causal is False and task.vocab_size is None
    assert task.geometry.num_patches == 9 and model.head.index == 4
    assert model.backbone.encoder.cls_index == 4 and model.backbone.bidirectional
    img = torch.randn(2, 1, 12, 12)
    hidden = model.backbone(img)                                            # (2, 10, D)
    assert hidden.shape == (2, 10, 16)
    assert torch.allclose(model(img), model.head.proj(hidden[:, 4]))


def test_loss_and_topk_metrics_hand_computed(images_cfg):
    task = ImagesTask(images_cfg("task.num_classes=6"))
    logits = torch.tensor([[5.0, 4, 3, 2, 1, 0],     # label 0: top-1 hit
                           [5.0, 4, 3, 2, 1, 0],     # label 4: top-5 hit only
                           [5.0, 4, 3, 2, 1, 0]])    # label 5: miss
    label = torch.tensor([0, 4, 5])
    loss, m = task.loss_and_metrics(logits, {"label": label})
    lse = math.log(sum(math.exp(v) for v in (5, 4, 3, 2, 1, 0)))
    want = ((lse - 5) + (lse - 1) + (lse - 0)) / 3
    assert loss.item() == pytest.approx(want, rel=1e-6)
    assert m["loss"][0].item() == pytest.approx(3 * want, rel=1e-6) and m["loss"][1].item() == 3
    assert m["accuracy"][0].item() == 1 and m["top5_accuracy"][0].item() == 2
    assert task.summarize({k: (float(s), float(c)) for k, (s, c) in m.items()})["accuracy"] == \
        pytest.approx(1 / 3)


def test_mixup_loss_is_the_weighted_pair(images_cfg):
    task = ImagesTask(images_cfg("task.num_classes=4", "task.label_smoothing=0.1"))
    logits = torch.randn(3, 4)
    batch = {"label": torch.tensor([0, 1, 2]), "mix_label": torch.tensor([3, 3, 0]),
             "mix_lam": torch.tensor([0.25, 1.0, 0.5])}
    loss, _ = task.loss_and_metrics(logits, batch)
    ce = lambda y: F.cross_entropy(logits, y, reduction="none", label_smoothing=0.1)  # noqa: E731
    want = (batch["mix_lam"] * ce(batch["label"]) + (1 - batch["mix_lam"]) * ce(batch["mix_label"])).mean()
    assert torch.allclose(loss, want)


def test_fewer_than_five_classes_top5_is_all(images_cfg):
    task = ImagesTask(images_cfg("task.num_classes=3"))
    _, m = task.loss_and_metrics(torch.randn(4, 3), {"label": torch.tensor([0, 1, 2, 0])})
    assert m["top5_accuracy"][0].item() == 4


def test_presets_match_vim_sizes(images_cfg):
    """Vim-Ti/S/B at 224x224, patch 16, 1000 classes: 7M / 26M / 98M parameters (paper)."""
    want = {"vim_tiny": 7.1, "vim_small": 25.8, "vim_base": 97.6}
    for name, millions in want.items():
        cfg = images_cfg(f"model={name}", "task.image_size=224", "task.patch_size=16",
                         "task.data.channels=3", "task.num_classes=1000", small=False)
        with torch.device("meta"):
            model = build_model(cfg, ImagesTask(cfg))
        n = sum(p.numel() for p in model.parameters()) / 1e6
        assert n == pytest.approx(millions, abs=0.1), name
