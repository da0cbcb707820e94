"""Readers of outside data: each format gives back exactly the pixels and labels that were written."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from advfeatures.data import (ImageDataset, detect_format, from_torch_dataset, load_data, read_image_folder, read_madrylab,
                              read_npy, read_npz)
from advfeatures.errors import ConfigError, DataError


def _write_tree(root, images, labels, classes):
    """Grayscale PNG files root/<class>/<index>.png."""
    for i, label in enumerate(labels):
        (root / classes[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i][0], mode="L").save(root / classes[label] / f"{i:04d}.png")


def _gray(n, h=6, w=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 1, h, w), dtype=np.uint8), [int(c) for c in rng.permutation(np.arange(n) % 3)]


def test_image_folder_reads_pixels_and_sorted_classes_exactly(tmp_path):
    names = ["cat", "ant", "bee"]
    x, y = _gray(12)
    _write_tree(tmp_path / "train", x, y, names)
    x2, y2 = _gray(6, seed=1)
    _write_tree(tmp_path / "test", x2, y2, names)
    train, test = read_image_folder(tmp_path)
    assert train.classes == ["ant", "bee", "cat"] and train.storage_dtype == torch.uint8
    relabel = torch.tensor([train.classes.index(n) for n in names])
    # reader order is class by class in sorted class order; within a class, file-name order
    order = sorted(range(12), key=lambda i: (int(relabel[y[i]]), i))
    assert torch.equal(train.storage, torch.from_numpy(x[order]))
    assert torch.equal(train.labels, relabel[torch.tensor(y)[order]])
    assert len(test) == 6 and test.image_shape == (1, 6, 5) and test.classes == train.classes
    assert torch.equal(train.images, train.storage.float() / 255)


def test_eager_decoding_with_workers_gives_the_same_tensor(tmp_path):
    import advfeatures.data.external as external

    x, y = _gray(9)
    _write_tree(tmp_path, x, y, ["a", "b", "c"])
    one, _ = read_image_folder(tmp_path)
    src = external.ImageFileSource([tmp_path / f for f in one.info["files"]], mode="L", shape=(1, 6, 5), workers=2)
    assert torch.equal(external._read_all(src, chunk=4), one.storage)


def test_image_folder_without_split_is_split_stratified_and_seeded(tmp_path):
    x, y = _gray(30)
    _write_tree(tmp_path, x, y, ["a", "b", "c"])
    train, test = load_data(data=tmp_path, test_fraction=0.2, seed=3)
    again, _ = load_data(data=tmp_path, test_fraction=0.2, seed=3)
    assert len(train) == 24 and len(test) == 6
    assert torch.bincount(test.labels, minlength=3).tolist() == [2, 2, 2]
    assert torch.equal(train.storage, again.storage)


def test_colour_anywhere_reads_every_image_as_rgb(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    gray = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    rgb = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "a" / "g.png")
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "b" / "c.png")
    rgba = np.concatenate([rgb, np.full((4, 4, 1), 7, np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "b" / "d.png")
    ds, none = read_image_folder(tmp_path)
    assert none is None and ds.image_shape == (3, 4, 4)
    assert torch.equal(ds.storage[0], torch.from_numpy(gray).expand(3, 4, 4))  # grey replicated, nothing lost
    assert torch.equal(ds.storage[1], torch.from_numpy(rgb).permute(2, 0, 1))
    assert torch.equal(ds.storage[2], torch.from_numpy(rgb).permute(2, 0, 1))  # alpha dropped


def test_jpeg_is_read_too(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "a" / "x.jpg", quality=95)
    ds, _ = read_image_folder(tmp_path)
    assert ds.image_shape == (3, 8, 8) and (ds.storage.int() - 200).abs().max() <= 2


def test_size_and_crop(tmp_path):
    (tmp_path / "a").mkdir()
    big = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    Image.fromarray(big).save(tmp_path / "a" / "big.png")
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "a" / "small.png")
    with pytest.raises(DataError, match="mixes image sizes.*size="):
        read_image_folder(tmp_path)
    ds, _ = read_image_folder(tmp_path, size=(4, 4))
    assert ds.image_shape == (1, 4, 4)
    ds, _ = read_image_folder(tmp_path, size=6, crop=6)  # shorter side to 6 (12×16 → 6×8), then the centre 6×6
    assert ds.image_shape == (1, 6, 6)
    (tmp_path / "a" / "small.png").unlink()
    ds, _ = read_image_folder(tmp_path, crop=(4, 6))
    assert torch.equal(ds.storage[0, 0], torch.from_numpy(big[4:8, 5:11]))


def test_streamed_folder_gives_the_eager_batches(tmp_path):
    x, y = _gray(20)
    _write_tree(tmp_path, x, y, ["a", "b", "c"])
    eager, _ = read_image_folder(tmp_path, stream=False)
    lazy, _ = read_image_folder(tmp_path, stream=True, workers=2)
    assert not lazy.in_memory and eager.in_memory
    order = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    got = list(lazy.iter_batches(6, order=order))  # through a DataLoader with 2 workers
    want = list(eager.iter_batches(6, order=order))
    assert len(got) == 4 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, want))
    assert torch.equal(lazy.subset(torch.tensor([3, 1])).images, eager.images[[3, 1]])


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "nhw"])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_npz_layouts_and_dtypes(tmp_path, layout, dtype):
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (10, 3 if layout != "nhw" else 1, 5, 4), dtype=np.uint8)
    arr = u8 if dtype == "uint8" else (u8 / 255).astype(np.float32)
    stored = {"nchw": arr, "nhwc": arr.transpose(0, 2, 3, 1), "nhw": arr[:, 0]}[layout]
    labels = rng.permutation(np.arange(10) % 4).astype(np.uint16)  # every class 0..3 present: gaps would be renumbered
    np.savez(tmp_path / "d.npz", x_train=stored[:7], y_train=labels[:7], x_test=stored[7:], y_test=labels[7:])
    train, test = read_npz(tmp_path / "d.npz")
    assert train.storage_dtype == (torch.uint8 if dtype == "uint8" else torch.float32)
    assert torch.equal(torch.cat([train.images, test.images]), torch.from_numpy(arr).float() / (255 if dtype == "uint8" else 1))
    assert torch.equal(torch.cat([train.labels, test.labels]), torch.from_numpy(labels.astype(np.int64)))
    assert train.classes == [str(i) for i in range(int(labels.max()) + 1)]


@pytest.mark.parametrize("keys", [("images", "labels"), ("x", "y")])
def test_npz_single_split_keys_and_class_names(tmp_path, keys):
    x = np.zeros((9, 1, 2, 2), np.uint8)
    y = np.arange(9, dtype=np.int8) % 3
    np.savez(tmp_path / "d.npz", **{keys[0]: x, keys[1]: y}, classes=np.array(["a", "b", "c", "d"]))
    train, test = load_data(data=tmp_path / "d.npz", test_fraction=1 / 3)
    assert train.classes == ["a", "b", "c", "d"] and len(train) == 6 and len(test) == 3


@pytest.mark.parametrize("stream", [False, True])
def test_npy_folder(tmp_path, stream):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (11, 4, 4, 3), dtype=np.uint8)  # NHWC
    y = rng.integers(0, 5, 11)
    np.save(tmp_path / "images.npy", x)
    np.save(tmp_path / "labels.npy", y.astype(np.int32))
    assert detect_format(tmp_path) == "npy"
    ds, none = read_npy(tmp_path / "images.npy", stream=stream)
    assert none is None and ds.in_memory is not stream and ds.image_shape == (3, 4, 4)
    want = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(ds.images, want)
    idx = torch.tensor([10, 0, 3, 3, 4, 5])
    assert torch.equal(ds.batch(idx)[0], want[idx]) and torch.equal(ds.batch(idx)[1], torch.from_numpy(y)[idx])


def test_npy_float_is_checked_even_when_streamed(tmp_path):
    np.save(tmp_path / "x.npy", np.full((3, 1, 2, 2), 2.0, np.float32))
    np.save(tmp_path / "y.npy", np.zeros(3, np.int64))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        read_npy(tmp_path, stream=True)


def _madry(folder, x, y, as_list=True):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(list(x.split(3)) if as_list else x, folder / "CIFAR_ims")
    torch.save(list(y.split(3)) if as_list else y, folder / "CIFAR_lab")


def _cifar_py(root, n_train=2, n_test=3):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{i}", n_train) for i in range(1, 6)), ("test_batch", n_test)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8), b"labels": rng.integers(0, 10, n).tolist()}
        (base / name).write_bytes(pickle.dumps(batch))


@pytest.mark.parametrize("as_list", [True, False])
def test_madrylab_tensors_pair_with_the_real_test_set(tmp_path, as_list):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(7, 3, 32, 32, generator=g), torch.arange(7) % 10
    _madry(tmp_path / "d_robust_CIFAR", x, y, as_list)
    train, test = read_madrylab(tmp_path / "d_robust_CIFAR")
    assert test is None and torch.equal(train.images, x) and torch.equal(train.labels, y)
    with pytest.raises(DataError, match="--dataset cifar10"):
        load_data(data=tmp_path / "d_robust_CIFAR")
    _cifar_py(tmp_path / "cifar")
    train, test = load_data("cifar10", tmp_path / "d_robust_CIFAR", root=tmp_path / "cifar")
    assert len(train) == 7 and len(test) == 3 and train.classes == test.classes and test.storage_dtype == torch.uint8


class _Items(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_torch_dataset_with_any_integer_labels():
    g = torch.Generator().manual_seed(0)
    imgs = [torch.randint(0, 256, (1, 3, 3), generator=g, dtype=torch.uint8) for _ in range(4)]
    labels = [np.int16(2), torch.tensor(0), 1, torch.tensor([3], dtype=torch.uint8)]
    ds = from_torch_dataset(_Items(list(zip(imgs, labels))))
    assert ds.storage_dtype == torch.uint8 and torch.equal(ds.storage, torch.stack(imgs))
    assert ds.labels.tolist() == [2, 0, 1, 3] and ds.classes == ["0", "1", "2", "3"]
    floats = from_torch_dataset(_Items([(im.float() / 255, int(lb)) for im, lb in zip(imgs, [2, 0, 1, 3])]))
    assert torch.equal(floats.images, ds.images)
    pil = from_torch_dataset(_Items([(Image.fromarray(im[0].numpy()), 0) for im in imgs]))
    assert torch.equal(pil.storage, ds.storage)
    train, test = load_data(data=_Items([(im, i % 2) for i, im in enumerate(imgs)]), test_fraction=0.5)
    assert len(train) == len(test) == 2


def test_load_data_needs_something_and_keeps_built_in_names(tmp_path):
    with pytest.raises(ConfigError, match="--dataset"):
        load_data()
    train, _ = load_data("digits")
    assert isinstance(train, ImageDataset) and train.image_shape == (1, 8, 8)
    np.savez(tmp_path / "d.npz", images=np.zeros((4, 1, 8, 8), np.uint8), labels=np.arange(4))
    with pytest.raises(ConfigError, match="image folders only"):
        load_data(data=tmp_path / "d.npz", size=4)
