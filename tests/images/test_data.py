"""Dataset layouts from tiny files in the published formats, mode conversion, the errors a
user sees, and determinism of the seeded augmentation."""
import numpy as np
import pytest
import torch
from PIL import Image

from bytessm.task import ConfigError, DataError
from bytessm.tasks.images import ImagesTask
from bytessm.tasks.images.data import load_image, read_splits

from image_fixtures import make_cifar, make_idx, make_imagefolder


@pytest.mark.parametrize("dataset,folder", [("fashion_mnist", "FashionMNIST"), ("mnist", "MNIST")])
def test_idx_layout(tmp_path, dataset, folder):
    arrays = make_idx(tmp_path, folder, n_train=30, n_test=12)
    train, valid, test = read_splits(dataset, str(tmp_path), 1, valid_size=5)
    assert (len(train), len(valid), len(test)) == (25, 5, 12)
    images, labels = arrays["t10k"]
    assert torch.equal(test.images[:, 0], torch.from_numpy(images))
    assert test.labels.tolist() == labels.tolist()
    # train + valid is a partition of the training file (a fixed permutation)
    all_train = torch.cat([train.images, valid.images])[:, 0]
    got = sorted(map(bytes, all_train.flatten(1).numpy()))
    want = sorted(map(bytes, arrays["train"][0].reshape(30, -1)))
    assert got == want


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_pickle_layout(tmp_path, kind):
    arrays = make_cifar(tmp_path, kind, n_per_batch=6)
    train, valid, test = read_splits(kind, str(tmp_path), 3, valid_size=4)
    n_train = 30 if kind == "cifar10" else 6
    assert (len(train) + len(valid), len(test)) == (n_train, 6)
    data, labels = arrays["test_batch" if kind == "cifar10" else "test"]
    # row 0: red plane first; pixel (r, c) of channel ch is data[ch * 1024 + 32 * r + c]
    img = test.images[1]
    assert img.shape == (3, 32, 32)
    assert int(img[0, 0, 0]) == data[1, 0] and int(img[1, 2, 5]) == data[1, 1024 + 64 + 5]
    assert int(img[2, 31, 31]) == data[1, 3071]
    assert test.labels.tolist() == labels


def test_imagefolder_layout_and_modes(tmp_path):
    make_imagefolder(tmp_path, splits=("train", "val", "test"))
    train, valid, test = read_splits("imagefolder", str(tmp_path), 3, valid_size=2)
    assert (len(train), len(valid), len(test)) == (9, 9, 9)   # val/ and test/ both present
    assert sorted(set(test.labels.tolist())) == [0, 1, 2]
    for i in range(len(train)):
        assert train.image(i).shape[0] == 3 and train.image(i).dtype == torch.uint8


def test_imagefolder_without_val_holds_out_from_train(tmp_path):
    make_imagefolder(tmp_path, splits=("train", "test"), per_class=4)
    train, valid, test = read_splits("imagefolder", str(tmp_path), 3, valid_size=3)
    assert (len(train), len(valid), len(test)) == (9, 3, 12)


def test_imagefolder_class_indices_follow_train(tmp_path):
    make_imagefolder(tmp_path, splits=("train",))
    make_imagefolder(tmp_path, splits=("val",), classes=("dog", "eel"))   # no 'cat' images
    _, _, test = read_splits("imagefolder", str(tmp_path), 3, valid_size=2)
    assert sorted(set(test.labels.tolist())) == [1, 2]


