"""Test-time randomness: attacks and the ``rand`` ensemble on a model whose randomness is Dropout.

The model is the digits MLP with a BatchNorm layer and Dropout(p=0.5) before its head: with the
option, Dropout draws (the attack sees different logits on every call and EOT averages them) while
BatchNorm stays on its running statistics (its buffers unchanged), every module's own mode comes
back afterwards, a fixed seed gives the same run, and the caller's RNG is left as it was.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advfeatures.attacks import APGD, FGSM, PGD, model_mode
from advfeatures.attacks.stochastic import evaluation_draws
from advfeatures.errors import ConfigError
from advfeatures.evaluate import predict, robust_mask, worst_case_evaluation


@pytest.fixture
def dropout_model(mlp):
    """The digits MLP with BatchNorm1d (identity statistics: mean 0, variance 1) and Dropout(0.5)
    before its head; the MLP's own modules are shared, never changed."""
    bn = nn.BatchNorm1d(64)
    return nn.Sequential(mlp.features, bn, nn.Dropout(0.5), mlp.head).eval()


def _buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def _same_buffers(model, before):
    return all(torch.equal(v, before[k]) for k, v in _buffers(model).items())


def test_model_mode_turns_on_dropout_only_and_restores_each_modules_mode(dropout_model, batch):
    x = batch[0][:8]
    model = dropout_model
    model.train()
    model[1].eval()  # the user's own mix: BatchNorm in eval, the rest in train
    modes = [m.training for m in model.modules()]
    before, rng = _buffers(model), torch.get_rng_state()
    with torch.no_grad():
        with model_mode(model, stochastic=True, seed=3):
            assert model[2].training and not model[1].training and not model[0].training
            a, b = model(x), model(x)
        with model_mode(model, stochastic=True, seed=3):
            again = model(x)
        with model_mode(model):  # the default: plain eval mode
            assert not any(m.training for m in model.modules())
            c, d = model(x), model(x)
    assert not torch.equal(a, b)  # Dropout draws on every call
    assert torch.equal(a, again)  # the same seed, the same draws
    assert torch.equal(c, d)
    assert [m.training for m in model.modules()] == modes
    assert _same_buffers(model, before)
    assert torch.equal(rng, torch.get_rng_state())  # the caller's RNG is where it was


class _Recorder(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x):
        out = self.model(x)
        self.seen.append((x.detach().clone(), out.detach().clone()))
        return out


@pytest.mark.parametrize("stochastic", [False, True])
def test_eot_sees_a_new_draw_on_every_call_only_with_the_option(dropout_model, batch, stochastic):
    x, y = batch[0][:6], batch[1][:6]
    model = _Recorder(dropout_model)
    APGD(norm="L2", eps=0.5, steps=2, eot_iter=4, early_stop=False, stochastic=stochastic)(model, x, y)
    first = [out for xi, out in model.seen if xi.shape == x.shape][:4]  # the 4 EOT calls of the first step
    distinct = {tuple(out.flatten().tolist()) for out in first}
    assert len(distinct) == (4 if stochastic else 1)


def test_attack_leaves_batchnorm_buffers_modes_and_rng_alone_and_is_reproducible(dropout_model, batch):
    x, y = batch[0][:16], batch[1][:16]
    model = dropout_model
    model.train()
    model[2].eval()  # the user's own modes: BatchNorm in train (would update its statistics), Dropout in eval
    modes = [m.training for m in model.modules()]
    before, rng = _buffers(model), torch.get_rng_state()
    runs = [APGD(norm="L2", eps=0.5, steps=5, eot_iter=3, stochastic=True, seed=s)(model, x, y, return_result=True)
            for s in (7, 7, 8)]
    assert _same_buffers(model, before)  # BatchNorm ran in eval mode: running statistics untouched
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(rng, torch.get_rng_state())
    assert torch.equal(runs[0].x_adv, runs[1].x_adv) and torch.equal(runs[0].success, runs[1].success)
    assert not torch.equal(runs[0].x_adv, runs[2].x_adv)
    x_adv = PGD(norm="L2", eps=0.5, steps=3, stochastic=True).run_unchecked(model, x, y)  # the unchecked path too
    assert x_adv.shape == x.shape and _same_buffers(model, before)
    assert [m.training for m in model.modules()] == modes


