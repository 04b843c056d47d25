"""Image datasets read from a local root in their published layouts; nothing is downloaded.

    dataset         files under task.data.root                                reader
    mnist           MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte        torchvision MNIST
    fashion_mnist   FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte torchvision FashionMNIST
    cifar10         cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} pickle (below)
    cifar100        cifar-100-python/{train,test,meta}                            pickle (below)
    imagefolder     train/<class>/*.png|jpg..., val/<class>/..., test/<class>/... torchvision ImageFolder

CIFAR batches are read here (a few lines of pickle) rather than through torchvision's
CIFAR10, which refuses any file whose md5 differs from the published one, so a test could
not build a small file in the same format.

A `Source` gives uint8 images (C, H, W) in the requested number of channels and integer
labels; modes are converted on the way (grayscale -> RGB by repeating, RGB -> grayscale by
luminance, RGBA / LA -> alpha dropped, palette -> RGB(A) first).
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision import datasets
from torchvision.transforms.v2 import functional as TF

from bytessm.task import DataError

DATASETS = ("imagefolder", "cifar10", "cifar100", "mnist", "fashion_mnist")

#: Channels of each dataset's files (imagefolder: decoded to RGB unless asked otherwise).
NATIVE_CHANNELS = {"mnist": 1, "fashion_mnist": 1, "cifar10": 3, "cifar100": 3, "imagefolder": 3}

#: Per-channel mean/std of the training images (pixel values in [0, 1]); imagefolder:
#: ImageNet's. For a 1-channel model on RGB data, the luminance of these is used.
STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "batches.meta", "labels", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_labels",
                 "fine_label_names"),
}


@dataclass
class Source:
    """A split's images and labels. `images` is a uint8 tensor (N, C, H, W) for the array
    formats, or None with `files` (paths) for ImageFolder, decoded one at a time."""

    labels: Tensor                 # (N,) int64
    channels: int
    images: Tensor | None = None   # (N, C, H, W) uint8
    files: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Tensor:
        """uint8 (C, H, W) with C == self.channels."""
        if self.images is not None:
            return self.images[i]
        return load_image(self.files[i], self.channels)


def convert_channels(images: Tensor, channels: int) -> Tensor:
    """uint8 (..., C, H, W) with C in {1, 3} -> (..., channels, H, W)."""
    c = images.shape[-3]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.expand(*images.shape[:-3], 3, *images.shape[-2:]).contiguous()
    if c == 3 and channels == 1:
        return TF.rgb_to_grayscale(images, num_output_channels=1)
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels")


def pil_to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode -> "L" (channels=1) or "RGB" (channels=3); alpha is dropped."""
    if img.mode == "P":  # palette: transparency, if any, must go through RGBA
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode.startswith("I;16") or img.mode == "I":  # 16-bit grayscale: to 8 bits
        # PIL's own convert("L") would clip everything above 255 to white
        a = np.asarray(img, dtype=np.float64) / 257.0                      # 65535 -> 255
        img = Image.fromarray(a.round().clip(0, 255).astype(np.uint8), "L")
    return img.convert("L" if channels == 1 else "RGB")


def load_image(path: str, channels: int) -> Tensor:
    try:
        with Image.open(path) as img:
            return TF.pil_to_tensor(pil_to_mode(img, channels))       # (C, H, W) uint8
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e


def _missing(root: str, names: list[str]) -> list[str]:
    return [n for n in names if not os.path.isfile(os.path.join(root, n))]


def _missing_error(dataset: str, folder: str, names: list[str], missing: list[str],
                   hint: str) -> DataError:
    return DataError(
        f"{dataset}: expected {len(names)} files in {folder}: {', '.join(names)}; missing: "
        f"{', '.join(missing)}. {hint}")


