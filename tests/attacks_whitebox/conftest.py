"""Tiny models for the white-box attack tests: affine classifiers with known answers, and small
MLPs trained on scikit-learn's 8×8 digits in about a second (built once per session)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advfeatures.data.loaders import load_digits
from advfeatures.models import MLP

SHAPE = (1, 4, 4)  # affine tests: 16 inputs


def affine(weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    """``logits = W · flatten(x) + b``: an affine classifier with the given weights."""
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return nn.Sequential(nn.Flatten(), layer)


def random_affine(num_classes: int, seed: int, *, scale: float = 1.0) -> tuple[nn.Module, torch.Tensor]:
    """A random affine classifier on 4×4 inputs and a batch of inputs well inside the box."""
    g = torch.Generator().manual_seed(seed)
    d = SHAPE[0] * SHAPE[1] * SHAPE[2]
    w = torch.randn(num_classes, d, generator=g) * scale
    b = torch.randn(num_classes, generator=g) * 0.1
    x = 0.35 + 0.3 * torch.rand(12, *SHAPE, generator=g)
    return affine(w, b), x


def train_digits_mlp(*, low: float = 0.0, high: float = 1.0, hidden=(64,), epochs: int = 30, seed: int = 0) -> nn.Module:
    """A small MLP trained on digits whose pixels are mapped to [low, high] (about 97% test accuracy)."""
    train, _ = load_digits()
    x, y = low + (high - low) * train.images, train.labels
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # the model's initialisation, without touching the caller's RNG
        torch.manual_seed(seed)
        model = MLP((1, 8, 8), 10, hidden=hidden)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 128):
            idx = perm[i:i + 128]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture(scope="session")
def digits_test():
    _, test = load_digits()
    return test


@pytest.fixture(scope="session")
def digits_mlp():
    return train_digits_mlp()


@pytest.fixture(scope="session")
def digits_batch(digits_test):
    return digits_test.images[:64], digits_test.labels[:64]


@pytest.fixture(scope="session")
def untrained_mlp():
    """A random (untrained) MLP for property tests: fast, and its gradients are not zero."""
    with torch.random.fork_rng():
        torch.manual_seed(1)
        return MLP((1, 8, 8), 10, hidden=(16,)).eval()


# Every attack of the registry, for the invariants every attack keeps: a new attack is held to them
# as soon as it is registered. Only the settings that keep each one fast are chosen here; an attack is
# left out of an invariant by a declared property (its registry entry, its constructor), never by name.
CHEAP = {"cw-l2": {"search_steps": 2, "initial_const": 1.0}, "lbfgs": {"search_steps": 2, "restart_every": 3},
         "spatial": {"n_rotations": 5, "n_translations": 3}, "apgd-t": {"num_targets": 3}, "fab-t": {"num_targets": 3}}


def takes(name: str, keyword: str) -> bool:
    from advfeatures.attacks.registry import REGISTRY, accepted_keywords

    return keyword in accepted_keywords(REGISTRY[name].load())


def registry_attack(name: str, *, norm: str | None = None, eps: float = 0.1, steps: int = 5, **options):
    """The registry's attack ``name``, cheap: ``norm`` (default its first), ``eps`` where it takes one."""
    from advfeatures.attacks.registry import REGISTRY, build_attack

    entry = REGISTRY[name]
    norm = norm or (entry.norms[0] if entry.norms else "L2")
    return build_attack(name, norm=norm, eps=eps, steps=steps, queries=60, **{**CHEAP.get(name, {}), **options})
