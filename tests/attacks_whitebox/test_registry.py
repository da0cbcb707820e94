"""The registry builds every attack by name; unknown keywords are one-line errors, never dropped."""

from __future__ import annotations

import pytest

from advfeatures.attacks.registry import ATTACK_NAMES, REGISTRY, build_attack
from advfeatures.errors import ConfigError


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
