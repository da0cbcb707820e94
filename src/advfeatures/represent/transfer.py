"""Transfer learning from a source model's representation (Salman et al. 2020, "Do Adversarially
Robust ImageNet Models Transfer Better?").

* *Fixed-feature* transfer (a linear probe): freeze g, fit a softmax-regression head on g(x) of the
  target's training images (features standardised with the training mean and std, L-BFGS to
  convergence, so no learning-rate choice favours either source), report test accuracy.
* *Full fine-tuning*: replace the head by a fresh one for the target's classes and train every
  weight with :func:`advfeatures.train.train_model` (SGD, no augmentation by default).

Target images are adapted to the source's input shape: bilinear resizing with
``F.interpolate`` (area averaging when shrinking) and channel repetition (1 → 3) or averaging
(3 → 1). :func:`transfer_table` runs both modes for several sources (e.g. standard vs robust) and
returns one table.

    table = transfer_table({"standard": std, "robust": rob}, digits_train, digits_test)
    table["table"]["robust"]["fixed-feature"]
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.loop import eval_mode
from ..data.dataset import ImageDataset
from ..errors import ConfigError, ModelError
from ..evaluate import accuracy
from ..models.base import Classifier, as_classifier
from ..storage import iter_chunks
from ..threats import check_positive, check_steps
from ..train import TrainConfig, train_model

log = logging.getLogger(__name__)

MODES = ("fixed-feature", "full-fine-tuning")


def input_shape_of(model: nn.Module) -> tuple[int, int, int]:
    """The (C, H, W) a model built by :func:`advfeatures.models.build_model` expects."""
    arch = getattr(model, "arch", None)
    if not arch or "in_shape" not in arch:
        raise ModelError("cannot tell the source model's input shape; pass input_shape=(C, H, W)")
    return tuple(int(s) for s in arch["in_shape"])  # type: ignore[return-value]


def adapt_images(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Resize (N, C, H, W) images to ``shape`` = (C', H', W') and match the channel count."""
    c, h, w = (int(s) for s in shape)
    if tuple(x.shape[2:]) != (h, w):
        shrinking = x.shape[2] >= h and x.shape[3] >= w
        x = F.interpolate(x, size=(h, w), mode="area") if shrinking else F.interpolate(x, size=(h, w), mode="bilinear",
                                                                                         align_corners=False)
    if x.shape[1] != c:
        if x.shape[1] == 1:
            x = x.expand(-1, c, -1, -1)
        elif c == 1:
            x = x.mean(1, keepdim=True)
        else:
            raise ConfigError(f"cannot map {x.shape[1]} channels onto {c}; use 1- or {c}-channel images")
    return x.clamp(0.0, 1.0).contiguous()


def adapt_dataset(data: ImageDataset, shape: Sequence[int]) -> ImageDataset:
    return ImageDataset(adapt_images(data.images, shape), data.labels, data.classes, f"{data.name}@{'x'.join(map(str, shape))}",
                        dict(data.info))


def extract_features(model: nn.Module, images: torch.Tensor, *, batch_size: int = 500) -> torch.Tensor:
    """g(x) for every image, (N, D) on the CPU (any model: see :func:`advfeatures.models.representation`)."""
    clf = as_classifier(model)
    device = next(model.parameters()).device
    parts = []
    with torch.no_grad(), eval_mode(model):
        for a, b in iter_chunks(images.shape[0], check_steps(batch_size, "batch_size")):
            parts.append(clf.features(images[a:b].to(device)).flatten(1).float().cpu())
    return torch.cat(parts)


