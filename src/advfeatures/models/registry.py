"""Build models by name and store them without pickle.

A saved model is one safetensors file: the state dict as tensors, and in its metadata the
architecture name and constructor arguments as JSON, so loading never executes code from the file.

A model built from a user's factory (:func:`advfeatures.models.load_any_model` with
``arch="module.path:factory"``, or :func:`advfeatures.models.build_from_factory`) is saved the same
way, its metadata recording the factory's name and arguments. The name is only a record: loading
never imports code a file names, so :func:`load_model` refuses such a file and
``load_any_model(path, arch="module.path:factory")`` (the CLI's ``--arch``) re-loads it, with the
recorded arguments unless others are given.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from torch import nn

from ..errors import ModelError
from ..storage import save_safetensors_atomic
from .resnet import resnet18, resnet50
from .small import MLP, SmallCNN
from .torchvision_resnet import tv_resnet18, tv_resnet50

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "cnn": SmallCNN,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "tv_resnet18": tv_resnet18,
    "tv_resnet50": tv_resnet50,
}


# the most classes a model is built with: metadata asking for more (crafted or corrupt, e.g. 10**12)
# would allocate a head of that width before anything could fail; the largest real label sets
# (ImageNet-21k: 21 841) are far below it
MAX_CLASSES = 100_000


def build_model(name: str, in_shape: Sequence[int], num_classes: int, **kwargs: Any) -> nn.Module:
    """A fresh model ``name`` (one of :data:`MODELS`); ``kwargs`` go to its constructor."""
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")
    if num_classes < 2:
        raise ModelError(f"a classifier needs at least 2 classes, got {num_classes}")
    if num_classes > MAX_CLASSES:
        raise ModelError(f"num_classes={num_classes} is more than the {MAX_CLASSES} classes a model may have; "
                         "check the model's metadata or the dataset's labels")
    from ..validate import arch_kwargs

    arch_kwargs(name, kwargs)
    try:
        model = MODELS[name](tuple(in_shape), int(num_classes), **kwargs)
    except TypeError as exc:  # an unknown or missing keyword argument
        raise ModelError(f"arch {name!r} does not take arch_kwargs {json.dumps(kwargs, default=str)} ({exc})") from None
    except (ValueError, RuntimeError) as exc:  # sizes the layers cannot take
        if isinstance(exc, ModelError):
            raise
        raise ModelError(f"cannot build {name} for {tuple(in_shape)} images with {kwargs}: {' '.join(str(exc).split())[:200]}") from None
    model.arch = {"name": name, "in_shape": list(in_shape), "num_classes": int(num_classes), "kwargs": kwargs}
    return model


def save_model(model: nn.Module, path: str | Path, *, extra: dict[str, Any] | None = None) -> None:
    """Write ``model`` (built by :func:`build_model`, or from a factory by
    :func:`~advfeatures.models.load_any_model` / :func:`~advfeatures.models.build_from_factory`)
    to ``path`` atomically as safetensors."""
    arch = getattr(model, "arch", None)
    if arch is None:
        raise ModelError("only models made by advfeatures.models.build_model, load_any_model or build_from_factory "
                         "can be saved with their architecture")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    try:
        meta = {"arch": json.dumps(arch), "extra": json.dumps(extra or {})}
    except TypeError as exc:
        raise ModelError(f"the model's architecture arguments must be JSON values to be saved ({exc})") from None
    save_safetensors_atomic(state, path, metadata=meta)


def _stored_shapes(path: Path) -> list[list[int]]:
    """The shapes of the tensors stored in the safetensors file ``path`` (read from its header only)."""
    with safe_open(str(path), framework="pt") as f:
        return [list(f.get_slice(k).get_shape()) for k in f.keys()]


def _check_classes_against_tensors(path: Path, shapes: list[list[int]], num_classes: int) -> None:
    """A saved classifier's head has ``num_classes`` outputs, so some stored tensor has a dimension of
    that size; metadata naming another count (crafted or corrupt) is refused before anything is built."""
    if shapes and not any(num_classes in s for s in shapes):
        raise ModelError(f"{path}: its metadata says num_classes={num_classes} but no stored tensor has a dimension of "
                         "that size (the output layer's width); the file is corrupt or was edited")


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save_model` (no code from the file runs)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist; train one first or check the path")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        arch = json.loads(meta["arch"])
        if not isinstance(arch, dict):
            raise KeyError("arch")
        if "factory" in arch:
            raise ModelError(f"{path} holds a model built by the factory {arch['factory']!r}; loading never imports code a "
                             f"file names: load it with load_any_model(path, arch={arch['factory']!r}) (--arch)")
        name, kwargs, num_classes = arch["name"], arch["kwargs"], arch["num_classes"]
        if not isinstance(name, str) or not isinstance(kwargs, dict) or type(num_classes) is not int:
            raise KeyError("arch")  # metadata of other types (crafted or corrupt) would fail deep in the constructor
        _check_classes_against_tensors(path, _stored_shapes(path), num_classes)
        model = build_model(name, arch["in_shape"], num_classes, **kwargs)
        model.load_state_dict(load_file(str(path)))
        extra = json.loads(meta.get("extra", "{}"))
        if not isinstance(extra, dict):
            raise KeyError("extra")
    except (SafetensorError, KeyError, json.JSONDecodeError, RuntimeError) as exc:
        raise ModelError(f"{path} is not an advfeatures model file ({exc.__class__.__name__}); save it with save_model") from None
    model.extra = extra
    return model.to(device).eval()
