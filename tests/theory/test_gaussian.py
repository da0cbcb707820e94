"""Known-answer tests for the two-Gaussian model of Ilyas et al. 2019, Sec. 4.

Simulation vs closed form: every tolerance is a multiple (4, or 4.5 for a maximum over many entries)
of the standard error of the simulated quantity, estimated from the samples or derived below.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advfeatures.errors import ConfigError
from advfeatures.theory import gaussian as G

F64 = torch.float64
SPECTRUM = torch.tensor([0.05, 0.2, 0.5, 1.0, 2.0, 5.0], dtype=F64)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def data() -> G.TwoGaussians:
    return G.TwoGaussians.with_spectrum(SPECTRUM, mahalanobis=2.0)


@pytest.fixture(scope="module")
def sample(data):
    return data.sample(5_000, generator=gen(11))


def random_cov(dim: int, seed: int) -> torch.Tensor:
    a = torch.randn(dim, dim, generator=gen(seed), dtype=F64)
    return a @ a.T / dim + 0.2 * torch.eye(dim, dtype=F64)


# ---------------------------------------------------------------- standard ML and the classifier


def test_standard_fit_recovers_mean_and_covariance_within_sampling_error(data):
    n = 20_000
    x, y = data.sample(n, generator=gen(1))
    mean, cov = G.fit_standard(x, y)
    var = data.cov.diagonal()
    mean_z = (mean - data.mean) / torch.sqrt(var / n)
    # Var of a sample covariance entry of a Gaussian: (Σᵢᵢ Σⱼⱼ + Σᵢⱼ²)/n
    cov_z = (cov - data.cov) / torch.sqrt((var[:, None] * var[None, :] + data.cov**2) / n)
    assert mean_z.abs().max() < 4.5
    assert cov_z.abs().max() < 4.5


def test_with_spectrum_fixes_the_bayes_accuracy(data):
    w = G.classifier_weights(data.mean, data.cov)
    assert G.accuracy(w, data) == pytest.approx(float(torch.special.ndtr(torch.tensor(2.0, dtype=F64))), abs=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_l2_robust_accuracy_matches_attack_on_fresh_samples(data, eps):
    w = G.classifier_weights(data.mean, data.cov)
    closed = G.accuracy(w, data, eps=eps)
    simulated, se = G.simulate_accuracy(w, data, eps=eps, n=50_000, generator=gen(2))
    assert abs(simulated - closed) < 4 * se


def test_l2_attack_reaches_the_boundary_at_the_predicted_distance(data, sample):
    x, y = sample
    w = G.classifier_weights(data.mean, data.cov)
    x, y = x[:200], y[:200]
    right = y * (x @ w) > 0
    x, y = x[right], y[right]
    distance = (x @ w).abs() / w.norm()
    for scale, flipped in ((1 - 1e-9, False), (1 + 1e-9, True)):
        moved = torch.stack([G.l2_attack(w, xi[None], yi[None], eps=float(d * scale))[0] for xi, yi, d in zip(x, y, distance)])
        assert bool(((y * (moved @ w) <= 0) == flipped).all())


def test_metric_misalignment_is_the_ratio_of_l2_to_mahalanobis_boundary_distance(data, sample):
    x, _ = sample
    w = G.classifier_weights(data.mean, data.cov)
    l2 = (x @ w).abs() / w.norm()
    mahalanobis = (x @ w).abs() / torch.sqrt(w @ data.cov @ w)
    ratio = G.metric_misalignment(w, data.cov)
    assert torch.allclose(l2 / mahalanobis, torch.full_like(l2, ratio))
    assert math.sqrt(SPECTRUM.min()) <= ratio <= math.sqrt(SPECTRUM.max())
    assert G.metric_misalignment(w, torch.eye(6, dtype=F64) * 3.0) == pytest.approx(math.sqrt(3.0))


# ---------------------------------------------------------------- Theorem 1


@pytest.mark.parametrize("penalty", [30.0, 60.0])
def test_theorem1_vulnerability_matches_gradient_ascent_adversary(data, penalty):
    closed = G.vulnerability(data.cov, penalty=penalty)
    simulated, se = G.simulate_vulnerability(data, penalty=penalty, n=20_000, generator=gen(3))
    assert abs(simulated - closed) < 4 * se


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0.2, 5.0), min_size=2, max_size=8),
    st.floats(1.1, 4.0),
)
def test_theorem1_vulnerability_is_smallest_for_isotropic_covariance(eigenvalues, margin):
    s = torch.tensor(eigenvalues, dtype=F64)
    s = s * len(eigenvalues) / s.sum()  # trace fixed at d
    penalty = margin / float(s.min())
    isotropic = G.vulnerability(torch.eye(len(eigenvalues), dtype=F64), penalty=penalty)
    assert G.vulnerability(torch.diag(s), penalty=penalty) >= isotropic - 1e-9


# ---------------------------------------------------------------- the inner maximisation


def _projected_gradient_ascent(v, cov, eps, steps=800):
    """Generic check: ascend (v+δ)ᵀΣ⁻¹(v+δ) on the ball from the gradient direction, by autograd."""
    precision = torch.linalg.inv(cov)
    step = 0.5 / float(torch.linalg.eigvalsh(precision).max())
    delta = precision @ v.T
    delta = (eps * delta / delta.norm(dim=0)).T.contiguous()
    for _ in range(steps):
        delta.requires_grad_(True)
        value = (((v + delta) @ precision) * (v + delta)).sum()
        (grad,) = torch.autograd.grad(value, delta)
        delta = delta.detach() + step * grad
        delta = eps * delta / delta.norm(dim=1, keepdim=True)  # a convex maximiser lies on the sphere
    return delta


def test_per_example_worst_case_is_on_the_sphere_and_beats_gradient_ascent():
    cov = random_cov(5, 4)
    v = torch.randn(300, 5, generator=gen(5), dtype=F64)
    eps = 0.7
    exact = G.worst_case_perturbation(v, cov, eps=eps)
    assert torch.allclose(exact.norm(dim=1), torch.full((300,), eps, dtype=F64), rtol=1e-9)
    ascent = _projected_gradient_ascent(v, cov, eps)
    precision = torch.linalg.inv(cov)

    def value(d):
        return (((v + d) @ precision) * (v + d)).sum(1)

    gap = value(exact) - value(ascent)
    assert gap.min() > -1e-8  # never beaten
    assert gap.median() < 1e-8  # and found by ascent almost everywhere


def test_mean_square_and_lagrangian_worst_cases_satisfy_their_conditions():
    cov = random_cov(4, 6)
    v = torch.randn(500, 4, generator=gen(7), dtype=F64)
    delta = G.worst_case_perturbation(v, cov, eps=0.4, budget="mean_square")
    assert float((delta**2).sum(1).mean()) == pytest.approx(0.16, rel=1e-9)
    # stationarity: Σ⁻¹(v + δ) = λδ with one λ for every row
    ratio = (torch.linalg.solve(cov, (v + delta).T).T / delta).flatten()
    assert float(ratio.std() / ratio.mean()) < 1e-8
    penalty = 2.0 / float(torch.linalg.eigvalsh(cov).min())
    delta = G.worst_case_perturbation(v, cov, penalty=penalty)
    assert torch.allclose(torch.linalg.solve(cov, (v + delta).T).T, penalty * delta, atol=1e-10)


# ---------------------------------------------------------------- Theorem 2


def test_theorem2_lagrangian_robust_fit_equals_closed_form_on_the_same_samples(sample):
    """The Lagrangian objective depends on the data only through its first two moments, so the
    numerical min-max on samples must reproduce Theorem 2 applied to the sample covariance exactly
    (up to optimiser error), and keep the sample mean (μ_r = μ*)."""
    x, y = sample
    mean, cov = G.fit_standard(x, y)
    penalty = 3.0
    mu_r, cov_r = G.fit_robust(x, y, penalty=penalty)
    closed = G.robust_covariance(cov, lam=penalty)
    assert float(torch.linalg.norm(cov_r - closed) / torch.linalg.norm(closed)) < 1e-5
    assert float((mu_r - mean).norm()) < 1e-6


def test_theorem2_mean_square_budget_fit_matches_closed_form_with_lambda_from_eps(data):
    n, eps = 20_000, 1.0
    x, y = data.sample(n, generator=gen(8))
    _, cov = G.fit_standard(x, y)
    _, cov_r = G.fit_robust(x, y, eps=eps, budget="mean_square")
    same_sample = G.robust_covariance(cov, lam=G.multiplier_for_budget(cov, eps=eps))
    assert float(torch.linalg.norm(cov_r - same_sample) / torch.linalg.norm(same_sample)) < 1e-5
    # against the population closed form: sampling error only. The relative error of each sample
    # eigenvalue is about √(2/n), and the map s ↦ Σ_r(s) shrinks relative errors, so 4√(2/n) bounds it.
    population = torch.linalg.eigvalsh(G.robust_covariance(data.cov, lam=G.multiplier_for_budget(data.cov, eps=eps)))
    relative = (torch.linalg.eigvalsh(cov_r) - population) / population
    assert relative.abs().max() < 4 * math.sqrt(2 / n)


def test_multiplier_for_budget_gives_the_budget_back():
    cov = torch.diag(SPECTRUM)
    for eps in (0.1, 1.0, 3.0):
        lam = G.multiplier_for_budget(cov, eps=eps)
        robust = torch.linalg.eigvalsh(G.robust_covariance(cov, lam=lam))
        assert float((1 / robust).sum()) / lam**2 == pytest.approx(eps**2, rel=1e-9)
        # the Lagrangian adversary at Σ_r spends exactly ε² on average: E‖(λΣ_r − I)⁻¹v‖² = Σ s/(λr − 1)²
        assert float((SPECTRUM / (lam * robust - 1) ** 2).sum()) == pytest.approx(eps**2, rel=1e-9)
    assert G.multiplier_for_budget(cov, eps=0.1) > G.multiplier_for_budget(cov, eps=1.0)


def test_per_example_ball_in_one_dimension_has_its_own_closed_form_not_theorem2s():
    """In 1-D the per-example adversary pushes every point ε further out: δ = ε·sign(v), so
    σ_r = E(|v| + ε)² = s + 2ε√(2s/π) + ε². Theorem 2 with λ from the mean-square budget gives
    (√s + ε)² instead: the stated formula is exact for E‖δ‖² ≤ ε², not for ‖δ‖ ≤ ε."""
    s, eps, n = 0.7, 0.5, 40_000
    data = G.TwoGaussians(torch.tensor([1.0], dtype=F64), torch.tensor([[s]], dtype=F64))
    x, y = data.sample(n, generator=gen(9))
    mu_r, cov_r = G.fit_robust(x, y, eps=eps)
    z = G.fold(x, y)
    spread = ((z - mu_r).abs() + eps) ** 2
    se = float(spread.std()) / math.sqrt(n)
    per_example = s + 2 * eps * math.sqrt(2 * s / math.pi) + eps**2
    theorem2 = float(G.robust_covariance(data.cov, lam=G.multiplier_for_budget(data.cov, eps=eps)))
    assert theorem2 == pytest.approx((math.sqrt(s) + eps) ** 2, rel=1e-9)
    assert abs(float(cov_r) - per_example) < 4 * se
    assert abs(float(cov_r) - theorem2) > 10 * se
    assert abs(float(mu_r) - 1.0) < 4 * math.sqrt(float(spread.mean()) / n)


def test_per_example_robust_fit_keeps_the_mean_and_inflates_the_covariance(data, sample):
    x, y = sample
    mean, cov = G.fit_standard(x, y)
    mu_r, cov_r = G.fit_robust(x, y, eps=1.0)
    n = x.shape[0]
    assert ((mu_r - data.mean) / torch.sqrt(cov_r.diagonal() / n)).abs().max() < 4.5
    assert torch.linalg.eigvalsh(cov_r - cov).min() > 0
    assert G.robust_stationarity_residual(x, y, mu_r, cov_r, eps=1.0) < 1e-3


# ---------------------------------------------------------------- gradient alignment


def test_input_gradient_is_twice_precision_times_mean(data):
    x = torch.randn(3, 6, generator=gen(10), dtype=F64)
    grad = G.input_gradient(x, data.mean, data.cov)
    assert torch.allclose(grad, 2 * torch.linalg.solve(data.cov, data.mean).expand(3, 6))


def test_robust_gradients_align_better_with_the_class_direction(data):
    standard = G.gradient_alignment(data.mean, data.cov, direction=data.mean)
    previous = standard
    for eps in (0.25, 1.0, 4.0, 50.0):
        robust = G.robust_covariance(data.cov, lam=G.multiplier_for_budget(data.cov, eps=eps))
        cosine = G.gradient_alignment(data.mean, robust, direction=data.mean)
        assert cosine > previous
        previous = cosine
    assert previous > 0.99
    assert G.gradient_alignment(data.mean, torch.eye(6, dtype=F64), direction=data.mean) == pytest.approx(1.0)


def test_fitted_standard_gradient_alignment_matches_closed_form_within_sampling_error(data):
    closed = G.gradient_alignment(data.mean, data.cov, direction=data.mean)
    cosines = []
    for k in range(8):
        x, y = data.sample(20_000, generator=gen(100 + k))
        mean, cov = G.fit_standard(x, y)
        cosines.append(G.gradient_alignment(mean, cov, direction=data.mean))
    c = torch.tensor(cosines, dtype=F64)
    assert abs(float(c.mean()) - closed) < 4 * float(c.std()) / math.sqrt(len(cosines)) + 1e-12


# ---------------------------------------------------------------- errors


def test_impossible_settings_raise_config_errors(data):
    with pytest.raises(ConfigError, match="positive definite"):
        G.TwoGaussians(torch.zeros(2), torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
    with pytest.raises(ConfigError, match="d ≥ 1"):
        G.TwoGaussians(torch.zeros(0), torch.zeros(0, 0))
    with pytest.raises(ConfigError, match="matching shapes"):
        G.TwoGaussians(torch.zeros(3), torch.eye(2))
    with pytest.raises(ConfigError, match="eps"):
        G.accuracy(torch.ones(6), data, eps=-0.1)
    with pytest.raises(ConfigError, match="penalty must exceed"):
        G.vulnerability(data.cov, penalty=1.0)
    with pytest.raises(ConfigError, match="budget"):
        G.worst_case_perturbation(torch.ones(2, 6), data.cov, eps=1.0, budget="per_pixel")
    with pytest.raises(ConfigError, match="exactly one"):
        G.worst_case_perturbation(torch.ones(2, 6), data.cov)
    with pytest.raises(ConfigError, match="n must be"):
        data.sample(0, generator=gen(0))
