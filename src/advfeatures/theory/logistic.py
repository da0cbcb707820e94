"""Adversarial logistic regression in closed form — Goodfellow, Shlens & Szegedy 2015, Sec. 5.

For a linear model with labels y ∈ {±1}, logistic loss J = softplus(−y(wᵀx + b)) and an L∞ budget
ε, the loss is largest at δ = −ε·y·sign(w) — which is exactly FGSM, since ∇ₓJ ∝ −y·w — so

    max_{‖δ‖∞ ≤ ε} J(x + δ) = softplus(ε‖w‖₁ − y(wᵀx + b))        (:func:`adversarial_loss`)

(no [0, 1] box here: with a box the closed form is an upper bound). Training on it
(:func:`train_logistic`, ``adversary="closed_form"``) is therefore the same as training on FGSM
examples regenerated from the current weights at every step (``adversary="fgsm"``): by Danskin's
theorem both give the gradient σ(ε‖w‖₁ − m)(ε·sign(w) − y·x), so full-batch runs from the same start
follow the same path up to rounding. Goodfellow et al. note that the penalty resembles L1 weight
decay, but sits *inside* the softplus, so it fades once the margin is large.

For Gaussian data x ~ N(y·μ, Σ) the robust accuracy and the expected adversarial loss of any (w, b)
have closed forms too (:func:`robust_accuracy`, :func:`expected_adversarial_loss`), checked against
PGD on fresh samples (:func:`simulate`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from .checks import check_count, check_eps
from .gaussian import TwoGaussians

log = logging.getLogger(__name__)

_DTYPE = torch.float64
Adversary = Literal["closed_form", "fgsm"]




def margin(w: Tensor, b: Tensor | float, x: Tensor, y: Tensor) -> Tensor:
    """y·(wᵀx + b) per example."""
    return y * (x @ w + b)


def logistic_loss(w: Tensor, b: Tensor | float, x: Tensor, y: Tensor) -> Tensor:
    """softplus(−y(wᵀx + b)) per example."""
    return F.softplus(-margin(w, b, x, y))


def adversarial_loss(w: Tensor, b: Tensor | float, x: Tensor, y: Tensor, *, eps: float) -> Tensor:
    """Goodfellow et al.'s closed form: softplus(ε‖w‖₁ − y(wᵀx + b)) per example, = max_{‖δ‖∞≤ε} J(x + δ)."""
    eps = check_eps(eps)
    return F.softplus(eps * w.abs().sum() - margin(w, b, x, y))


def fgsm(w: Tensor, b: Tensor | float, x: Tensor, y: Tensor, *, eps: float) -> Tensor:
    """x + ε·sign(∇ₓJ), the gradient taken by autograd through the logistic loss; detached."""
    eps = check_eps(eps)
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(logistic_loss(w.detach(), _detach(b), x, y).sum(), x)
    return (x + eps * grad.sign()).detach()


def pgd(
    w: Tensor,
    b: Tensor | float,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    steps: int = 20,
    step_size: float | None = None,
    generator: torch.Generator,
) -> Tensor:
    """L∞ PGD on the logistic loss (Madry et al.): uniform random start in the ball, ``steps`` signed
    gradient steps of ``step_size`` (default 2.5·ε/steps), projection by clipping; no [0, 1] box."""
    eps = check_eps(eps)
    steps = check_count("steps", steps)
    step_size = 2.5 * eps / steps if step_size is None else float(step_size)
    w, b = w.detach(), _detach(b)
    x0 = x.detach()
    delta = (torch.rand(x0.shape, generator=generator, dtype=x0.dtype) * 2 - 1) * eps
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(logistic_loss(w, b, x0 + delta, y).sum(), delta)
        delta = (delta.detach() + step_size * grad.sign()).clamp(-eps, eps)
    return (x0 + delta).detach()


def _detach(b: Tensor | float) -> Tensor | float:
    return b.detach() if isinstance(b, Tensor) else b


@dataclass
class LogisticFit:
    """Weights, bias and the objective after every step of :func:`train_logistic`."""

    w: Tensor
    b: Tensor
    objective: list[float] = field(default_factory=list)