def test_stochastic_is_recorded_only_when_on():
    off, on = FGSM(eps=0.1), FGSM(eps=0.1, stochastic=True)
    assert "stochastic" not in off.describe() and "stochastic" not in repr(off)
    assert on.describe()["stochastic"] is True
    again = eval(repr(on), {"FGSM": FGSM})
    assert again.stochastic and again.describe() == on.describe()


def test_rand_version_evaluates_dropout_by_default(dropout_model, batch):
    x, y = batch[0][:48], batch[1][:48]
    model = dropout_model
    before, rng = _buffers(model), torch.get_rng_state()
    kw = dict(norm="L2", eps=0.6, version="rand", steps=5, eot_iter=2, seed=0)
    r1, r2 = worst_case_evaluation(model, x, y, **kw), worst_case_evaluation(model, x, y, **kw)
    assert r1["stochastic"] is True and all(m["attack"]["stochastic"] for m in r1["members"])
    assert torch.equal(r1["robust"], r2["robust"]) and torch.equal(r1["x_adv"], r2["x_adv"])  # seeded
    assert _same_buffers(model, before) and not any(m.training for m in model.modules())
    assert torch.equal(rng, torch.get_rng_state())
    # "correct on x" is one seeded draw of the random model (AutoAttack's rand version: one clean pass)
    clean = predict(model, x, stochastic=True, seed=evaluation_draws(0)) == y
    assert r1["clean_accuracy"] == int(clean.sum()) / 48
    assert r1["clean_accuracy"] < (predict(model, x) == y).float().mean().item()  # eval mode drops nothing
    assert not (r1["robust"] & ~clean).any()
    off = worst_case_evaluation(model, x, y, **kw, stochastic=False)  # opting out: the model without dropout
    assert off["stochastic"] is False
    assert off["clean_accuracy"] == pytest.approx(47 / 48) and off["robust_accuracy"] == pytest.approx(18 / 48)


def test_standard_version_is_unchanged(dropout_model, batch):
    """The numbers of the standard version on this model before the option existed (Dropout off)."""
    x, y = batch[0][:48], batch[1][:48]
    rng = torch.get_rng_state()
    r = worst_case_evaluation(dropout_model, x, y, norm="L2", eps=0.6, steps=5, square_queries=30, n_target_classes=3)
    assert r["stochastic"] is False and all("stochastic" not in m["attack"] for m in r["members"])
    assert r["clean_accuracy"] == pytest.approx(47 / 48)
    assert [m["robust_accuracy"] for m in r["members"]] == pytest.approx([18 / 48, 16 / 48, 16 / 48, 16 / 48])
    assert r["robust"].nonzero().squeeze(1).tolist() == [1, 3, 6, 9, 14, 17, 18, 19, 20, 22, 24, 27, 28, 32, 34, 46]
    assert float(r["x_adv"].double().sum()) == pytest.approx(960.5897351774183, abs=1e-3)
    assert torch.equal(rng, torch.get_rng_state())


def test_robust_mask_counts_a_stochastic_attack_on_the_random_model(dropout_model, batch):
    x, y = batch[0][:48], batch[1][:48]
    attack = FGSM(norm="L2", eps=1e-6, stochastic=True, seed=5)  # too small to move anything: robust ≈ one draw's accuracy
    robust = robust_mask(dropout_model, (x, y), attack)
    clean = predict(dropout_model, x, stochastic=True, seed=evaluation_draws(5)) == y
    assert not (robust & ~clean).any()
    assert robust.sum() < (predict(dropout_model, x) == y).sum()  # not the eval-mode model's accuracy
    assert torch.equal(robust, robust_mask(dropout_model, (x, y), FGSM(norm="L2", eps=1e-6, stochastic=True, seed=5)))


def test_custom_members_must_agree_on_stochastic(dropout_model, batch):
    x, y = batch[0][:8], batch[1][:8]
    mixed = [("a", FGSM(eps=0.1)), ("b", FGSM(eps=0.1, stochastic=True))]
    cases = [lambda: worst_case_evaluation(dropout_model, x, y, norm="Linf", eps=0.1, members=mixed),
             lambda: worst_case_evaluation(dropout_model, x, y, norm="Linf", eps=0.1, members=mixed[:1], stochastic=True)]
    for call in cases:
        with pytest.raises(ConfigError) as info:
            call()
        assert "\n" not in str(info.value) and "stochastic" in str(info.value)
    r = worst_case_evaluation(dropout_model, x, y, norm="Linf", eps=0.1, members=mixed[1:])
    assert r["version"] == "custom" and r["stochastic"] is True

