"""Universal perturbations: one δ inside the ball that fools far more than random noise of the same norm."""

from __future__ import annotations

import pytest
import torch

from advfeatures.attacks import Universal, fooling_rate, universal_perturbation
from advfeatures.errors import ConfigError, DataError


def _random_like(delta: torch.Tensor, norm: str, eps: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if norm == "Linf":
        return (torch.randint(0, 2, delta.shape, generator=g).float() * 2 - 1) * eps  # a corner of the ball
    r = torch.randn(delta.shape, generator=g)
    return r / r.norm() * eps


@pytest.mark.parametrize(("norm", "eps"), [("Linf", 0.2), ("L2", 1.5)])
def test_universal_stays_in_ball_and_beats_random_noise(mlp, digits, norm, eps):
    train, test = digits
    up = universal_perturbation(mlp, train, norm=norm, eps=eps, epochs=3, seed=0)
    assert up.delta.shape == (1, 8, 8)
    size = up.delta.abs().max() if norm == "Linf" else up.delta.norm()
    assert size <= eps * (1 + 1e-5)
    held_out = fooling_rate(mlp, test, up.delta)["fooling_rate"]
    randoms = [fooling_rate(mlp, test, _random_like(up.delta, norm, eps, s))["fooling_rate"] for s in range(3)]
    assert held_out > max(randoms) + 0.2, (held_out, randoms)
    assert up.fooling_rate > max(randoms) + 0.2
    assert len(up.history) == 3 and up.history[-1]["loss"] > up.history[0]["loss"] * 0.9


def test_fooling_rate_known_answers(mlp, digits):
    test = digits[1]
    rates = fooling_rate(mlp, test, torch.zeros(1, 8, 8))
    assert rates["fooling_rate"] == 0.0
    assert rates["error_rate"] == pytest.approx(rates["clean_error_rate"])
    # δ = 1 turns every image white: the model then predicts one class for all of them
    white = fooling_rate(mlp, test, torch.ones(1, 8, 8))
    with torch.no_grad():
        cls = mlp(torch.ones(1, 1, 8, 8)).argmax(1)
        pred = mlp(test.images).argmax(1)
    assert white["fooling_rate"] == pytest.approx(float((pred != cls).float().mean()))


def test_accepts_tensor_pairs_and_loaders(mlp, digits):
    train = digits[0]
    pair = (train.images[:256], train.labels[:256])
    loader = [(train.images[a : a + 64], train.labels[a : a + 64]) for a in range(0, 256, 64)]
    a = universal_perturbation(mlp, pair, eps=0.1, epochs=2, batch_size=64)
    b = universal_perturbation(mlp, loader, eps=0.1, epochs=2, batch_size=64)
    assert a.delta.abs().max() <= 0.1 + 1e-6 and b.delta.abs().max() <= 0.1 + 1e-6
    targeted = universal_perturbation(mlp, pair, eps=0.3, epochs=3, target_class=3)
    with torch.no_grad():
        hits = (mlp((pair[0] + targeted.delta).clamp(0, 1)).argmax(1) == 3).float().mean()
        base = (mlp(pair[0]).argmax(1) == 3).float().mean()
    assert hits > base + 0.2


def test_universal_attack_adds_one_delta_to_every_image(mlp, batch):
    x, y = batch
    res = Universal(eps=0.2)(mlp, x, y, return_result=True)
    delta = res.extra["delta"]
    assert torch.allclose(res.x_adv, (x + delta).clamp(0, 1))
    assert res.norms["Linf"].max() <= 0.2 + 1e-6
    assert res.success.float().mean() > 0.3


def test_bad_arguments(mlp, digits):
    train = digits[0]
    with pytest.raises(ConfigError):
        universal_perturbation(mlp, train, eps=0.0)
    with pytest.raises(ConfigError):
        universal_perturbation(mlp, train, eps=0.1, epochs=0)
    with pytest.raises(ConfigError):
        universal_perturbation(mlp, train, eps=0.1, norm="L7")
    with pytest.raises(ConfigError):
        universal_perturbation(mlp, train, eps=0.1, target_class=-1)
    with pytest.raises(DataError):
        universal_perturbation(mlp, (train.images[:10], train.labels[:9]), eps=0.1)
    with pytest.raises(DataError):
        universal_perturbation(mlp, [], eps=0.1)
    with pytest.raises(DataError):
        universal_perturbation(mlp, 42, eps=0.1)
    with pytest.raises(ConfigError):
        Universal(eps=0.1)(mlp, train.images[:4], train.labels[:4], target="random")
