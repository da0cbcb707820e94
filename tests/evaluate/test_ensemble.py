"""The worst-case ensemble, robustness curves and sanity checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advfeatures.attacks import FGSM, PGD, Attack, GaussianNoise, Quantize
from advfeatures.errors import ConfigError, DataError
from advfeatures.evaluate import Member, robustness_curve, sanity_checks, standard_members, worst_case_evaluation


def _linear_data(model, n: int, eps_l1_scale: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand(n, 1, 4, 4, generator=g)  # the box never binds for ε ≤ 0.3
    z = model(x)[:, 1]
    y = (z > 0).long()
    y[:5] = 1 - y[:5]  # five clean mistakes
    keep = (z.abs() - eps_l1_scale).abs() > 1e-3  # no near-ties with the boundary
    return x[keep], y[keep], z[keep]


@pytest.mark.parametrize(("norm", "eps"), [("Linf", 0.02), ("L2", 0.1)])
def test_linear_model_known_robust_accuracy(linear_binary, norm, eps):
    w = linear_binary.w
    radius = eps * (w.abs().sum() if norm == "Linf" else w.norm())  # the margin the ball can erase
    x, y, z = _linear_data(linear_binary, 200, float(radius))
    expected = float((((z > 0).long() == y) & (z.abs() > radius)).float().mean())
    assert 0.2 < expected < 0.9
    fgsm = worst_case_evaluation(linear_binary, x, y, norm=norm, eps=eps, members=[("fgsm", FGSM(norm=norm, eps=eps))])
    assert fgsm["robust_accuracy"] == pytest.approx(expected)  # FGSM is optimal on a linear model
    std = worst_case_evaluation(linear_binary, x, y, norm=norm, eps=eps, steps=10, square_queries=50)
    assert [m["name"] for m in std["members"]] == ["apgd-ce", "square"]  # APGD-T needs more than two classes
    assert std["robust_accuracy"] == pytest.approx(expected)


def test_ensemble_is_never_weaker_than_its_strongest_member(mlp, batch):
    x, y = batch
    eps = 0.1
    members = [Member("fgsm", FGSM(eps=eps)),
               Member("pgd-ce", PGD(eps=eps, steps=10, random_start=False)),
               Member("pgd-margin", PGD(eps=eps, steps=10, loss="margin", random_start=False))]
    report = worst_case_evaluation(mlp, x, y, norm="Linf", eps=eps, members=members, batch_size=50)
    alone = {m.name: worst_case_evaluation(mlp, x, y, norm="Linf", eps=eps, members=[m])["robust_accuracy"] for m in members}
    assert report["robust_accuracy"] <= min(alone.values())
    assert report["robust_accuracy"] < max(alone.values())  # the members are not all the same
    after = [m["robust_accuracy"] for m in report["members"]]
    assert after == sorted(after, reverse=True) and after[-1] == report["robust_accuracy"]
    assert after[0] == pytest.approx(alone["fgsm"])
    attacked = [m["attacked"] for m in report["members"]]
    assert attacked[1] == round(after[0] * len(y)) and attacked[2] == round(after[1] * len(y))  # only robust points
    # every point counted as broken has a valid adversarial example on record
    broken = ~report["robust"] & (mlp(x).argmax(1) == y)
    x_adv = report["x_adv"]
    assert (mlp(x_adv[broken]).argmax(1) != y[broken]).all()
    assert ((x_adv - x).flatten(1).abs().amax(1) <= eps + 1e-6).all()


def test_standard_ensemble_apgd_ce_apgd_t_square(mlp, batch):
    x, y = batch
    x, y = x[:64], y[:64]
    report = worst_case_evaluation(mlp, x, y, norm="Linf", eps=0.1, steps=20, n_target_classes=3, square_queries=200)
    assert [m["name"] for m in report["members"]] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert report["members"][3]["mean_queries"] <= 200
    first = standard_members(mlp, x, norm="Linf", eps=0.1, steps=20, n_target_classes=3, square_queries=200)[0]
    alone = worst_case_evaluation(mlp, x, y, norm="Linf", eps=0.1, members=[first])
    assert report["robust_accuracy"] <= alone["robust_accuracy"]
    assert report["clean_accuracy"] > report["robust_accuracy"] > 0.0


class _Cheat(Attack):
    """Returns a perturbation far outside any small ball."""

    name = "cheat"

    def perturb(self, model, x, y, target):
        return 1.0 - x


def test_perturbations_outside_the_ball_are_not_counted(mlp, batch):
    x, y = batch
    report = worst_case_evaluation(mlp, x, y, norm="Linf", eps=0.01, members=[("cheat", _Cheat())])
    assert report["robust_accuracy"] == pytest.approx(report["clean_accuracy"])
    assert report["members"][0]["invalid"] > 0


def test_robustness_curve_falls_with_eps(mlp, batch):
    x, y = batch
    curve = robustness_curve(mlp, x, y, norm="Linf", eps_list=[0.02, 0.05, 0.1, 0.2])
    accs = curve["robust_accuracy"]
    assert len(accs) == 4 and accs[0] <= curve["clean_accuracy"]
    assert all(b <= a + 1e-9 for a, b in zip(accs, accs[1:])) and accs[-1] < accs[0]
    fgsm = robustness_curve(mlp, x, y, norm="Linf", eps_list=[0.1],
                            attack_factory=lambda *, norm, eps: FGSM(norm=norm, eps=eps))
    assert fgsm["robust_accuracy"][0] >= accs[2]  # FGSM is no stronger than PGD here


def test_sanity_checks_silent_on_plain_model(mlp, batch):
    x, y = batch
    measured: dict = {}
    assert sanity_checks(mlp, x, y, norm="Linf", eps=0.15, measurements=measured) == []
    assert measured["unbounded_success"] == 1.0 and measured["zero_gradient_points"] == 0


def test_sanity_checks_fire_on_gradient_masked_model(mlp, batch):
    x, y = batch
    masked = nn.Sequential(Quantize(4), mlp)
    found = {f["check"] for f in sanity_checks(masked, x, y, norm="Linf", eps=0.15)}
    assert {"zero_gradients", "black_box_beats_white_box", "unbounded_attack_fails"} <= found


class _Constant(nn.Module):
    """Ignores its input: no attack can change its answer."""

    num_classes = 10

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return (x.flatten(1)[:, :10] * 0 + torch.arange(10.0)) * self.scale


def test_sanity_checks_fire_when_accuracy_does_not_fall(batch):
    x, _ = batch
    y = torch.full((32,), 9)  # the constant model is always right on these labels
    measured: dict = {}
    found = {f["check"] for f in sanity_checks(_Constant(), x[:32], y, norm="L2", eps=1.0, steps=5, square_queries=20,
                                               measurements=measured)}
    assert {"accuracy_not_falling_with_eps", "unbounded_attack_fails", "zero_gradients"} <= found
    assert measured["curve"]["robust_accuracy"] == [1.0] * len(measured["curve"]["eps"])
    assert measured["curve"]["eps"][-1] == pytest.approx(8.0)  # √64: the ball holding the whole box


def test_sanity_checks_fire_on_randomised_and_softmax_models(mlp, batch):
    x, y = batch
    noisy = nn.Sequential(GaussianNoise(0.1, seed=0), mlp)
    found = {f["check"] for f in sanity_checks(noisy, x[:32], y[:32], norm="L2", eps=1.0, steps=10, square_queries=50)}
    assert "randomized_model" in found
    probs = nn.Sequential(mlp, nn.Softmax(dim=1))
    found = {f["check"] for f in sanity_checks(probs, x[:32], y[:32], norm="L2", eps=1.0, steps=10, square_queries=50)}
    assert "softmax_outputs" in found


def test_bad_arguments_give_one_clear_error(mlp, batch):
    x, y = batch
    cases = [
        (ConfigError, lambda: worst_case_evaluation(mlp, x, y, norm="Linf", eps=0.1, members=[])),
        (ConfigError, lambda: worst_case_evaluation(mlp, x, y, norm="Linf", eps=0.1, members=[("pgd", "not an attack")])),
        (ConfigError, lambda: worst_case_evaluation(mlp, x, y, norm="Linf", eps=0.1,
                                                    members=[("a", FGSM(eps=0.1)), ("a", FGSM(eps=0.1))])),
        (ConfigError, lambda: worst_case_evaluation(mlp, x, y, norm="Linf", eps=-1.0, members=[("f", FGSM(eps=0.1))])),
        (ConfigError, lambda: worst_case_evaluation(mlp, x, y, norm="L3", eps=0.1)),
        (DataError, lambda: worst_case_evaluation(mlp, x * 2, y, norm="Linf", eps=0.1)),
        (DataError, lambda: worst_case_evaluation(mlp, x, y[:3], norm="Linf", eps=0.1)),
        (DataError, lambda: worst_case_evaluation(mlp, x[:0], y[:0], norm="Linf", eps=0.1)),
        (ConfigError, lambda: robustness_curve(mlp, x, y, norm="Linf", eps_list=[])),
        (ConfigError, lambda: sanity_checks(mlp, x, y, norm="Linf", eps=0.1, tolerance=2.0)),
    ]
    for kind, call in cases:
        with pytest.raises(kind) as info:
            call()
        assert "\n" not in str(info.value)


def test_rand_version_turns_dropout_on_and_says_so_only_when_told_not_to(mlp, batch, caplog):
    """``rand`` evaluates a Dropout model with its dropout on (tests/evaluate/test_stochastic.py); only
    ``stochastic=False`` leaves it off, and an info line says so (no warning: the user asked for it)."""
    x, y = batch
    x, y = x[:4], y[:4]
    dropped = nn.Sequential(nn.Dropout(0.1), mlp)
    with caplog.at_level("INFO", logger="advfeatures.evaluate.ensemble"):
        report = worst_case_evaluation(dropped, x, y, norm="L2", eps=0.1, version="rand", steps=1, eot_iter=1)
    assert report["stochastic"] is True and "Dropout" not in caplog.text
    with caplog.at_level("INFO", logger="advfeatures.evaluate.ensemble"):
        report = worst_case_evaluation(dropped, x, y, norm="L2", eps=0.1, version="rand", steps=1, eot_iter=1,
                                       stochastic=False)
    assert report["stochastic"] is False and "Dropout/RReLU layers are off" in caplog.text
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    caplog.clear()
    with caplog.at_level("INFO", logger="advfeatures.evaluate.ensemble"):  # standard: deterministic by definition
        report = worst_case_evaluation(dropped, x, y, norm="L2", eps=0.1, steps=1, square_queries=2)
    assert report["stochastic"] is False and "Dropout" not in caplog.text
