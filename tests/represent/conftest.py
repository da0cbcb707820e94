"""Tiny models for the representation tests, trained once per session on sklearn's 8×8 digits.

* a standard and an L2-robust MLP (64 → 256 → 64 → 10; PGD ε = 0.5, 5 steps), for most tests;
* a standard and an L2-robust small CNN (width 8, a 32-wide representation; PGD ε = 0.75), for the
  inversion claim. The MLP's 64-wide representation of 64 pixels is nearly injective, so from noise
  both MLPs invert about equally well (measured: pixel L2 1.96 vs 1.97); a representation with
  invariances, as in the paper's CNNs, is where robustness makes the difference.

A few seconds each on one core. Weights are initialised inside ``torch.random.fork_rng`` so the
global RNG is left as it was.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advfeatures.data import load_digits
from advfeatures.evaluate import accuracy
from advfeatures.models import Classifier, build_model
from advfeatures.progress import set_progress_enabled
from advfeatures.train import AdversaryConfig, TrainConfig, train_model

ROBUST_EPS = 0.5


def train_digits_model(train, *, robust: bool, arch: str = "mlp", epochs: int = 15, eps: float = ROBUST_EPS,
                       seed: int = 0) -> nn.Module:
    set_progress_enabled(False)
    kwargs = {"hidden": (256, 64)} if arch == "mlp" else {"width": 8, "hidden": 32}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(arch, (1, 8, 8), 10, **kwargs)
    adversary = AdversaryConfig(norm="L2", eps=eps, steps=5) if robust else None
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, optimizer="adam", crop_padding=1, flip=False,
                      adversary=adversary, seed=seed)
    train_model(model, train, cfg)
    for p in model.parameters():
        p.grad = None  # tests check that nothing here writes parameter gradients
    return model.eval()


@pytest.fixture(scope="session")
def digits():
    return load_digits()


@pytest.fixture(scope="session")
def standard_mlp(digits):
    model = train_digits_model(digits[0], robust=False)
    assert accuracy(model, digits[1]) > 0.8
    return model


@pytest.fixture(scope="session")
def robust_mlp(digits):
    model = train_digits_model(digits[0], robust=True)
    assert accuracy(model, digits[1]) > 0.7
    return model


@pytest.fixture(scope="session")
def standard_cnn(digits):
    model = train_digits_model(digits[0], robust=False, arch="cnn", epochs=10)
    assert accuracy(model, digits[1]) > 0.85
    return model


@pytest.fixture(scope="session")
def robust_cnn(digits):
    model = train_digits_model(digits[0], robust=True, arch="cnn", epochs=10, eps=0.75)
    assert accuracy(model, digits[1]) > 0.6
    return model


def linear_classifier(weight: torch.Tensor, *, num_classes: int = 2, seed: int = 0) -> Classifier:
    """``features(x) = W·flatten(x)`` (no ReLU) and a fixed linear head: a representation with known
    inverses and gradients."""
    d_out, d_in = weight.shape
    lin = nn.Linear(d_in, d_out, bias=False)
    head = nn.Linear(d_out, num_classes)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        lin.weight.copy_(weight)
        head.weight.copy_(torch.randn(head.weight.shape, generator=g))
        head.bias.zero_()
    return Classifier(nn.Sequential(nn.Flatten(), lin), head).eval()
