"""Data from outside: image folders, ``.npz``/``.npy`` arrays, MadryLab's released tensors, any
``torch.utils.data.Dataset``, behind one entry point, :func:`load_data`.

The rules each reader follows (every refusal is a one-line :class:`~advfeatures.errors.DataError`
naming the file and the fix):

* **Image folder** (``root/<class>/<image>.png|.jpg|.jpeg``): classes are the sorted folder names
  (or the order a ``classes.json`` written by :func:`~advfeatures.data.export.export_dataset`
  gives); images are read class by class, files in name order. Names sort by the code points of
  their NFC form, so a tree copied from macOS (decomposed names) is ordered as everywhere else. ``root/train/`` + ``root/test/``
  give the split (one without the other is refused), otherwise a seeded stratified split
  (``test_fraction``). Subfolders of a class folder and images in other formats (``.bmp``,
  ``.webp``, ``.tif``...) are not read, and a warning names them. An EXIF orientation tag is
  applied (images are read upright, as viewers show them). Images keep their size
  unless ``size`` (an int scales the shorter side to it, keeping the aspect ratio; ``(h, w)`` resizes
  exactly; bilinear) and/or ``crop`` (a centre crop after resizing, int or ``(h, w)``) are given;
  after that every image must have the same size. Grayscale (modes 1/L/LA) stays one channel;
  if any image is in colour every image is read as RGB (grey ones replicated: no information is
  lost, which neither "majority" nor "error" would guarantee). Alpha is dropped. 16-bit and float
  images are refused.
* **Arrays** (``.npz``, or a folder of ``.npy`` files): keys ``x_train, y_train[, x_test, y_test]``,
  or ``images, labels``, or ``x, y``; an optional ``classes`` array of names (x_test or y_test
  that would be left unread, alone or beside images/labels, is refused). Images are uint8
  (0..255, kept as uint8) or float in [0, 1]; 3-D arrays are (N, H, W) grayscale; a 4-D array is
  NCHW when axis 1 has size 1 or 3 (this wins when axis 3 could be channels too), else NHWC when
  axis 3 has size 1 or 3. Labels are integers of any dtype, ≥ 0; with ``classes`` they index it,
  without it labels with gaps ({0, 2, 5}, or 1..10) are renumbered 0..K-1 in sorted order, one
  mapping over both splits, with a warning, and the original values are kept in
  ``info["label_values"]``. ``.npy`` files, and ``.npz`` members stored
  uncompressed (``numpy.savez``: each member is a plain ``.npy`` at an offset in the zip), are read
  a batch at a time from disk when large (``stream``). A compressed ``.npz``
  (``numpy.savez_compressed``) cannot be read at an offset: it is decompressed whole into memory
  (a log line says so when it is large; save it with ``numpy.savez`` or as ``.npy`` files instead).
* **MadryLab** (a folder with ``CIFAR_ims`` and ``CIFAR_lab``, as in their released
  ``d_robust_CIFAR``, ``d_non_robust_CIFAR``, ``drand_CIFAR``, ``ddet_CIFAR``): each file is a
  tensor or a list of tensors saved by ``torch.save``, read with ``weights_only=True`` and
  concatenated (N×3×32×32 floats in [0, 1], integer labels). These hold training images only;
  the test split is the real CIFAR-10 test set, so pair them with the built-in dataset:
  ``load_data("cifar10", "d_robust_CIFAR", root=CIFAR_DIR)``. A ``test/`` subfolder in the same
  layout (what our exporter writes when given a test split) is read as the test split.
* **torch Dataset**: items ``(image, label)``; the image a tensor (C, H, W) or (H, W), uint8 or
  float in [0, 1], or a PIL image; the label an int, numpy integer or 0-d/1-element tensor.
"""

from __future__ import annotations

import json
import logging
import math
import re
import struct
import unicodedata
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..storage import RowFile
from .dataset import ImageDataset, to_float
from .loaders import CIFAR_CLASSES, load_dataset
from .source import FLOAT_TYPES, ImageFileSource, RowFileSource, TensorSource

log = logging.getLogger(__name__)

