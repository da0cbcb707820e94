"""The sanity checks run the model as the evaluation they vet: with ``stochastic=True`` every
attack, the clean pass and the gradient check see the model's Dropout on; by default eval mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import advfeatures.evaluate.checks as checks
from advfeatures.evaluate import sanity_checks


@pytest.fixture
def dropout_model(mlp):
    model = nn.Sequential(mlp.features, nn.Dropout(0.5), mlp.head).eval()
    model.num_classes = 10  # so the attacks skip their eval-mode width probe (a shape check, not an evaluation)
    return model


@pytest.fixture
def recorded(monkeypatch):
    """Whether Dropout was on at each forward pass of the checks' attacks, clean pass and gradients."""
    seen = {"attacks": [], "dropout_on": []}
    real = checks.robust_accuracy

    def spy(model, data, attack, **kw):
        seen["attacks"].append(attack.stochastic)
        return real(model, data, attack, **kw)

    monkeypatch.setattr(checks, "robust_accuracy", spy)
    return seen


@pytest.mark.parametrize("stochastic", [True, False])
def test_sanity_checks_follow_stochastic(dropout_model, batch, recorded, stochastic):
    x, y = batch[0][:16], batch[1][:16]
    hook = dropout_model[1].register_forward_hook(lambda m, i, o: recorded["dropout_on"].append(m.training))
    meas = {}
    kwargs = {"stochastic": True} if stochastic else {}
    sanity_checks(dropout_model, x, y, norm="Linf", eps=0.1, steps=2, square_queries=5, measurements=meas, **kwargs)
    hook.remove()
    assert recorded["attacks"] and set(recorded["attacks"]) == {stochastic}
    # the first two passes are the randomised/softmax checks (eval mode, by design); every later one follows the flag
    assert set(recorded["dropout_on"][:3]) == {False}
    assert set(recorded["dropout_on"][3:]) == {stochastic}
    assert meas["stochastic"] is stochastic
    assert not dropout_model[1].training  # the model's own mode is back


def test_check_gradients_stochastic_sees_dropout(dropout_model, batch):
    x, y = batch[0][:8], batch[1][:8]
    modes = []
    hook = dropout_model[1].register_forward_hook(lambda m, i, o: modes.append(m.training))
    checks.check_gradients(dropout_model, x, y, stochastic=True, seed=1)
    checks.check_gradients(dropout_model, x, y)
    hook.remove()
    assert modes == [True, False]
