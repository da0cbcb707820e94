"""Robust accuracy against ε for one attack family."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..attacks.base import Attack
from ..attacks.pgd import PGD
from ..errors import ConfigError
from ..threats import make_threat
from .metrics import check_inputs, correct_mask, device_of, robust_accuracy

AttackFactory = Callable[..., Attack]


def robustness_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps_list: Sequence[float],
                     attack_factory: AttackFactory | None = None, batch_size: int = 256, seed: int = 0) -> dict[str, Any]:
    """Robust accuracy at each ε of ``eps_list``; ``attack_factory(norm=..., eps=...)`` builds the
    attack (default: 20-step PGD with random start, stopping per point at its first success).
    Returns ``{"norm", "eps", "robust_accuracy", "clean_accuracy"}``."""
    check_inputs(x, y)
    if not eps_list:
        raise ConfigError("eps_list is empty; give at least one ε")
    eps_list = [make_threat(norm, e).eps for e in eps_list]
    factory = attack_factory or (lambda *, norm, eps: PGD(norm=norm, eps=eps, steps=20, early_stop=True, seed=seed))
    device = device_of(model)
    x, y = x.to(device), y.to(device)
    correct = correct_mask(model, (x, y), batch_size=batch_size)
    accs = [robust_accuracy(model, (x, y), factory(norm=norm, eps=e), batch_size=batch_size, clean_correct=correct,
                            desc=f"ε={e:g}") for e in eps_list]
    return {"norm": make_threat(norm, eps_list[0]).norm, "eps": eps_list, "robust_accuracy": accs,
            "clean_accuracy": int(correct.sum()) / x.shape[0]}