FORMATS = ("imagefolder", "npz", "npy", "madrylab")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_OTHER_IMAGE_SUFFIXES = (".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif")  # not read: named in a warning
STREAM_BYTES = 512 * 2**20  # sets whose uint8 pixels exceed this are read from disk batch by batch
_GRAY_MODES = {"1", "L", "LA"}
_COLOUR_MODES = {"RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "RGBX"}
_ARRAY_KEYS = (("x_train", "y_train", "x_test", "y_test"), ("images", "labels", None, None), ("x", "y", None, None))
_ACCEPTED = ("an image folder (one subfolder per class, optionally under train/ and test/), a .npz file, a folder of "
             ".npy files (images.npy + labels.npy, or x_train/y_train/x_test/y_test), or a MadryLab folder "
             "(CIFAR_ims + CIFAR_lab)")

Split = tuple[ImageDataset, ImageDataset | None]


def load_data(dataset: str | None = None, data: str | Path | Any | None = None, *, root: str | Path | None = None,
              seed: int = 0, test_fraction: float = 0.2, size: int | Sequence[int] | None = None,
              crop: int | Sequence[int] | None = None, stream: bool | None = None, workers: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """(train, test) from a built-in ``dataset`` (as :func:`~advfeatures.data.load_dataset`), from
    ``data`` (a path in any format above, auto-detected, or a ``torch.utils.data.Dataset``), or both:
    then the training split comes from ``data`` (its train split, or all of it) and the test split
    from the built-in set (how MadryLab's constructed CIFAR sets are evaluated).

    A set without its own test split is split with ``seed`` and ``test_fraction`` (stratified).
    ``stream`` (default: when the pixels exceed 512 MiB as uint8) reads ``.npy`` files and image
    folders from disk a batch at a time; ``workers`` decoder processes read an image folder.
    """
    if dataset is None and data is None:
        raise ConfigError("no data: pass a built-in dataset name (--dataset) or a data path (--data)")
    if data is None:
        return load_dataset(dataset, root=root, seed=seed, test_fraction=test_fraction)
    train, test = read_data(data, size=size, crop=crop, stream=stream, workers=workers, seed=seed, test_fraction=test_fraction)
    if dataset is not None:
        _, real_test = load_dataset(dataset, root=root, seed=seed, test_fraction=test_fraction)
        return _pair_with(train, real_test), real_test
    if test is None:
        if train.info.get("format") == "madrylab":
            raise DataError(f"{train.info['source']} holds MadryLab training images only; their test split is the real "
                            "CIFAR-10 test set: pass --dataset cifar10 --data-root DIR as well")
        return stratified_split(train, test_fraction=test_fraction, seed=seed)
    return train, test


def read_data(data: str | Path | Any, *, size=None, crop=None, stream: bool | None = None, workers: int = 0, seed: int = 0,
              test_fraction: float = 0.2) -> Split:
    """The (train, test-or-None) splits of ``data`` in whatever format it is (see :func:`detect_format`)."""
    if isinstance(data, torch.utils.data.Dataset):
        return from_torch_dataset(data, workers=workers), None
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(d, torch.utils.data.Dataset) for d in data):
        return from_torch_dataset(data[0], workers=workers, name="train"), from_torch_dataset(data[1], workers=workers, name="test")
    path = Path(data)
    fmt = detect_format(path)
    if (size is not None or crop is not None) and fmt != "imagefolder":
        raise ConfigError(f"size/crop apply to image folders only; {path} is {fmt} data of fixed size")
    if fmt == "imagefolder":
        split = read_image_folder(path, size=size, crop=crop, stream=stream, workers=workers)
    elif fmt == "npz":
        split = read_npz(path, stream=stream)
    elif fmt == "npy":
        split = read_npy(path, stream=stream)
    else:
        split = read_madrylab(path, stream=stream)
    for part, what in zip(split, ("images", "test images")):
        if part is not None and len(part) == 0:
            raise DataError(f"{path} holds no {what} (an array of length 0); give it at least one image per class")
    return split


def detect_format(path: Path) -> str:
    """One of :data:`FORMATS` for ``path``, or a DataError naming the accepted ones."""
    if not path.exists():
        raise DataError(f"data path {path} does not exist; pass {_ACCEPTED}")
    if path.is_file():  # by content, not by name
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic.startswith(b"PK"):
            return "npz"
        if magic == b"\x93NUMPY":
            return "npy"
        raise DataError(f"{path} is not a data file this reads; pass {_ACCEPTED}")
    if _madrylab_prefix(path) is not None:
        return "madrylab"
    if _npy_keys(path) is not None:
        return "npy"
    if any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir()):
        return "imagefolder"
    raise DataError(f"{path} holds no data this reads; pass {_ACCEPTED}")


# ---- splitting and pairing --------------------------------------------------------------------

def stratified_split(ds: ImageDataset, *, test_fraction: float, seed: int) -> tuple[ImageDataset, ImageDataset]:
    """A seeded split keeping each class's share (the same call the built-in digits split makes)."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    y = ds.labels.numpy()
    try:
        idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=test_fraction, random_state=seed, stratify=y)
    except ValueError as exc:
        raise DataError(f"{ds.name} cannot be split with test_fraction={test_fraction} keeping every class ({exc}); "
                        "give it train/ and test/ splits or more images per class") from None
    info = {**ds.info, "split_seed": seed, "test_fraction": test_fraction}
    train = ds.subset(torch.from_numpy(idx_train), name=f"{ds.name}-train")
    test = ds.subset(torch.from_numpy(idx_test), name=f"{ds.name}-test")
    train.info, test.info = info, dict(info)
    return train, test


def _pair_with(train: ImageDataset, test: ImageDataset) -> ImageDataset:
    """``train`` relabelled with ``test``'s class names, after checking the two sets fit together."""
    if train.image_shape != test.image_shape:
        raise DataError(f"{train.name} images are {train.image_shape} but the test set's are {test.image_shape}; "
                        "resize them (size=/--size) or pair them with another test set")
    if train.num_classes > test.num_classes:
        raise DataError(f"{train.name} has {train.num_classes} classes but the test set only {test.num_classes}")
    return ImageDataset(train.source, train.labels, test.classes, train.name, train.info)


# ---- image folders ----------------------------------------------------------------------------

def _pair(value: int | Sequence[int] | None, what: str) -> tuple[int, int] | None:
    if value is None:
        return None
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ConfigError(f"{what} must be a positive int or (height, width), got {value!r}")
    return pair  # type: ignore[return-value]


def _resized(hw: tuple[int, int], size) -> tuple[int, int]:
    if size is None:
        return hw
    if isinstance(size, int):  # the shorter side becomes ``size``
        h, w = hw
        return (size, max(1, round(w * size / h))) if h <= w else (max(1, round(h * size / w)), size)
    return tuple(size)  # type: ignore[return-value]