def train_logistic(
    x: Tensor,
    y: Tensor,
    *,
    eps: float = 0.0,
    alpha: float = 0.5,
    adversary: Adversary = "closed_form",
    steps: int = 500,
    lr: float = 1.0,
) -> LogisticFit:
    """Full-batch gradient descent from w = 0, b = 0 on Goodfellow et al.'s adversarial objective

        α·mean J(x) + (1 − α)·mean J_adv,

    where J_adv is the closed form (``adversary="closed_form"``) or the loss on FGSM examples made
    from the current weights at every step (``"fgsm"``). α = 0.5 is the paper's value; α = 1 (or
    ε = 0) is standard training. Deterministic: no randomness is drawn.
    """
    eps = check_eps(eps)
    steps = check_count("steps", steps)
    if not 0 <= alpha <= 1:
        raise ConfigError(f"alpha must lie in [0, 1], got {alpha}")
    if adversary not in ("closed_form", "fgsm"):
        raise ConfigError(f"adversary must be 'closed_form' or 'fgsm', got {adversary!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"lr must be a positive finite number, got {lr}")
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ConfigError(f"x must be (n, d) and y (n,), got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.to(_DTYPE), y.to(_DTYPE)
    w = torch.zeros(x.shape[1], dtype=_DTYPE, requires_grad=True)
    b = torch.zeros((), dtype=_DTYPE, requires_grad=True)
    fit = LogisticFit(w, b)
    for _ in range(steps):
        if adversary == "closed_form":
            adv = adversarial_loss(w, b, x, y, eps=eps)
        else:
            adv = logistic_loss(w, b, fgsm(w, b, x, y, eps=eps), y)
        objective = alpha * logistic_loss(w, b, x, y).mean() + (1 - alpha) * adv.mean()
        gw, gb = torch.autograd.grad(objective, (w, b))
        with torch.no_grad():
            w -= lr * gw
            b -= lr * gb
        fit.objective.append(float(objective.detach()))
    fit.w, fit.b = w.detach(), b.detach()
    return fit


# ----------------------------------------------------------------------------------------------
# closed forms on Gaussian data, and their simulation


def _margin_parts(w: Tensor, b: float, data: TwoGaussians, eps: float) -> tuple[float, float, float]:
    """(wᵀμ − ε‖w‖₁, √(wᵀΣw), b): y(wᵀx + b) − ε‖w‖₁ ~ N(wᵀμ ± b − ε‖w‖₁, wᵀΣw), ± = y."""
    w = torch.as_tensor(w, dtype=_DTYPE)
    if w.shape != (data.dim,):
        raise ConfigError(f"w must have {data.dim} entries to match the data, got shape {tuple(w.shape)}")
    return float(w @ data.mean - eps * w.abs().sum()), float(torch.sqrt(w @ data.cov @ w)), float(b)


def robust_accuracy(w: Tensor, b: float, data: TwoGaussians, *, eps: float = 0.0) -> float:
    """Accuracy of sign(wᵀx + b) under L∞ perturbations ≤ eps on x ~ N(y·μ, Σ):
    ½[Φ((wᵀμ + b − ε‖w‖₁)/s) + Φ((wᵀμ − b − ε‖w‖₁)/s)], s = √(wᵀΣw)."""
    centre, spread, b = _margin_parts(w, b, data, check_eps(eps))
    z = torch.tensor([(centre + b) / spread, (centre - b) / spread], dtype=_DTYPE)
    return float(torch.special.ndtr(z).mean())


def expected_adversarial_loss(w: Tensor, b: float, data: TwoGaussians, *, eps: float = 0.0, nodes: int = 201) -> float:
    """E softplus(ε‖w‖₁ − y(wᵀx + b)) on x ~ N(y·μ, Σ), by Gauss–Hermite quadrature over the Gaussian margin."""
    centre, spread, b = _margin_parts(w, b, data, check_eps(eps))
    z, weights = np.polynomial.hermite_e.hermegauss(check_count("nodes", nodes, 2))
    z = torch.as_tensor(z, dtype=_DTYPE)
    weights = torch.as_tensor(weights, dtype=_DTYPE) / math.sqrt(2 * math.pi)
    total = 0.0
    for shift in (b, -b):
        total += 0.5 * float((weights * F.softplus(-(centre + shift + spread * z))).sum())
    return total


def simulate(
    w: Tensor,
    b: float,
    data: TwoGaussians,
    *,
    eps: float,
    n: int,
    generator: torch.Generator,
    steps: int = 10,
) -> dict[str, float]:
    """Fresh samples attacked by :func:`pgd`: accuracy and mean logistic loss, each with its standard error."""
    eps = check_eps(eps)
    w = torch.as_tensor(w, dtype=_DTYPE)
    x, y = data.sample(n, generator=generator)
    if eps > 0:
        x = pgd(w, b, x, y, eps=eps, steps=steps, generator=generator)
    correct = (margin(w, b, x, y) > 0).to(_DTYPE)
    loss = logistic_loss(w, b, x, y)
    acc = float(correct.mean())
    return {
        "accuracy": acc,
        "accuracy_se": math.sqrt(max(acc * (1 - acc), 1e-300) / n),
        "loss": float(loss.mean()),
        "loss_se": float(loss.std() / math.sqrt(n)),
    }
