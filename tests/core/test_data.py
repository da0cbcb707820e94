import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from advfeatures.data import ImageDataset, augment_batch, load_cifar10, load_dataset, load_digits, load_idx_folder, parse_idx
from advfeatures.errors import DataError


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_digits_split_is_fixed_and_in_range():
    a_train, a_test = load_digits(seed=0)
    b_train, _ = load_digits(seed=0)
    assert torch.equal(a_train.images, b_train.images)
    assert a_train.images.shape[1:] == (1, 8, 8) and len(a_train) + len(a_test) == 1797
    assert a_train.images.min() >= 0 and a_train.images.max() <= 1 and a_train.images.dtype == torch.float32
    assert set(a_test.labels.tolist()) == set(range(10))


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_raw_and_gzip(tmp_path, gz):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        imgs, labels = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
        for stem, arr in ((f"{prefix}-images-idx3-ubyte", imgs), (f"{prefix}-labels-idx1-ubyte", labels)):
            data = _idx(arr)
            (tmp_path / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)
    train, test = load_idx_folder(tmp_path, name="mnist", classes=[str(i) for i in range(10)])
    assert train.images.shape == (12, 1, 28, 28) and len(test) == 5
    expected = torch.from_numpy(parse_idx(_idx(imgs)).astype(np.float32) / 255).unsqueeze(1)
    assert torch.allclose(test.images, expected)


def test_idx_errors(tmp_path):
    with pytest.raises(DataError, match="bad magic"):
        parse_idx(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(DataError, match="truncated"):
        parse_idx(struct.pack(">BBBBI", 0, 0, 8, 1, 10) + b"\x00" * 3)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("fashion-mnist", root=tmp_path / "nowhere")
    with pytest.raises(DataError, match="train-images"):
        load_idx_folder(tmp_path, name="mnist", classes=["a"])


def test_mnist_needs_a_folder_and_unknown_dataset():
    with pytest.raises(DataError, match="--data-root"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imagenet")


def _cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8), b"labels": rng.integers(0, 10, n).tolist()}


def test_cifar10_python_batches(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for i in range(1, 6):
        (base / f"data_batch_{i}").write_bytes(pickle.dumps(_cifar_batch(4, i)))
    (base / "test_batch").write_bytes(pickle.dumps(_cifar_batch(3, 9)))
    train, test = load_cifar10(tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (3, 3, 32, 32)
    raw = _cifar_batch(3, 9)
    assert torch.allclose(test.images, torch.from_numpy(raw[b"data"].reshape(-1, 3, 32, 32)).float() / 255)


def test_cifar10_binary_batches(tmp_path):
    base = tmp_path / "cifar-10-batches-bin"
    base.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{i}.bin", 2) for i in range(1, 6)), ("test_batch.bin", 3)]:
        rows = np.concatenate([rng.integers(0, 10, (n, 1)), rng.integers(0, 256, (n, 3072))], 1).astype(np.uint8)
        (base / name).write_bytes(rows.tobytes())
    train, test = load_cifar10(tmp_path)
    assert len(train) == 10 and test.labels.tolist() == rows[:, 0].tolist()


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar_unpickler_refuses_code(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for i in range(1, 6):
        (base / f"data_batch_{i}").write_bytes(pickle.dumps(_cifar_batch(2, i)))
    (base / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": [0]}))
    with pytest.raises(DataError, match="refusing to unpickle"):
        load_cifar10(tmp_path)


def test_dataset_checks():
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        ImageDataset(torch.full((2, 1, 4, 4), 2.0), torch.tensor([0, 1]), ["a", "b"])
    with pytest.raises(DataError, match="int64"):
        ImageDataset(torch.rand(2, 1, 4, 4), torch.tensor([0.0, 1.0]), ["a", "b"])
    with pytest.raises(DataError, match="labels must lie"):
        ImageDataset(torch.rand(2, 1, 4, 4), torch.tensor([0, 5]), ["a", "b"])


def test_augment_crop_and_flip_are_per_example_shifts():
    x = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4) / 32
    g = torch.Generator().manual_seed(0)
    out = augment_batch(x, crop_padding=1, flip=True, generator=g)
    assert out.shape == x.shape
    # every output is a shifted (and maybe flipped) copy: its non-zero values are a subset of the input's
    for i in range(2):
        assert set(out[i][out[i] > 0].tolist()) <= set(x[i].flatten().tolist())
    assert torch.equal(augment_batch(x), x)