def _out_hw(hw: tuple[int, int], size, crop: tuple[int, int] | None, path: Path) -> tuple[int, int]:
    hw = _resized(hw, size)
    if crop is None:
        return hw
    if crop[0] > hw[0] or crop[1] > hw[1]:
        raise DataError(f"{path} is {hw[0]}×{hw[1]} (after resizing), smaller than the crop {crop[0]}×{crop[1]}; "
                        "pass a larger size= or a smaller crop=")
    return crop


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except Image.DecompressionBombError as exc:  # Pillow's guard against huge images, not an OSError
        found = re.search(r"(\d+) pixels", str(exc))
        count = f"{int(found.group(1))} pixels" if found else "too many pixels"
        raise DataError(f"{path} has {count}, more than Pillow opens (twice PIL.Image.MAX_IMAGE_PIXELS = "
                        f"{Image.MAX_IMAGE_PIXELS}); shrink it, or raise that limit if you trust the file") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable image ({type(exc).__name__}); remove or replace it") from None


def _orientation(img) -> int:
    """The EXIF orientation tag (1..8; 1, also when absent or unreadable: stored as shown)."""
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception:  # a damaged EXIF block is not worth refusing the image for: read it as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def decode_image(path: Path, *, mode: str, size=None, crop=None, expect: Sequence[int] | None = None) -> torch.Tensor:
    """One image file as a uint8 (C, H, W) tensor: turned upright by its EXIF orientation (as a
    viewer shows it; a phone's portrait JPEG is stored landscape with a tag), converted to ``mode``,
    resized, centre-cropped."""
    from PIL import Image, ImageOps

    try:
        with _open(path) as img:
            if _orientation(img) != 1:
                img = ImageOps.exif_transpose(img)
            img = img.convert(mode)
            if size is not None:
                h, w = _resized((img.height, img.width), size)
                if (h, w) != (img.height, img.width):
                    img = img.resize((w, h), Image.Resampling.BILINEAR)
            if crop is not None:
                top, left = (img.height - crop[0]) // 2, (img.width - crop[1]) // 2
                img = img.crop((left, top, left + crop[1], top + crop[0]))
            arr = np.asarray(img, dtype=np.uint8)
    except OSError as exc:  # truncated or corrupt data found while decoding
        raise DataError(f"{path} could not be decoded ({exc}); remove or replace it") from None
    x = torch.from_numpy(arr.copy())
    x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1).contiguous()
    if expect is not None and tuple(x.shape) != tuple(expect):
        raise DataError(f"{path} decodes to {tuple(x.shape)}, not the {tuple(expect)} its header promised; replace it")
    return x


def _class_folders(root: Path, classes: list[str] | None) -> list[tuple[str, Path]]:
    """(class name, folder) in label order: from ``classes.json`` when there is one (in ``root`` or
    its parent), else the sorted folder names. ``classes`` (the training split's names, when reading
    ``test/``) allows a subset of the classes."""
    folders = {p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    meta = root / "classes.json" if (root / "classes.json").is_file() else root.parent / "classes.json"
    if meta.is_file():
        try:
            named = [(str(e["name"]), root / str(e["folder"])) for e in json.loads(meta.read_text(encoding="utf-8"))]
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{meta} is not a list of {{'folder', 'name'}} entries; fix or delete it") from None
        listed = {p for _, p in named}
        if (classes is None and folders != listed) or not folders <= listed:
            raise DataError(f"{meta} does not list exactly the class folders of {root}; fix or delete it")
        return [(n, p) for n, p in named if p in folders]
    if classes is not None:  # a test/ tree: its folders must be (some of) the training classes
        unknown = sorted(p.name for p in folders if p.name not in classes)
        if unknown:
            raise DataError(f"{root} has class folders {unknown[:3]} that train/ lacks; the two splits need the same classes")
        return [(c, root / c) for c in classes if root / c in folders]
    return [(p.name, p) for p in sorted(folders, key=_name_order)]


def _name_order(p: Path) -> tuple[str, str]:
    """Sort key of a class folder or image file: its name's NFC form. macOS (HFS+) writes names
    decomposed (NFD), where "É" sorts before "Z" rather than after it: one tree, two labellings."""
    return unicodedata.normalize("NFC", p.name), p.name


def _scan_tree(root: Path, *, classes: list[str] | None = None) -> tuple[list[str], list[Path], list[int], list[tuple[str, tuple[int, int]]]]:
    pairs = _class_folders(root, classes)
    if not pairs:
        raise DataError(f"{root} has no class folders; an image folder holds one subfolder of images per class")
    names = [n for n, _ in pairs] if classes is None else classes
    files, labels, heads, skipped = [], [], [], []
    for name, folder in pairs:
        found = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")),
                       key=_name_order)
        skipped += sorted(p for p in folder.iterdir() if not p.name.startswith(".")
                          and (p.is_dir() or (p.is_file() and p.suffix.lower() in _OTHER_IMAGE_SUFFIXES)))
        if not found:
            raise DataError(f"class folder {folder} holds no .png/.jpg images; add some or remove the folder")
        label = names.index(name)
        for p in found:
            with _open(p) as img:  # orientations 5..8 turn the image by 90°: it is shown (and read) w×h
                heads.append((img.mode, (img.width, img.height) if _orientation(img) >= 5 else (img.height, img.width)))
            files.append(p)
            labels.append(label)
    if skipped:  # images a user may think are in the set: say so rather than drop them silently
        dirs = sum(p.is_dir() for p in skipped)
        log.warning("%s: skipped %d subfolder(s) and %d image file(s) of other formats inside class folders (%s); only "
                    ".png/.jpg/.jpeg files directly in each class folder are read (convert them, or move them up)", root, dirs,
                    len(skipped) - dirs, ", ".join(str(p.relative_to(root)) for p in skipped[:3]))
    return names, files, labels, heads