def test_mode_conversion(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0                         # transparent red
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    x = load_image(str(tmp_path / "a.png"), 3)
    assert x.shape == (3, 2, 3) and x[0].eq(200).all() and x[1:].eq(0).all()  # alpha dropped
    Image.fromarray(np.full((2, 3), 77, np.uint8), "L").save(tmp_path / "g.png")
    x = load_image(str(tmp_path / "g.png"), 3)
    assert x.shape == (3, 2, 3) and x.eq(77).all()              # gray repeated in R, G, B
    # RGB to one channel: ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B)
    Image.fromarray(np.full((2, 2, 3), [100, 200, 50], np.uint8), "RGB").save(tmp_path / "c.png")
    assert load_image(str(tmp_path / "c.png"), 1).flatten().tolist() == \
        [round(0.299 * 100 + 0.587 * 200 + 0.114 * 50)] * 4
    # 16-bit grayscale is scaled to 8 bits, not clipped to white
    Image.fromarray(np.full((2, 2), 32896, np.uint16)).save(tmp_path / "w.png")
    assert load_image(str(tmp_path / "w.png"), 1).flatten().tolist() == [128] * 4
    # a palette image with a transparent entry goes through RGBA
    pal = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    pal.putpalette([10, 20, 30, 40, 50, 60])
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png")
    assert load_image(str(tmp_path / "p.png"), 3)[:, 0, 1].tolist() == [40, 50, 60]


def test_grayscale_files_for_an_rgb_model(tmp_path):
    make_idx(tmp_path, "FashionMNIST", n_train=10, n_test=4)
    _, _, test = read_splits("fashion_mnist", str(tmp_path), 3, valid_size=2)
    assert test.images.shape == (4, 3, 28, 28)
    assert torch.equal(test.images[:, 0], test.images[:, 2])


# -- errors -------------------------------------------------------------------------------

def test_missing_idx_files_are_listed(tmp_path):
    (tmp_path / "FashionMNIST" / "raw").mkdir(parents=True)
    with pytest.raises(DataError) as e:
        read_splits("fashion_mnist", str(tmp_path), 1, valid_size=2)
    msg = str(e.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in msg
    assert "train-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    assert "prepare_fashion_mnist.py" in msg


def test_gzipped_idx_files_are_pointed_out(tmp_path):
    make_idx(tmp_path, "MNIST", n_train=10, n_test=4)
    raw = tmp_path / "MNIST" / "raw"
    (raw / "t10k-images-idx3-ubyte").rename(raw / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match=r"missing: t10k-images-idx3-ubyte\. Found "
                                        r"t10k-images-idx3-ubyte\.gz: decompress"):
        read_splits("mnist", str(tmp_path), 1, valid_size=2)


def test_missing_cifar_batches_are_listed(tmp_path):
    make_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"cifar-10-batches-py: data_batch_1, .*test_batch, "
                                        r"batches\.meta; missing: data_batch_3\."):
        read_splits("cifar10", str(tmp_path), 3, valid_size=2)


def test_malformed_cifar_batch(tmp_path):
    make_cifar(tmp_path, "cifar100")
    (tmp_path / "cifar-100-python" / "test").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cannot read CIFAR batch .*cifar-100-python/test"):
        read_splits("cifar100", str(tmp_path), 3, valid_size=2)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match=r"expected .*train/<class>/<image>.* does not exist"):
        read_splits("imagefolder", str(tmp_path), 3, valid_size=2)
    make_imagefolder(tmp_path, splits=("train",))
    with pytest.raises(DataError, match=r"expected .*val or .*test beside .*train"):
        read_splits("imagefolder", str(tmp_path), 3, valid_size=2)
    make_imagefolder(tmp_path, splits=("val",), classes=("cat", "yak"))
    with pytest.raises(DataError, match=r"class folders \['yak'\] that the training folder"):
        read_splits("imagefolder", str(tmp_path), 3, valid_size=2)


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match=r"data root .*nowhere does not exist \(task.data.root\)"):
        read_splits("cifar10", str(tmp_path / "nowhere"), 3, valid_size=2)


def test_unreadable_image(tmp_path):
    make_imagefolder(tmp_path, splits=("train", "val"))
    (tmp_path / "train" / "cat" / "0.png").write_bytes(b"garbage")
    train, _, _ = read_splits("imagefolder", str(tmp_path), 3, valid_size=2)
    bad = train.files.index(str(tmp_path / "train" / "cat" / "0.png"))
    with pytest.raises(DataError, match=r"cannot read image .*cat/0\.png"):
        train.image(bad)


