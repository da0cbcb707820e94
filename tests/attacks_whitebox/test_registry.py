"""The registry builds every attack by name; unknown keywords are one-line errors, never dropped."""

from __future__ import annotations

import dataclasses

import pytest

from advfeatures.attacks.base import Attack, count, hyper, hyperparameters
from advfeatures.attacks.registry import ATTACK_NAMES, REGISTRY, build_attack
from advfeatures.errors import ConfigError

from .conftest import registry_attack


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_every_attack_builds_and_describes_itself(name):
    entry = REGISTRY[name]
    norm = entry.norms[-1] if entry.norms else "L2"
    attack = build_attack(name, norm=norm, eps=0.5, steps=3, queries=200)
    info = attack.describe()
    assert isinstance(info, dict) and "attack" in info
    if "steps" in info and entry.steps_key == "steps":
        assert info["steps"] == 3


def test_options_reach_the_attack_and_bad_keys_are_errors():
    pgd = build_attack("pgd", norm="L2", eps=0.5, steps=10, step_size=0.07, restarts=3, random_start=True)
    assert (pgd.step_size, pgd.restarts, pgd.random_start) == (0.07, 3, True)
    with pytest.raises(ConfigError, match="did you mean step_size"):
        build_attack("pgd", norm="L2", eps=0.5, alpha=0.1)
    with pytest.raises(ConfigError, match="square takes no option 'step_size'") as info:
        build_attack("square", norm="L2", eps=0.5, step_size=0.1)
    assert "max_queries" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_repr_rebuilds_the_attack_and_describe_records_declared_fields(name):
    import advfeatures.attacks as attacks

    attack = registry_attack(name)
    again = eval(repr(attack), vars(attacks))  # repr is a constructor call with every setting
    assert type(again) is type(attack) and again.describe() == attack.describe()
    declared = {f.name for f in dataclasses.fields(attack)}
    assert set(attack.describe()) - {"attack", "norm"} <= declared


def test_a_new_attack_declares_fields_and_gets_checks_describe_and_repr():
    @hyperparameters
    class Toy(Attack):
        name = "toy"
        steps: int = hyper(3, check=count)
        internal: int = hyper(1, record=False)

    @hyperparameters
    class LongerToy(Toy):  # another default; the check is inherited, not restated
        steps: int = hyper(7)

    assert Toy(steps=2).describe() == {"attack": "toy", "norm": "Linf", "steps": 2}
    assert repr(LongerToy()) == "LongerToy(steps=7, internal=1, seed=0)"
    for cls in (Toy, LongerToy):
        with pytest.raises(ConfigError, match="steps must be a whole number"):
            cls(steps=0)
    with pytest.raises(TypeError):
        Toy(3)  # keyword-only
