"""An image folder of MNIST-format PNGs reads back to the tensors the built-in idx loader gives."""

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from advfeatures.data import FASHION_MNIST_DIR, load_data, load_idx_folder


def _write_pngs(root, ds, split, n):
    for i in range(n):
        folder = root / split / f"{int(ds.labels[i])}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ds.storage[i, 0].numpy(), mode="L").save(folder / f"{i:05d}.png")


def _same_as_loader(root, train, test, n_train, n_test):
    got_train, got_test = load_data(data=root)
    for got, want, n in ((got_train, train, n_train), (got_test, test, n_test)):
        # the folder reader lists class by class, files in name (= original index) order
        order = sorted(range(n), key=lambda i: (int(want.labels[i]), i))
        assert got.storage_dtype == torch.uint8 and got.image_shape == (1, 28, 28)
        assert torch.equal(got.images, want.images[order]) and torch.equal(got.labels, want.labels[order])


def test_synthetic_idx_folder_as_pngs(tmp_path):
    rng = np.random.default_rng(0)
    idx = tmp_path / "idx"
    idx.mkdir()
    for prefix, n in (("train", 60), ("t10k", 30)):
        imgs, labels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n) % 10
        for stem, arr, dims in ((f"{prefix}-images-idx3-ubyte", imgs, 3), (f"{prefix}-labels-idx1-ubyte", labels, 1)):
            header = struct.pack(">BBBB", 0, 0, 0x08, dims) + struct.pack(f">{dims}I", *arr.shape)
            (idx / f"{stem}.gz").write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))
    train, test = load_idx_folder(idx, name="mnist", classes=[str(i) for i in range(10)])
    _write_pngs(tmp_path / "png", train, "train", 60)
    _write_pngs(tmp_path / "png", test, "test", 30)
    _same_as_loader(tmp_path / "png", train, test, 60, 30)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason=f"Fashion-MNIST is not installed at {FASHION_MNIST_DIR}")
def test_fashion_mnist_pngs_match_the_idx_loader(tmp_path):
    train, test = load_data("fashion-mnist")
    _write_pngs(tmp_path, train, "train", 300)
    _write_pngs(tmp_path, test, "test", 100)
    _same_as_loader(tmp_path, train, test, 300, 100)
