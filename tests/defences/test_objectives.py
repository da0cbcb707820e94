"""Known answers for the training objectives: each reduces to a simpler one where theory says so,
and no inner maximisation leaves gradients in the parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advfeatures.attacks.pgd import PGD
from advfeatures.defences import OBJECTIVES, DefenceConfig, build_objective
from advfeatures.defences.fast import FastAdversarialTraining
from advfeatures.errors import ConfigError
from advfeatures.train import AdversaryConfig, TrainConfig, train_model

from .conftest import tiny_cnn, tiny_mlp


def _train(objective: str, data, *, adversary=True, epochs=2, seed=0, model_seed=0, model=None, **defence):
    model = model if model is not None else tiny_mlp(model_seed)
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=0.05, crop_padding=0, flip=False, milestones=(), seed=seed,
                      adversary=AdversaryConfig(norm="Linf", eps=0.1, steps=3, step_size=0.04, random_start=True) if adversary else None,
                      objective=objective, defence=DefenceConfig(**defence))
    history = train_model(model, data, cfg)
    return model, history


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_trades_with_beta_zero_is_standard_training(digits_small):
    train, _ = digits_small
    standard, _ = _train("standard", train, adversary=False)
    trades, _ = _train("trades", train, beta=0.0)  # the KL attack still runs; its term weighs 0
    for a, b in zip(_params(standard), _params(trades)):
        assert torch.equal(a, b)
    different, _ = _train("trades", train, beta=6.0)
    assert not all(torch.equal(a, b) for a, b in zip(_params(standard), _params(different)))


def test_logit_pairing_with_lambda_zero_is_pgd_training(digits_small):
    train, _ = digits_small
    pgd, _ = _train("pgd", train)
    alp, _ = _train("logit_pairing", train, pairing_weight=0.0)
    for a, b in zip(_params(pgd), _params(alp)):
        assert torch.equal(a, b)
    paired, _ = _train("logit_pairing", train, pairing_weight=1.0)
    assert not all(torch.equal(a, b) for a, b in zip(_params(pgd), _params(paired)))


def test_standard_with_an_adversary_is_pgd_training(digits_small):
    """Configs written before objectives existed (objective left at "standard", adversary set) keep
    training with PGD."""
    train, _ = digits_small
    legacy, _ = _train("standard", train)
    pgd, _ = _train("pgd", train)
    for a, b in zip(_params(legacy), _params(pgd)):
        assert torch.equal(a, b)


def test_logit_pairing_adds_the_squared_logit_distance():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(5, 1, 4, 4, generator=g) * 0.5 + 0.25, torch.tensor([0, 1, 2, 0, 1])
    adv = PGD(norm="Linf", eps=0.05, steps=2, seed=0)
    obj = build_objective("logit_pairing", DefenceConfig(pairing_weight=0.7), adv)
    per_example, logits = obj.losses(model, model, x, y, 0.0)
    x_adv = PGD(norm="Linf", eps=0.05, steps=2, seed=0).run_unchecked(model, x, y)  # same seed: same start
    with torch.no_grad():
        za, zc = model(x_adv), model(x)
        expected = nn.functional.cross_entropy(za, y, reduction="none") + 0.7 * (za - zc).pow(2).sum(1)
    assert torch.allclose(per_example.detach(), expected, atol=1e-5)
    assert torch.allclose(logits.detach(), za, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in OBJECTIVES])
def test_inner_maximisation_leaves_no_parameter_gradients(name, digits_small):
    train, _ = digits_small
    model = tiny_cnn()
    adv = AdversaryConfig(norm="Linf", eps=0.1, steps=2, step_size=0.05, random_start=True).build(1)
    obj = build_objective(name, DefenceConfig(ibp_warmup=0.0, ibp_ramp=0.5), adv)
    obj.begin(model, train)
    model.train()
    x, y = train.images[:16], train.labels[:16]
    if name == "free":  # free AT's single backward is the training step itself: check its bookkeeping instead
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        obj.step(model, model, x, y, opt, scale=None, progress=0.0)
        assert obj._delta.abs().max() <= 0.1 + 1e-6 and obj._delta.abs().max() > 0
        return
    per_example, logits = obj.losses(model, model, x, y, 0.3)
    assert per_example.shape == (16,) and logits.shape == (16, 10)
    assert all(p.grad is None for p in model.parameters())
    assert model.training  # the attack restored train mode


def test_fast_at_is_one_fgsm_step_of_1_25_eps_from_a_uniform_start():
    """Binary affine model: the CE gradient's sign is sign(w_other − w_y) everywhere, so the fast AT
    example is the projection of start + 1.25·ε·that sign."""
    g = torch.Generator().manual_seed(3)
    lin = nn.Linear(16, 2)
    model = nn.Sequential(nn.Flatten(), lin)
    x = 0.3 + 0.4 * torch.rand(8, 1, 4, 4, generator=g)
    y = torch.randint(0, 2, (8,), generator=g)
    eps = 0.1
    adv = PGD(norm="Linf", eps=eps, steps=1, seed=0)
    obj = FastAdversarialTraining(DefenceConfig(), adv, seed=5)
    x_adv = obj.adversarial(model, x, y)
    start = adv.threat.random_start(x, torch.Generator().manual_seed(5))
    w = lin.weight.detach()
    sign = (w[1 - y] - w[y]).sign().view_as(x)
    expected = (x + (start + 1.25 * eps * sign - x).clamp(-eps, eps)).clamp(0, 1)
    assert torch.allclose(x_adv, expected, atol=1e-6)


def test_fast_at_rolls_back_and_stops_when_pgd_accuracy_collapses(digits_small, monkeypatch):
    train, _ = digits_small
    measured = iter([0.6, 0.7, 0.1, 0.9])
    monkeypatch.setattr(FastAdversarialTraining, "pgd_accuracy", lambda self, model: next(measured))
    rolled, history = _train("fast", train, epochs=4)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["stopped"] and history[-1]["restored_epoch"] == 2
    assert [h["pgd_check_accuracy"] for h in history] == [0.6, 0.7, 0.1]
    monkeypatch.setattr(FastAdversarialTraining, "pgd_accuracy", lambda self, model: 0.5)
    two, _ = _train("fast", train, epochs=2)  # milestones=() : the same steps as the first two epochs
    for a, b in zip(_params(two), _params(rolled)):
        assert torch.equal(a, b)


def test_fast_at_stop_survives_resume(digits_small, monkeypatch, tmp_path):
    train, _ = digits_small
    measured = iter([0.6, 0.1])
    monkeypatch.setattr(FastAdversarialTraining, "pgd_accuracy", lambda self, model: next(measured))
    model = tiny_mlp()
    cfg = TrainConfig(epochs=4, batch_size=64, lr=0.05, crop_padding=0, flip=False, milestones=(), objective="fast",
                      adversary=AdversaryConfig(norm="Linf", eps=0.1, steps=1))
    train_model(model, train, cfg, checkpoint=tmp_path / "ckpt.pt")
    again = train_model(tiny_mlp(), train, cfg, checkpoint=tmp_path / "ckpt.pt")  # no further epochs
    assert len(again) == 2 and again[-1]["stopped"]


def test_free_with_one_replay_starts_as_standard_training(digits_small):
    """δ starts at 0, so the first batch of free AT (m = 1) is an ordinary training step."""
    train, _ = digits_small
    x, y = train.images[:32], train.labels[:32]
    a, b = tiny_mlp(), tiny_mlp()
    adv = PGD(norm="Linf", eps=0.1, steps=1)
    for model, name in ((a, "standard"), (b, "free")):
        obj = build_objective(name, DefenceConfig(replays=1), adv if name == "free" else None)
        obj.step(model, model, x, y, torch.optim.SGD(model.parameters(), lr=0.1), scale=None, progress=0.0)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_free_takes_m_optimiser_steps_per_batch(digits_small):
    train, _ = digits_small
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    steps = []
    opt.register_step_post_hook(lambda *a: steps.append(1))
    obj = build_objective("free", DefenceConfig(replays=3), PGD(norm="Linf", eps=0.1, steps=1))
    obj.step(model, model, train.images[:16], train.labels[:16], opt, scale=None, progress=0.0)
    assert len(steps) == 3


def test_gaussian_augmentation_trains_on_noisy_inputs(digits_small):
    train, _ = digits_small
    _, history = _train("gaussian", train, adversary=False, sigma=0.25)
    assert len(history) == 2 and history[-1]["loss"] > 0


@pytest.mark.parametrize("bad, message", [
    ({"objective": "madry"}, "unknown objective 'madry'"),
    ({"objective": "trades"}, "needs an adversary"),
    ({"objective": "gaussian", "defence": DefenceConfig(sigma=0.0)}, "defence.sigma"),
    ({"objective": "standard", "defence": DefenceConfig(ibp_warmup=0.6, ibp_ramp=0.5)}, "ibp_warmup"),
])
def test_bad_objective_settings_are_refused_with_a_clear_error(bad, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**bad).validate()


def test_ibp_refuses_non_linf_threat_models(digits_small):
    train, _ = digits_small
    cfg = TrainConfig(epochs=1, objective="ibp", adversary=AdversaryConfig(norm="L2", eps=0.5))
    with pytest.raises(ConfigError, match="Linf"):
        train_model(tiny_mlp(), train, cfg)
