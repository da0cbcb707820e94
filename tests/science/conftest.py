"""Tiny models and datasets for the science tests: a small MLP trained on scikit-learn's digits in
about a second, a D_rand built from it with a few PGD steps, and the planted benchmark run once."""

from __future__ import annotations

import pytest
import torch

from advfeatures.construct import RelabelConfig, build_dataset, load_constructed
from advfeatures.data import load_digits
from advfeatures.progress import set_progress_enabled
from advfeatures.science.common import seeded_model
from advfeatures.train import TrainConfig, train_model

FAST = TrainConfig(epochs=8, batch_size=64, lr=0.05, crop_padding=0, flip=False)


@pytest.fixture(scope="session", autouse=True)
def _no_progress_bars():
    set_progress_enabled(False)
    yield
    set_progress_enabled(True)


@pytest.fixture(scope="session")
def digits():
    return load_digits()


@pytest.fixture(scope="session")
def digits_mlp(digits):
    """A one-hidden-layer MLP on digits (≈ 95% test accuracy), weights from seed 0."""
    train, _ = digits
    model = seeded_model("mlp", train.image_shape, train.num_classes, seed=0, hidden=[64])
    train_model(model, train, FAST)
    return model.eval()


@pytest.fixture(scope="session")
def digits_d_rand_folder(digits, digits_mlp, tmp_path_factory):
    """D_rand of the first 400 training digits, made against ``digits_mlp`` (L2 ε = 1.5, 10 steps)."""
    train, _ = digits
    folder = tmp_path_factory.mktemp("d_rand")
    build_dataset("d_rand", digits_mlp, train.head(400), folder, relabel=RelabelConfig(eps=1.5, steps=10, step_size=0.3), seed=3)
    return folder


@pytest.fixture(scope="session")
def digits_d_rand(digits, digits_d_rand_folder):
    data, _ = load_constructed(digits_d_rand_folder, classes=digits[0].classes, name="d_rand")
    return data


@pytest.fixture(scope="session")
def planted_run(tmp_path_factory):
    """The quick planted benchmark, run once (≈ 35 s on an idle core)."""
    from advfeatures.science.planted import run_planted

    out = tmp_path_factory.mktemp("planted")
    return out, run_planted(out, seed=0, quick=True)


def fixed_affine(weight: torch.Tensor, bias: torch.Tensor) -> torch.nn.Module:
    """``logits = W · flatten(x) + b`` with the given weights, as a Sequential."""
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return torch.nn.Sequential(torch.nn.Flatten(), layer).eval()
