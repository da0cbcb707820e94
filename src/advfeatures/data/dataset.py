"""Datasets: images (N, C, H, W) read as float32 in [0, 1] a batch at a time, and int64 labels.

The pixels live in an :class:`~advfeatures.data.source.ImageSource`: a tensor in memory (uint8
where the source is uint8, a quarter of the float32 size) or a file read on demand. Everything that
walks a dataset (training, the constructions) reads it through :meth:`ImageDataset.batch` /
:meth:`ImageDataset.iter_batches`, so its peak memory is one batch, not the set. uint8 becomes
float by ``x.float() / 255`` on the CPU, the same arithmetic the loaders always used, so a uint8-held
set gives bit-identical batches to its float32 tensor (off the CPU a table of the 256 CPU-computed
values is indexed, so that stays exact on any device).

:attr:`ImageDataset.images` is still there for code that wants the whole set as one float32 tensor:
it is built on first use and kept, which costs the full float32 size, so large sets should be read
by batch instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ..errors import DataError
from ..storage import chunked_digest
from .source import FLOAT_TYPES, ImageSource, IndexedSource, TensorSource

_UINT8_TO_FLOAT = torch.arange(256, dtype=torch.float32).div_(255.0)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (0..255) → float32 in [0, 1], exactly ``x.float() / 255`` as computed on the CPU."""
    if x.dtype != torch.uint8:
        return x if x.dtype == torch.float32 else x.float()
    if x.device.type == "cpu":
        return x.float().div_(255.0)
    return _UINT8_TO_FLOAT.to(x.device)[x.long()]


