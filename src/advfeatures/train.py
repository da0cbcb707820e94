"""Training: standard and PGD adversarial training (Madry et al. 2018), on one screen.

SGD with momentum and weight decay under a step learning-rate schedule (the paper's: ×0.1 at 1/3
and 2/3 of training), Adam as an option; batched crop/flip augmentation; a checkpoint after every
epoch, so an interrupted run resumes where it stopped and finishes with the same weights.
Adversarial training replaces each batch by PGD examples made against the current model (in eval
mode, as in the reference implementation), then takes an ordinary training step on them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attacks.pgd import PGD
from .data.augment import augment_batch
from .data.dataset import ImageDataset
from .errors import ConfigError
from .progress import progress
from .storage import atomic_path
from .threats import check_positive, check_steps

log = logging.getLogger(__name__)


@dataclass
class AdversaryConfig:
    """PGD used to make training examples (the paper's CIFAR robust model: L2, ε=0.5, 7 steps of
    ε/5, no random start)."""

    norm: str = "L2"
    eps: float = 0.5
    steps: int = 7
    step_size: float | None = None  # default eps / 5 (the paper's)
    random_start: bool = False

    def build(self, seed: int) -> PGD:
        step = self.step_size if self.step_size is not None else self.eps / 5
        return PGD(norm=self.norm, eps=self.eps, steps=self.steps, step_size=step, random_start=self.random_start,
                   keep_best=False, seed=seed)


@dataclass
class TrainConfig:
    epochs: int = 150
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: str = "sgd"  # "sgd" or "adam"
    milestones: tuple[float, ...] = (1 / 3, 2 / 3)  # fractions of the epochs where lr ×= gamma
    gamma: float = 0.1
    crop_padding: int = 4
    flip: bool = True
    adversary: AdversaryConfig | None = None
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> TrainConfig:
        check_steps(self.epochs, "epochs")
        check_steps(self.batch_size, "batch_size")
        check_positive("lr", self.lr)
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0 or not 0 < self.gamma <= 1:
            raise ConfigError("need 0 ≤ momentum < 1, weight_decay ≥ 0 and 0 < gamma ≤ 1")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ConfigError(f"milestones are fractions of training in (0, 1), got {list(self.milestones)}")
        return self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_at(epoch: int, cfg: TrainConfig) -> float:
    passed = sum(epoch >= math.floor(m * cfg.epochs + 1e-9) for m in cfg.milestones)
    return cfg.lr * cfg.gamma**passed


def _save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, epoch: int, gen: torch.Generator, history: list) -> None:
    with atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                    "generator": gen.get_state(), "history": history}, tmp)


def train_model(
    model: nn.Module,
    data: ImageDataset,
    cfg: TrainConfig,
    *,
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
    desc: str = "train",
) -> list[dict[str, float]]:
    """Train ``model`` in place on ``data``; returns per-epoch loss and accuracy on the training batches.

    With ``checkpoint`` (a file path), the state after each epoch is saved there and a later call
    resumes from it (the file is loaded with ``weights_only=True``).
    """
    cfg.validate()
    device = torch.device(device)
    model.to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = make_optimizer(model, cfg)
    adversary = cfg.adversary.build(cfg.seed + 1) if cfg.adversary else None
    history: list[dict[str, float]] = []
    start_epoch = 0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        history, start_epoch = list(state["history"]), int(state["epoch"])
        log.info("%s: resuming at epoch %d/%d from %s", desc, start_epoch, cfg.epochs, ckpt)
    x_all, y_all = data.images.to(device), data.labels.to(device)
    n = len(data)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    for epoch in range(start_epoch, cfg.epochs):
        for group in opt.param_groups:
            group["lr"] = lr_at(epoch, cfg)
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        bar = progress(range(steps_per_epoch), desc=f"{desc} {epoch + 1}/{cfg.epochs}")
        for b in bar:
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            x, y = x_all[idx], y_all[idx]
            if cfg.crop_padding or cfg.flip:
                x = augment_batch(x, crop_padding=cfg.crop_padding, flip=cfg.flip, generator=gen)
            if adversary is not None:
                x = adversary(model, x, y)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * y.shape[0]
            correct += (logits.detach().argmax(1) == y).sum()
        record = {"epoch": epoch + 1, "lr": lr_at(epoch, cfg), "loss": float(loss_sum) / n, "train_accuracy": float(correct) / n}
        history.append(record)
        log.debug("%s epoch %d: %s", desc, epoch + 1, record)
        if ckpt is not None:
            _save_checkpoint(ckpt, model, opt, epoch + 1, gen, history)
    model.eval()
    return history
