"""Known-answer tests for Tsipras et al. 2019's trade-off distribution: closed forms vs Monte Carlo.

Monte-Carlo tolerances are 4 binomial standard errors √(a(1 − a)/n).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advfeatures.errors import ConfigError
from advfeatures.theory import tsipras as T

F64 = torch.float64
N = 40_000


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def phi(z: float) -> float:
    return float(torch.special.ndtr(torch.tensor(z, dtype=F64)))


@pytest.fixture(scope="module")
def dist() -> T.TsiprasDistribution:
    return T.TsiprasDistribution(p=0.85, dim=25)


def test_samples_follow_the_definition(dist):
    x, y = dist.sample(N, generator=gen(1))
    agree = float((x[:, 0] == y).to(F64).mean())
    assert abs(agree - dist.p) < 4 * math.sqrt(dist.p * (1 - dist.p) / N)
    assert set(x[:, 0].unique().tolist()) == {-1.0, 1.0}
    weak = y[:, None] * x[:, 1:]
    assert dist.eta == pytest.approx(2 / math.sqrt(25))
    assert abs(float(weak.mean()) - dist.eta) < 4 / math.sqrt(weak.numel())
    assert abs(float(weak.var()) - 1) < 4 * math.sqrt(2 / weak.numel())
    assert abs(float(y.mean())) < 4 / math.sqrt(N)


def test_averaging_classifier_known_values(dist):
    w = T.averaging_classifier(dist)
    assert T.accuracy(w, dist) == pytest.approx(phi(2.0), abs=1e-12)  # Φ(η√d) with η = 2/√d
    assert T.accuracy(w, dist, eps=dist.eta) == pytest.approx(0.5, abs=1e-12)
    assert T.accuracy(w, dist, eps=2 * dist.eta) == pytest.approx(phi(-2.0), abs=1e-12)


def test_robust_feature_classifier_is_p_accurate_until_eps_one(dist):
    w = T.robust_feature_classifier(dist)
    for eps in (0.0, 0.5, 0.99):
        assert T.accuracy(w, dist, eps=eps) == pytest.approx(dist.p)
    assert T.accuracy(w, dist, eps=1.0) == 0.0  # x₁ pushed to 0: a tie, counted as an error
    simulated, _ = T.simulate_accuracy(w, dist, eps=1.0, n=1000, generator=gen(2))
    assert simulated == 0.0


CLASSIFIERS = {
    "averaging": T.averaging_classifier,
    "robust_feature": T.robust_feature_classifier,
    "bayes": T.bayes_classifier,
    "mixed": lambda d: T.mixed_classifier(d, 1.2),
}


@pytest.mark.parametrize("name", list(CLASSIFIERS))
@pytest.mark.parametrize("eps_over_eta", [0.0, 0.5, 1.0, 2.0])
def test_closed_form_accuracy_matches_linf_attack(dist, name, eps_over_eta):
    w = CLASSIFIERS[name](dist)
    eps = eps_over_eta * dist.eta
    closed = T.accuracy(w, dist, eps=eps)
    seed = 100 + 10 * list(CLASSIFIERS).index(name) + int(4 * eps_over_eta)
    simulated, se = T.simulate_accuracy(w, dist, eps=eps, n=N, generator=gen(seed))
    assert abs(simulated - closed) < 4 * max(se, 1 / N)


def test_closed_form_with_bias_matches_simulation(dist):
    w = T.mixed_classifier(dist, 1.3)
    closed = T.accuracy(w, dist, eps=0.5 * dist.eta, bias=0.3)
    simulated, se = T.simulate_accuracy(w, dist, eps=0.5 * dist.eta, bias=0.3, n=N, generator=gen(3))
    assert abs(simulated - closed) < 4 * se
    assert closed < T.accuracy(w, dist, eps=0.5 * dist.eta)  # a bias only hurts on balanced classes


def test_linf_attack_moves_every_coordinate_by_eps_against_the_label(dist):
    x, y = dist.sample(50, generator=gen(4))
    w = T.mixed_classifier(dist, 0.7)
    moved = T.linf_attack(w, x, y, eps=0.1)
    assert torch.allclose(moved - x, -0.1 * y[:, None] * torch.sign(w).expand_as(x))


@settings(max_examples=60, deadline=None)
@given(st.floats(0.55, 0.99), st.floats(0.0, math.pi / 2), st.integers(1, 400))
def test_tsipras_theorem_2_1_bound_holds_for_every_linear_classifier(p, theta, dim):
    dist = T.TsiprasDistribution(p=p, dim=dim)
    w = T.mixed_classifier(dist, theta)
    standard = T.accuracy(w, dist)
    robust = T.accuracy(w, dist, eps=2 * dist.eta)
    assert robust <= T.robust_accuracy_bound(p=p, standard_accuracy=standard) + 1e-12


def test_bound_holds_for_simulated_bayes_classifier(dist):
    w = T.bayes_classifier(dist)
    standard, se_s = T.simulate_accuracy(w, dist, n=N, generator=gen(5))
    robust, se_r = T.simulate_accuracy(w, dist, eps=2 * dist.eta, n=N, generator=gen(6))
    bound = T.robust_accuracy_bound(p=dist.p, standard_accuracy=standard)
    assert robust <= bound + 4 * (se_r + se_s * dist.p / (1 - dist.p))


@pytest.mark.parametrize("p", [0.6, 0.9])
def test_the_most_robust_classifier_trades_standard_accuracy_for_robustness(p):
    dist = T.TsiprasDistribution(p=p, dim=100)
    w0, _ = T.most_robust_classifier(dist, eps=0.0)
    assert T.accuracy(w0, dist) == pytest.approx(T.accuracy(T.bayes_classifier(dist), dist), abs=1e-5)
    w, robust = T.most_robust_classifier(dist, eps=2 * dist.eta)
    standard = T.accuracy(w, dist)
    assert standard == pytest.approx(p, abs=1e-6)  # it must rely on x₁ alone ...
    assert robust == pytest.approx(p, abs=2e-3)  # ... which keeps accuracy p under attack
    assert robust <= T.robust_accuracy_bound(p=p, standard_accuracy=standard) + 1e-9
    assert T.accuracy(T.averaging_classifier(dist), dist) > standard  # Φ(2) ≈ 0.977 > p


def test_bayes_classifier_is_best_at_eps_zero(dist):
    bayes = T.accuracy(T.bayes_classifier(dist), dist)
    for theta in torch.linspace(0, math.pi / 2, 41).tolist():
        assert T.accuracy(T.mixed_classifier(dist, theta), dist) <= bayes + 1e-12


def test_impossible_settings_raise_config_errors(dist):
    for p in (0.5, 0.3, 1.2, float("nan")):
        with pytest.raises(ConfigError, match="p .*must lie in"):
            T.TsiprasDistribution(p=p, dim=10)
    with pytest.raises(ConfigError, match="dim"):
        T.TsiprasDistribution(p=0.9, dim=0)
    with pytest.raises(ConfigError, match="eta"):
        T.TsiprasDistribution(p=0.9, dim=4, eta=-1.0)
    with pytest.raises(ConfigError, match="eps"):
        T.accuracy(T.averaging_classifier(dist), dist, eps=-0.1)
    with pytest.raises(ConfigError, match="weights"):
        T.accuracy(torch.ones(3), dist)
    with pytest.raises(ConfigError, match="standard_accuracy"):
        T.robust_accuracy_bound(p=0.9, standard_accuracy=1.5)
