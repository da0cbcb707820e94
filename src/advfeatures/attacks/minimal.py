"""The smallest ε at which a fixed-ε attack succeeds, per example, by bisection: turns PGD (or any
attack built from ε) into a minimal-norm measurement comparable with CW or DeepFool.

Each example keeps its own bracket [lo_i, hi_i]: the attack is run at its midpoint and the bracket
halves towards the side where the attack fails. Examples that share a midpoint (all of them at the
first step, at most 2ᵏ groups after k steps) are attacked together, so every example is attacked
exactly once per step and the batch stays batched. The answer assumes success is monotone in ε
(true for a strong attack, not guaranteed for a weak one); it is the upper end of the final bracket,
within (hi − lo) / 2^iters of the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..errors import ConfigError
from ..threats import check_steps
from .base import Attack, check_labels, num_classes_of
from .loop import eval_mode


def minimal_eps_by_bisection(
    attack_factory: Callable[[float], Attack],
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lo: float,
    hi: float,
    iters: int,
    target: torch.Tensor | None = None,
) -> torch.Tensor:
    """Smallest ε in (lo, hi] per example at which ``attack_factory(ε)`` succeeds, shape (N,).

    0 for examples the model already gets wrong (or already puts in ``target``); ``inf`` for those
    the attack cannot fool even at ``hi``.
    """
    lo, hi = float(lo), float(hi)
    if not (0.0 <= lo < hi < math.inf):
        raise ConfigError(f"need 0 ≤ lo < hi < inf for the ε bisection, got lo={lo}, hi={hi}")
    iters = check_steps(iters, "iters")
    with torch.no_grad(), eval_mode(model):
        y = check_labels(y, x, num_classes_of(model, x))
        pred = model(x).argmax(1)
    already = (pred != y) if target is None else (pred == target.to(pred.device))

    def succeeds(eps: float, mask: torch.Tensor) -> torch.Tensor:
        t = None if target is None else target[mask]
        return attack_factory(eps)(model, x[mask], y[mask], target=t, return_result=True).success

    everyone = torch.ones_like(already)
    reachable = succeeds(hi, everyone) & ~already
    lower = torch.full((x.shape[0],), lo, dtype=torch.float64, device=x.device)
    upper = torch.full_like(lower, hi)
    for _ in range(iters):
        mid = (lower + upper) / 2
        for value in torch.unique(mid[reachable]).tolist():
            mask = reachable & (mid == value)
            ok = succeeds(value, mask)
            upper[mask] = torch.where(ok, value, upper[mask])
            lower[mask] = torch.where(ok, lower[mask], value)
    eps = torch.where(reachable, upper, torch.full_like(upper, math.inf))
    return torch.where(already, torch.zeros_like(eps), eps).to(x.dtype)
