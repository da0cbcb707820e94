"""The two-Gaussian model of Ilyas et al. 2019 (Sec. 4, Theorems 1 and 2), simulated and solved.

Data: y uniform in {±1}, x ~ N(y·μ*, Σ*). A "model" is a Gaussian (μ, Σ) fitted by maximum
likelihood; its classifier is the log-likelihood ratio 2·xᵀΣ⁻¹μ, a linear classifier with weights
w = Σ⁻¹μ. Because y·x ~ N(μ*, Σ*) for both classes, everything reduces to fitting one Gaussian to
the *folded* samples z = y·x (the paper's ℓ(x; y·μ, Σ)).

Conventions (chosen so that both theorems come out exactly as the paper writes them):

* loss ℓ(x; μ, Σ) = (x − μ)ᵀΣ⁻¹(x − μ) + ln det Σ  (twice the Gaussian NLL, constants dropped);
* "Lagrangian" adversary with penalty λ: max_δ ℓ(x + δ) − λ‖δ‖₂² (a *squared* norm: with the plain
  norm ‖δ‖₂ neither closed form below holds). Its maximiser is δ = (λΣ − I)⁻¹(x − μ), finite only
  for λ > 1/σ_min(Σ).

What is here, each a closed form paired with a simulation:

1. **Standard ML** (:func:`fit_standard`): sample mean and covariance of z.
2. **Metric misalignment** (Theorem 1): for the standard model (μ*, Σ*),
   ``L_adv − L = tr[(I + (CΣ* − I)⁻¹)²] − d`` (:func:`vulnerability`), where L_adv is the loss at the
   Lagrangian adversary's points; for fixed tr Σ* it is smallest for Σ* ∝ I. Checked by gradient
   ascent on δ (:func:`simulate_vulnerability`). Also the plain view: the L2 distance of any point to
   the linear boundary is ``√(wᵀΣ*w)/‖w‖₂`` times its Mahalanobis distance
   (:func:`metric_misalignment`), so an anisotropic Σ* makes small L2 perturbations enough even
   when the classes are far apart in the data's own metric (:func:`accuracy`, :func:`simulate_accuracy`).
3. **Robust ML** (Theorem 2): with the Lagrangian adversary,
   ``μ_r = μ*`` and ``Σ_r = ½Σ* + (1/λ)I + √(Σ*/λ + ¼Σ*²)`` (:func:`robust_covariance`). Checked by
   numerically solving the min-max on samples (:func:`fit_robust`: exact inner maximisation,
   L-BFGS over μ and a Cholesky factor of Σ — no eigenbasis assumed).

   *How λ depends on ε* (PAPERS.md marks this "verify"). Derivation here: the formula is exact
   when the adversary's budget is a **mean-square** one, E‖δ‖₂² ≤ ε²; then λ solves
   ``ε² = tr(Σ_r⁻¹)/λ²`` (:func:`multiplier_for_budget`), and :func:`fit_robust` with
   ``budget="mean_square"`` reproduces it to optimiser precision. For the usual **per-example** ball
   ‖δ‖₂ ≤ ε (what adversarial training does) the formula is *not* exact: in one dimension the
   per-example optimum is σ* + 2ε√(2σ*/π) + ε², against (√σ* + ε)² from the formula with λ(ε);
   in d = 6 (the spectrum of :mod:`advfeatures.theory.run`, same samples, so no sampling error) the
   per-example optimum pulls the small eigenvalues up less than the formula: 8% apart at ε = 0.25,
   3% at ε = 2, and no single λ puts it on the formula's curve (1–2% left over); in d = 40 the
   gap shrinks to about 1.5%, as ‖Σ⁻¹(x − μ)‖ concentrates. The qualitative claim — same mean,
   covariance pulled towards the identity, better-aligned gradients — holds for both budgets.
4. **Gradient alignment**: the input gradient of the log-likelihood ratio is 2Σ⁻¹μ; its cosine
   with μ* (:func:`gradient_alignment`) is 1 only when the metric is aligned and grows towards 1
   as ε grows for the robust model.

Everything runs in float64; randomness comes from an explicit :class:`torch.Generator`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..errors import ConfigError
from .checks import check_count, check_eps

log = logging.getLogger(__name__)

Budget = Literal["per_example", "mean_square"]
_DTYPE = torch.float64


# ----------------------------------------------------------------------------------------------
# validation helpers




def _check_cov(cov: Tensor, dim: int | None = None) -> Tensor:
    cov = torch.as_tensor(cov, dtype=_DTYPE)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] < 1:
        raise ConfigError(f"cov must be a square (d, d) matrix with d ≥ 1, got shape {tuple(cov.shape)}")
    if dim is not None and cov.shape[0] != dim:
        raise ConfigError(f"cov is {cov.shape[0]}×{cov.shape[0]} but the mean has {dim} entries; give matching shapes")
    if not torch.isfinite(cov).all() or not torch.allclose(cov, cov.T, atol=1e-10, rtol=1e-8):
        raise ConfigError("cov must be a finite symmetric matrix; symmetrise it with (C + C.T) / 2")
    if torch.linalg.eigvalsh(cov).min() <= 0:
        raise ConfigError("cov must be positive definite; add a small multiple of the identity")
    return cov


def _normal_cdf(z: Tensor | float) -> float:
    return float(torch.special.ndtr(torch.as_tensor(z, dtype=_DTYPE)))


# ----------------------------------------------------------------------------------------------
# the data model


@dataclass(frozen=True, eq=False)
class TwoGaussians:
    """y uniform in {±1}, x ~ N(y·mean, cov) — Ilyas et al. 2019, Sec. 4."""

    mean: Tensor
    cov: Tensor

    def __post_init__(self) -> None:
        mean = torch.as_tensor(self.mean, dtype=_DTYPE)
        if mean.ndim != 1 or mean.numel() < 1 or not torch.isfinite(mean).all():
            raise ConfigError(f"mean must be a finite vector with d ≥ 1 entries, got shape {tuple(mean.shape)}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cov", _check_cov(self.cov, mean.numel()))

    @property
    def dim(self) -> int:
        return self.mean.numel()

    @classmethod
    def with_spectrum(cls, eigenvalues: Tensor | list[float], *, mahalanobis: float = 2.0) -> TwoGaussians:
        """Σ* = diag(eigenvalues) and μ* with equal coordinates, scaled so that √(μ*ᵀΣ*⁻¹μ*) = mahalanobis.

        The Bayes classifier's accuracy is then Φ(mahalanobis), whatever the spectrum, which isolates
        the effect of the metric (the spectrum) from that of the separation.
        """
        s = torch.as_tensor(eigenvalues, dtype=_DTYPE)
        if s.ndim != 1 or s.numel() < 1 or not (s > 0).all():
            raise ConfigError("eigenvalues must be a non-empty vector of positive numbers")
        if not mahalanobis > 0:
            raise ConfigError(f"mahalanobis must be > 0, got {mahalanobis}")
        direction = torch.ones_like(s)
        scale = mahalanobis / math.sqrt(float((direction**2 / s).sum()))
        return cls(direction * scale, torch.diag(s))

    def sample(self, n: int, *, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` pairs (x, y): x of shape (n, d), y in {−1, +1} of shape (n,), both float64."""
        n = check_count("n", n)
        y = torch.randint(0, 2, (n,), generator=generator).to(_DTYPE) * 2 - 1
        noise = torch.randn(n, self.dim, generator=generator, dtype=_DTYPE) @ torch.linalg.cholesky(self.cov).T
        return y[:, None] * self.mean + noise, y


