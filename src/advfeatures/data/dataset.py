"""Datasets as tensors: images (N, C, H, W) float32 in [0, 1] and int64 labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import DataError


@dataclass
class ImageDataset:
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str = "dataset"
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_images(self.images, what=f"{self.name} images")
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise DataError(
                f"{self.name} labels must be an int64 vector of length {self.images.shape[0]}, "
                f"got {self.labels.dtype} of shape {tuple(self.labels.shape)}"
            )
        if self.labels.numel() and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise DataError(f"{self.name} labels must lie in [0, {len(self.classes) - 1}]")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, index: torch.Tensor | slice, *, name: str | None = None) -> ImageDataset:
        return ImageDataset(self.images[index], self.labels[index], self.classes, name or self.name, dict(self.info))

    def head(self, n: int | None) -> ImageDataset:
        """The first ``n`` examples (all of them when ``n`` is None)."""
        return self if n is None or n >= len(self) else self.subset(slice(0, n))


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
