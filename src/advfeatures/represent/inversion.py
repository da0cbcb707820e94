"""Representation inversion and interpolation (Engstrom et al. 2019, "Adversarial Robustness as a
Prior for Learned Representations", Sec. 4.1).

*Inversion*: from a seed x₀ (noise N(0.5, 0.05²), or another image) minimise
‖g(x) − g(x_target)‖₂ / ‖g(x_target)‖₂ by L2-normalised gradient steps inside [0, 1] with no ε
limit. This is exactly the representation matching behind D_R / D_NR, so :func:`invert` runs
:func:`advfeatures.construct.match_representation`. *Interpolation*: invert the linear mixes
(1 − α)·g(x_a) + α·g(x_b).

Defaults: the paper's step 0.1 (its CIFAR range is 0.1–1) and 1000 steps (it allows up to 10 000).
The fake ReLU (identity backward through the last ReLU of ``g``) is on, as in the reference code
(where the model has our ``PenultimateReLU``; other models keep their true gradient). Every entry
point takes ``layer=``: g is then the output of that ``named_modules()`` layer, so any
``nn.Module`` can be inverted (by default g is its ``features``, or the input of its last
``nn.Linear``).

Metrics make "robust representations are more invertible" a number: the final relative
representation distance, and the pixel L2 distance of each inversion to its target image.
:func:`compare_inversions` puts models (e.g. a standard and a robust one) side by side, optionally adding a
held-out classifier's accuracy on the inverted images (use a different architecture than the two
inverted models: adversarial, non-robust features transfer between models of one family).

    res = invert(robust_model, x, generator=torch.Generator().manual_seed(0))
    res.summary()  # {"representation_distance": ..., "pixel_l2": ..., ...}
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from ..attacks.loop import eval_mode
from ..construct import MatchingConfig, match_representation, random_pairing
from ..construct import match_goal as construct_match_goal
from ..data.dataset import ImageDataset, check_images
from ..errors import ConfigError
from ..models.base import as_classifier
from ..storage import iter_chunks, write_json_atomic
from ..threats import check_steps
from .figures import image_grid, interpolation_grid

log = logging.getLogger(__name__)

NOISE_MEAN = 0.5
NOISE_STD = 0.05


@dataclass
class InversionResult:
    images: torch.Tensor  # (N, C, H, W) the inverted images
    representation_distance: torch.Tensor  # (N,) ‖g(x) − goal‖₂ / ‖goal‖₂ reached
    pixel_l2: torch.Tensor | None = None  # (N,) ‖x − x_target‖₂, when there is a target image
    start: torch.Tensor | None = None  # (N, C, H, W) the seeds

    def summary(self) -> dict[str, float | None]:
        d = self.representation_distance.float()
        out: dict[str, float | None] = {"representation_distance": float(d.mean()),
                                        "representation_distance_median": float(d.median())}
        if self.pixel_l2 is not None:
            p = self.pixel_l2.float()
            out.update(pixel_l2=float(p.mean()), pixel_l2_median=float(p.median()))
        return out


def noise_seeds(like: torch.Tensor, *, generator: torch.Generator | None = None, mean: float = NOISE_MEAN,
                std: float = NOISE_STD) -> torch.Tensor:
    """Seeds x₀ ~ N(mean, std²) per pixel, clipped to [0, 1], shaped like ``like`` (the paper's noise)."""
    z = torch.randn(like.shape, generator=generator, device=generator.device if generator is not None else like.device,
                    dtype=like.dtype).to(like.device)  # drawn where the generator lives
    return (mean + std * z).clamp_(0.0, 1.0)


def _check_pair(x: torch.Tensor, start: torch.Tensor, what: str) -> None:
    check_images(x, what="target images")
    check_images(start, what=what)
    if start.shape != x.shape:
        raise ConfigError(f"{what} must have the targets' shape {tuple(x.shape)}, got {tuple(start.shape)}")


def invert(
    model: nn.Module,
    x_target: torch.Tensor,
    *,
    start: torch.Tensor | None = None,
    steps: int = 1000,
    step_size: float = 0.1,
    use_fake_relu: bool = True,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
    layer: str | None = None,
) -> InversionResult:
    """Invert ``model``'s representation (``layer``'s output when named) of ``x_target`` from
    ``start`` (noise seeds when None)."""
    if start is None:
        start = noise_seeds(x_target, generator=generator)
    _check_pair(x_target, start, "inversion seeds")
    cfg = MatchingConfig(steps=steps, step_size=step_size, normalize=True, fake_relu=use_fake_relu).validate()
    check_steps(batch_size, "batch_size")
    images, dists = [], []
    for a, b in iter_chunks(x_target.shape[0], batch_size):
        x, d = match_representation(model, x_target[a:b], start[a:b], cfg, layer=layer)
        images.append(x)
        dists.append(d)
    x_inv = torch.cat(images)
    pixel = (x_inv - x_target).flatten(1).norm(dim=1)
    return InversionResult(x_inv, torch.cat(dists), pixel, start)


def match_goal(model: nn.Module, goal: torch.Tensor, start: torch.Tensor, *, steps: int, step_size: float,
               use_fake_relu: bool = True, layer: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ‖g(x) − goal‖₂ / ‖goal‖₂ from ``start`` for given representation vectors ``goal``
    (N, D): :func:`advfeatures.construct.match_goal` with the paper's normalisation."""
    cfg = MatchingConfig(steps=steps, step_size=step_size, fake_relu=use_fake_relu).validate()
    return construct_match_goal(model, goal, start, cfg, layer=layer)


def interpolate(
    model: nn.Module,
    x_a: torch.Tensor,
    x_b: torch.Tensor,
    *,
    num: int = 8,
    start: torch.Tensor | None = None,
    steps: int = 1000,
    step_size: float = 0.1,
    use_fake_relu: bool = True,
    generator: torch.Generator | None = None,
    layer: str | None = None,
) -> tuple[InversionResult, torch.Tensor]:
    """Invert (1 − α)·g(x_a) + α·g(x_b) for ``num`` values of α from 0 to 1.

    Returns the result (images (N·num, C, H, W), pair-major: pair i's α sweep is rows
    i·num … i·num + num − 1) and the α values (num,). Seeds are noise unless ``start``
    (N·num, C, H, W) is given.
    """
    _check_pair(x_a, x_b, "interpolation end points")
    num = check_steps(num, "num")
    if num < 2:
        raise ConfigError(f"interpolation needs num ≥ 2 points (both ends), got {num}")
    clf = as_classifier(model, layer)
    alphas = torch.linspace(0.0, 1.0, num, device=x_a.device)
    with torch.no_grad(), eval_mode(model):
        ga, gb = clf.features(x_a).flatten(1), clf.features(x_b).flatten(1)
    goal = ((1 - alphas.view(1, -1, 1)) * ga[:, None] + alphas.view(1, -1, 1) * gb[:, None]).flatten(0, 1)
    shape = (x_a.shape[0] * num, *x_a.shape[1:])
    if start is None:
        start = noise_seeds(x_a.new_empty(shape), generator=generator)
    elif tuple(start.shape) != shape:
        raise ConfigError(f"interpolation seeds must have shape {shape} (N·num images), got {tuple(start.shape)}")
    x, d = match_goal(model, goal, start, steps=steps, step_size=step_size, use_fake_relu=use_fake_relu, layer=layer)
    return InversionResult(x, d, None, start), alphas


def _held_out_accuracy(model: nn.Module | None, x: torch.Tensor, y: torch.Tensor) -> float | None:
    if model is None:
        return None
    with torch.no_grad(), eval_mode(model):
        return float((model(x).argmax(1) == y).float().mean())


_RESERVED = {"n", "layer", "steps", "step_size", "start", "seed", "dataset", "indices", "start_pixel_l2", "models", "robust_closer",
             "held_out_accuracy_on_targets", "figure", "json", "interpolation"}


def interpolate_pairs(models: Mapping[str, nn.Module], data: ImageDataset, *, num: int, pairs: int = 4, steps: int = 1000,
                      step_size: float = 0.1, seed: int = 0,
                      layer: str | None = None) -> tuple[torch.Tensor, dict[str, tuple[InversionResult, torch.Tensor]]]:
    """:func:`interpolate` between the same ``pairs`` random pairs of ``data``'s images through each
    of ``models`` (noise seeds, drawn from one generator seeded by ``seed``, model after model).

    Returns the pairs' indices (2, pairs) and, per model name, the result and the α values."""
    pairs = check_steps(pairs, "pairs")
    if 2 * pairs > len(data):
        raise ConfigError(f"{pairs} interpolation pairs need {2 * pairs} images; {data.name} has {len(data)}")
    device = next(next(iter(models.values())).parameters()).device
    gen = torch.Generator().manual_seed(int(seed))
    index = torch.randperm(len(data), generator=gen)[: 2 * pairs].view(2, pairs)
    xa, xb = data.batch(index[0])[0].to(device), data.batch(index[1])[0].to(device)
    return index, {name: interpolate(model, xa, xb, num=num, steps=steps, step_size=step_size, generator=gen, layer=layer)
                   for name, model in models.items()}


def compare_inversions(
    models: Mapping[str, nn.Module],
    data: ImageDataset,
    out_dir: Path,
    *,
    n: int = 16,
    steps: int = 1000,
    step_size: float = 0.1,
    start: Literal["noise", "image"] = "noise",
    seed: int = 0,
    held_out_model: nn.Module | None = None,
    layer: str | None = None,
    interpolation: int = 0,
) -> dict[str, Any]:
    """Invert the same ``n`` images of ``data`` through each of ``models`` from the same seeds
    (through ``layer``'s output when named: a ``named_modules()`` name every model has); write
    ``inversion.png`` (targets, seeds, one row per model) and ``inversion.json`` to ``out_dir`` and
    return the metrics. With ``interpolation`` > 0, also invert that many points between four
    random pairs of images through each model (:func:`interpolate_pairs`, seeded by ``seed``) and
    draw ``interpolation-<name>.png``.

    Images and seeds are chosen by ``seed`` (a random subset; ``start="image"`` seeds each
    inversion with another random image of the subset). The returned dict has one entry per model
    name, each with ``pixel_l2`` (mean L2 to the targets), ``pixel_l2_median``,
    ``representation_distance`` (mean final relative distance), ``representation_distance_median``
    and ``held_out_accuracy`` (the held-out classifier's accuracy on the inverted images w.r.t. the
    targets' labels, None without ``held_out_model``); plus ``robust_closer`` (with models named
    ``standard`` and ``robust``: robust mean pixel L2 < standard's), ``start_pixel_l2`` (seeds to
    targets), ``held_out_accuracy_on_targets``, ``n``, ``steps``, ``step_size``, ``start``,
    ``seed``, ``layer``, ``dataset``, ``indices``, ``models``, ``figure`` and ``json`` (paths), and
    with interpolation ``interpolation``: per model its summary, ``alphas`` and ``figure``.
    """
    if start not in ("noise", "image"):
        raise ConfigError(f"start must be 'noise' or 'image', got {start!r}")
    if not models or _RESERVED & set(models):
        raise ConfigError(f"give at least one model, named other than {', '.join(sorted(_RESERVED))}")
    n = check_steps(n, "n")
    if n > len(data) or (start == "image" and n < 2):
        raise ConfigError(f"n must be between {2 if start == 'image' else 1} and the dataset size {len(data)}, got {n}")
    out_dir = Path(out_dir)
    device = next(next(iter(models.values())).parameters()).device
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(len(data), generator=gen)[:n]
    x, y = (t.to(device) for t in data.batch(idx))  # only the n images shown are read
    if start == "noise":
        seeds = noise_seeds(x.cpu(), generator=gen).to(device)
    else:
        seeds = x[random_pairing(n, seed).to(device)]
    summary: dict[str, Any] = {"n": n, "steps": steps, "step_size": step_size, "start": start, "seed": seed, "layer": layer,
                               "dataset": data.name, "indices": idx.tolist(), "models": list(models),
                               "start_pixel_l2": float((seeds - x).flatten(1).norm(dim=1).mean())}
    rows, labels = [x, seeds], ["target", f"seed ({start})"]
    for name, model in models.items():
        res = invert(model, x, start=seeds, steps=steps, step_size=step_size, layer=layer)
        summary[name] = {**res.summary(), "held_out_accuracy": _held_out_accuracy(held_out_model, res.images, y)}
        log.info("inversion through the %s model: %s", name, summary[name])
        rows.append(res.images)
        labels.append(f"{name}\nL2 {summary[name]['pixel_l2']:.2f}")
    summary["held_out_accuracy_on_targets"] = _held_out_accuracy(held_out_model, x, y)
    fig = image_grid(rows, out_dir / "inversion.png", row_labels=labels, col_labels=[data.classes[int(c)] for c in y.cpu()],
                     title=f"Inverting representations ({data.name}, {steps} steps of {step_size:g}); "
                           "L2 = mean pixel distance to target")
    if "standard" in models and "robust" in models:
        summary["robust_closer"] = summary["robust"]["pixel_l2"] < summary["standard"]["pixel_l2"]
    summary.update(figure=str(fig), json=str(out_dir / "inversion.json"))
    if interpolation:
        _, done = interpolate_pairs(models, data, num=interpolation, steps=steps, step_size=step_size, seed=seed, layer=layer)
        summary["interpolation"] = {}
        for name, (inv, alphas) in done.items():
            path = interpolation_grid(inv.images, alphas.tolist(), out_dir / f"interpolation-{name}.png",
                                      title=f"Inverting (1−α)·g(a) + α·g(b) through the {name} model")
            summary["interpolation"][name] = {**inv.summary(), "alphas": alphas.tolist(), "figure": str(path)}
    write_json_atomic(out_dir / "inversion.json", summary)
    return summary
