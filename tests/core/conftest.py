import pytest
import torch
from torch import nn

from advfeatures.data import load_digits


class Affine(nn.Module):
    """logits = W·flatten(x) + b: every attack has a closed form here."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.lin = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            self.lin.weight.copy_(w)
            self.lin.bias.copy_(b)

    def forward(self, x):
        return self.lin(x.flatten(1))


@pytest.fixture(scope="session")
def digits():
    return load_digits()


@pytest.fixture
def affine():
    g = torch.Generator().manual_seed(0)
    return Affine(torch.randn(3, 16, generator=g), torch.randn(3, generator=g) * 0.1)
