"""Small models for small images: an MLP and a compact CNN."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..errors import ModelError
from .base import Classifier, Normalize, PenultimateReLU


def _check_shape(in_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(in_shape) != 3 or any(int(s) < 1 for s in in_shape):
        raise ModelError(f"input shape must be (channels, height, width) with positive sizes, got {tuple(in_shape)}")
    c, h, w = (int(s) for s in in_shape)
    return c, h, w


class MLP(Classifier):
    """Fully connected ReLU network; the representation is the last hidden layer."""

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        *,
        hidden: Sequence[int] = (256, 256),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        c, h, w = _check_shape(in_shape)
        if not hidden:
            raise ModelError("an MLP needs at least one hidden layer (e.g. hidden=(256,))")
        layers: list[nn.Module] = []
        if mean is not None and std is not None:
            layers.append(Normalize(mean, std))
        layers.append(nn.Flatten())
        width = c * h * w
        for i, units in enumerate(hidden):
            layers.append(nn.Linear(width, units))
            layers.append(PenultimateReLU() if i == len(hidden) - 1 else nn.ReLU())
            width = units
        super().__init__(nn.Sequential(*layers), nn.Linear(width, num_classes))


class SmallCNN(Classifier):
    """Two or three conv blocks (conv-BN-ReLU, max-pool) and a hidden dense layer.

    Sized for 8×8 to 32×32 inputs; the number of pooling stages adapts to the image size so that
    8×8 digits and 28×28 Fashion-MNIST both work.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        *,
        width: int = 32,
        hidden: int = 128,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        c, h, w = _check_shape(in_shape)
        layers: list[nn.Module] = []
        if mean is not None and std is not None:
            layers.append(Normalize(mean, std))
        channels = c
        size = min(h, w)
        for i in range(3):
            out = width * (2**i)
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            channels = out
            if size >= 8:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            if size < 4 and i >= 1:
                break
        layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(channels * 4, hidden), PenultimateReLU()]
        super().__init__(nn.Sequential(*layers), nn.Linear(hidden, num_classes))