def read_image_folder(path: str | Path, *, size=None, crop=None, stream: bool | None = None, workers: int = 0) -> Split:
    """An image-folder tree (see the module docstring) as (train, test or None)."""
    path = Path(path)
    size = size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else _pair(size, "size")
    crop = _pair(crop, "crop")
    trees = [path / "train", path / "test"] if (path / "train").is_dir() and (path / "test").is_dir() else [path]
    for one, other in (("train", "test"), ("test", "train")):  # half a split: not a class called "train" holding no images
        half = path / one
        if len(trees) == 1 and half.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in half.iterdir()) \
                and not any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in half.iterdir()):
            raise DataError(f"{path} has {one}/ but no {other}/; add {other}/ with the same class folders, or move the class "
                            f"folders out of {one}/ into {path} to have a split made (test_fraction)")
    scans, classes = [], None
    for tree in trees:
        scan = _scan_tree(tree, classes=classes)
        classes = scan[0]
        scans.append(scan)
    modes = {m for scan in scans for m, _ in scan[3]}
    bad = modes - _GRAY_MODES - _COLOUR_MODES
    if bad:
        raise DataError(f"{path} has images in mode {sorted(bad)[0]} (16-bit or float); save them as 8-bit PNG/JPEG")
    mode = "L" if modes <= _GRAY_MODES else "RGB"
    channels = 1 if mode == "L" else 3
    shapes: dict[tuple[int, int], Path] = {}
    for scan in scans:
        for p, (_, hw) in zip(scan[1], scan[3]):
            shapes.setdefault(_out_hw(hw, size, crop, p), p)
    if len(shapes) > 1:
        (a, pa), (b, pb) = list(shapes.items())[:2]
        pa, pb = pa.relative_to(path), pb.relative_to(path)  # with the class folder: file names repeat across classes
        raise DataError(f"{path} mixes image sizes ({pa} is {a[0]}×{a[1]}, {pb} is {b[0]}×{b[1]}); "
                        "pass size= (--size) to resize them, or crop= (--crop)")
    shape = (channels, *next(iter(shapes)))
    out = []
    for tree, (names, files, labels, _) in zip(trees, scans):
        src = ImageFileSource(files, mode=mode, shape=shape, size=size, crop=crop, workers=workers)
        if not _streamed(stream, len(files) * math.prod(shape)):
            src = TensorSource(_read_all(src))
        split = "" if tree == path else f"-{tree.name}"
        info = {"source": str(path), "format": "imagefolder", "mode": mode, "files": [str(f.relative_to(tree)) for f in files]}
        out.append(ImageDataset(src, torch.tensor(labels, dtype=torch.int64), names, f"{path.name}{split}", info))
    return out[0], out[1] if len(out) > 1 else None


def _streamed(stream: bool | None, nbytes: int) -> bool:
    return nbytes > STREAM_BYTES if stream is None else bool(stream)


class _SourceChunks(torch.utils.data.Dataset):
    """A source whose items are chunks of images (the DataLoader's sampler yields index chunks)."""

    def __init__(self, src) -> None:
        self.src = src

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        return self.src.read(index)


def _read_all(src, chunk: int = 1024) -> torch.Tensor:
    """Every image of ``src`` in one tensor, decoded by ``src.workers`` processes when it has them."""
    out = torch.empty(src.shape, dtype=src.dtype)
    if len(src) == 0:  # nothing to read; read_data then refuses the empty set in one line, naming the file
        return out
    chunks = list(torch.arange(len(src)).split(chunk))
    if src.workers > 0 and len(chunks) > 1:
        parts = iter(torch.utils.data.DataLoader(_SourceChunks(src), sampler=chunks, batch_size=None, num_workers=src.workers))
    else:
        parts = (src.read(c) for c in chunks)
    for c, x in zip(chunks, parts):
        out[int(c[0]): int(c[-1]) + 1] = x
    return out


# ---- arrays -----------------------------------------------------------------------------------

def _layout(shape: tuple[int, ...], what: str) -> bool:
    """Whether a 3-D/4-D image array is channels-last (see the module docstring's rule)."""
    if len(shape) in (3, 4) and 0 in shape[1:]:
        raise DataError(f"{what} has shape {shape}: its images have no pixels (an axis of length 0); "
                        "the array was sliced or reshaped wrongly before saving")
    if len(shape) == 3:
        return False
    if len(shape) != 4:
        raise DataError(f"{what} has shape {shape}; images must be (N, H, W), (N, C, H, W) or (N, H, W, C)")
    if shape[1] in (1, 3):
        return False
    if shape[3] in (1, 3):
        return True
    raise DataError(f"{what} has shape {shape}: neither axis 1 nor axis 3 has 1 or 3 channels; "
                    "store images as (N, C, H, W) or (N, H, W, C) with C = 1 or 3")


def _check_image_dtype(dtype: np.dtype, what: str) -> None:
    if dtype == np.uint8 or np.issubdtype(dtype, np.floating):
        return
    raise DataError(f"{what} has dtype {dtype}; images must be uint8 (0..255) or float in [0, 1] "
                    "(convert with .astype(np.uint8) or divide by 255)")


