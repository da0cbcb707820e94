"""Small pieces the science experiments share: seeded models, architecture specs, predictions,
the pixel-texture filter of the planted benchmark.

A fresh model's initial weights come from an explicit :class:`torch.Generator` (PyTorch's default
initialisation, redrawn from that generator), so an experiment is repeatable from its seed without
touching the global random state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..data.dataset import ImageDataset
from ..errors import ConfigError
from ..evaluate.metrics import predict as predict_on
from ..models import build_model
from ..seeding import generator

ArchLike = str | tuple[str, Mapping[str, Any]] | Mapping[str, Any]


def stream_generator(seed: int, stream: int) -> torch.Generator:
    """An independent generator for one use (``stream``) of an experiment's ``seed``."""
    return generator(seed, 104_729 * (int(stream) + 1))


def init_parameters(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Redraw every Linear / Conv layer's weights with PyTorch's default rule (Kaiming-uniform with
    a = √5, bias uniform in ±1/√fan_in) from ``generator``; normalisation layers are reset."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                if m.bias is not None:
                    fan_in = m.weight[0].numel()
                    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                    nn.init.uniform_(m.bias, -bound, bound, generator=generator)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_parameters()
    return model


def seeded_model(name: str, in_shape: Sequence[int], num_classes: int, *, seed: int, **kwargs: Any) -> nn.Module:
    """``build_model(name, ...)`` with initial weights drawn from ``seed`` alone; the global random
    state is left as it was (the constructor's own draws are made on a forked copy of it)."""
    with torch.random.fork_rng(devices=[]):
        model = build_model(name, in_shape, num_classes, **kwargs)
    return init_parameters(model, torch.Generator().manual_seed(int(seed)))


def parse_arch(spec: ArchLike) -> tuple[str, dict[str, Any], str]:
    """``(name, build kwargs, label)`` from ``"cnn"``, ``("cnn", {"width": 16})`` or
    ``{"name": "cnn", "kwargs": {...}, "label": "cnn-16"}``."""
    if isinstance(spec, str):
        return spec, {}, spec
    if isinstance(spec, Mapping):
        if "name" not in spec:
            raise ConfigError(f"an architecture needs a 'name' (e.g. {{'name': 'cnn', 'kwargs': {{'width': 16}}}}), got {dict(spec)}")
        kwargs = dict(spec.get("kwargs") or {})
        return str(spec["name"]), kwargs, str(spec.get("label") or _label(str(spec["name"]), kwargs))
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], Mapping):
        return spec[0], dict(spec[1]), _label(spec[0], dict(spec[1]))
    raise ConfigError(f"an architecture is a name, a (name, kwargs) pair or a dict with 'name'; got {spec!r}")


def _label(name: str, kwargs: Mapping[str, Any]) -> str:
    if not kwargs:
        return name
    parts = [f"{k}={'x'.join(map(str, v)) if isinstance(v, (list, tuple)) else v}" for k, v in sorted(kwargs.items())]
    return f"{name}({','.join(parts)})"


def predict(model: nn.Module, images: torch.Tensor | ImageDataset, *, batch_size: int = 500,
            device: str | torch.device = "cpu") -> torch.Tensor:
    """The model's classes for ``images`` (or a dataset, read a batch at a time), on the CPU, in eval mode."""
    return predict_on(model, images, batch_size=batch_size, device=device).cpu()


def check_compatible(a: ImageDataset, b: ImageDataset, *, what: str) -> None:
    """Refuse two datasets with different image shapes or class counts."""
    from ..errors import DataError

    if a.image_shape != b.image_shape or a.num_classes != b.num_classes:
        raise DataError(f"{what}: {a.name} has images {a.image_shape} and {a.num_classes} classes but {b.name} has "
                        f"{b.image_shape} and {b.num_classes}; build both from the same dataset")


_CHECKER_KERNEL = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).view(1, 1, 2, 2) / 4


def pixel_texture(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H−1, W−1) signed 2×2 mixed differences ``(a − b − c + d)/4`` of the channel mean: a
    checkerboard's amplitude, nearly nothing of a smooth pattern."""
    return torch.nn.functional.conv2d(images.mean(1, keepdim=True), _CHECKER_KERNEL.to(images))
