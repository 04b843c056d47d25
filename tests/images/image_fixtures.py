"""Tiny datasets in the real published layouts, written by the tests.

- MNIST / Fashion-MNIST idx (LeCun's format): big-endian magic 0x0000 08 <ndim>, then
  ndim int32 sizes, then the uint8 values; <root>/<MNIST|FashionMNIST>/raw/*-ubyte.
- CIFAR-10/100 python version: pickled dicts, 'data' uint8 (N, 3072) (R plane, G plane,
  B plane, each 32x32 row-major) and 'labels' / 'fine_labels'; a meta pickle with the
  class names.
- ImageFolder: <root>/<split>/<class>/<image>, PNGs of mixed modes here.
"""
from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def write_idx(path: Path, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + array.tobytes())


def make_idx(root: Path, folder: str = "FashionMNIST", n_train: int = 40, n_test: int = 20,
             size: int = 28, classes: int = 10, seed: int = 0) -> dict:
    """Images whose mean brightness encodes the label (learnable); returns the arrays."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % classes
        images = rng.integers(0, 40, (n, size, size)) + (labels * 20)[:, None, None]
        write_idx(root / folder / "raw" / f"{split}-images-idx3-ubyte", images)
        write_idx(root / folder / "raw" / f"{split}-labels-idx1-ubyte", labels)
        out[split] = (images.astype(np.uint8), labels)
    return out


def make_cifar(root: Path, kind: str = "cifar10", n_per_batch: int = 6, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    classes = 10 if kind == "cifar10" else 100
    if kind == "cifar10":
        folder, train, test, meta = "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], \
            ["test_batch"], "batches.meta"
        label_key, names = "labels", {"label_names": [f"c{i}" for i in range(classes)]}
    else:
        folder, train, test, meta = "cifar-100-python", ["train"], ["test"], "meta"
        label_key = "fine_labels"
        names = {"fine_label_names": [f"f{i}" for i in range(classes)],
                 "coarse_label_names": [f"k{i}" for i in range(20)]}
    d = root / folder
    d.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for i, name in enumerate(train + test):
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, classes, n_per_batch)]
        batch = {"batch_label": name, "data": data, label_key: labels,
                 "filenames": [f"{name}_{j}.png" for j in range(n_per_batch)]}
        if kind == "cifar100":
            batch["coarse_labels"] = [x // 5 for x in labels]
        (d / name).write_bytes(pickle.dumps(batch))
        arrays[name] = (data, labels)
    (d / meta).write_bytes(pickle.dumps(names))
    return arrays


def make_imagefolder(root: Path, splits=("train", "val"), classes=("cat", "dog", "eel"),
                     per_class: int = 3, size=(20, 24)) -> None:
    """PNGs in RGB, grayscale (L), RGBA and palette modes, of a couple of sizes."""
    modes = ["RGB", "L", "RGBA", "P"]
    k = 0
    for split in splits:
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for j in range(per_class):
                h, w = size if j % 2 == 0 else (size[1], size[0])
                rgb = np.full((h, w, 3), 60 * c, dtype=np.uint8)
                rgb[:, : w // 2, j % 3] = 200
                img = Image.fromarray(rgb, "RGB")
                mode = modes[k % len(modes)]
                k += 1
                if mode == "RGBA":
                    img = img.convert("RGBA")
                elif mode != "RGB":
                    img = img.convert(mode)
                img.save(d / f"{j}.png")