def _images_from_array(arr: np.ndarray, what: str) -> torch.Tensor:
    _check_image_dtype(arr.dtype, what)
    last = _layout(arr.shape, what)
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("=")))  # big-endian files: native order
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous() if last else x
    if x.dtype != torch.uint8:
        x = x.float()
        if x.numel():
            lo, hi = torch.aminmax(x)
            if not (float(lo) >= 0.0 and float(hi) <= 1.0):
                raise DataError(f"{what}: float images must lie in [0, 1], found values in [{float(lo):.4g}, {float(hi):.4g}]; "
                                "rescale them or save them as uint8")
    return x


def labels_from(values: Any, n: int, what: str) -> torch.Tensor:
    """Integer labels of any dtype (numpy, tensor, list of ints) as an int64 vector of length ``n``, ≥ 0."""
    arr = values.cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 2 and arr.shape[0] == n and arr.shape[1] > 1:  # Keras' to_categorical, or per-class scores
        raise DataError(f"{what} has shape {arr.shape}: one-hot labels (one column per class); store class indices "
                        "instead, y.argmax(1)")
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"{what} has shape {arr.shape}; expected one integer label per image ({n})")
    if arr.dtype.kind in "US":
        raise DataError(f"{what} has dtype {arr.dtype}: the labels are names, not class indices; convert them with "
                        "classes, y = np.unique(y, return_inverse=True) and save classes beside them")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise DataError(f"{what} has dtype {arr.dtype}; labels must be integers (class indices from 0)")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:  # would wrap to negative in int64
        raise DataError(f"{what}: labels go up to {int(arr.max())}, but labels are class indices 0..K-1; remap them to 0..K-1")
    y = torch.from_numpy(arr.astype(np.int64))
    if y.numel() and int(y.min()) < 0:
        raise DataError(f"{what} has negative labels (min {int(y.min())}); labels are class indices from 0")
    return y


MAX_CLASSES = 100_000  # more than any image benchmark has (ImageNet-21k: 21 841)


def _classes(names: Any, labels: list[torch.Tensor], what: str) -> list[str]:
    top = max((int(y.max()) for y in labels if y.numel()), default=-1)
    if top >= MAX_CLASSES:  # checked before a class list of that length is built
        raise DataError(f"{what}: labels go up to {top}, but labels are class indices 0..K-1 (K at most {MAX_CLASSES}); "
                        "remap them to 0..K-1")
    if names is None:
        return [str(i) for i in range(top + 1)]
    arr = np.asarray(names)
    if arr.ndim != 1:
        raise DataError(f"{what}: classes has shape {arr.shape}; it must be one name per class, a 1-D array")
    # names saved as bytes (numpy's S dtype, h5py, Python 2 pickles) are text, not "b'cat'"
    names = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in arr.tolist()]
    if top >= len(names):
        raise DataError(f"{what}: label {top} is out of range for its {len(names)} classes; fix the labels or the class list")
    return names


def _renumber(ys: list[torch.Tensor], names: Any, what: str) -> tuple[list[torch.Tensor], list[int] | None]:
    """User arrays without a class list whose labels leave gaps ({0, 2, 5}, or 1..10) renumbered to
    0..K-1 in sorted order, one mapping from all splits together, with a warning naming it; the
    original values come back to be kept in the dataset's info. With a class list the labels index
    it, gaps and all, and are left as they are."""
    present = [y for y in ys if y.numel()]
    if names is not None or not present:
        return ys, None
    values = torch.unique(torch.cat(present))
    if int(values[-1]) + 1 == values.numel() or int(values[-1]) >= MAX_CLASSES:
        return ys, None  # no gaps; or labels far past any class count, which _classes refuses (not class indices)
    shown = ", ".join(f"{int(v)}->{i}" for i, v in enumerate(values[:20].tolist()))
    more = "" if values.numel() <= 20 else f", ... ({values.numel()} classes)"
    warnings.warn(f"{what}: labels are not 0..K-1; renumbered in sorted order {shown}{more} "
                  "(the original values are kept in the dataset's info['label_values']); to keep the labels as "
                  "they are (a subset of a model's classes), save the class names beside them as 'classes'", stacklevel=3)
    return [torch.searchsorted(values, y) for y in ys], [int(v) for v in values.tolist()]


def _pick_keys(keys: set[str], where: str) -> tuple[str, str, str | None, str | None]:
    for xk, yk, xt, yt in _ARRAY_KEYS:
        if xk in keys and yk in keys:
            return xk, yk, (xt if xt in keys and yt in keys else None), (yt if xt in keys and yt in keys else None)
    raise DataError(f"{where} has arrays {sorted(keys)}; expected x_train/y_train[/x_test/y_test], images/labels or x/y")


def _check_test_keys(keys: set[str], picked: tuple[str, str, str | None, str | None], where: str) -> None:
    """Refuse test arrays that :func:`_pick_keys` leaves unread (half a pair, or beside images/labels):
    the set would be split at random instead, and the user's test split silently dropped."""
    unread = sorted({"x_test", "y_test"} & keys - set(picked[2:]))
    if unread:
        raise DataError(f"{where} has {' and '.join(unread)}, which would not be read: a test split needs x_test and y_test "
                        "beside x_train and y_train; save all four (or drop the test arrays to have a split made)")


def _stored_members(path: Path) -> dict[str, int]:
    """Where the data of each uncompressed member of a zip starts, by member name. An ``np.savez``
    member is a plain ``.npy`` there, a ``torch.save`` storage its raw bytes: both readable by
    positioned reads."""
    out = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                continue
            f.seek(info.header_offset)
            local = f.read(30)
            if len(local) != 30 or local[:4] != b"PK\x03\x04":
                continue
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            out[info.filename] = info.header_offset + 30 + name_len + extra_len
    return out


