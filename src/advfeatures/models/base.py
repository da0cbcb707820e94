"""Classifiers that expose their penultimate representation.

Every model here is an ``nn.Module`` mapping images in [0,1] (NCHW, float32) to logits, built as
``head(features(x))``: ``features`` is everything but the last linear layer (the representation
``g`` of Ilyas et al. 2019) and ``head`` is that layer. Normalisation (mean/std) is a layer at the
start of ``features``, so attacks always see [0,1] inputs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import ModelError


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as the model's first layer."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if any(s <= 0 for s in std):
            raise ModelError(f"normalisation std must be positive, got {list(std)}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class _FakeReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # noqa: D102
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad_output):  # noqa: D102
        return grad_output


class PenultimateReLU(nn.Module):
    """The ReLU that ends ``features``.

    With ``fake = True`` its backward pass is the identity (the reference implementation's "fake
    ReLU"), so that coordinates of the representation clipped at zero still carry gradient during
    representation matching. The forward pass is always a ReLU.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fake = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fake and torch.is_grad_enabled():
            return _FakeReLUFunction.apply(x)
        return torch.relu(x)


@contextmanager
def fake_relu(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Within the block, every :class:`PenultimateReLU` of ``model`` passes gradients through."""
    layers = [m for m in model.modules() if isinstance(m, PenultimateReLU)]
    old = [m.fake for m in layers]
    for m in layers:
        m.fake = enabled
    try:
        yield model
    finally:
        for m, f in zip(layers, old):
            m.fake = f


class Classifier(nn.Module):
    """``logits = head(features(x))`` with the representation available as :meth:`features`."""

    def __init__(self, features: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.features = features
        self.head = head

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    @property
    def representation_dim(self) -> int:
        return self.head.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def as_classifier(model: nn.Module) -> nn.Module:
    """A model with ``features`` and ``head``: returned as is when it has them; a Sequential-like
    model whose last layer is ``nn.Linear`` is split into the two (sharing parameters)."""
    if hasattr(model, "features") and hasattr(model, "head"):
        return model
    if isinstance(model, nn.Sequential) and len(model) >= 2 and isinstance(model[-1], nn.Linear):
        return Classifier(nn.Sequential(*list(model)[:-1]), model[-1])
    raise ModelError(
        f"{type(model).__name__} exposes no representation: give it `features` and `head` attributes, "
        "or pass an nn.Sequential whose last layer is nn.Linear"
    )


def representation(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The penultimate representation g(x), flattened to (N, D)."""
    return as_classifier(model).features(x).flatten(1)