def fold(x: Tensor, y: Tensor) -> Tensor:
    """z = y·x: both classes become samples of N(μ*, Σ*)."""
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ConfigError(f"x must be (n, d) and y (n,), got {tuple(x.shape)} and {tuple(y.shape)}")
    return y.to(_DTYPE)[:, None] * x.to(_DTYPE)


# ----------------------------------------------------------------------------------------------
# standard training and the linear classifier


def fit_standard(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Maximum-likelihood (μ, Σ) of standard training: mean and (1/n) covariance of z = y·x."""
    z = fold(x, y)
    mean = z.mean(0)
    centred = z - mean
    return mean, centred.T @ centred / z.shape[0]


def classifier_weights(mean: Tensor, cov: Tensor) -> Tensor:
    """w = Σ⁻¹μ: the model's log-likelihood ratio is 2·wᵀx, so it predicts sign(wᵀx)."""
    return torch.linalg.solve(_check_cov(cov), torch.as_tensor(mean, dtype=_DTYPE))


def log_odds(x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
    """ln p(y=+1 | x) − ln p(y=−1 | x) = 2·xᵀΣ⁻¹μ for the Gaussian model (μ, Σ); differentiable in x."""
    return 2 * x @ classifier_weights(mean, cov)


def accuracy(w: Tensor, data: TwoGaussians, *, eps: float = 0.0) -> float:
    """Closed-form accuracy of sign(wᵀx) under L2 perturbations of size ≤ eps.

    The worst perturbation moves x by eps along −y·w/‖w‖₂, so the example is robust iff
    y·wᵀx > eps·‖w‖₂, and y·wᵀx ~ N(wᵀμ*, wᵀΣ*w): accuracy = Φ((wᵀμ* − eps‖w‖₂)/√(wᵀΣ*w)).
    """
    eps = check_eps(eps)
    w = torch.as_tensor(w, dtype=_DTYPE)
    return _normal_cdf((w @ data.mean - eps * w.norm()) / torch.sqrt(w @ data.cov @ w))


def l2_attack(w: Tensor, x: Tensor, y: Tensor, *, eps: float) -> Tensor:
    """One L2 steepest-ascent step of size eps on the margin loss −y·wᵀx, by autograd.

    For a linear classifier one normalised-gradient step of the full radius is the exact worst case.
    """
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((-y * (x @ w)).sum(), x)
    return (x + eps * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-300)).detach()


def simulate_accuracy(
    w: Tensor, data: TwoGaussians, *, eps: float = 0.0, n: int, generator: torch.Generator
) -> tuple[float, float]:
    """Monte-Carlo accuracy of sign(wᵀx) on fresh samples attacked by :func:`l2_attack`; (accuracy, standard error)."""
    eps = check_eps(eps)
    w = torch.as_tensor(w, dtype=_DTYPE)
    x, y = data.sample(n, generator=generator)
    if eps > 0:
        x = l2_attack(w, x, y, eps=eps)
    correct = ((x @ w) * y > 0).to(_DTYPE)
    acc = float(correct.mean())
    return acc, math.sqrt(max(acc * (1 - acc), 1e-300) / n)


def metric_misalignment(w: Tensor, cov: Tensor) -> float:
    """√(wᵀΣw)/‖w‖₂: the L2 distance of *every* point to the boundary wᵀx = 0 divided by its
    Mahalanobis distance (in the metric Σ⁻¹). 1 when Σ = I; between √σ_min and √σ_max otherwise."""
    w = torch.as_tensor(w, dtype=_DTYPE)
    cov = _check_cov(cov, w.numel())
    return float(torch.sqrt(w @ cov @ w) / w.norm())


# ----------------------------------------------------------------------------------------------
# Theorem 1: vulnerability of the standard model to the Lagrangian adversary


def _check_penalty(penalty: float, cov: Tensor) -> float:
    penalty = float(penalty)
    floor = 1.0 / float(torch.linalg.eigvalsh(cov).min())
    if not (math.isfinite(penalty) and penalty > floor):
        raise ConfigError(
            f"penalty must exceed 1/σ_min(Σ) = {floor:.6g} (else the adversary's loss is unbounded), got {penalty}"
        )
    return penalty


def vulnerability(cov: Tensor, *, penalty: float) -> float:
    """Theorem 1 of Ilyas et al.: ``tr[(I + (C·Σ* − I)⁻¹)²] − d``, with C = ``penalty``.

    The expected increase of ℓ at the true model (μ*, Σ*) when each x is moved to
    argmax_δ ℓ(x + δ) − C‖δ‖₂². Requires C > 1/σ_min(Σ*). For fixed tr Σ* it is smallest when Σ* is
    a multiple of I: every term 2/(Cs − 1) + 1/(Cs − 1)² is convex in the eigenvalue s.
    """
    cov = _check_cov(cov)
    penalty = _check_penalty(penalty, cov)
    s = torch.linalg.eigvalsh(cov)
    factor = 1 + 1 / (penalty * s - 1)
    return float((factor**2).sum() - s.numel())


def simulate_vulnerability(
    data: TwoGaussians, *, penalty: float, n: int, generator: torch.Generator, tol: float = 1e-10
) -> tuple[float, float]:
    """Theorem 1 by simulation: gradient ascent (autograd) on δ ↦ ℓ(x + δ) − C‖δ‖₂² for each sample.

    The objective is a concave quadratic; with step 1/(2(C − 1/σ_max)) each step shrinks the error
    by at least 1 − (C − 1/σ_min)/(C − 1/σ_max), and we take enough steps to reach ``tol``.
    Returns (mean increase of ℓ, its standard error).
    """
    penalty = _check_penalty(penalty, data.cov)
    x, y = data.sample(n, generator=generator)
    v = fold(x, y) - data.mean
    precision = torch.linalg.inv(data.cov)
    p = torch.linalg.eigvalsh(precision)
    p_min, p_max = float(p.min()), float(p.max())
    step = 1 / (2 * (penalty - p_min))
    rate = 1 - (penalty - p_max) / (penalty - p_min)
    steps = 1 if rate <= 0 else min(100_000, math.ceil(math.log(tol) / math.log(rate)) + 1)

    def quad(r: Tensor) -> Tensor:
        return ((r @ precision) * r).sum(1)

    delta = torch.zeros_like(v, requires_grad=True)
    for _ in range(steps):
        objective = (quad(v + delta) - penalty * (delta**2).sum(1)).sum()
        (grad,) = torch.autograd.grad(objective, delta)
        delta = (delta + step * grad).detach().requires_grad_(True)
    increase = (quad(v + delta) - quad(v)).detach()
    return float(increase.mean()), float(increase.std() / math.sqrt(n))


# ----------------------------------------------------------------------------------------------
# Theorem 2: robust learning


def robust_covariance(cov: Tensor, *, lam: float) -> Tensor:
    """Theorem 2 of Ilyas et al.: Σ_r = ½Σ* + (1/λ)I + √(Σ*/λ + ¼Σ*²), computed in Σ*'s eigenbasis.

    Exact optimum of min_Σ E[max_δ ℓ(x + δ; y·μ*, Σ) − λ‖δ‖₂²] (per eigenvalue s: minimise
    λs/(λσ − 1) + ln σ; the stationary point solves σ² − (2/λ + s)σ + 1/λ² = 0).
    """
    cov = _check_cov(cov)
    lam = float(lam)
    if not (math.isfinite(lam) and lam > 0):
        raise ConfigError(f"lam must be a positive finite number, got {lam}")
    s, q = torch.linalg.eigh(cov)
    r = 0.5 * s + 1 / lam + torch.sqrt(s / lam + 0.25 * s**2)
    return (q * r) @ q.T


def multiplier_for_budget(cov: Tensor, *, eps: float) -> float:
    """λ for which the Theorem-2 covariance is the robust optimum under the budget E‖δ‖₂² ≤ eps².

    At the optimum δ = (λΣ_r − I)⁻¹(x − μ*) and E‖δ‖² = Σᵢ sᵢ/(λrᵢ − 1)² = Σᵢ 1/(λ²rᵢ) = tr(Σ_r⁻¹)/λ²,
    which falls from ∞ to 0 as λ grows; solved by bisection on ln λ.
    """
    cov = _check_cov(cov)
    eps = check_eps(eps, positive=True)
    s = torch.linalg.eigvalsh(cov)

    def budget(log_lam: float) -> float:
        lam = math.exp(log_lam)
        r = 0.5 * s + 1 / lam + torch.sqrt(s / lam + 0.25 * s**2)
        return float((1 / r).sum()) / lam**2

    lo, hi = -60.0, 60.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if budget(mid) > eps**2:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def _secular_gap(a: Tensor, p: Tensor, eps: float, *, per_example: bool, iters: int = 60) -> Tensor:
    """t = λ − max(p) > 0 with ‖δ‖ = eps, δᵢ = √aᵢ/(λ − pᵢ) (aᵢ = (pᵢwᵢ)²): the trust-region secular equation.

    Safeguarded Newton on ψ = 1/‖δ‖ − 1/eps, concave and increasing in λ (Moré & Sorensen 1983), from
    a lower bound, so the iterates climb monotonically to the root. Solved for the gap t rather than
    λ so that λ − pᵢ = t + (max p − pᵢ) keeps full precision near the pole. ``per_example``: one root
    per row of ``a``; otherwise one root for the mean over rows of ‖δ‖².
    """
    offset = p.max() - p  # ≥ 0

    def reduce(t: Tensor) -> Tensor:
        return t.sum(1, keepdim=True) if per_example else t.sum(1).mean().reshape(1, 1)

    # √top/t ≤ ‖δ‖ ≤ √total/t, so the root lies in [√top, √total]/eps.
    lo = reduce(torch.where(offset == 0, a, torch.zeros_like(a))).sqrt() / eps
    hi = reduce(a).sqrt() / eps
    gap = lo.clone()
    for _ in range(iters):
        denominator = gap + offset
        norm = reduce(a / denominator**2).sqrt()
        done = (norm - eps).abs() <= 1e-12 * eps
        if bool(done.all()):
            break
        psi = 1 / norm - 1 / eps
        below = psi < 0
        lo = torch.where(below, gap, lo)
        hi = torch.where(below, hi, gap)
        newton = gap - psi * norm**3 / reduce(a / denominator**3)
        inside = (newton >= lo) & (newton <= hi)
        gap = torch.where(done, gap, torch.where(inside, newton, 0.5 * (lo + hi)))
    return gap


def worst_case_perturbation(
    v: Tensor,
    cov: Tensor,
    *,
    eps: float | None = None,
    penalty: float | None = None,
    budget: Budget = "per_example",
) -> Tensor:
    """argmax_δ (v + δ)ᵀΣ⁻¹(v + δ) for centred points v (rows), exactly.

    Give either ``penalty`` (the Lagrangian adversary, −λ‖δ‖₂² added: δ = (λΣ − I)⁻¹v) or ``eps``
    with a ``budget``: ``"per_example"`` (‖δᵢ‖₂ ≤ eps for every row: a trust-region problem per row)
    or ``"mean_square"`` (mean ‖δᵢ‖₂² ≤ eps²: one shared multiplier). Either way δ = (λΣ − I)⁻¹v with
    λ > 1/σ_min(Σ) solving the secular equation. (The measure-zero "hard case", v orthogonal to Σ's
    smallest-variance direction, is not treated specially.)
    """
    if (eps is None) == (penalty is None):
        raise ConfigError("give exactly one of eps (a budget) or penalty (a Lagrangian adversary)")
    cov = _check_cov(cov, v.shape[1])
    sig, q = torch.linalg.eigh(cov)
    w = v.to(_DTYPE) @ q
    p = 1 / sig
    if penalty is not None:
        gap = torch.as_tensor(_check_penalty(penalty, cov), dtype=_DTYPE) - p.max()
    else:
        eps = check_eps(eps, positive=True)
        if budget not in ("per_example", "mean_square"):
            raise ConfigError(f"budget must be 'per_example' or 'mean_square', got {budget!r}")
        gap = _secular_gap((p * w) ** 2, p, eps, per_example=budget == "per_example")
    return (p * w / (gap + (p.max() - p))) @ q.T


def fit_robust(
    x: Tensor,
    y: Tensor,
    *,
    eps: float | None = None,
    penalty: float | None = None,
    budget: Budget = "per_example",
    max_iter: int = 200,
) -> tuple[Tensor, Tensor]:
    """Robust maximum likelihood, solved numerically: min_{μ,Σ} mean_i max_δ ℓ(y_i x_i + δ_i; μ, Σ) [− λ‖δ_i‖²].

    The inner maximum is solved exactly (:func:`worst_case_perturbation`); by Danskin's theorem the
    gradient in (μ, Σ) is that of ℓ at the maximising δ, and L-BFGS (strong Wolfe) minimises over μ
    and a lower-triangular factor L of Σ — Σ = LLᵀ, or Σ = I/λ + LLᵀ for the Lagrangian adversary so
    that λ > 1/σ_min(Σ) always holds. No eigenbasis is assumed. Returns (μ_r, Σ_r).
    """
    z = fold(x, y)
    d = z.shape[1]
    check_count("max_iter", max_iter)
    mean0, cov0 = fit_standard(x, y)
    if penalty is not None:
        penalty = float(penalty)
        floor = torch.eye(d, dtype=_DTYPE) / penalty
        start = cov0 + floor
    else:
        floor = torch.zeros(d, d, dtype=_DTYPE)
        start = cov0 + check_eps(eps, positive=True) ** 2 * torch.eye(d, dtype=_DTYPE)
    tril = torch.tril_indices(d, d)
    chol = torch.linalg.cholesky(start - floor)
    raw = chol[tril[0], tril[1]].clone()
    diag = tril[0] == tril[1]
    raw[diag] = raw[diag].log()
    raw.requires_grad_(True)
    mu = mean0.clone().requires_grad_(True)

    def covariance() -> Tensor:
        entries = torch.where(diag, raw.exp(), raw)
        factor = torch.zeros(d, d, dtype=_DTYPE).index_put((tril[0], tril[1]), entries)
        return factor @ factor.T + floor

    def objective() -> Tensor:
        cov = covariance()
        v = z - mu
        with torch.no_grad():
            delta = worst_case_perturbation(v, cov, eps=eps, penalty=penalty, budget=budget)
        r = v + delta
        chol = torch.linalg.cholesky(cov)
        solved = torch.linalg.solve_triangular(chol, r.T, upper=False)
        value = (solved**2).sum(0).mean() + 2 * chol.diagonal().log().sum()
        if penalty is not None:
            value = value - penalty * (delta**2).sum(1).mean()
        return value

    optimiser = torch.optim.LBFGS(
        [mu, raw],
        lr=1.0,
        max_iter=max_iter,
        history_size=50,
        tolerance_grad=1e-11,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimiser.zero_grad()
        value = objective()
        value.backward()
        return value

    optimiser.step(closure)
    with torch.no_grad():
        return mu.detach().clone(), covariance().detach().clone()


def robust_stationarity_residual(x: Tensor, y: Tensor, mean: Tensor, cov: Tensor, **adversary) -> float:
    """Norm of the stationarity residual (mean(r) in Σ⁻¹ units, Σ − mean(rrᵀ)) at a candidate robust fit.

    At an optimum of :func:`fit_robust`'s objective, Σ = mean over samples of r·rᵀ with r = z − μ + δ*
    ("the robust covariance is the covariance of the worst-case-perturbed data") and mean(r) = 0.
    """
    z = fold(x, y)
    v = z - mean
    delta = worst_case_perturbation(v, cov, **adversary)
    r = v + delta
    return float(torch.linalg.norm(cov - r.T @ r / z.shape[0]) + torch.linalg.norm(r.mean(0)))


# ----------------------------------------------------------------------------------------------
# gradient alignment


def input_gradient(x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
    """∇ₓ of the model's log-odds at the rows of x, by autograd (constant 2Σ⁻¹μ for this model)."""
    x = x.detach().to(_DTYPE).clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(log_odds(x, mean, cov).sum(), x)
    return grad


def gradient_alignment(mean: Tensor, cov: Tensor, *, direction: Tensor) -> float:
    """Cosine between the model's input gradient 2Σ⁻¹μ and ``direction`` (the inter-class direction μ*)."""
    grad = input_gradient(torch.zeros(1, mean.numel(), dtype=_DTYPE), mean, cov)[0]
    direction = torch.as_tensor(direction, dtype=_DTYPE)
    return float(grad @ direction / (grad.norm() * direction.norm()))
