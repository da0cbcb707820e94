"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019; Lecuyer et al.'s PixelDP in its modern form).

The smoothed classifier g(x) = argmax_c P(f(x + δ) = c), δ ~ N(0, σ²I), is robust in L2: if the top
class has probability p_A ≥ ½, g is constant on the ball of radius σ·Φ⁻¹(p_A) around x. Both
procedures of the paper sample the base classifier ``f`` (the model's argmax) under that noise:

* :meth:`SmoothedClassifier.predict` — PREDICT: n samples; return the top class when a two-sided
  binomial test of its count against the runner-up's rejects p = ½ at level α, else abstain;
* :meth:`SmoothedClassifier.certify` — CERTIFY: guess the top class from n0 samples, then bound its
  probability from below with a one-sided Clopper–Pearson bound on n fresh samples; abstain when
  that bound is below ½, else certify radius σ·Φ⁻¹(p_A_lower). With probability ≥ 1 − α the radius
  is a true one.

Abstentions are :data:`ABSTAIN` (−1) and count as wrong in certified accuracy. The noise is not
clipped to [0, 1]: the guarantee is about g as defined, whatever the inputs look like.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..attacks.base import num_classes_of
from ..attacks.loop import eval_mode
from ..data.dataset import check_images
from ..errors import ConfigError
from ..threats import check_positive, check_steps
from .stats import clopper_pearson_lower, normal_quantile, two_sided_binomial_test_half

ABSTAIN = -1


class SmoothedClassifier:
    """The Gaussian smoothing of ``model`` at noise level ``sigma`` (noise from its own generator)."""

    def __init__(self, model: nn.Module, sigma: float, *, num_classes: int | None = None, batch_size: int = 1000,
                 seed: int = 0) -> None:
        self.model = model
        self.sigma = check_positive("sigma", sigma)
        self.batch_size = check_steps(batch_size, "batch_size")
        self.num_classes = num_classes if num_classes is not None else getattr(model, "num_classes", None)
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ConfigError("pass num_classes (≥ 2): the model does not say how many classes it has")
        self.device = _device_of(model)
        self.gen = torch.Generator(device=self.device).manual_seed(int(seed))

    def counts(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """(K,) how often the base classifier picks each class among ``n`` noisy copies of one image
        ``x`` (C, H, W)."""
        n = check_steps(n, "n")
        out = torch.zeros(self.num_classes, dtype=torch.int64, device=self.device)
        x = x.to(self.device)
        with torch.no_grad(), eval_mode(self.model):
            left = n
            while left:
                m = min(left, self.batch_size)
                batch = x.unsqueeze(0).expand(m, *x.shape)
                noise = torch.randn(batch.shape, generator=self.gen, device=self.device, dtype=x.dtype)
                pred = self.model(batch + self.sigma * noise).argmax(1)
                out += torch.bincount(pred, minlength=self.num_classes)
                left -= m
        return out

    def predict(self, x: torch.Tensor, *, n: int, alpha: float) -> int:
        """PREDICT for one image: the top class, or ABSTAIN when the binomial test fails at level α."""
        c = self.counts(x, n)
        top2 = torch.topk(c, 2)
        n_a, n_b = int(top2.values[0]), int(top2.values[1])
        if two_sided_binomial_test_half(n_a, n_a + n_b) > alpha:
            return ABSTAIN
        return int(top2.indices[0])

    def certify(self, x: torch.Tensor, *, n0: int, n: int, alpha: float) -> tuple[int, float, float]:
        """CERTIFY for one image: (class or ABSTAIN, certified L2 radius (0 when abstaining), p_A_lower)."""
        if not 0 < alpha < 1:
            raise ConfigError(f"alpha must lie in (0, 1), got {alpha}")
        c_a = int(self.counts(x, n0).argmax())
        n_a = int(self.counts(x, n)[c_a])
        p_lower = clopper_pearson_lower(n_a, n, alpha)
        if p_lower < 0.5:
            return ABSTAIN, 0.0, p_lower
        return c_a, self.sigma * normal_quantile(min(p_lower, 1 - 1e-16)), p_lower


def _device_of(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def certify_dataset(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, sigma: float, n0: int = 100, n: int = 1000,
                    alpha: float = 0.001, batch_size: int = 1000, seed: int = 0) -> dict:
    """CERTIFY every image: ``{"sigma", "n0", "n", "alpha", "prediction", "radius", "correct",
    "abstain_rate"}`` with per-image tensors (a correct image is certified with the right class)."""
    check_images(x, what="certification images")
    smooth = SmoothedClassifier(model, sigma, num_classes=num_classes_of(model, x[:1].to(_device_of(model))),
                                batch_size=batch_size, seed=seed)
    preds, radii = [], []
    for i in range(x.shape[0]):
        c, r, _ = smooth.certify(x[i], n0=n0, n=n, alpha=alpha)
        preds.append(c)
        radii.append(r)
    pred = torch.tensor(preds)
    radius = torch.tensor(radii, dtype=torch.float64)
    return {"sigma": sigma, "n0": n0, "n": n, "alpha": alpha, "prediction": pred, "radius": radius,
            "correct": pred == y.cpu(), "abstain_rate": float((pred == ABSTAIN).float().mean())}


def certified_accuracy(result: dict, radii: Sequence[float]) -> list[float]:
    """Share of images certified correct with radius ≥ r, for each r (abstentions count as wrong)."""
    ok, radius = result["correct"], result["radius"]
    return [float((ok & (radius >= r)).double().mean()) for r in radii]


class NoiseAveraged(nn.Module):
    """A deterministic stand-in for the smoothed classifier that attacks can differentiate: the log
    of the mean softmax of ``model`` over ``n_samples`` fixed noise draws (drawn once per input shape
    from ``seed``), so every call sees the same noise and the worst-case ensemble's black-box and
    white-box members attack the same function. Its argmax estimates g's (Salman et al. 2019 attack
    the smoothed soft classifier the same way)."""

    def __init__(self, model: nn.Module, sigma: float, n_samples: int = 32, *, seed: int = 0) -> None:
        super().__init__()
        self.model = model
        self.sigma = check_positive("sigma", sigma)
        self.n_samples = check_steps(n_samples, "n_samples")
        self.seed = int(seed)
        self._noise: dict[tuple, torch.Tensor] = {}

    @property
    def num_classes(self):
        return getattr(self.model, "num_classes", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape[1:]), x.device, x.dtype)
        if key not in self._noise:
            g = torch.Generator(device=x.device).manual_seed(self.seed)
            self._noise[key] = torch.randn((self.n_samples, *x.shape[1:]), generator=g, device=x.device, dtype=x.dtype)
        noise = self._noise[key]
        noisy = x.unsqueeze(0) + self.sigma * noise.unsqueeze(1)  # (S, N, ...)
        logits = self.model(noisy.flatten(0, 1)).view(self.n_samples, x.shape[0], -1)
        return torch.logsumexp(torch.log_softmax(logits, -1), 0) - math.log(self.n_samples)
