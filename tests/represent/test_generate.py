"""Class-conditional generation: the fitted Gaussians, and targeted generation on the robust model."""

from __future__ import annotations

import pytest
import torch

from advfeatures.data import ImageDataset
from advfeatures.errors import ConfigError, DataError
from advfeatures.evaluate import accuracy
from advfeatures.represent import fit_class_gaussians, generate


def test_class_gaussians_match_the_class_means_and_shrunk_covariances(digits):
    train = digits[0]
    gauss = fit_class_gaussians(train, shrinkage=0.1)
    assert gauss.resolution == (8, 8) and gauss.means.shape == (10, 64)
    for c in (0, 7):
        xc = train.images[train.labels == c].flatten(1).double()
        assert torch.allclose(gauss.means[c].double(), xc.mean(0), atol=1e-6)
        cov = torch.cov(xc.T)
        shrunk = 0.9 * cov + (0.1 * cov.diagonal().mean() + 1e-8) * torch.eye(64, dtype=torch.float64)
        tril = gauss.scale_tril[c].double()
        assert torch.allclose(tril @ tril.T, shrunk, atol=1e-5)
    # many samples of one class average to its mean (up to the clipping to [0, 1])
    big = gauss.sample(torch.full((4000,), 3), generator=torch.Generator().manual_seed(0))
    assert big.shape == (4000, 1, 8, 8) and float(big.min()) >= 0 and float(big.max()) <= 1
    assert (big.flatten(1).mean(0) - gauss.means[3].clamp(0, 1)).abs().max() < 0.12


def test_large_images_are_fitted_at_a_lower_resolution_and_upsampled():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 28, 28, generator=g)
    data = ImageDataset(x, torch.arange(40) % 2, ["a", "b"], "toy")
    gauss = fit_class_gaussians(data, max_dim=200)
    assert gauss.resolution == (14, 14) and gauss.means.shape == (2, 196)
    assert gauss.sample(torch.tensor([0, 1, 1]), generator=g).shape == (3, 1, 28, 28)
    with pytest.raises(DataError, match="needs ≥ 2"):
        fit_class_gaussians(ImageDataset(x[:3], torch.tensor([0, 0, 1]), ["a", "b"], "toy"))


def test_generation_reaches_the_requested_class_on_the_robust_model(robust_mlp, digits):
    gauss = fit_class_gaussians(digits[0])
    labels = torch.arange(10).repeat(4)
    state = torch.random.get_rng_state()
    res = generate(robust_mlp, labels, gaussians=gauss, generator=torch.Generator().manual_seed(0))
    assert torch.equal(state, torch.random.get_rng_state())
    assert res.images.shape == (40, 1, 8, 8) and torch.equal(res.labels, labels)
    assert res.success.float().mean() >= 0.9, res.summary()
    # the optimisation did the work: the model is less sure of the seeds' classes than of the images'
    seeds_acc = accuracy(robust_mlp, ImageDataset(res.seeds, labels, digits[0].classes, "seeds"))
    assert seeds_acc < float(res.success.float().mean())
    with torch.no_grad():
        seed_conf = torch.softmax(robust_mlp(res.seeds), 1)[torch.arange(40), labels]
    assert float(res.confidence.mean()) > float(seed_conf.mean())
    assert torch.all((res.images - res.seeds).flatten(1).norm(dim=1) <= 0.8 + 1e-4)  # default ε = 0.1·√64
    again = generate(robust_mlp, labels, gaussians=gauss, generator=torch.Generator().manual_seed(0))
    assert torch.equal(res.images, again.images)


def test_generation_needs_seeds_or_gaussians(robust_mlp):
    with pytest.raises(ConfigError, match="exactly one"):
        generate(robust_mlp, torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match="one seed per label"):
        generate(robust_mlp, torch.tensor([0, 1]), seeds=torch.rand(3, 1, 8, 8))
