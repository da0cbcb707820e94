"""Image sources: where a dataset's pixels live, read a batch at a time.

A source answers ``read(index) -> (B, C, H, W)`` tensor in its own dtype (uint8 or float32) and
knows its ``shape``. :class:`~advfeatures.data.ImageDataset` turns what it reads into float32 in
[0, 1] per batch, so a uint8 source costs a quarter of the memory of its float tensor and a lazy one
(an ``.npy`` file, safetensors shards, an image folder) costs only the batch being read.

* :class:`TensorSource`: a tensor in memory (uint8 or float in [0, 1]).
* :class:`RowFileSource`: rows of a file read on demand (``.npy`` arrays, constructed shards),
  NHWC rows turned to NCHW per batch.
* :class:`ImageFileSource`: image files decoded on demand (Pillow), resized/cropped as asked; with
  ``workers`` a :class:`torch.utils.data.DataLoader` decodes batches in worker processes.
* :class:`IndexedSource`: a subset of a lazy source (what ``ImageDataset.subset`` makes of one).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import torch

from ..errors import DataError
from ..storage import RowFile

FLOAT_TYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class ImageSource(ABC):
    """Images readable by index. ``dtype`` is what :meth:`read` returns: uint8 (0..255) or float32."""

    shape: tuple[int, int, int, int]
    dtype: torch.dtype
    in_memory: bool = False
    workers: int = 0  # DataLoader worker processes to use when iterating (decoding costs)

    def __len__(self) -> int:
        return self.shape[0]

    @abstractmethod
    def read(self, index: torch.Tensor) -> torch.Tensor:
        """Images ``index`` (an int64 vector), (B, C, H, W) in :attr:`dtype`, on the CPU."""

    def describe(self) -> str:
        return type(self).__name__


class TensorSource(ImageSource):
    """Images held in memory: uint8 as given, float checked to lie in [0, 1]."""

    in_memory = True

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images
        self.shape = tuple(images.shape)  # type: ignore[assignment]
        self.dtype = images.dtype

    def read(self, index: torch.Tensor) -> torch.Tensor:
        return self.images[index.to(self.images.device)]


class RowFileSource(ImageSource):
    """Images as rows of a file (an ``.npy`` array, a safetensors tensor, several shard files in
    order), read with positioned reads. ``channels_last`` rows (N, H, W, C) become NCHW per batch;
    ``clamp`` clips float rows to [0, 1] (constructed images may overshoot by float rounding; more
    than 1e-4 outside is refused, as ``check`` refuses anything outside)."""

    def __init__(self, files: list[RowFile], *, channels_last: bool = False, clamp: bool = False, check: bool = False) -> None:
        if not files:
            raise DataError("an image source needs at least one file")
        first = files[0]
        if any(f.shape[1:] != first.shape[1:] or f.dtype != first.dtype for f in files):
            raise DataError(f"the files of {first.path.parent} hold images of different shapes or dtypes")
        self.files = files
        self.channels_last, self.clamp, self.check = channels_last, clamp, check
        self.bounds = torch.tensor([0] + [f.shape[0] for f in files]).cumsum(0)
        inner = tuple(first.shape[1:])
        if len(inner) == 2:  # (N, H, W): one channel
            inner = (1, *inner) if not channels_last else (*inner, 1)
        c_h_w = (inner[2], inner[0], inner[1]) if channels_last else inner
        self.shape = (int(self.bounds[-1]), *c_h_w)  # type: ignore[assignment]
        self.dtype = torch.uint8 if first.dtype == torch.uint8 else torch.float32

    def read(self, index: torch.Tensor) -> torch.Tensor:
        index = index.to("cpu", torch.int64)
        which = torch.bucketize(index, self.bounds[1:], right=True)
        rows = None
        for f in which.unique().tolist():
            mask = which == f
            part = self.files[f].read_rows(index[mask] - self.bounds[f])
            if rows is None:
                rows = torch.empty((index.numel(), *part.shape[1:]), dtype=part.dtype)
            rows[mask] = part
        if rows is None:
            rows = torch.empty((0, *self.files[0].shape[1:]), dtype=self.files[0].dtype)
        if rows.ndim == 3:
            rows = rows.unsqueeze(-1 if self.channels_last else 1)
        if self.channels_last:
            rows = rows.permute(0, 3, 1, 2).contiguous()
        if self.dtype == torch.float32:
            rows = rows.float()
            if (self.clamp or self.check) and rows.numel():
                lo, hi = torch.aminmax(rows)
                slack = 1e-4 if self.clamp else 0.0  # clamp: float rounding at the box's edges, nothing more
                if not (float(lo) >= -slack and float(hi) <= 1.0 + slack):  # also false for nan
                    raise DataError(f"{self.files[0].path}: float images must lie in [0, 1], found values in "
                                    f"[{float(lo):.4g}, {float(hi):.4g}]; rescale them or save them as uint8")
                if self.clamp:
                    rows.clamp_(0, 1)
        return rows

    def describe(self) -> str:
        return f"{len(self.files)} file(s) from {self.files[0].path}"


class ImageFileSource(ImageSource):
    """Image files decoded on demand into uint8 (B, C, H, W): ``mode`` "L" (1 channel) or "RGB",
    then resized to ``size`` and centre-cropped to ``crop`` (see :func:`advfeatures.data.external.decode_image`)."""

    dtype = torch.uint8

    def __init__(self, files: list[Path], *, mode: str, shape: tuple[int, int, int], size=None, crop=None, workers: int = 0) -> None:
        self.files, self.mode, self.size, self.crop, self.workers = list(files), mode, size, crop, workers
        self.shape = (len(self.files), *shape)  # type: ignore[assignment]

    def read(self, index: torch.Tensor) -> torch.Tensor:
        from .external import decode_image  # the decoder lives with the reader that checked the files

        out = torch.empty((index.numel(), *self.shape[1:]), dtype=torch.uint8)
        for j, i in enumerate(index.tolist()):
            out[j] = decode_image(self.files[i], mode=self.mode, size=self.size, crop=self.crop, expect=self.shape[1:])
        return out

    def describe(self) -> str:
        return f"{len(self.files)} image files"


class IndexedSource(ImageSource):
    """The images ``index`` of another source, in that order."""

    def __init__(self, base: ImageSource, index: torch.Tensor) -> None:
        self.base, self.index = base, index.to("cpu", torch.int64)
        self.shape = (self.index.numel(), *base.shape[1:])  # type: ignore[assignment]
        self.dtype, self.workers = base.dtype, base.workers

    def read(self, index: torch.Tensor) -> torch.Tensor:
        return self.base.read(self.index[index.to("cpu", torch.int64)])

    def describe(self) -> str:
        return f"subset of {self.base.describe()}"
