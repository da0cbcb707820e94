"""Bad settings and bad inputs end in one clear, one-line error."""

from __future__ import annotations

import pytest
import torch

from advfeatures.attacks import (APGD, APGDT, BIM, CWL2, DIFGSM, MIFGSM, PGD, CWLinf, DeepFool, LBFGSAttack,
                                 minimal_eps_by_bisection)
from advfeatures.attacks.registry import ATTACK_NAMES, REGISTRY
from advfeatures.errors import AdvFeaturesError, ConfigError, DataError

from .conftest import random_affine, registry_attack, takes

def construct(name: str, **kw):
    """The registry's class for ``name`` called directly (no checks at the registry's door), with
    what the name fixes, a valid eps where it takes one, and ``kw``."""
    entry = REGISTRY[name]
    base = {"eps": 0.1} if takes(name, "eps") else {}
    return entry.load()(**{**base, **entry.fixed, **kw})


WITH_EPS = sorted(n for n in ATTACK_NAMES if takes(n, "eps"))
WITH_STEPS = sorted(n for n in ATTACK_NAMES if REGISTRY[n].steps_key and takes(n, REGISTRY[n].steps_key))


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert isinstance(exc_info.value, AdvFeaturesError) and message and "\n" not in message
    return message


@pytest.mark.parametrize("name", WITH_EPS)
@pytest.mark.parametrize("eps", [-0.1, 0.0, float("nan")])
def test_refuses_bad_eps(name, eps):
    with pytest.raises(ConfigError) as info:
        construct(name, eps=eps)
    assert "eps" in one_line(info)


@pytest.mark.parametrize("name", WITH_STEPS)
@pytest.mark.parametrize("steps", [0, -3, 2.5, float("nan"), float("inf"), "3"])
def test_refuses_bad_steps(name, steps):
    key = REGISTRY[name].steps_key
    with pytest.raises(ConfigError) as info:
        construct(name, **{key: steps})
    assert key in one_line(info)


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_refuses_bad_inputs(name):
    model, x = random_affine(5, seed=0)
    attack = registry_attack(name)
    y = torch.zeros(len(x), dtype=torch.int64)
    cases = [
        (x, torch.full_like(y, 5), "labels must lie in"),  # label out of range for 5 classes
        (x, -torch.ones_like(y), "labels must lie in"),
        (x * 2.0, y, "[0, 1]"),  # inputs outside the box
        (x - 0.5, y, "[0, 1]"),
        (x, y[:-1], "one entry per image"),  # mismatched shapes
        (x[0], y, "NCHW"),
        (x, y.float(), "integer"),
    ]
    for xb, yb, fragment in cases:
        with pytest.raises(DataError) as info:
            attack(model, xb, yb)
        assert fragment in one_line(info), (name, fragment)


@pytest.mark.parametrize("make,fragment", [
    (lambda: MIFGSM(eps=0.1, momentum=-1.0), "momentum"),
    (lambda: MIFGSM(eps=0.1, diversity_prob=1.5), "diversity_prob"),
    (lambda: DIFGSM(eps=0.1, resize_rate=0.9), "resize_rate"),
    (lambda: MIFGSM(eps=0.1, loss="hinge"), "unknown loss"),
    (lambda: DeepFool(overshoot=-0.1), "overshoot"),
    (lambda: DeepFool(norm="L1"), "L2 or Linf"),
    (lambda: CWL2(confidence=-1.0), "confidence"),
    (lambda: CWL2(lr=0.0), "lr"),
    (lambda: CWL2(search_steps=0), "search_steps"),
    (lambda: CWLinf(eps=0.1, confidence=float("nan")), "confidence"),
    (lambda: LBFGSAttack(initial_const=-1.0), "initial_const"),
    (lambda: APGD(eps=0.1, loss="hinge"), "unknown APGD loss"),
    (lambda: APGD(eps=0.1, targeted_loss="hinge"), "targeted loss"),
    (lambda: APGD(eps=0.1, rho=1.5), "rho"),
    (lambda: APGD(eps=0.1, momentum=0.0), "momentum"),
    (lambda: APGD(norm="L3", eps=0.1), "unknown norm"),
    (lambda: APGDT(eps=0.1, num_targets=0), "num_targets"),
    (lambda: PGD(eps=0.1, sparsity=0.1), "sparsity is an option of the L1 step"),
    (lambda: PGD(norm="L1", eps=1.0, sparsity=1.5), "sparsity"),
    (lambda: PGD(eps=0.1, seed=-1), "seed"),
    (lambda: PGD(eps=0.1, seed=2.5), "seed"),
])
def test_refuses_bad_hyperparameters(make, fragment):
    with pytest.raises(ConfigError) as info:
        make()
    assert fragment in one_line(info)


def test_refusals_that_depend_on_the_model():
    model, x = random_affine(2, seed=0)
    y = torch.zeros(len(x), dtype=torch.int64)
    with pytest.raises(ConfigError) as info:
        DeepFool()(model, x, y, target=1 - y)
    assert "untargeted" in one_line(info)
    with pytest.raises(ConfigError) as info:
        APGD(eps=0.1, loss="dlr")(model, x, y)
    assert "loss='ce'" in one_line(info)
    model3, x3 = random_affine(3, seed=0)
    with pytest.raises(ConfigError) as info:
        APGDT(eps=0.1)(model3, x3, y)
    assert "targeted_loss='ce'" in one_line(info)
    with pytest.raises(DataError) as info:
        BIM(eps=0.1)(model, x, y, target=torch.full_like(y, 7))
    assert "targets must lie in" in one_line(info)


@pytest.mark.parametrize("lo,hi,iters,fragment", [(-1.0, 1.0, 3, "lo"), (0.5, 0.5, 3, "lo"), (0.0, float("inf"), 3, "hi"),
                                                  (0.0, 1.0, 0, "iters")])
def test_bisection_refuses_bad_brackets(lo, hi, iters, fragment):
    model, x = random_affine(2, seed=0)
    y = torch.zeros(len(x), dtype=torch.int64)
    with pytest.raises(ConfigError) as info:
        minimal_eps_by_bisection(lambda e: BIM(eps=e), model, x, y, lo=lo, hi=hi, iters=iters)
    assert fragment in one_line(info)


@pytest.mark.parametrize("cls", ["APGDT", "FABT"])
@pytest.mark.parametrize("rows", [0, 1.5, float("nan"), float("inf")])
def test_refuses_bad_batch_rows(cls, rows):
    import advfeatures.attacks as attacks

    with pytest.raises(ConfigError) as info:
        getattr(attacks, cls)(eps=0.5, norm="L2", batch_rows=rows)
    assert "batch_rows" in one_line(info)