def _npz_member(z, path: Path, key: str) -> np.ndarray:
    try:
        return z[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}:{key} is not a readable array ({exc}); re-save the file with numpy.savez") from None


def _npz_images(z, path: Path, key: str, stored: dict[str, int], stream: bool | None) -> RowFileSource | TensorSource:
    """One image member: positioned reads where it is stored uncompressed (streamed when large),
    else decompressed whole (logged when large: a compressed member has no offsets to read at)."""
    if f"{key}.npy" in stored:
        try:
            rows = npy_rows(path, start=stored[f"{key}.npy"])
        except DataError:  # Fortran order, big-endian...: numpy reads it whole, and checks it below
            rows = None
        if rows is not None:
            return _rows_source(rows, stream)
    x = _images_from_array(_npz_member(z, path, key), f"{path}:{key}")
    if f"{key}.npy" not in stored and _streamed(stream, x.numel()):
        log.warning("%s: %s is compressed (numpy.savez_compressed), so it was read whole into memory; save it with "
                    "numpy.savez (uncompressed) or as .npy files to read it a batch at a time", path, key)
    return TensorSource(x)


def read_npz(path: str | Path, *, stream: bool | None = None) -> Split:
    """A ``.npz`` file (see the module docstring) as (train, test or None). Images stored
    uncompressed (``numpy.savez``) are read from the file a batch at a time when large (``stream``);
    compressed ones (``numpy.savez_compressed``) cannot be read at an offset and are read whole."""
    path = Path(path)
    try:
        stored = _stored_members(path)
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path} is not a readable .npz file ({exc}); re-save it with numpy.savez") from None
    with z:
        xk, yk, xt, yt = _pick_keys(set(z.files), str(path))
        _check_test_keys(set(z.files), (xk, yk, xt, yt), str(path))
        parts = [(xk, yk, "train")] + ([(xt, yt, "test")] if xt else [])
        xs = [_npz_images(z, path, a, stored, stream) for a, _, _ in parts]
        arrays = {k: _npz_member(z, path, k) for k in (yk, yt, "classes") if k is not None and k in z.files}
    ys = [labels_from(arrays[b], x.shape[0], f"{path}:{b}") for (_, b, _), x in zip(parts, xs)]
    _same_shapes(xs, str(path))
    ys, values = _renumber(ys, arrays.get("classes"), str(path))
    classes = _classes(arrays.get("classes"), ys, str(path))
    split = "" if xt is None else "-train"
    info = {"source": str(path), "format": "npz"} | ({"label_values": values} if values else {})
    out = [ImageDataset(x, y, classes, f"{path.stem}{split if s == 'train' else '-test'}", dict(info))
           for x, y, (_, _, s) in zip(xs, ys, parts)]
    return out[0], out[1] if len(out) > 1 else None


def _same_shapes(xs: list, where: str) -> None:
    shapes = {tuple(x.shape[1:]) for x in xs}
    if len(shapes) > 1:
        raise DataError(f"{where}: the train and test images have different shapes {sorted(shapes)}")


def _npy_keys(folder: Path) -> tuple[str, str, str | None, str | None] | None:
    keys = {p.stem for p in folder.glob("*.npy")}
    try:
        return _pick_keys(keys, str(folder))
    except DataError:
        return None


