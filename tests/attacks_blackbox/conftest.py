"""Tiny models for the black-box, spatial, universal, masking and evaluation tests.

One small MLP is trained once per session on sklearn's 8×8 digits (a few seconds on one core);
its weights are initialised inside ``torch.random.fork_rng`` so the global RNG is left untouched.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advfeatures.data import load_digits
from advfeatures.models import build_model


def train_digits_mlp(train, *, epochs: int = 15, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model("mlp", (1, 8, 8), 10, hidden=(64,))
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(train), generator=gen)
        for a in range(0, len(train), 128):
            idx = perm[a : a + 128]
            loss = F.cross_entropy(model(train.images[idx]), train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    opt.zero_grad(set_to_none=True)  # tests check that attacks leave parameter gradients alone
    return model.eval()


@pytest.fixture(scope="session")
def digits():
    return load_digits()


@pytest.fixture(scope="session")
def mlp(digits):
    model = train_digits_mlp(digits[0])
    x, y = digits[1].images, digits[1].labels
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.9  # the model the numbers in the docstrings came from
    return model


@pytest.fixture(scope="session")
def batch(digits):
    """The first 128 test images and labels."""
    test = digits[1]
    return test.images[:128], test.labels[:128]


@pytest.fixture(scope="session")
def correct(mlp, batch):
    x, y = batch
    with torch.no_grad():
        return mlp(x).argmax(1) == y


class LinearBinary(nn.Module):
    """Logits (0, w·x + b): class 1 iff w·x + b > 0; the Linf distance to the boundary is
    |w·x + b| / ‖w‖₁ when the box does not bind."""

    num_classes = 2

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.register_buffer("w", w.flatten())
        self.b = float(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(z), z], 1)


@pytest.fixture
def linear_binary():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(1, 4, 4, generator=g)
    return LinearBinary(w, b=-0.5 * float(w.sum()))


class CountingModel(nn.Module):
    """Wraps a model and counts every image it is asked to classify (its queries)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.images_seen = 0

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images_seen += x.shape[0]
        return self.model(x)