def read_idx(dataset: str, root: str, channels: int) -> tuple[Source, Source]:
    """MNIST / Fashion-MNIST idx files -> (train, test)."""
    cls = datasets.MNIST if dataset == "mnist" else datasets.FashionMNIST
    raw = os.path.join(root, cls.__name__, "raw")
    missing = _missing(raw, list(_IDX_FILES))
    if missing:
        gz = [n + ".gz" for n in missing if os.path.isfile(os.path.join(raw, n + ".gz"))]
        hint = (f"Found {', '.join(gz)}: decompress them (gunzip -k), torchvision reads the "
                "uncompressed files." if gz else
                "scripts/prepare_fashion_mnist.py places Debian's Fashion-MNIST there."
                if dataset == "fashion_mnist" else "Place the published idx files there.")
        raise _missing_error(dataset, raw, list(_IDX_FILES), missing, hint)
    out = []
    for train in (True, False):
        try:
            ds = cls(root, train=train, download=False)
        except Exception as e:  # torchvision asserts on a malformed header
            raise DataError(f"{dataset}: malformed idx file in {raw}: {e!r}") from e
        images = ds.data
        if images.dim() != 3 or len(images) != len(ds.targets):
            raise DataError(f"{dataset}: {raw} holds {tuple(images.shape)} images but "
                            f"{len(ds.targets)} labels; expected (N, H, W) and N labels")
        images = convert_channels(images[:, None], channels)               # (N, C, H, W)
        out.append(Source(labels=ds.targets.long(), channels=channels, images=images))
    return out[0], out[1]


