"""The benchmarked workloads, each a closure over one model and one batch, and the limits they are
compared with.

The limit is the raw throughput of the same model on the same batch: a forward pass and a backward
pass with respect to the *input* (eval mode, summed cross-entropy), as many times as the workload
needs them. Every workload says how many forward+backward passes and how many forward-only passes
its method needs (``passes``), so its ratio can be read two ways: against ``steps`` forward+backward
passes (the plain ratio) and against the passes the method itself requires (keep-best attacks and
representation matching evaluate the objective once more at the end, matching also computes its goal
representation once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from advfeatures.attacks.pgd import PGD
from advfeatures.construct import MatchingConfig, match_representation
from advfeatures.data.dataset import ImageDataset
from advfeatures.train import AdversaryConfig, TrainConfig, train_model

# Threat-model sizes per input shape: the paper's CIFAR values, and the digits/Fashion presets' scale
EPS = {"Linf": 8 / 255, "L2": 0.5}


@dataclass
class Workload:
    name: str
    run: Callable[[], object]
    passes: tuple[int, int]  # (forward+backward passes, forward-only passes) the method needs
    kind: str  # "limit", "attack" (goal ≥ 0.95 of the limit) or "train" (goal ≤ 1.05 × (steps+1) std steps)
    note: str = ""


def make_batch(shape: tuple[int, int, int], batch: int, num_classes: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, *shape, generator=g).to(device)
    y = torch.randint(0, num_classes, (batch,), generator=g).to(device)
    return x, y


def limit_passes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int) -> Callable[[], torch.Tensor]:
    """``k`` raw forward+backward passes w.r.t. the input: the hardware limit of an input-gradient step."""

    def run() -> torch.Tensor:
        grad = None
        for _ in range(k):
            xx = x.detach().requires_grad_(True)
            loss = F.cross_entropy(model(xx), y, reduction="none").sum()
            (grad,) = torch.autograd.grad(loss, xx)
        return grad

    return run


def forward_passes(model: nn.Module, x: torch.Tensor, k: int) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        with torch.no_grad():
            out = None
            for _ in range(k):
                out = model(x)
        return out

    return run


def attack_workloads(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, dr_steps: int,
                     keep_best_rows: bool = True) -> list[Workload]:
    def attack(**kw) -> Callable[[], torch.Tensor]:
        pgd = PGD(steps=steps, **kw)
        return lambda: pgd(model, x, y)

    rows = [
        Workload("pgd-linf", attack(norm="Linf", eps=EPS["Linf"], keep_best=False), (steps, 0), "attack",
                 f"Madry PGD, ε=8/255, {steps} steps, random start, last iterate"),
        Workload("pgd-l2", attack(norm="L2", eps=EPS["L2"], keep_best=False), (steps, 0), "attack",
                 f"Madry PGD, ε=0.5, {steps} steps, random start, last iterate"),
    ]
    if keep_best_rows:
        rows.append(Workload("pgd-linf-best", attack(norm="Linf", eps=EPS["Linf"]), (steps, 1), "attack",
                             "PGD's default keep_best: one more forward pass at the end"))
    start = x.roll(1, dims=0)  # each image starts from another one, as D_R does
    cfg = MatchingConfig(steps=dr_steps, step_size=0.1)
    rows.append(Workload("d_r-matching", lambda: match_representation(model, x, start, cfg), (dr_steps, 2), "attack",
                         f"representation matching, {dr_steps} steps (+ goal and best-iterate forwards)"))
    return rows


def train_workloads(model_factory: Callable[[], nn.Module], shape: tuple[int, int, int], num_classes: int, *, batch: int,
                    batches: int, steps: int, device: torch.device, train_kwargs: dict) -> tuple[Workload, Workload]:
    """One epoch of standard training and one of PGD adversarial training (L2, ε=0.5, ``steps`` steps
    of ε/5, the paper's robust-model recipe) on ``batches`` synthetic batches, through
    :func:`advfeatures.train.train_model` itself."""
    g = torch.Generator().manual_seed(1)
    n = batch * batches
    data = ImageDataset(torch.rand(n, *shape, generator=g), torch.randint(0, num_classes, (n,), generator=g),
                        [str(i) for i in range(num_classes)], "synthetic")
    std_model, adv_model = model_factory(), model_factory()
    std_cfg = TrainConfig(epochs=1, batch_size=batch, lr=0.01)
    adv_cfg = TrainConfig(epochs=1, batch_size=batch, lr=0.01, adversary=AdversaryConfig(norm="L2", eps=0.5, steps=steps))
    std = Workload("train-standard-epoch", lambda: train_model(std_model, data, std_cfg, device=device, **train_kwargs),
                   (0, 0), "limit", f"{batches} batches: the unit of the adversarial-training goal")
    adv = Workload("train-adversarial-epoch", lambda: train_model(adv_model, data, adv_cfg, device=device, **train_kwargs),
                   (0, 0), "train", f"{batches} batches, L2 PGD {steps} steps of ε/5")
    return std, adv


def loop_overhead(shape: tuple[int, int, int], batch: int, device: torch.device, *, steps: int, reps: int = 5) -> dict[str, float]:
    """CPU milliseconds per step that each workload spends outside the model: the same attacks and
    matching loop on a near-free model (flatten, 4 units, 10 classes), minus that model's own
    forward+backward pass. A low-noise complement to the ratios (it does not depend on the model)."""
    import time

    from advfeatures.models import Classifier, PenultimateReLU

    d = shape[0] * shape[1] * shape[2]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        tiny = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(d, 4), PenultimateReLU()), nn.Linear(4, 10)).to(device).eval()
    x, y = make_batch(shape, batch, 10, device)
    runs = {"limit": limit_passes(tiny, x, y, steps)}
    for w in attack_workloads(tiny, x, y, steps=steps, dr_steps=steps):
        runs[w.name] = w.run
    cost = {}
    for name, fn in runs.items():
        fn()
        best = float("inf")
        for _ in range(reps):
            start = time.process_time()
            fn()
            best = min(best, time.process_time() - start)
        cost[name] = best / steps * 1e3
    return {name: round(c - cost["limit"], 3) for name, c in cost.items() if name != "limit"}
