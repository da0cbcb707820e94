"""Units versus directions (Szegedy et al. 2014, "Intriguing properties of neural networks", Sec. 3).

For a layer φ, the held-out images that most activate one unit, argmax_x ⟨φ(x), e_i⟩, look as
semantically coherent as those that most activate a random direction, argmax_x ⟨φ(x), v⟩: the
space, not the individual units, holds the semantics. Besides the two image grids this module
measures the coherence: the *label purity* of each top-k set (the share of its most frequent
class), against the purity of random k-subsets.

The layer is named as in ``model.named_modules()`` (its output is flattened, one unit per
coordinate), or is the representation g (the default).

    out = units_vs_directions(model, test, layer="features.2", top_k=8, seed=0)
    out["mean_purity_units"], out["mean_purity_directions"], out["chance_purity"]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..attacks.loop import eval_mode
from ..data.dataset import ImageDataset
from ..errors import ConfigError, ModelError
from ..models.base import as_classifier, layer_names  # noqa: F401 (layer_names: re-exported)
from ..storage import iter_chunks
from ..threats import check_steps
from .visualize import random_directions


def layer_activations(model: nn.Module, x: torch.Tensor | ImageDataset, *, layer: str | None = None,
                      batch_size: int = 500) -> torch.Tensor:
    """The flattened output of ``layer`` (the representation g when None) for ``x``, (N, D): a
    tensor of images, or an :class:`ImageDataset` read ``batch_size`` images at a time."""
    try:
        features = as_classifier(model, layer).features
    except ModelError as exc:  # an unknown layer name is a setting to fix, as everywhere in this module
        raise ConfigError(str(exc)) from None
    device = next(model.parameters()).device
    batch_size = check_steps(batch_size, "batch_size")
    if isinstance(x, ImageDataset):
        batches = (xb for xb, _ in x.iter_batches(batch_size))
    else:
        batches = (x[a:b] for a, b in iter_chunks(x.shape[0], batch_size))
    with torch.no_grad(), eval_mode(model):
        parts = [features(xb.to(device)).flatten(1).float() for xb in batches]
    return torch.cat(parts)


def live_units(activations: torch.Tensor, num: int, *, generator: torch.Generator, fix: str) -> list[int]:
    """``num`` random units (columns of ``activations``, (N, D)) that vary over the N images; a
    layer whose every unit is constant is an error whose message ends with ``fix``."""
    live = (activations.std(0) > 0).nonzero().flatten().cpu()
    if live.numel() == 0:
        raise ConfigError(f"every unit of this layer is constant on these images; {fix}")
    return live[torch.randperm(live.numel(), generator=generator)[:num]].tolist()


def label_purity(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """For index sets ``labels`` (S, k): the share of the most frequent class in each row, (S,)."""
    counts = torch.nn.functional.one_hot(labels, num_classes).sum(1)
    return counts.amax(1).float() / labels.shape[1]


def units_vs_directions(
    model: nn.Module,
    data: ImageDataset,
    *,
    layer: str | None = None,
    units: list[int] | None = None,
    num: int = 4,
    top_k: int = 8,
    seed: int = 0,
    chance_draws: int = 500,
) -> dict[str, Any]:
    """The ``top_k`` images of ``data`` that most activate each of ``num`` units (random live units
    unless ``units`` is given) and each of ``num`` random directions of ``layer``.

    Returns ``{"layer", "dim", "top_k", "units": [{"unit", "indices", "activations", "labels",
    "purity"}], "directions": [{"indices", "activations", "labels", "purity"}], "mean_purity_units",
    "mean_purity_directions", "chance_purity"}``.
    """
    top_k = check_steps(top_k, "top_k")
    num = check_steps(num, "num")
    if top_k > len(data):
        raise ConfigError(f"top_k ({top_k}) exceeds the number of images ({len(data)})")
    acts = layer_activations(model, data, layer=layer).cpu()
    dim = acts.shape[1]
    gen = torch.Generator().manual_seed(int(seed))
    if units is None:
        units = live_units(acts, num, generator=gen, fix=f"pick another layer than {layer or 'the representation'}")
    elif any(not 0 <= u < dim for u in units):
        raise ConfigError(f"units must lie in [0, {dim - 1}] for layer {layer or 'representation'}")
    dirs = torch.cat([torch.eye(dim)[units], random_directions(num, dim, generator=gen)])
    scores = acts @ dirs.T  # (N, U + num)
    values, indices = scores.topk(top_k, dim=0)  # (k, U + num)
    labels = data.labels[indices.T]  # (U + num, k)
    purity = label_purity(labels, data.num_classes)
    rows = [{"indices": indices[:, j].tolist(), "activations": values[:, j].tolist(), "labels": labels[j].tolist(),
             "purity": float(purity[j])} for j in range(dirs.shape[0])]
    unit_rows = [{"unit": int(u), **r} for u, r in zip(units, rows[: len(units)], strict=True)]
    dir_rows = rows[len(units):]
    draws = torch.rand((check_steps(chance_draws, "chance_draws"), len(data)), generator=gen).topk(top_k, dim=1).indices
    return {
        "layer": layer or "representation", "dim": dim, "top_k": top_k, "units": unit_rows, "directions": dir_rows,
        "mean_purity_units": float(purity[: len(units)].mean()),
        "mean_purity_directions": float(purity[len(units):].mean()),
        "chance_purity": float(label_purity(data.labels[draws], data.num_classes).mean()),
    }