def test_task_refuses_indivisible_size_with_both_numbers(images_cfg):
    with pytest.raises(ConfigError, match=r"task.image_size=30, task.patch_size=16: image "
                                          r"height 30 is not divisible by the patch size 16"):
        ImagesTask(images_cfg("task.image_size=30", "task.patch_size=16"))
    task = ImagesTask(images_cfg("task.image_size=30", "task.patch_size=16", "task.pad_to_patch=true"))
    assert task.geometry.grid == (2, 2)


def test_task_needs_a_bidirectional_model(images_cfg):
    with pytest.raises(ConfigError, match=r"needs a bidirectional model.*model 'tiny'"):
        ImagesTask(images_cfg("model=tiny"))


# -- the datasets the trainer reads -------------------------------------------------------

def test_samples_are_deterministic_in_the_index(tmp_path, images_cfg):
    make_idx(tmp_path, "FashionMNIST", n_train=20, n_test=6)
    cfg = images_cfg(f"task.data.root={tmp_path}", "task.data.valid_size=4",
                     "task.augment.views=3", "task.augment.mixup_alpha=0.4",
                     "task.augment.randaugment=true")
    train, valid, test = ImagesTask(cfg).build_datasets()
    assert (len(train), len(valid), len(test)) == (48, 4, 6)
    before = torch.get_rng_state()
    a, b = train[5], train[5]
    assert torch.equal(torch.get_rng_state(), before)           # the caller's RNG untouched
    assert set(a) == {"input", "label", "mix_label", "mix_lam"}
    assert torch.equal(a["input"], b["input"]) and a["mix_lam"] == b["mix_lam"]
    assert a["input"].shape == (1, 28, 28) and a["input"].dtype == torch.float32
    # views of the same image (5, 5 + 16, ...) are augmented differently
    assert a["label"] == train[5 + 16]["label"]
    assert not torch.equal(a["input"], train[5 + 16]["input"])
    # another trainer seed, other augmentations
    other, _, _ = ImagesTask(images_cfg(f"task.data.root={tmp_path}", "task.data.valid_size=4",
                                        "task.augment.views=3", "trainer.seed=4")).build_datasets()
    assert not torch.equal(other[5]["input"], a["input"])


def test_eval_samples_are_normalized_images(tmp_path, images_cfg):
    arrays = make_idx(tmp_path, "FashionMNIST", n_train=10, n_test=4)
    cfg = images_cfg(f"task.data.root={tmp_path}", "task.data.valid_size=2")
    _, _, test = ImagesTask(cfg).build_datasets()
    x = test[2]
    assert set(x) == {"input", "label"} and x["label"] == int(arrays["t10k"][1][2])
    want = (torch.from_numpy(arrays["t10k"][0][2]).float() / 255 - 0.2860) / 0.3530
    assert torch.allclose(x["input"][0], want, atol=1e-6)


def test_mixup_mixes_two_images_of_the_split(tmp_path, images_cfg):
    make_idx(tmp_path, "FashionMNIST", n_train=12, n_test=4)
    cfg = images_cfg(f"task.data.root={tmp_path}", "task.data.valid_size=2",
                     "task.augment.crop_scale=null", "task.augment.hflip=0",
                     "task.augment.mixup_alpha=1.0")
    task = ImagesTask(cfg)
    train, _, _ = task.build_datasets()
    plain, _, _ = ImagesTask(images_cfg(f"task.data.root={tmp_path}", "task.data.valid_size=2",
                                        "task.augment.crop_scale=null", "task.augment.hflip=0")
                             ).build_datasets()
    s = train[3]
    lam = float(s["mix_lam"])
    partners = [j for j in range(len(plain)) if plain[j]["label"] == s["mix_label"]]
    assert any(torch.allclose(s["input"], lam * plain[3]["input"] + (1 - lam) * plain[j]["input"],
                              atol=1e-5) for j in partners)
