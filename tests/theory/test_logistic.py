"""Known-answer tests for Goodfellow et al. 2015's closed-form adversarial logistic regression."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advfeatures.errors import ConfigError
from advfeatures.theory import logistic as L
from advfeatures.theory.gaussian import TwoGaussians

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def data() -> TwoGaussians:
    mean = torch.tensor([1.0, 0.6] + [0.15] * 8, dtype=F64)
    return TwoGaussians(mean, torch.eye(10, dtype=F64))


@pytest.fixture(scope="module")
def trained(data):
    x, y = data.sample(2_000, generator=gen(1))
    kwargs = dict(eps=0.25, alpha=0.5, steps=300)
    return (
        L.train_logistic(x, y, eps=0.0, alpha=1.0, steps=300),
        L.train_logistic(x, y, adversary="closed_form", **kwargs),
        L.train_logistic(x, y, adversary="fgsm", **kwargs),
    )


def test_closed_form_equals_the_loss_fgsm_and_pgd_reach(data):
    w = torch.randn(10, generator=gen(2), dtype=F64)
    w[3] = 0.0  # a zero weight: sign(0) = 0 in FGSM and no ‖w‖₁ contribution
    b = 0.3
    x, y = data.sample(500, generator=gen(3))
    for eps in (0.0, 0.1, 0.4):
        formula = L.adversarial_loss(w, b, x, y, eps=eps)
        one_step = L.logistic_loss(w, b, L.fgsm(w, b, x, y, eps=eps), y)
        multi_step = L.logistic_loss(w, b, L.pgd(w, b, x, y, eps=eps, steps=10, generator=gen(4)), y)
        assert torch.allclose(one_step, formula, rtol=1e-12, atol=1e-12)
        assert torch.allclose(multi_step, formula, rtol=1e-12, atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.01, 1.0))
def test_no_perturbation_in_the_ball_beats_the_closed_form(seed, eps):
    g = gen(seed)
    w = torch.randn(6, generator=g, dtype=F64)
    x = torch.randn(64, 6, generator=g, dtype=F64)
    y = torch.randint(0, 2, (64,), generator=g).to(F64) * 2 - 1
    delta = (torch.rand(64, 6, generator=g, dtype=F64) * 2 - 1) * eps
    assert (L.logistic_loss(w, -0.2, x + delta, y) <= L.adversarial_loss(w, -0.2, x, y, eps=eps) + 1e-12).all()


def test_training_on_the_closed_form_and_on_fgsm_examples_follow_the_same_path(trained):
    _, closed, fgsm = trained
    assert float((closed.w - fgsm.w).abs().max()) < 1e-10
    assert abs(float(closed.b - fgsm.b)) < 1e-10
    assert max(abs(a - b) for a, b in zip(closed.objective, fgsm.objective)) < 1e-10


def test_adversarial_training_shrinks_the_weak_features(trained):
    standard, adversarial, _ = trained
    assert float(adversarial.w[2:].abs().sum()) < 0.5 * float(standard.w[2:].abs().sum())
    assert float(adversarial.w[0]) > 0.5 * float(standard.w[0])


def test_alpha_one_or_eps_zero_is_standard_training(data):
    x, y = data.sample(300, generator=gen(5))
    standard = L.train_logistic(x, y, eps=0.0, alpha=1.0, steps=30)
    for kwargs in (dict(eps=0.3, alpha=1.0), dict(eps=0.0, alpha=0.5)):
        other = L.train_logistic(x, y, steps=30, **kwargs)
        assert torch.allclose(other.w, standard.w, atol=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.25])
@pytest.mark.parametrize("model", [0, 1])
def test_robust_accuracy_and_loss_match_pgd_on_fresh_samples(data, trained, eps, model):
    fit = trained[model]
    b = float(fit.b)
    sim = L.simulate(fit.w, b, data, eps=eps, n=40_000, generator=gen(10 + model + int(100 * eps)))
    assert abs(sim["accuracy"] - L.robust_accuracy(fit.w, b, data, eps=eps)) < 4 * sim["accuracy_se"]
    assert abs(sim["loss"] - L.expected_adversarial_loss(fit.w, b, data, eps=eps)) < 4 * sim["loss_se"]


def test_robust_accuracy_known_answer(data):
    w = data.mean
    for eps in (0.0, 0.2):
        expected = float(torch.special.ndtr((w @ w - eps * w.abs().sum()) / w.norm()))
        assert L.robust_accuracy(w, 0.0, data, eps=eps) == pytest.approx(expected, abs=1e-12)


def test_expected_adversarial_loss_quadrature_is_converged_and_exact_for_w_zero(data):
    assert L.expected_adversarial_loss(torch.zeros(10, dtype=F64), 0.0, data, eps=0.3) == pytest.approx(math.log(2), abs=1e-12)
    w = torch.linspace(-1, 2, 10, dtype=F64)
    default = L.expected_adversarial_loss(w, 0.4, data, eps=0.2)
    finer = L.expected_adversarial_loss(w, 0.4, data, eps=0.2, nodes=301)
    assert default == pytest.approx(finer, abs=1e-10)


def test_impossible_settings_raise_config_errors(data):
    x, y = data.sample(10, generator=gen(6))
    with pytest.raises(ConfigError, match="eps"):
        L.adversarial_loss(torch.ones(10), 0.0, x, y, eps=-1.0)
    with pytest.raises(ConfigError, match="alpha"):
        L.train_logistic(x, y, alpha=1.5)
    with pytest.raises(ConfigError, match="adversary"):
        L.train_logistic(x, y, eps=0.1, adversary="pgd")
    with pytest.raises(ConfigError, match="steps"):
        L.train_logistic(x, y, steps=0)
    with pytest.raises(ConfigError, match="lr"):
        L.train_logistic(x, y, lr=0.0)
    with pytest.raises(ConfigError, match="10 entries"):
        L.robust_accuracy(torch.ones(3), 0.0, data)
