"""Transferability against learnability from D_rand (Ilyas et al. 2019, Sec. 3.2 and Fig. 3).

If adversarial examples are non-robust *features*, a model that picks up the features a source
model uses should both (a) be fooled by the source model's adversarial examples and (b) learn well
from D_rand built with the source model (whose only signal towards the new label is those
features). Ilyas et al. train several architectures on a ResNet-50's D_rand and find that an
architecture's real test accuracy after training on D_rand grows with the rate at which the
ResNet-50's adversarial examples transfer to it.

:func:`transfer_experiment` trains every architecture twice, on the real training set and on
``d_rand``; makes L2 PGD examples against the source model on the first ``n_attack`` test images,
untargeted and targeted (random other class, as in D_rand); and reports, per architecture:

* ``transfer_untargeted``: P(the model errs on x_adv | the source erred on x_adv and the model was
  right on x) — the usual transfer rate;
* ``transfer_targeted``: P(the model answers t | the source answered t) — the rate that matters for
  D_rand, whose labels are targets;
* ``d_rand_test_accuracy``: accuracy on the real test set of the same architecture trained on
  ``d_rand``;

with Pearson and Spearman correlations across architectures. :func:`plot_transfer` draws Fig. 3.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks.base import random_targets
from ..attacks.pgd import PGD
from ..data.dataset import ImageDataset
from ..errors import ConfigError
from ..evaluate import accuracy
from ..seeding import derive_seed
from ..storage import iter_chunks
from ..threats import check_positive, check_steps
from ..train import TrainConfig, train_model
from .common import (
    ArchLike,
    check_compatible,
    parse_arch,
    predict,
    seeded_model,
    stream_generator,
)

log = logging.getLogger(__name__)


def _attack(source: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, *, attack: PGD, batch_size: int,
            device: str | torch.device) -> torch.Tensor:
    parts = []
    for a, b in iter_chunks(x.shape[0], batch_size):
        t = None if target is None else target[a:b].to(device)
        parts.append(attack(source, x[a:b].to(device), y[a:b].to(device), target=t).cpu())
    return torch.cat(parts)


def _rate(hit: torch.Tensor, given: torch.Tensor) -> float | None:
    n = int(given.sum())
    return float((hit & given).sum()) / n if n else None


def correlation(xs: Sequence[float | None], ys: Sequence[float | None]) -> dict[str, float | None]:
    """Pearson and Spearman (Pearson of ranks, ties averaged) correlation of paired values, None
    where fewer than 3 complete pairs or a constant variable leave it undefined."""
    pairs = [(float(a), float(b)) for a, b in zip(xs, ys) if a is not None and b is not None]
    if len(pairs) < 3:
        return {"pearson": None, "spearman": None, "n": len(pairs)}
    x = torch.tensor([p[0] for p in pairs], dtype=torch.float64)
    y = torch.tensor([p[1] for p in pairs], dtype=torch.float64)

    def pearson(a: torch.Tensor, b: torch.Tensor) -> float | None:
        if any(float(v.max() - v.min()) <= 1e-12 * max(1.0, float(v.abs().max())) for v in (a, b)):
            return None  # a constant variable
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / (a.norm() * b.norm()))

    def ranks(v: torch.Tensor) -> torch.Tensor:
        r = torch.empty_like(v)
        for i, val in enumerate(v.tolist()):  # n = number of architectures: a handful
            r[i] = float((v < val).sum()) + (float((v == val).sum()) + 1) / 2
        return r

    return {"pearson": pearson(x, y), "spearman": pearson(ranks(x), ranks(y)), "n": len(pairs)}


def transfer_experiment(
    source_model: nn.Module,
    train: ImageDataset,
    test: ImageDataset,
    d_rand: ImageDataset,
    *,
    archs: Sequence[ArchLike],
    train_cfg: TrainConfig,
    d_rand_cfg: TrainConfig | None = None,
    eps: float = 0.5,
    norm: str = "L2",
    steps: int = 20,
    step_size: float | None = None,
    n_attack: int | None = 500,
    seed: int = 0,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Transfer rates of ``source_model``'s adversarial examples to each architecture (trained on
    ``train``) beside each architecture's real test accuracy when trained on ``d_rand``.

    ``archs``: names, (name, kwargs) pairs or {"name", "kwargs", "label"} dicts for
    :func:`advfeatures.models.build_model`. ``d_rand_cfg`` defaults to ``train_cfg``. The attack is
    PGD in ``norm`` with radius ``eps`` (default step 2.5·ε/steps, no random start) on the first
    ``n_attack`` test images (all of them when None). Returns a JSON-ready dict.
    """
    check_positive("eps", eps)
    check_steps(steps)
    if not archs:
        raise ConfigError("the transfer experiment needs at least one architecture (e.g. archs=['mlp', 'cnn'])")
    check_compatible(train, test, what="transfer experiment")
    check_compatible(d_rand, train, what="transfer experiment")
    specs = [parse_arch(a) for a in archs]
    labels = [s[2] for s in specs]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"architecture labels must be distinct, got {labels}; give each a 'label'")
    d_rand_cfg = d_rand_cfg or train_cfg
    device = torch.device(device)
    source_model = source_model.to(device)
    sub = test.head(n_attack)
    x, y = sub.images, sub.labels
    attack = PGD(norm=norm, eps=eps, steps=steps, step_size=step_size, random_start=False, seed=seed)
    target = random_targets(y, test.num_classes, stream_generator(seed, 5))
    log.info("transfer: attacking the source model on %d test images (%s ε=%g, %d steps)", len(sub), attack.norm, eps, steps)
    x_u = _attack(source_model, x, y, None, attack=attack, batch_size=batch_size, device=device)
    x_t = _attack(source_model, x, y, target, attack=attack, batch_size=batch_size, device=device)
    src_clean = predict(source_model, x, batch_size=batch_size, device=device)
    src_u = predict(source_model, x_u, batch_size=batch_size, device=device)
    src_t = predict(source_model, x_t, batch_size=batch_size, device=device)
    fooled, reached = src_u != y, src_t == target
    out: dict[str, Any] = {
        "source": {"arch": getattr(source_model, "arch", None), "test_accuracy": accuracy(source_model, test, device=device),
                   "attacked": len(sub), "untargeted_success": float(fooled.float().mean()),
                   "targeted_success": float(reached.float().mean()), "clean_accuracy_on_attacked": float((src_clean == y).float().mean())},
        "attack": {**attack.describe(), "targets": "uniform over the other classes"},
        "d_rand": {"name": d_rand.name, "count": len(d_rand)},
        "chance": 1.0 / test.num_classes,
        "archs": [],
    }
    for i, (name, kwargs, label) in enumerate(specs):
        log.info("transfer: training %s on the real data and on D_rand", label)
        real = seeded_model(name, train.image_shape, train.num_classes, seed=derive_seed(seed, 10 + i), **kwargs)
        train_model(real, train, replace(train_cfg, seed=seed + 10 + i), device=device, desc=f"{label} on D")
        on_rand = seeded_model(name, train.image_shape, train.num_classes, seed=derive_seed(seed, 50 + i), **kwargs)
        train_model(on_rand, d_rand, replace(d_rand_cfg, seed=seed + 50 + i), device=device, desc=f"{label} on D_rand")
        clean = predict(real, x, batch_size=batch_size, device=device)
        pred_u = predict(real, x_u, batch_size=batch_size, device=device)
        pred_t = predict(real, x_t, batch_size=batch_size, device=device)
        out["archs"].append({
            "label": label, "name": name, "kwargs": kwargs,
            "real_test_accuracy": accuracy(real, test, device=device),
            "transfer_untargeted": _rate(pred_u != y, fooled & (clean == y)),
            "transfer_targeted": _rate(pred_t == target, reached),
            "adversarial_accuracy_untargeted": float((pred_u == y).float().mean()),
            "d_rand_test_accuracy": accuracy(on_rand, test, device=device),
            "d_rand_fit_accuracy": accuracy(on_rand, d_rand, device=device),
        })
    rows = out["archs"]
    out["correlation"] = {
        "targeted_vs_d_rand": correlation([r["transfer_targeted"] for r in rows], [r["d_rand_test_accuracy"] for r in rows]),
        "untargeted_vs_d_rand": correlation([r["transfer_untargeted"] for r in rows], [r["d_rand_test_accuracy"] for r in rows]),
    }
    return out


def plot_transfer(result: dict[str, Any], path: str | Path) -> Path:
    """Fig. 3 of Ilyas et al.: per architecture, the source's transfer rate (x) against the real test
    accuracy of the architecture trained on D_rand (y); filled = targeted, open = untargeted."""
    from .figures import plot_transfer as _plot

    return _plot(result, Path(path))
