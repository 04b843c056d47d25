"""Throughput counts patches: `ImagesTask.num_symbols` is images x patches per image (an
image batch's "input" is (B, C, H, W), whose dim 1 is the channel count), and the trainer's
`symbols_per_s` comes from the task's hook."""
import torch

from bytessm.task import Task
from bytessm.tasks.images import ImagesTask
from bytessm.train import train

from image_fixtures import make_idx


def test_sequence_default_is_batch_times_length():
    task = Task(cfg=None)
    assert task.num_symbols({"input": torch.zeros(3, 50, dtype=torch.long)}) == 150
    assert task.num_symbols({"input": torch.zeros(3, 50, 8)}) == 150      # (B, L, F) vectors


def test_images_count_patches_not_channels(images_cfg):
    task = ImagesTask(images_cfg("task.num_classes=10", "task.data.channels=3",
                                 "task.image_size=[12,16]", "task.patch_size=4"))
    batch = {"input": torch.zeros(5, 3, 12, 16), "label": torch.zeros(5, dtype=torch.long)}
    assert task.geometry.num_patches == 3 * 4
    assert task.num_symbols(batch) == 5 * 12                               # not 5 * 3


def test_trainer_counts_through_the_hook(images_cfg, tmp_path, monkeypatch):
    make_idx(tmp_path / "data", "FashionMNIST", n_train=16, n_test=8)
    counted = []
    real = ImagesTask.num_symbols

    def spy(self, batch):
        counted.append((tuple(batch["input"].shape), real(self, batch)))
        return counted[-1][1]

    monkeypatch.setattr(ImagesTask, "num_symbols", spy)
    train(images_cfg(f"task.data.root={tmp_path / 'data'}", "task.data.valid_size=4",
                     "task.patch_size=7", "trainer.max_steps=2", "trainer.batch_size=4",
                     "trainer.grad_accum=2", "trainer.progress=false", "trainer.eval_every=0",
                     "trainer.eval_batches=1", "trainer.warmup_steps=1"))
    assert counted == [((2, 1, 28, 28), 2 * 16)] * 4     # 2 steps x 2 micro-batches of 2 images
