"""Argument checks shared by the theory models (one-line ConfigErrors)."""

from __future__ import annotations

import math

from ..errors import ConfigError


def check_eps(eps: float, *, positive: bool = False) -> float:
    """A finite ε ≥ 0 (> 0 with ``positive``); the theory models have no [0, 1] box, so 0 is allowed."""
    eps = float(eps)
    if math.isnan(eps) or math.isinf(eps) or eps < 0 or (positive and eps == 0):
        bound = "> 0" if positive else "≥ 0"
        raise ConfigError(f"eps must be a finite number {bound}, got {eps}")
    return eps


def check_count(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ConfigError(f"{name} must be a whole number ≥ {minimum}, got {value}")
    return int(value)
