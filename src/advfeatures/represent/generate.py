"""Class-conditional generation with one robust classifier (Santurkar et al. 2019, "Image Synthesis
with a Single (Robust) Classifier", Sec. 3).

Seeds come from a multivariate normal fitted to each class's training images,
x₀ ~ N(μ_y, Σ_y), estimated at a lower resolution when the image is large (the reference code fits
ImageNet at 4× lower resolution and upsamples the samples); then targeted L2 PGD with a large ε
drives each seed towards its class: minimise CE(f(x), y) over ‖x − x₀‖₂ ≤ ε inside [0, 1].

Defaults: the paper's 60 iterations; ε = 0.1·√(C·H·W) (≈ 40, the reference value, on 224×224×3)
and step 2.5·ε/steps (Madry's rule; the reference uses step 1 for ε = 40, i.e. 1.5·ε/steps).
The covariance is shrunk towards its average variance (``shrinkage``) so that classes with fewer
images than pixels still give a positive-definite Σ.

    gauss = fit_class_gaussians(train)
    res = generate(robust_model, torch.arange(10).repeat(4), gaussians=gauss, generator=g)
    res.success.float().mean()  # share classified as the requested class
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.pgd import PGD
from ..data.dataset import ImageDataset, check_images
from ..errors import ConfigError, DataError
from ..threats import check_positive, check_steps


@dataclass
class ClassGaussians:
    """Per-class N(μ_c, Σ_c) of images at ``resolution`` (h, w), upsampled to ``image_shape``."""

    means: torch.Tensor  # (K, D), D = C·h·w
    scale_tril: torch.Tensor  # (K, D, D) Cholesky factors of Σ_c
    image_shape: tuple[int, int, int]
    resolution: tuple[int, int]

    def sample(self, labels: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """One image per label, (N, C, H, W) clipped to [0, 1]."""
        labels = torch.as_tensor(labels).long().to(self.means.device)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.means.shape[0]):
            raise ConfigError(f"class labels must lie in [0, {self.means.shape[0] - 1}]")
        z = torch.randn((labels.shape[0], self.means.shape[1]), generator=generator, device=self.means.device)
        flat = self.means[labels] + (self.scale_tril[labels] @ z.unsqueeze(-1)).squeeze(-1)
        c, h, w = self.image_shape
        x = flat.view(-1, c, *self.resolution)
        if self.resolution != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        return x.clamp_(0.0, 1.0)


def _resolution(shape: tuple[int, int, int], max_dim: int) -> tuple[int, int]:
    c, h, w = shape
    factor = 1
    while c * math.ceil(h / factor) * math.ceil(w / factor) > max_dim:
        factor += 1
    return math.ceil(h / factor), math.ceil(w / factor)


def fit_class_gaussians(data: ImageDataset, *, max_dim: int = 1024, shrinkage: float = 0.05) -> ClassGaussians:
    """Fit N(μ_c, Σ_c) to each class of ``data``, downsampling (area averaging) until C·h·w ≤
    ``max_dim``; Σ_c ← (1 − s)·Σ_c + s·mean(diag Σ_c)·I with s = ``shrinkage``."""
    if not 0.0 <= shrinkage < 1.0:
        raise ConfigError(f"shrinkage must be in [0, 1), got {shrinkage}")
    shape = data.image_shape
    res = _resolution(shape, check_steps(max_dim, "max_dim"))
    x = data.images.float()
    if res != tuple(shape[1:]):
        x = F.interpolate(x, size=res, mode="area")
    flat = x.flatten(1).double()
    means, trils = [], []
    for c in range(data.num_classes):  # one covariance per class, not per example
        xc = flat[data.labels == c]
        if xc.shape[0] < 2:
            raise DataError(f"class {data.classes[c]!r} of {data.name} has {xc.shape[0]} image(s); fitting a Gaussian needs ≥ 2")
        mu = xc.mean(0)
        centred = xc - mu
        cov = centred.T @ centred / (xc.shape[0] - 1)
        avg_var = cov.diagonal().mean().clamp_min(1e-8)
        cov = (1 - shrinkage) * cov + (shrinkage * avg_var + 1e-8) * torch.eye(cov.shape[0], dtype=cov.dtype)
        means.append(mu)
        trils.append(torch.linalg.cholesky(cov))
    return ClassGaussians(torch.stack(means).float(), torch.stack(trils).float(), tuple(shape), res)


@dataclass
class GenerationResult:
    images: torch.Tensor  # (N, C, H, W)
    seeds: torch.Tensor  # (N, C, H, W)
    labels: torch.Tensor  # (N,) the requested classes
    predictions: torch.Tensor  # (N,) the model's classes for the generated images
    confidence: torch.Tensor  # (N,) softmax probability of the requested class

    @property
    def success(self) -> torch.Tensor:
        return self.predictions == self.labels

    def summary(self) -> dict[str, float]:
        return {"target_reached": float(self.success.float().mean()),
                "mean_confidence": float(self.confidence.float().mean()),
                "pixel_l2_from_seed": float((self.images - self.seeds).flatten(1).norm(dim=1).mean())}


def default_generation_eps(x: torch.Tensor) -> float:
    """0.1·√(C·H·W): ≈ 40 on 224×224×3 (the reference value), 0.8 on 8×8, 2.8 on 28×28."""
    return 0.1 * math.sqrt(x[0].numel())


def generate(
    model: nn.Module,
    labels: torch.Tensor,
    *,
    gaussians: ClassGaussians | None = None,
    seeds: torch.Tensor | None = None,
    eps: float | None = None,
    steps: int = 60,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
) -> GenerationResult:
    """Images of the classes ``labels`` from ``model``: Gaussian seeds (or the given ``seeds``),
    then targeted large-ε L2 PGD towards each label."""
    if (gaussians is None) == (seeds is None):
        raise ConfigError("give exactly one of gaussians= (fitted by fit_class_gaussians) or seeds= (images)")
    labels = torch.as_tensor(labels).long()
    if seeds is None:
        assert gaussians is not None
        seeds = gaussians.sample(labels, generator=generator)
    check_images(seeds, what="generation seeds")
    if seeds.shape[0] != labels.shape[0]:
        raise ConfigError(f"need one seed per label: {seeds.shape[0]} seeds for {labels.shape[0]} labels")
    device = next(model.parameters()).device
    seeds, labels = seeds.to(device), labels.to(device)
    eps = default_generation_eps(seeds) if eps is None else check_positive("eps", eps)
    steps = check_steps(steps)
    attack = PGD(norm="L2", eps=eps, steps=steps, step_size=step_size if step_size is not None else 2.5 * eps / steps,
                 random_start=False)
    res = attack(model, seeds, labels, target=labels, return_result=True)
    conf = torch.exp(-res.loss)  # the result's loss is CE w.r.t. the target: exp(−CE) = p(target)
    return GenerationResult(res.x_adv, seeds, labels, res.predictions, conf)