def npy_rows(path: Path, *, start: int = 0) -> RowFile:
    """Where the rows of an ``.npy`` file's array lie (its header read, the data not); ``start``:
    where the ``.npy`` begins inside ``path`` (an uncompressed ``.npz`` member)."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"npy format version {version} is not supported")
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable .npy file ({exc}); re-save it with numpy.save") from None
    if fortran and len(shape) > 1:
        raise DataError(f"{path} is stored in Fortran order; re-save it with numpy.save(np.ascontiguousarray(a))")
    if dtype.hasobject:
        raise DataError(f"{path} holds Python objects; images must be uint8 or float arrays")
    if dtype.byteorder == ">" or (dtype.byteorder == "=" and np.little_endian is False):
        raise DataError(f"{path} is big-endian; re-save it with a.astype(a.dtype.newbyteorder('<'))")
    torch_dtype = {np.dtype(np.uint8): torch.uint8, np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32,
                   np.dtype(np.float64): torch.float64}.get(dtype.newbyteorder("="))
    if torch_dtype is None:
        _check_image_dtype(dtype, str(path))
        raise DataError(f"{path} has dtype {dtype}; images must be uint8 or float16/32/64")
    return RowFile(path, offset, tuple(int(s) for s in shape), torch_dtype)


def _rows_source(rows: RowFile | list[RowFile], stream: bool | None) -> RowFileSource | TensorSource:
    """An array's rows on disk (one file, or several read in order) as a source: left there when
    large (``stream``), else read into memory."""
    rows = [rows] if isinstance(rows, RowFile) else rows
    src = RowFileSource(rows, channels_last=_layout(rows[0].shape, str(rows[0].path)), check=True)
    if not _streamed(stream, math.prod(src.shape)):
        return TensorSource(_read_all(src))
    if src.dtype == torch.float32:  # one pass now, a chunk at a time, so a value outside [0, 1] is refused before any work
        for chunk in torch.arange(len(src)).split(4096):
            src.read(chunk)
    return src


def read_npy(path: str | Path, *, stream: bool | None = None) -> Split:
    """A folder of ``.npy`` files (or one of them) as (train, test or None); large ones streamed."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    keys = _npy_keys(folder)
    if keys is None:
        raise DataError(f"{folder} lacks a pair of .npy files; expected images.npy + labels.npy, x.npy + y.npy, "
                        "or x_train/y_train[/x_test/y_test].npy")
    xk, yk, xt, yt = keys
    _check_test_keys({p.stem for p in folder.glob("*.npy")}, keys, str(folder))
    parts = [(xk, yk, "train")] + ([(xt, yt, "test")] if xt else [])
    sources, ys = [], []
    for a, b, _ in parts:
        src = _rows_source(npy_rows(folder / f"{a}.npy"), stream)
        try:
            labels = np.load(folder / f"{b}.npy", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{folder / f'{b}.npy'} is not a readable .npy file ({exc})") from None
        ys.append(labels_from(labels, len(src), str(folder / f"{b}.npy")))
        sources.append(src)
    _same_shapes([torch.empty((0, *s.shape[1:])) for s in sources], str(folder))
    names = None
    if (folder / "classes.npy").is_file():
        try:
            names = np.load(folder / "classes.npy", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"{folder / 'classes.npy'} is not a readable .npy file of names ({exc}); re-save it with "
                            "numpy.save(path, np.array(names)) or delete it") from None
    ys, values = _renumber(ys, names, str(folder))
    classes = _classes(names, ys, str(folder))
    split = "" if xt is None else "-train"
    info = {"source": str(folder), "format": "npy"} | ({"label_values": values} if values else {})
    out = [ImageDataset(src, y, classes, f"{folder.name}{split if s == 'train' else '-test'}", dict(info))
           for src, y, (_, _, s) in zip(sources, ys, parts)]
    return out[0], out[1] if len(out) > 1 else None


# ---- MadryLab's released tensors --------------------------------------------------------------

def _madrylab_prefix(folder: Path) -> str | None:
    for p in sorted(folder.glob("*_ims")):
        if p.is_file() and (folder / f"{p.name[:-4]}_lab").is_file():
            return p.name[:-4]
    return None


def _load_tensor(path: Path) -> torch.Tensor:
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing what it cannot read
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle's, zipfile's and torch's own errors all mean "not a plain tensor file"
        raise DataError(f"{path} is not a file of plain tensors ({type(exc).__name__}); only torch.save of tensors "
                        "or lists of tensors is read") from None
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(t, torch.Tensor) for t in obj):
        try:
            return torch.cat(list(obj))
        except RuntimeError as exc:
            raise DataError(f"{path}: its tensors cannot be concatenated ({exc})") from None
    raise DataError(f"{path} holds a {type(obj).__name__}, not a tensor or a list of tensors")


def _tensor_rows(path: Path) -> list[RowFile] | None:
    """Where the rows of a ``torch.save``'d tensor (or list of tensors) lie in its file, so that it
    can be read by positioned reads: ``torch.load(mmap=True, weights_only=True)`` gives each tensor's
    shape and place in its storage without reading its data, and each storage is an uncompressed
    zip member at an offset. None where that cannot be told (the legacy pre-1.6 format, tensors
    that are not contiguous or not images): then the file is read whole."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        offsets = sorted(o for name, o in _stored_members(path).items() if "/data/" in name)
    except Exception:  # anything torch or zipfile refuses: _load_tensor reads it (or says why not)
        return None
    tensors = [obj] if isinstance(obj, torch.Tensor) else list(obj) if isinstance(obj, (list, tuple)) else []
    if (not tensors or not offsets or not all(isinstance(t, torch.Tensor) and t.ndim == 4 and t.numel() and t.is_contiguous()
                                              and (t.dtype == torch.uint8 or t.dtype in FLOAT_TYPES) for t in tensors)):
        return None
    ptrs = [t.untyped_storage().data_ptr() for t in tensors]
    base = min(ptrs) - offsets[0]  # the one mapping of the file under every storage
    known = set(offsets)
    if any(p - base not in known for p in ptrs):
        return None
    return [RowFile(path, p - base + t.storage_offset() * t.element_size(), tuple(t.shape), t.dtype) for t, p in zip(tensors, ptrs)]


def read_madrylab(path: str | Path, *, stream: bool | None = None) -> Split:
    """A MadryLab constructed-dataset folder (``CIFAR_ims``/``CIFAR_lab``) as (train, test or None).

    ``CIFAR_ims`` saved by a torch of 1.6 or later (a zip) is read by positioned reads, a batch at a
    time from disk when large (``stream``), like an ``.npy``; memory-mapping it instead would count
    every page read in the process's resident memory. An older (legacy-format) file is read whole."""
    path = Path(path)
    out = []
    for folder in (path, path / "test"):
        prefix = _madrylab_prefix(folder) if folder.is_dir() else None
        if prefix is None:
            if folder == path:
                raise DataError(f"{path} lacks CIFAR_ims and CIFAR_lab (MadryLab's layout)")
            continue
        ims = folder / f"{prefix}_ims"
        rows = _tensor_rows(ims)
        if rows is not None:
            x = _rows_source(rows, stream)
        else:
            x = _load_tensor(ims)
            if x.ndim != 4:
                raise DataError(f"{ims} has shape {tuple(x.shape)}; expected N×C×H×W images")
            if x.dtype != torch.uint8 and not x.is_floating_point():  # .float() would pass integer 0/1 off as [0, 1]
                raise DataError(f"{ims} has dtype {str(x.dtype).removeprefix('torch.')}; images must be uint8 (0..255) or "
                                "float in [0, 1] (convert with .to(torch.uint8) or divide by 255)")
            # uint8 too: the one layout rule (NHWC → NCHW) whichever way the file was saved
            x = _images_from_array(x.numpy() if x.dtype == torch.uint8 else x.float().numpy(), str(ims))
            if _streamed(stream, x.numel()):
                log.warning("%s cannot be read at offsets (torch's legacy pre-1.6 format, or tensors that are not contiguous), "
                            "so it was read whole into memory; re-save it with torch.save from a current torch, or as .npy, "
                            "to read it a batch at a time", ims)
        y = _load_tensor(folder / f"{prefix}_lab")
        out.append((x, labels_from(y, x.shape[0], str(folder / f"{prefix}_lab")), folder))
    _same_shapes([x for x, _, _ in out], str(path))
    classes = _classes(None, [y for _, y, _ in out], str(path))
    if len(classes) == 10 and tuple(out[0][0].shape[1:]) == (3, 32, 32):  # MadryLab released CIFAR-10 sets
        classes = list(CIFAR_CLASSES)
    sets = [ImageDataset(x, y, classes, path.name + ("-test" if folder != path else ""),
                         {"source": str(path), "format": "madrylab"}) for x, y, folder in out]
    return sets[0], sets[1] if len(sets) > 1 else None


