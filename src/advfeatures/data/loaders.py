"""Loaders for local data in their standard formats; nothing is ever downloaded.

* ``digits``: scikit-learn's bundled 8×8 digits (1 797 images), split with a fixed seed.
* ``fashion-mnist`` / ``mnist``: MNIST-format idx files, raw or gzipped
  (Fashion-MNIST is looked for where Debian's ``dataset-fashion-mnist`` installs it).
* ``cifar10``: the CIFAR-10 binary batches (``cifar-10-batches-bin``) or the python batches
  (``cifar-10-batches-py``), the latter read with an unpickler that only builds plain containers and
  numpy arrays, never arbitrary objects.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .dataset import ImageDataset

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10")

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def load_dataset(name: str, *, root: str | Path | None = None, seed: int = 0, test_fraction: float = 0.2) -> tuple[ImageDataset, ImageDataset]:
    """(train, test) splits of dataset ``name`` read from ``root`` (or its default place)."""
    if name == "digits":
        return load_digits(seed=seed, test_fraction=test_fraction)
    if name == "fashion-mnist":
        return load_idx_folder(Path(root) if root else FASHION_MNIST_DIR, name=name, classes=FASHION_CLASSES)
    if name == "mnist":
        if root is None:
            raise DataError("the mnist dataset needs a folder: pass --data-root DIR holding the four MNIST idx files")
        return load_idx_folder(Path(root), name=name, classes=[str(i) for i in range(10)])
    if name == "cifar10":
        if root is None:
            raise DataError("the cifar10 dataset needs a folder: pass --data-root DIR holding cifar-10-batches-py or -bin")
        return load_cifar10(Path(root))
    raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def load_digits(*, seed: int = 0, test_fraction: float = 0.2) -> tuple[ImageDataset, ImageDataset]:
    """scikit-learn's digits, scaled to [0, 1], as a seeded stratified train/test split."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    bunch = sk_digits()
    x = torch.from_numpy((bunch.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=test_fraction, random_state=seed, stratify=bunch.target)
    classes = [str(i) for i in range(10)]
    info = {"source": "sklearn.datasets.load_digits", "split_seed": seed, "test_fraction": test_fraction}
    train = ImageDataset(x[idx_train], y[idx_train], classes, "digits-train", info)
    test = ImageDataset(x[idx_test], y[idx_test], classes, "digits-test", info)
    return train, test


def _open_maybe_gz(folder: Path, stem: str) -> bytes:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            data = candidate.read_bytes()
            if candidate.suffix != ".gz":
                return data
            try:
                return gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as exc:  # not gzip, or cut short
                raise DataError(f"{candidate} is not a complete gzip file ({' '.join(str(exc).split()) or type(exc).__name__}); "
                                "download it again or unpack it by hand") from None
    raise DataError(f"{folder} has no {stem}[.gz]; point --data-root at the folder holding the MNIST-format idx files")


def parse_idx(data: bytes, *, what: str = "idx file") -> np.ndarray:
    """Decode an idx file (the MNIST format): magic, dimensions, then big-endian data."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{what} is not an idx file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise DataError(f"{what} has an unknown idx data type 0x{data[2]:02x}")
    ndim = data[3]
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise DataError(f"{what} has a short or empty idx header ({len(data)} bytes for {ndim} dimensions); the file is truncated")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    itemsize = np.dtype(dtypes[data[2]]).itemsize
    want = math.prod(shape)
    have = (len(data) - 4 - 4 * ndim) // itemsize
    if have != want or (len(data) - 4 - 4 * ndim) % itemsize:
        raise DataError(f"{what} is truncated or padded: its header says {want} values, the file holds {have}")
    body = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if body.dtype.kind == "f" and not np.isfinite(body).all():
        raise DataError(f"{what} holds nan or infinite values")
    return body.reshape(shape)


def load_idx_folder(folder: Path, *, name: str, classes: list[str]) -> tuple[ImageDataset, ImageDataset]:
    if not folder.is_dir():
        hint = " (install Debian's dataset-fashion-mnist package, or pass --data-root)" if name == "fashion-mnist" else ""
        raise DataError(f"data folder {folder} does not exist{hint}")
    out = []
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = parse_idx(_open_maybe_gz(folder, f"{prefix}-images-idx3-ubyte"), what=f"{name} {split} images")
        labels = parse_idx(_open_maybe_gz(folder, f"{prefix}-labels-idx1-ubyte"), what=f"{name} {split} labels")
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(f"{name} {split}: images {images.shape} and labels {labels.shape} do not match")
        if images.dtype == np.uint8:  # held as uint8 (a quarter of the memory), read as float32 per batch
            x = torch.from_numpy(images.copy()).unsqueeze(1)
        else:  # float idx files are taken as already scaled; ImageDataset refuses values outside [0, 1]
            x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1)
        if labels.dtype.kind == "f" or (labels.size and (int(labels.min()) < 0 or int(labels.max()) >= len(classes))):
            raise DataError(f"{name} {split} labels must be whole numbers in 0..{len(classes) - 1}; the labels file is not {name}'s")
        if images.shape[0] == 0:
            raise DataError(f"{name} {split} holds no images")
        y = torch.from_numpy(labels.astype(np.int64))
        out.append(ImageDataset(x, y, classes, f"{name}-{split}", {"source": str(folder)}))
    return out[0], out[1]


class _SafeUnpickler(pickle.Unpickler):
    """Builds only what CIFAR's python batches contain: dicts, lists, bytes and numpy arrays."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"refusing to unpickle {module}.{name} from a CIFAR batch: the file is not a plain CIFAR-10 batch")


def _read_cifar_py(path: Path) -> tuple[np.ndarray, np.ndarray]:
    not_batch = f"{path} is not a CIFAR-10 python batch"
    try:
        with open(path, "rb") as f:
            d = _SafeUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, ImportError,
            MemoryError, OverflowError, RecursionError, UnicodeDecodeError) as exc:
        raise DataError(f"{not_batch} (unreadable: {type(exc).__name__}); replace it with the original file") from None
    if not isinstance(d, dict):
        raise DataError(f"{not_batch} (it holds a {type(d).__name__}, not a dict of data and labels)")
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{path} lacks 'data' or 'labels'; is it a CIFAR-10 python batch?")
    try:
        x = np.asarray(data)
        y = np.asarray(labels)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{not_batch} (its data or labels are not arrays: {exc})") from None
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise DataError(f"{not_batch}: data must be uint8 rows of 3072 pixels, got {x.dtype} {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0] or y.dtype.kind not in "iu":
        raise DataError(f"{not_batch}: need one whole-number label per image, got {y.dtype} {y.shape} for {x.shape[0]} images")
    if y.size and (int(y.min()) < 0 or int(y.max()) > 9):
        raise DataError(f"{not_batch}: labels must be 0..9")
    return x.reshape(-1, 3, 32, 32), y.astype(np.int64)


def _read_cifar_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    if raw.size == 0 or raw.size % 3073:
        raise DataError(f"{path} is not a CIFAR-10 binary batch (size {raw.size} is not a positive multiple of 3073)")
    rows = raw.reshape(-1, 3073)
    if int(rows[:, 0].max()) > 9:
        raise DataError(f"{path} is not a CIFAR-10 binary batch (a label byte is above 9)")
    return rows[:, 1:].reshape(-1, 3, 32, 32), rows[:, 0].astype(np.int64)


def load_cifar10(folder: Path) -> tuple[ImageDataset, ImageDataset]:
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist; pass --data-root DIR holding CIFAR-10")
    for sub, reader, train_names, test_name in (
        ("cifar-10-batches-bin", _read_cifar_bin, [f"data_batch_{i}.bin" for i in range(1, 6)], "test_batch.bin"),
        ("cifar-10-batches-py", _read_cifar_py, [f"data_batch_{i}" for i in range(1, 6)], "test_batch"),
    ):
        for base in (folder / sub, folder):
            if (base / test_name).is_file():
                parts = []
                for names in (train_names, [test_name]):
                    missing = [n for n in names if not (base / n).is_file()]
                    if missing:
                        raise DataError(f"{base} lacks {', '.join(missing)}; the CIFAR-10 folder is incomplete")
                    xs, ys = zip(*(reader(base / n) for n in names))
                    x = torch.from_numpy(np.concatenate(xs))  # uint8, read as float32 per batch
                    parts.append((x, torch.from_numpy(np.concatenate(ys))))
                (xtr, ytr), (xte, yte) = parts
                info = {"source": str(base)}
                return (
                    ImageDataset(xtr, ytr, CIFAR_CLASSES, "cifar10-train", info),
                    ImageDataset(xte, yte, CIFAR_CLASSES, "cifar10-test", info),
                )
    raise DataError(f"no CIFAR-10 batches under {folder}; expected cifar-10-batches-bin/ or cifar-10-batches-py/")