def _fit_softmax(z: torch.Tensor, y: torch.Tensor, num_classes: int, *, l2: float, max_iter: int) -> nn.Linear:
    with torch.random.fork_rng(devices=[]):  # nn.Linear's own init would draw from the global RNG
        head = nn.Linear(z.shape[1], num_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(head(z), y) + 0.5 * l2 * head.weight.pow(2).sum()
        loss.backward()  # the head's own parameters: this is training a probe, not an attack
        return loss

    opt.step(closure)
    return head


def linear_probe(
    model: nn.Module,
    train: ImageDataset,
    test: ImageDataset,
    *,
    input_shape: Sequence[int] | None = None,
    l2: float = 1e-3,
    max_iter: int = 500,
) -> dict[str, float]:
    """Fixed-feature transfer: softmax regression on the frozen, standardised representation."""
    shape = tuple(input_shape) if input_shape is not None else input_shape_of(model)
    z_train = extract_features(model, adapt_images(train.images, shape))
    z_test = extract_features(model, adapt_images(test.images, shape))
    mean, std = z_train.mean(0), z_train.std(0).clamp_min(1e-6)
    z_train, z_test = (z_train - mean) / std, (z_test - mean) / std
    with torch.enable_grad():
        head = _fit_softmax(z_train, train.labels, train.num_classes, l2=check_positive("l2", l2, allow_inf=False),
                            max_iter=check_steps(max_iter, "max_iter"))
    with torch.no_grad():
        acc_train = float((head(z_train).argmax(1) == train.labels).float().mean())
        acc_test = float((head(z_test).argmax(1) == test.labels).float().mean())
    return {"train_accuracy": acc_train, "test_accuracy": acc_test, "feature_dim": int(z_train.shape[1])}


def fine_tune(
    model: nn.Module,
    train: ImageDataset,
    test: ImageDataset,
    *,
    input_shape: Sequence[int] | None = None,
    config: TrainConfig | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Full fine-tuning of a copy of ``model`` with a new head for ``train``'s classes."""
    shape = tuple(input_shape) if input_shape is not None else input_shape_of(model)
    cfg = config or TrainConfig(epochs=10, batch_size=128, lr=0.01, crop_padding=0, flip=False)
    source = as_classifier(model)
    features = copy.deepcopy(source.features)
    dim = int(source.head.in_features) if isinstance(source.head, nn.Linear) else None
    if dim is None:
        raise ModelError("fine-tuning needs a model whose head is an nn.Linear")
    with torch.random.fork_rng(devices=[]):  # its default init is overwritten below from our own generator
        head = nn.Linear(dim, train.num_classes)
    gen = torch.Generator().manual_seed(cfg.seed)
    bound = 1.0 / math.sqrt(dim)
    with torch.no_grad():  # PyTorch's default scale, drawn from our own generator
        head.weight.copy_(torch.rand(head.weight.shape, generator=gen) * 2 * bound - bound)
        head.bias.copy_(torch.rand(head.bias.shape, generator=gen) * 2 * bound - bound)
    tuned = Classifier(features, head).to(device)
    train_a, test_a = adapt_dataset(train, shape), adapt_dataset(test, shape)
    history = train_model(tuned, train_a, cfg, device=device, desc="fine-tune")
    return {"train_accuracy": history[-1]["train_accuracy"] if history else float("nan"),
            "test_accuracy": accuracy(tuned, test_a, device=device)}


def transfer_table(
    sources: Mapping[str, nn.Module],
    train: ImageDataset,
    test: ImageDataset,
    *,
    modes: Sequence[str] = MODES,
    input_shape: Sequence[int] | None = None,
    probe_l2: float = 1e-3,
    probe_max_iter: int = 500,
    fine_tune_config: TrainConfig | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Every source in every mode on the same target split; returns ``{"target", "target_shape",
    "source_shapes", "modes", "rows": [{"source", "mode", "train_accuracy", "test_accuracy"}],
    "table": {source: {mode: test_accuracy}}}``."""
    if not sources:
        raise ConfigError("transfer needs at least one source model")
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ConfigError(f"unknown transfer mode(s) {bad}; choose from {', '.join(MODES)}")
    rows: list[dict[str, Any]] = []
    shapes = {}
    for name, model in sources.items():
        shape = tuple(input_shape) if input_shape is not None else input_shape_of(model)
        shapes[name] = list(shape)
        for mode in modes:
            if mode == "fixed-feature":
                res = linear_probe(model, train, test, input_shape=shape, l2=probe_l2, max_iter=probe_max_iter)
            else:
                res = fine_tune(model, train, test, input_shape=shape, config=fine_tune_config, device=device)
            rows.append({"source": name, "mode": mode, "train_accuracy": res["train_accuracy"],
                         "test_accuracy": res["test_accuracy"]})
            log.info("transfer %s (%s) → %s: %.4f", name, mode, train.name, res["test_accuracy"])
    table = {name: {r["mode"]: r["test_accuracy"] for r in rows if r["source"] == name} for name in sources}
    return {"target": train.name.removesuffix("-train"), "target_shape": list(train.image_shape), "source_shapes": shapes, "modes": list(modes),
            "n_train": len(train), "n_test": len(test), "rows": rows, "table": table}