# ---- any torch Dataset ------------------------------------------------------------------------

def _item_image(img: Any, where: str) -> torch.Tensor:
    if hasattr(img, "convert") and hasattr(img, "mode"):  # a PIL image
        if img.mode not in _GRAY_MODES | _COLOUR_MODES:  # I;16, I, F: converting to 8 bits would clip them
            raise DataError(f"{where}: the PIL image has mode {img.mode} (16-bit or float); give 8-bit images, "
                            "or a float tensor in [0, 1]")
        img = img.convert("L" if img.mode in _GRAY_MODES else "RGB")
        arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
        return arr.unsqueeze(0) if arr.ndim == 2 else arr.permute(2, 0, 1)
    x = torch.from_numpy(np.asarray(img)) if isinstance(img, np.ndarray) else img
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{where}: the image is a {type(img).__name__}; items must be (tensor or PIL image, label)")
    if x.ndim == 2:
        return x.unsqueeze(0)
    if x.ndim == 3 and x.shape[0] not in (1, 3) and x.shape[2] in (1, 3):
        return x.permute(2, 0, 1)
    if x.ndim != 3:
        raise DataError(f"{where}: the image has shape {tuple(x.shape)}; expected (C, H, W) or (H, W)")
    return x


def _item_label(label: Any, where: str) -> int:
    if isinstance(label, torch.Tensor):
        if label.numel() != 1 or label.is_floating_point() or label.is_complex():
            raise DataError(f"{where}: the label {label!r} is not one integer")
        return int(label.reshape(()))
    if isinstance(label, (bool, int, np.integer)):
        return int(label)
    raise DataError(f"{where}: the label is a {type(label).__name__}; labels must be integers (int, numpy int, 0-d tensor)")


def _as_is(item: Any) -> Any:
    return item


def from_torch_dataset(ds: torch.utils.data.Dataset, *, classes: list[str] | None = None, name: str | None = None,
                       workers: int = 0) -> ImageDataset:
    """A map-style ``torch.utils.data.Dataset`` of ``(image, label)`` items as an in-memory
    :class:`ImageDataset` (uint8 when every image is uint8). ``workers`` processes fetch items."""
    try:
        n = len(ds)  # type: ignore[arg-type]
    except TypeError:
        raise DataError("the dataset has no len(); pass a map-style torch.utils.data.Dataset") from None
    if n == 0:
        raise DataError("the dataset is empty")
    loader = torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_as_is)
    images, labels = None, torch.empty(n, dtype=torch.int64)
    for i, item in enumerate(loader):
        where = f"item {i} of the dataset"
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError(f"{where} is a {type(item).__name__}; items must be (image, label) pairs")
        x = _item_image(item[0], where)
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise DataError(f"{where}: the image has dtype {x.dtype}; images must be uint8 or float in [0, 1]")
        if images is None:
            images = torch.empty((n, *x.shape), dtype=torch.uint8 if x.dtype == torch.uint8 else torch.float32)
        if tuple(x.shape[1:]) == tuple(images.shape[2:]) and x.shape[0] != images.shape[1]:
            raise DataError(f"{where} has {x.shape[0]} channels, item 0 {images.shape[1]}; give every image one mode "
                            "(e.g. img.convert('RGB') in the dataset's transform)")
        if tuple(x.shape) != tuple(images.shape[1:]):
            raise DataError(f"{where} has shape {tuple(x.shape)}, item 0 {tuple(images.shape[1:])}; resize them to one size")
        if images.dtype == torch.uint8 and x.dtype != torch.uint8:
            images = to_float(images)
        images[i] = x if images.dtype == x.dtype else (to_float(x) if x.dtype == torch.uint8 else x.float())
        labels[i] = _item_label(item[1], where)
    if images.dtype != torch.uint8:
        lo, hi = torch.aminmax(images)
        if not (float(lo) >= 0.0 and float(hi) <= 1.0):
            raise DataError(f"the dataset's float images lie in [{float(lo):.4g}, {float(hi):.4g}], not [0, 1]; "
                            "drop normalisation transforms (the model normalises)")
    if int(labels.min()) < 0:
        raise DataError(f"the dataset has negative labels (min {int(labels.min())}); labels are class indices from 0")
    names = classes if classes is not None else getattr(ds, "classes", None)
    if not (isinstance(names, (list, tuple)) and all(isinstance(c, str) for c in names)):
        names = None
    classes = _classes(names, [labels], "the dataset")
    return ImageDataset(images, labels, classes, name or type(ds).__name__, {"source": type(ds).__name__, "format": "torch"})
