"""The fixed suite: a list of named attack configurations (as in configs and ``results.json``),
each run on a dataset and reported as robust accuracy beside the clean accuracy."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..attacks.base import Attack
from ..attacks.registry import build_attack
from ..data.dataset import ImageDataset
from .metrics import correct_mask, robust_accuracy


@dataclass
class AttackSpec:
    """A named attack configuration, as it appears in configs and ``results.json``."""

    attack: str = "pgd"  # "pgd", "fgsm", or any name of advfeatures.attacks.registry (e.g. "apgd")
    norm: str = "L2"
    eps: float = 0.25
    steps: int = 20
    step_size: float | None = None  # default 2.5·eps/steps
    restarts: int = 1
    random_start: bool | None = None  # None: the first restart from x, later ones at random (PGD's default)

    def build(self, seed: int = 0) -> Attack:
        """The attack by name from the registry (PGD with its active set: a point stops at its first
        success). ``step_size``, ``restarts`` and ``random_start`` reach any attack that takes them,
        and are an error for one that does not (when set away from their defaults)."""
        options = {"step_size": self.step_size, "random_start": self.random_start,
                   "restarts": self.restarts if self.restarts != 1 else None}
        return build_attack(self.attack, norm=self.norm, eps=self.eps, steps=self.steps, seed=seed,
                            **{k: v for k, v in options.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_suite(model: nn.Module, data: ImageDataset, suite: list[AttackSpec], *, batch_size: int = 500,
                   device: str | torch.device = "cpu", seed: int = 0, desc: str = "") -> dict[str, Any]:
    """``{"clean_accuracy": float, "robust_accuracy": [{attack, norm, eps, steps, accuracy}, ...]}``;
    ``accuracy`` counts the points correct both clean and under the attack."""
    correct = correct_mask(model, data, batch_size=batch_size, device=device)
    out: dict[str, Any] = {"clean_accuracy": int(correct.sum()) / max(1, len(data)), "robust_accuracy": []}
    for spec in suite:
        attack = spec.build(seed)
        acc = robust_accuracy(model, data, attack, batch_size=batch_size, device=device, clean_correct=correct,
                              desc=f"{desc} {spec.attack}-{spec.norm} ε={spec.eps:g}")
        info = attack.describe()
        out["robust_accuracy"].append({"attack": spec.attack, "norm": info.get("norm", spec.norm), "eps": info.get("eps", spec.eps),
                                       "steps": info.get("steps", spec.steps), "step_size": info.get("step_size"),
                                       "restarts": info.get("restarts", 1), "accuracy": acc})
    return out
