"""The robustness/accuracy trade-off distribution of Tsipras et al. 2019 ("Robustness May Be at
Odds with Accuracy", Sec. 2), with closed-form accuracies checked by Monte-Carlo simulation.

Data: y uniform in {±1}; one *robust* feature x₁ = y with probability p, −y otherwise; d *non-robust*
features x₂ … x_{d+1} ~ N(η·y, 1) independently, with η = 2/√d by default (weakly correlated each,
strongly together). The adversary moves x by at most ε in L∞.

For a linear classifier sign(wᵀx + b) the worst L∞ perturbation is −ε·y·sign(w), which lowers the
margin by exactly ε‖w‖₁. Conditioned on y·x₁ = ±1 the margin is Gaussian, so

    accuracy(ε) = ½ Σ_{y=±1} [ p·Φ((w₁ + ηS + yb − ε‖w‖₁)/r) + (1 − p)·Φ((−w₁ + ηS + yb − ε‖w‖₁)/r) ],

with S = Σⱼ wⱼ and r = ‖(w₂, …, w_{d+1})‖₂ (:func:`accuracy`; a step function when r = 0). Classifiers:

* the averaging classifier w = (0, 1/d, …, 1/d): standard accuracy Φ(η√d) = Φ(2) ≈ 97.7%, robust
  accuracy Φ((η − ε)√d), below 50% once ε > η and Φ(−2) ≈ 2.3% at ε = 2η;
* the robust-feature classifier sign(x₁): accuracy p for every ε < 1;
* the Bayes classifier w = (½ ln(p/(1 − p)), η, …, η) (its log-odds, halved);
* the most robust linear classifier at a given ε (:func:`most_robust_classifier`): by symmetry it
  is of the form (cos θ, sin θ/d, …, sin θ/d) with θ ∈ [0, π/2], found on a grid of θ.

Tsipras et al.'s Theorem 2.1: any classifier with standard accuracy 1 − δ has robust accuracy at
most δ·p/(1 − p) once ε ≥ 2η (:func:`robust_accuracy_bound`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ConfigError
from .checks import check_count, check_eps

log = logging.getLogger(__name__)

_DTYPE = torch.float64




def _check_p(p: float) -> float:
    p = float(p)
    if not 0.5 < p <= 1:
        raise ConfigError(f"p (the robust feature's reliability) must lie in (0.5, 1], got {p}")
    return p


@dataclass(frozen=True)
class TsiprasDistribution:
    """Tsipras et al. 2019's distribution: one robust feature right with probability ``p``, ``dim``
    non-robust features N(η·y, 1) with η = ``eta`` (default 2/√dim)."""

    p: float
    dim: int
    eta: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", _check_p(self.p))
        object.__setattr__(self, "dim", check_count("dim (the number of non-robust features)", self.dim))
        eta = 2 / math.sqrt(self.dim) if self.eta is None else float(self.eta)
        if not (math.isfinite(eta) and eta > 0):
            raise ConfigError(f"eta must be a positive finite number, got {eta}")
        object.__setattr__(self, "eta", eta)

    @property
    def num_features(self) -> int:
        return self.dim + 1

    def sample(self, n: int, *, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` pairs (x, y): x of shape (n, dim + 1), y in {−1, +1}; float64."""
        n = check_count("n", n)
        y = torch.randint(0, 2, (n,), generator=generator).to(_DTYPE) * 2 - 1
        agree = torch.rand(n, generator=generator, dtype=_DTYPE) < self.p
        robust = torch.where(agree, y, -y)
        weak = self.eta * y[:, None] + torch.randn(n, self.dim, generator=generator, dtype=_DTYPE)
        return torch.cat([robust[:, None], weak], dim=1), y


def _check_weights(w: Tensor, dist: TsiprasDistribution) -> Tensor:
    w = torch.as_tensor(w, dtype=_DTYPE)
    if w.shape != (dist.num_features,) or not torch.isfinite(w).all():
        raise ConfigError(f"w must be a finite vector of {dist.num_features} weights, got shape {tuple(w.shape)}")
    return w


def averaging_classifier(dist: TsiprasDistribution) -> Tensor:
    """w = (0, 1/d, …, 1/d): the average of the non-robust features."""
    w = torch.full((dist.num_features,), 1 / dist.dim, dtype=_DTYPE)
    w[0] = 0
    return w


def robust_feature_classifier(dist: TsiprasDistribution) -> Tensor:
    """w = (1, 0, …, 0): sign(x₁)."""
    w = torch.zeros(dist.num_features, dtype=_DTYPE)
    w[0] = 1
    return w


def bayes_classifier(dist: TsiprasDistribution) -> Tensor:
    """Half the log-odds: w = (½ ln(p/(1 − p)), η, …, η); for p = 1, sign(x₁) (then exact)."""
    if dist.p == 1:
        return robust_feature_classifier(dist)
    w = torch.full((dist.num_features,), dist.eta, dtype=_DTYPE)
    w[0] = 0.5 * math.log(dist.p / (1 - dist.p))
    return w