class ImageDataset:
    """A labelled image set. ``images``: a float tensor in [0, 1], a uint8 tensor (0..255, kept as
    uint8), or an :class:`ImageSource`; ``labels``: an int64 vector in [0, len(classes))."""

    def __init__(self, images: torch.Tensor | ImageSource, labels: torch.Tensor, classes: list[str], name: str = "dataset",
                 info: dict[str, Any] | None = None) -> None:
        self.classes, self.name, self.info = list(classes), name, dict(info) if info is not None else {}
        if isinstance(images, ImageSource):
            source = images
        else:
            if isinstance(images, torch.Tensor) and images.dtype != torch.uint8:
                check_images(images, what=f"{name} images")
            elif isinstance(images, torch.Tensor) and images.ndim != 4:
                raise DataError(f"{name} images must be NCHW (4 dimensions), got shape {tuple(images.shape)}")
            elif not isinstance(images, torch.Tensor):
                check_images(images, what=f"{name} images")
            source = TensorSource(images)
        self.source = source
        self._float: torch.Tensor | None = source.images if source.in_memory and source.dtype == torch.float32 else None
        n = source.shape[0]
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.ndim != 1 or labels.shape[0] != n:
            got = f"{labels.dtype} of shape {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise DataError(f"{name} labels must be an int64 vector of length {n}, got {got}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(self.classes)):
            raise DataError(f"{name} labels must lie in [0, {len(self.classes) - 1}]")
        self.labels = labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return (f"ImageDataset({self.name!r}, {len(self)} images of {self.image_shape}, {self.num_classes} classes, "
                f"{'in memory' if self.in_memory else 'streamed'} as {str(self.storage_dtype).removeprefix('torch.')})")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.source.shape[1:])  # type: ignore[return-value]

    @property
    def in_memory(self) -> bool:
        return self.source.in_memory

    @property
    def storage_dtype(self) -> torch.dtype:
        """How the pixels are held: torch.uint8 or torch.float32 (what :meth:`batch` returns is always float32)."""
        return self.source.dtype

    @property
    def images(self) -> torch.Tensor:
        """The whole set as one float32 tensor in [0, 1] (built on first use and kept)."""
        if self._float is None:
            if self.source.in_memory:
                self._float = to_float(self.source.images)
            else:
                out = torch.empty((len(self), *self.image_shape), dtype=torch.float32)
                for lo in range(0, len(self), 1024):
                    idx = torch.arange(lo, min(len(self), lo + 1024))
                    out[lo: lo + idx.numel()] = to_float(self.source.read(idx))
                self._float = out
        return self._float

    @property
    def storage(self) -> torch.Tensor:
        """The in-memory pixels as held (uint8 or float32); refused for a streamed set."""
        if not self.source.in_memory:
            raise DataError(f"{self.name} is streamed from disk; read it with .batch() or .iter_batches()")
        return self.source.images

    def batch(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``index`` as float32 in [0, 1] and their labels (on the storage's device)."""
        index = self._as_index(index)
        x = to_float(self.source.read(index))
        return x, self.labels[index.to(self.labels.device)]

    def iter_batches(self, batch_size: int, *, order: torch.Tensor | None = None, device: str | torch.device | None = None,
                     workers: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) for consecutive chunks of ``order`` (default 0..N-1), ``batch_size`` at a time.

        A lazy source with ``workers`` > 0 (the argument, else the source's own setting) is read by
        a :class:`torch.utils.data.DataLoader` with that many worker processes, a few batches ahead.
        The batches are the same either way.
        """
        order = torch.arange(len(self)) if order is None else self._as_index(order)
        chunks = list(order.split(batch_size))
        workers = self.source.workers if workers is None else workers
        if workers > 0 and not self.in_memory and len(chunks) > 1:
            loader = torch.utils.data.DataLoader(_BatchReader(self), sampler=chunks, batch_size=None, num_workers=workers,
                                                 prefetch_factor=2, persistent_workers=False)
            batches: Iterator = iter(loader)
        else:
            batches = (self.batch(c) for c in chunks)
        for x, y in batches:
            yield (x, y) if device is None else (x.to(device, non_blocking=True), y.to(device, non_blocking=True))

    def digest(self, batch_size: int = 1024) -> str:
        """``tensor_digest(self.images, self.labels)``, computed a batch at a time: the same short
        hash whether the set is in memory (uint8 or float) or streamed, without building ``images``."""
        shape = (len(self), *self.image_shape)
        if self._float is not None:
            chunks: Iterator[torch.Tensor] = iter([self._float])
        else:
            chunks = (x for x, _ in self.iter_batches(batch_size, workers=0))
        return chunked_digest([(torch.float32, shape, chunks), (self.labels.dtype, tuple(self.labels.shape), [self.labels])])

    def to(self, device: str | torch.device) -> ImageDataset:
        """The same set with its in-memory pixels (as held: uint8 stays uint8) and labels on ``device``;
        a streamed set is returned as it is (its batches are moved by whoever reads them)."""
        device = torch.device(device)
        if not self.in_memory or self.source.images.device == device:
            return self
        return ImageDataset(self.source.images.to(device), self.labels.to(device), self.classes, self.name, self.info)

    def subset(self, index: torch.Tensor | slice, *, name: str | None = None) -> ImageDataset:
        if self.in_memory:
            images: torch.Tensor | ImageSource = self.source.images[index]
        else:
            images = IndexedSource(self.source, self._as_index(index))
        sub = ImageDataset(images, self.labels[index], self.classes, name or self.name, dict(self.info))
        if self._float is not None and self.source.dtype != torch.float32:
            sub._float = self._float[index]
        return sub

    def head(self, n: int | None) -> ImageDataset:
        """The first ``n`` examples (all of them when ``n`` is None)."""
        return self if n is None or n >= len(self) else self.subset(slice(0, n))

    def _as_index(self, index: torch.Tensor | slice) -> torch.Tensor:
        if isinstance(index, slice):
            return torch.arange(len(self))[index]
        index = torch.as_tensor(index)
        if index.dtype == torch.bool:
            return index.nonzero().flatten()
        return index.to(torch.int64).flatten()


class _BatchReader(torch.utils.data.Dataset):
    """A dataset whose items are whole batches (the DataLoader's sampler yields index chunks)."""

    def __init__(self, ds: ImageDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ds.batch(index)


def check_images(x: torch.Tensor, *, what: str = "images") -> None:
    """Refuse anything but a float (N, C, H, W) tensor inside [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise DataError(f"{what} must be NCHW (4 dimensions), got shape {tuple(x.shape)}; add batch/channel dimensions")
    if not x.is_floating_point():
        raise DataError(f"{what} must be floating point in [0, 1], got {x.dtype}; divide uint8 images by 255")
    if x.numel():
        lo, hi = torch.aminmax(x.detach())
        if not (float(lo) >= 0.0 and float(hi) <= 1.0):
            raise DataError(f"{what} must lie in [0, 1], found values in [{float(lo):.4g}, {float(hi):.4g}]; rescale them")


__all__ = ["FLOAT_TYPES", "ImageDataset", "check_images", "to_float"]
