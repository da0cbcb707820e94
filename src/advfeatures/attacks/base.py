"""What every attack shares: argument checks, targets, modes, randomness and results.

An attack is configured once with keyword-only hyperparameters and called like a module::

    x_adv = PGD(norm="L2", eps=0.5, steps=20)(model, x, y)
    res = PGD(norm="L2", eps=0.5)(model, x, y, target="random", return_result=True)

It returns detached inputs of the same shape, dtype and device; with ``return_result=True`` an
:class:`AttackResult` with per-example success, perturbation norms and final loss. It runs the model
in eval mode and restores every module's mode, never touches parameter gradients, and draws its
randomness from its own ``torch.Generator`` seeded by ``seed`` (never the global RNG).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..data.dataset import check_images
from ..errors import ConfigError, DataError
from ..threats import flat_norm
from .loop import eval_mode
from .losses import cross_entropy

TARGET_MODES = ("random", "least_likely")


@dataclass
class AttackResult:
    x_adv: torch.Tensor
    success: torch.Tensor  # (N,) bool: misclassified (untargeted) or classified as the target
    norms: dict[str, torch.Tensor]  # {"L2": (N,), "Linf": (N,), "L1": (N,)} of x_adv − x
    loss: torch.Tensor  # (N,) cross-entropy w.r.t. the label (untargeted) or the target (targeted)
    predictions: torch.Tensor  # (N,) the model's class for x_adv
    target: torch.Tensor | None = None
    queries: torch.Tensor | None = None  # (N,) model queries, for black-box attacks
    extra: dict = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if self.success.numel() else 0.0


def num_classes_of(model: nn.Module, x: torch.Tensor) -> int:
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    with torch.no_grad(), eval_mode(model):
        return int(model(x[:1]).shape[1])


def check_labels(y: torch.Tensor, x: torch.Tensor, num_classes: int, *, what: str = "labels") -> torch.Tensor:
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.shape[0] != x.shape[0]:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise DataError(f"{what} must be a vector with one entry per image ({x.shape[0]}), got {shape}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise DataError(f"{what} must be integer class indices, got {y.dtype}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(f"{what} must lie in [0, {num_classes - 1}] for a {num_classes}-class model, got [{int(y.min())}, {int(y.max())}]")
    return y.to(device=x.device, dtype=torch.int64)


def random_targets(y: torch.Tensor, num_classes: int, generator: torch.Generator | None) -> torch.Tensor:
    """A uniformly random class different from each label."""
    shift = torch.randint(1, num_classes, y.shape, generator=generator, device=y.device)
    return (y + shift) % num_classes


def least_likely_targets(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmin(1)


class Attack:
    """Base class: subclasses implement :meth:`perturb` (x, y, target already checked)."""

    name = "attack"
    norm = "Linf"
    supports_targeted = True

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = int(seed)
        self._generators: dict[torch.device, torch.Generator] = {}

    def generator(self, device: torch.device | str) -> torch.Generator:
        """This attack's generator for ``device`` (created from ``seed`` on first use)."""
        device = torch.device(device)
        if device not in self._generators:
            g = torch.Generator(device=device)
            g.manual_seed(self.seed)
            self._generators[device] = g
        return self._generators[device]

    def describe(self) -> dict:
        """Hyperparameters for reports (subclasses extend)."""
        return {"attack": self.name, "norm": self.norm}

    def resolve_target(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target, num_classes: int) -> torch.Tensor | None:
        if target is None:
            return None
        if not self.supports_targeted:
            raise ConfigError(f"{self.name} is untargeted only; call it without target=")
        if isinstance(target, str):
            if target == "random":
                return random_targets(y, num_classes, self.generator(x.device))
            if target in ("least_likely", "least-likely", "ll"):
                return least_likely_targets(model, x)
            raise ConfigError(f"unknown target mode {target!r}; pass a tensor of classes or one of {', '.join(TARGET_MODES)}")
        return check_labels(target, x, num_classes, what="targets")

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, target=None, return_result: bool = False):
        check_images(x, what=f"{self.name} inputs")
        with eval_mode(model):
            num_classes = num_classes_of(model, x)
            y = check_labels(y, x, num_classes)
            t = self.resolve_target(model, x, y, target, num_classes)
            out = self.perturb(model, x.detach(), y, t)
            extra: dict = {}
            if isinstance(out, tuple):
                out, extra = out
            x_adv = out.detach().to(x.dtype)
            if not return_result:
                return x_adv
            return self.result(model, x, y, x_adv, t, extra)

    def result(self, model, x, y, x_adv, target, extra) -> AttackResult:
        with torch.no_grad():
            logits = model(x_adv)
            pred = logits.argmax(1)
            ref = y if target is None else target
            success = pred != y if target is None else pred == target
            loss = cross_entropy(logits, ref)
        delta = (x_adv - x).float()
        norms = {"L2": flat_norm(delta, 2), "Linf": flat_norm(delta, float("inf")), "L1": flat_norm(delta, 1)}
        queries = extra.pop("queries", None)
        return AttackResult(x_adv, success, norms, loss, pred, target, queries, extra)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None):
        raise NotImplementedError
