"""Writing datasets out in formats other tools read, never leaving a half-written result.

* ``imagefolder``: one PNG per image in one folder per class (``train/`` and ``test/`` when given
  both splits) and a ``classes.json`` of (folder, name) in label order, so our reader gives back the
  same label numbers even where sorted folder names would not (torchvision's ``ImageFolder`` sorts
  the folders). PNG holds 8 bits: float images are stored as ``round(255·x)``, uint8 images exactly.
  Files are named by their position in the set (``000123.png``); the reader lists them class by
  class, and its ``info["files"]`` maps each image back to its file.
* ``npz``: ``images``/``labels`` (or ``x_train``/``y_train``/``x_test``/``y_test``) and ``classes``,
  NCHW, uint8 for uint8-held sets and float32 otherwise: an exact round trip.
* ``npy``: the same arrays as ``.npy`` files in a folder, written a batch at a time (for sets larger
  than memory; our reader streams them back).
* ``madrylab``: ``CIFAR_ims``/``CIFAR_lab``, each ``torch.save`` of a list holding one plain tensor
  (float32 images in [0, 1], int64 labels), as MadryLab's loaders expect
  (``torch.cat(torch.load(...))``); a test split goes to ``test/`` in the same layout.

Everything is written into a temporary folder (or file) beside ``out`` and renamed into place at the
end; an existing ``out`` is replaced only with ``overwrite=True``, and only once the new one is complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..storage import atomic_path, current_umask, make_temporary
from .dataset import ImageDataset

EXPORT_FORMATS = ("imagefolder", "npz", "npy", "madrylab")
_BATCH = 1024


def export_dataset(ds: ImageDataset, out: str | Path, *, format: str, test: ImageDataset | None = None, overwrite: bool = False,
                   extra: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``ds`` (and ``test``, as the test split) to ``out`` in ``format``; returns ``out``.

    ``extra`` (``npz`` only): more per-set arrays to store beside the images (e.g. the original labels
    of adversarial examples); readers ignore keys they do not know.
    """
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    _recover_previous(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; pass overwrite=True (--overwrite) or choose another path")
    if test is not None and (test.image_shape != ds.image_shape or test.classes != ds.classes):
        raise DataError(f"the test split ({test.image_shape}, {test.num_classes} classes) does not match the training split "
                        f"({ds.image_shape}, {ds.num_classes} classes)")
    if extra and format != "npz":
        raise ConfigError("extra arrays are stored by the npz format only")
    if format == "imagefolder" and ds.image_shape[0] not in (1, 3):
        raise DataError(f"PNG holds 1 or 3 channels, the images have {ds.image_shape[0]}; export as npz instead")
    if format == "npz":
        with _replacing(out, overwrite, folder=False) as tmp:
            _write_npz(ds, test, tmp, extra or {})
        return out
    writer: Callable[[ImageDataset, ImageDataset | None, Path], None] = {
        "imagefolder": _write_imagefolder, "npy": _write_npy, "madrylab": _write_madrylab}[format]
    with _replacing(out, overwrite, folder=True) as tmp:
        writer(ds, test, tmp)
    return out


def save_adversarial(x_adv: torch.Tensor, labels: torch.Tensor, out: str | Path, *, classes: list[str], format: str = "npz",
                     original_labels: torch.Tensor | None = None, overwrite: bool = False, name: str = "adversarial") -> Path:
    """Adversarial examples as a dataset in ``format`` (labelled ``labels``: the true labels, or
    the targets). For ``npz``, ``original_labels`` is stored too (key ``original_labels``)."""
    ds = ImageDataset(x_adv.detach().cpu().float(), labels.detach().cpu().long(), classes, name)
    extra = {"original_labels": original_labels.detach().cpu().long()} if original_labels is not None and format == "npz" else None
    return export_dataset(ds, out, format=format, overwrite=overwrite, extra=extra)


def _recover_previous(out: Path) -> None:
    """A run killed between :class:`_replacing`'s two renames left the previous export at
    ``.OUT.old-PID`` and nothing at ``out``: put it back when ``out`` is missing (it is a whole
    export), else remove it (``out`` is newer). A live process's is left to it."""
    from ..storage import _pid_alive

    if not out.parent.is_dir():
        return
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.old-(\d+)$")
    for entry in sorted(out.parent.iterdir()):
        m = pattern.match(entry.name)
        if m is None or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue
        if not out.exists() and not out.is_symlink():
            os.replace(entry, out)
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


class _replacing:
    """A temporary file or folder beside ``out``, renamed to ``out`` when the block succeeds."""

    def __init__(self, out: Path, overwrite: bool, *, folder: bool) -> None:
        self.out, self.overwrite, self.folder = out, overwrite, folder

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.folder:
            self.tmp = make_temporary(self.out, folder=True)  # a dead run's leftover is removed first
            return self.tmp
        self._file = atomic_path(self.out)
        self.tmp = self._file.__enter__()
        return self.tmp

    def __exit__(self, kind, value, tb) -> bool:
        if not self.folder:
            if kind is None and self.out.is_dir():
                shutil.rmtree(self.out)  # a folder cannot be replaced by a file in one rename
            self._file.__exit__(kind, value, tb)
            return False
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        # mkdtemp's folder is private (0700); the export gets the mode any new folder of the user
        # gets (0755 under umask 022), like the files written inside it
        os.chmod(self.tmp, 0o777 & ~current_umask())
        old = None
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        return False


def _uint8_batches(ds: ImageDataset):
    """(uint8 images, labels) a batch at a time: exact for uint8-held sets, round(255·x) for floats."""
    for x, y in ds.iter_batches(_BATCH):
        yield x.mul(255).round_().to(torch.uint8), y


def _folder_names(classes: list[str]) -> list[str]:
    names, seen = [], set()
    for i, c in enumerate(classes):
        base = "".join("_" if ch in '/\\\0:' else ch for ch in c).strip().strip(".") or f"class{i}"
        name, k = base, 1
        while name.lower() in seen:
            k += 1
            name = f"{base}_{k}"
        seen.add(name.lower())
        names.append(name)
    return names


def _write_imagefolder(ds: ImageDataset, test: ImageDataset | None, tmp: Path) -> None:
    from PIL import Image

    folders = _folder_names(ds.classes)
    (tmp / "classes.json").write_text(json.dumps([{"folder": f, "name": c} for f, c in zip(folders, ds.classes)], indent=1) + "\n",
                                      encoding="utf-8")
    for split, data in ((tmp / "train", ds), (tmp / "test", test)) if test is not None else ((tmp, ds),):
        if data is None:
            continue
        used = set(data.labels.unique().tolist())
        for c in sorted(used):
            (split / folders[c]).mkdir(parents=True, exist_ok=True)
        if data is ds and len(used) < data.num_classes:
            raise DataError(f"{data.name} has no images of classes {sorted(set(range(data.num_classes)) - used)[:5]}; an image "
                            "folder cannot hold an empty class (export as npz instead)")
        pos = 0
        for x, y in _uint8_batches(data):
            arr = x.permute(0, 2, 3, 1).numpy()
            for img, label in zip(arr, y.tolist()):
                mode = "L" if img.shape[2] == 1 else "RGB"
                Image.fromarray(img[:, :, 0] if mode == "L" else img, mode=mode).save(split / folders[label] / f"{pos:06d}.png")
                pos += 1


def _arrays(ds: ImageDataset) -> tuple[np.ndarray, np.ndarray]:
    if ds.storage_dtype != torch.uint8:
        return ds.images.cpu().numpy(), ds.labels.cpu().numpy()
    if ds.in_memory:
        return ds.storage.cpu().numpy(), ds.labels.cpu().numpy()
    return torch.cat([x for x, _ in _uint8_batches(ds)]).numpy(), ds.labels.cpu().numpy()


def _write_npz(ds: ImageDataset, test: ImageDataset | None, tmp: Path, extra: dict[str, torch.Tensor]) -> None:
    arrays: dict[str, np.ndarray] = {"classes": np.array(ds.classes, dtype=str)}
    if test is None:
        arrays["images"], arrays["labels"] = _arrays(ds)
    else:
        (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"]) = _arrays(ds), _arrays(test)
    for k, v in extra.items():
        if k in arrays:
            raise ConfigError(f"extra array name {k!r} clashes with a dataset key")
        arrays[k] = v.cpu().numpy()
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _write_npy(ds: ImageDataset, test: ImageDataset | None, tmp: Path) -> None:
    np.save(tmp / "classes.npy", np.array(ds.classes, dtype=str))
    for (xk, yk), data in ((("images", "labels"), ds),) if test is None else ((("x_train", "y_train"), ds), (("x_test", "y_test"), test)):
        dtype = np.uint8 if data.storage_dtype == torch.uint8 else np.float32
        with open(tmp / f"{xk}.npy", "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                                                     "shape": (len(data), *data.image_shape)})
            if dtype == np.uint8:
                for x, _ in _uint8_batches(data):
                    f.write(x.numpy().tobytes())
            else:
                for x, _ in data.iter_batches(_BATCH):
                    f.write(x.numpy().astype(np.float32).tobytes())
        np.save(tmp / f"{yk}.npy", data.labels.cpu().numpy())


def _write_madrylab(ds: ImageDataset, test: ImageDataset | None, tmp: Path) -> None:
    for folder, data in ((tmp, ds), (tmp / "test", test)):
        if data is None:
            continue
        folder.mkdir(exist_ok=True)
        torch.save([data.images.cpu().contiguous().clone()], folder / "CIFAR_ims")
        torch.save([data.labels.cpu().long().clone()], folder / "CIFAR_lab")