def mixed_classifier(dist: TsiprasDistribution, theta: float) -> Tensor:
    """w = (cos θ, sin θ/d, …, sin θ/d): θ = 0 is sign(x₁), θ = π/2 the averaging classifier."""
    w = torch.full((dist.num_features,), math.sin(theta) / dist.dim, dtype=_DTYPE)
    w[0] = math.cos(theta)
    return w


def accuracy(w: Tensor, dist: TsiprasDistribution, *, eps: float = 0.0, bias: float = 0.0) -> float:
    """Closed-form accuracy of sign(wᵀx + bias) under L∞ perturbations of size ≤ eps (see the module doc).

    Ties (margin exactly 0) count as errors.
    """
    eps = check_eps(eps)
    w = _check_weights(w, dist)
    w1, rest = float(w[0]), w[1:]
    spread = float(rest.norm())
    centre = dist.eta * float(rest.sum()) - eps * float(w.abs().sum())
    total = 0.0
    for sign_y in (1.0, -1.0):
        for sign_x1, weight in ((1.0, dist.p), (-1.0, 1 - dist.p)):
            mean = sign_x1 * w1 + centre + sign_y * bias
            if spread == 0:
                total += 0.5 * weight * float(mean > 0)
            else:
                total += 0.5 * weight * float(torch.special.ndtr(torch.tensor(mean / spread, dtype=_DTYPE)))
    return total


def linf_attack(w: Tensor, x: Tensor, y: Tensor, *, eps: float, bias: float = 0.0) -> Tensor:
    """FGSM on the margin y·(wᵀx + b), by autograd: x + eps·sign(∇ₓ(−margin)). Exact for a linear classifier."""
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((-y * (x @ w + bias)).sum(), x)
    return (x + eps * grad.sign()).detach()


def simulate_accuracy(
    w: Tensor,
    dist: TsiprasDistribution,
    *,
    eps: float = 0.0,
    bias: float = 0.0,
    n: int,
    generator: torch.Generator,
) -> tuple[float, float]:
    """Monte-Carlo accuracy on fresh samples attacked by :func:`linf_attack`; (accuracy, standard error)."""
    eps = check_eps(eps)
    w = _check_weights(w, dist)
    x, y = dist.sample(n, generator=generator)
    if eps > 0:
        x = linf_attack(w, x, y, eps=eps, bias=bias)
    correct = (y * (x @ w + bias) > 0).to(_DTYPE)
    acc = float(correct.mean())
    return acc, math.sqrt(max(acc * (1 - acc), 1e-300) / n)


def most_robust_classifier(dist: TsiprasDistribution, *, eps: float, grid: int = 2001) -> tuple[Tensor, float]:
    """The bias-free linear classifier with the highest closed-form robust accuracy at ``eps``.

    Only (w₁, common weight) matters: for fixed w₁, Σwⱼ and ‖w‖₁, equal non-negative weights give the
    smallest ‖w_rest‖₂, and the accuracy is scale-free, so a grid over θ ∈ [0, π/2] of
    :func:`mixed_classifier` suffices (evaluated in one vectorised pass of :func:`accuracy`'s
    formula). Ties are broken towards larger θ (more standard accuracy). Returns (w, robust accuracy).
    """
    eps = check_eps(eps)
    grid = check_count("grid", grid, 2)
    theta = torch.linspace(0, 0.5 * math.pi, grid, dtype=_DTYPE)
    w1, total = torch.cos(theta), torch.sin(theta)
    spread = total / math.sqrt(dist.dim)
    centre = dist.eta * total - eps * (w1 + total)
    safe = torch.where(spread > 0, spread, torch.ones_like(spread))

    def prob(mean: Tensor) -> Tensor:
        return torch.where(spread > 0, torch.special.ndtr(mean / safe), (mean > 0).to(_DTYPE))

    acc = dist.p * prob(w1 + centre) + (1 - dist.p) * prob(-w1 + centre)
    best = int(torch.nonzero(acc >= acc.max() - 1e-12).max())  # the largest θ among the best
    w = mixed_classifier(dist, float(theta[best]))
    return w, accuracy(w, dist, eps=eps)


def robust_accuracy_bound(*, p: float, standard_accuracy: float) -> float:
    """Tsipras et al. Theorem 2.1: for ε ≥ 2η, robust accuracy ≤ (1 − standard accuracy)·p/(1 − p)."""
    p = _check_p(p)
    if not 0 <= standard_accuracy <= 1:
        raise ConfigError(f"standard_accuracy must lie in [0, 1], got {standard_accuracy}")
    if p == 1:
        return 1.0
    return min(1.0, (1 - standard_accuracy) * p / (1 - p))
