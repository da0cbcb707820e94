"""Clean and robust accuracy of a model on a dataset, batch by batch."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .attacks.base import Attack
from .attacks.loop import eval_mode
from .attacks.pgd import FGSM, PGD
from .data.dataset import ImageDataset
from .progress import progress
from .storage import iter_chunks


@dataclass
class AttackSpec:
    """A named attack configuration, as it appears in configs and ``results.json``."""

    attack: str = "pgd"  # "pgd", "fgsm", or any name of advfeatures.attacks.registry (e.g. "apgd")
    norm: str = "L2"
    eps: float = 0.25
    steps: int = 20
    step_size: float | None = None  # default 2.5·eps/steps
    restarts: int = 1
    random_start: bool = True

    def build(self, seed: int = 0) -> Attack:
        if self.attack == "pgd":
            return PGD(norm=self.norm, eps=self.eps, steps=self.steps, step_size=self.step_size,
                       restarts=self.restarts, random_start=self.random_start, seed=seed)
        if self.attack == "fgsm":
            return FGSM(norm=self.norm, eps=self.eps, seed=seed)
        from .attacks.registry import build_attack  # every other attack by name, e.g. "apgd", "apgd-t", "square"

        return build_attack(self.attack, norm=self.norm, eps=self.eps, steps=self.steps, seed=seed)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def accuracy(model: nn.Module, data: ImageDataset, *, batch_size: int = 500, device: str | torch.device = "cpu") -> float:
    correct = 0
    with torch.no_grad(), eval_mode(model):
        for a, b in iter_chunks(len(data), batch_size):
            x, y = data.images[a:b].to(device), data.labels[a:b].to(device)
            correct += int((model(x).argmax(1) == y).sum())
    return correct / max(1, len(data))


def robust_accuracy(model: nn.Module, data: ImageDataset, attack: Attack, *, batch_size: int = 500,
                    device: str | torch.device = "cpu", desc: str = "attack") -> float:
    """Share of ``data`` the model still classifies correctly after ``attack`` (untargeted)."""
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for a, b in progress(list(iter_chunks(len(data), batch_size)), desc=desc):
        x, y = data.images[a:b].to(device), data.labels[a:b].to(device)
        x_adv = attack(model, x, y)
        with torch.no_grad(), eval_mode(model):
            correct += (model(x_adv).argmax(1) == y).sum()
    return int(correct) / max(1, len(data))


def evaluate_suite(model: nn.Module, data: ImageDataset, suite: list[AttackSpec], *, batch_size: int = 500,
                   device: str | torch.device = "cpu", seed: int = 0, desc: str = "") -> dict[str, Any]:
    """``{"clean_accuracy": float, "robust_accuracy": [{attack, norm, eps, steps, accuracy}, ...]}``."""
    out: dict[str, Any] = {"clean_accuracy": accuracy(model, data, batch_size=batch_size, device=device), "robust_accuracy": []}
    for spec in suite:
        attack = spec.build(seed)
        acc = robust_accuracy(model, data, attack, batch_size=batch_size, device=device,
                              desc=f"{desc} {spec.attack}-{spec.norm} ε={spec.eps:g}")
        info = attack.describe()
        out["robust_accuracy"].append({"attack": spec.attack, "norm": info.get("norm", spec.norm), "eps": info.get("eps", spec.eps),
                                       "steps": info.get("steps", spec.steps), "step_size": info.get("step_size"),
                                       "restarts": info.get("restarts", 1), "accuracy": acc})
    return out