def _unpickle(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DataError(f"cannot read CIFAR batch {path}: {e!r}") from e


def read_cifar(dataset: str, root: str, channels: int) -> tuple[Source, Source, list[str]]:
    """CIFAR-10/100 python-pickle batches -> (train, test, class names)."""
    sub, train_files, test_files, meta, label_key, names_key = _CIFAR[dataset]
    folder = os.path.join(root, sub)
    names = train_files + test_files + [meta]
    missing = _missing(folder, names)
    if missing:
        raise _missing_error(dataset, folder, names, missing,
                             "Unpack the published python-version archive into the root.")
    classes = list(_unpickle(os.path.join(folder, meta))[names_key])

    def load(files: list[str]) -> Source:
        datas, labels = [], []
        for name in files:
            path = os.path.join(folder, name)
            batch = _unpickle(path)
            if "data" not in batch or label_key not in batch:
                raise DataError(f"{path}: expected a dict with 'data' and '{label_key}', found "
                                f"keys {sorted(batch)}")
            data = torch.as_tensor(batch["data"])
            if data.dim() != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != torch.uint8:
                raise DataError(f"{path}: expected 'data' uint8 (N, 3072), found "
                                f"{data.dtype} {tuple(data.shape)}")
            if len(batch[label_key]) != len(data):
                raise DataError(f"{path}: {len(data)} images but {len(batch[label_key])} labels")
            # each row: the 1024 red values, then green, then blue, each row-major 32x32
            datas.append(data.reshape(-1, 3, 32, 32))                      # (n, 3, 32, 32)
            labels.append(torch.as_tensor(batch[label_key], dtype=torch.long))
        labels = torch.cat(labels)
        bad = labels[(labels < 0) | (labels >= len(classes))]
        if len(bad):
            raise DataError(f"{folder}: label {int(bad[0])} out of range for the "
                            f"{len(classes)} classes of {meta}")
        return Source(labels=labels, channels=channels,
                      images=convert_channels(torch.cat(datas), channels))

    return load(train_files), load(test_files), classes


class _FolderWithClasses(datasets.ImageFolder):
    """ImageFolder whose classes are the training folder's, so indices agree across splits."""

    def __init__(self, root: str, classes: list[str]):
        self._fixed = classes
        super().__init__(root, allow_empty=True)

    def find_classes(self, directory):
        found = sorted(e.name for e in os.scandir(directory) if e.is_dir())
        extra = sorted(set(found) - set(self._fixed))
        if extra:
            raise DataError(f"{directory} has class folders {extra} that the training folder "
                            f"does not have (classes: {self._fixed})")
        return self._fixed, {c: i for i, c in enumerate(self._fixed)}


def imagefolder_classes(root: str) -> list[str]:
    train = os.path.join(root, "train")
    if not os.path.isdir(train):
        raise DataError(f"imagefolder: expected {train}/<class>/<image> (and val/ or test/ "
                        f"beside it); {train} does not exist")
    classes = sorted(e.name for e in os.scandir(train) if e.is_dir())
    if not classes:
        raise DataError(f"imagefolder: {train} has no class folders; expected "
                        f"{train}/<class>/<image>")
    return classes


def read_imagefolder(root: str, channels: int) -> tuple[Source, dict[str, Source], list[str]]:
    """<root>/train/<class>/* and any of val/, test/ -> (train, {split: source}, classes)."""
    classes = imagefolder_classes(root)
    splits = {}
    for split in ("train", "val", "test"):
        folder = os.path.join(root, split)
        if not os.path.isdir(folder):
            continue
        try:
            ds = _FolderWithClasses(folder, classes)
        except FileNotFoundError as e:
            raise DataError(f"imagefolder: {e}") from e
        if not ds.samples:
            raise DataError(f"imagefolder: no images found in {folder}/<class>/ (looked for "
                            f"extensions {', '.join(datasets.folder.IMG_EXTENSIONS)})")
        splits[split] = Source(labels=torch.tensor(ds.targets, dtype=torch.long),
                               channels=channels, files=[p for p, _ in ds.samples])
    if "val" not in splits and "test" not in splits:
        raise DataError(f"imagefolder: expected {os.path.join(root, 'val')} or "
                        f"{os.path.join(root, 'test')} beside {os.path.join(root, 'train')} "
                        "(the evaluation images); found neither")
    return splits.pop("train"), splits, classes


def num_classes(dataset: str, root: str) -> int:
    """Classes without reading images (the head is built before the data is loaded)."""
    if dataset == "cifar100":
        return 100
    if dataset == "imagefolder":
        return len(imagefolder_classes(root))
    return 10


def read_splits(dataset: str, root: str, channels: int, *, valid_size: int
                ) -> tuple[Source, Source, Source]:
    """(train, valid, test) sources. The array formats (and ImageFolder with only one of
    val/, test/) have no validation split: `valid_size` training images are held out,
    chosen by a fixed permutation (the same whatever the trainer's seed)."""
    if dataset not in DATASETS:
        raise DataError(f"task.data.dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    if not os.path.isdir(root):
        raise DataError(f"{dataset}: data root {root} does not exist (task.data.root)")
    if dataset in ("mnist", "fashion_mnist"):
        train, test = read_idx(dataset, root, channels)
        valid = None
    elif dataset in _CIFAR:
        train, test, _ = read_cifar(dataset, root, channels)
        valid = None
    else:
        train, evals, _ = read_imagefolder(root, channels)
        test = evals.get("test", evals.get("val"))
        valid = evals["val"] if len(evals) == 2 else None
    if valid is None:
        train, valid = hold_out(train, valid_size, where=f"{dataset} at {root}")
    return train, valid, test


def hold_out(src: Source, n: int, *, where: str) -> tuple[Source, Source]:
    """Split `n` samples off `src` by a fixed permutation -> (rest, held out)."""
    if not 0 < n < len(src):
        raise DataError(f"task.data.valid_size={n} must be between 1 and the training set's "
                        f"size minus one ({len(src) - 1}) for {where}")
    perm = torch.randperm(len(src), generator=torch.Generator().manual_seed(0))
    keep, held = perm[:-n].sort().values, perm[-n:].sort().values

    def take(idx: Tensor) -> Source:
        return Source(labels=src.labels[idx], channels=src.channels,
                      images=None if src.images is None else src.images[idx],
                      files=None if src.files is None else [src.files[i] for i in idx.tolist()])

    return take(keep), take(held)
