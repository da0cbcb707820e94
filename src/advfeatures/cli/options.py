"""The options every command shares, defined once: where the model comes from, where the data
comes from, the seed, the device and the output.

Each decorator adds its options to a command and hands the command one small value instead of a
handful of loose arguments:

* :func:`model_options` adds ``--arch``, ``--arch-kwargs`` and ``--layer`` and passes ``loader``, a
  :class:`ModelLoader` that turns any ``--model`` file (ours, a plain state dict, a MadryLab
  ``robustness`` checkpoint, a torchvision-layout ResNet) into a model checked against the data;
* :func:`data_options` adds ``--dataset``, ``--data`` and ``--data-root`` and passes ``source``, a
  :class:`DataSource` whose ``load(seed)`` gives the (train, test) splits;
* :data:`seed_option`, :data:`device_option` and :func:`out_option` are plain options with one
  default everywhere (the device is ``auto``: a GPU when there is one); :func:`speed_options` adds
  ``--compile``, ``--bf16`` and ``--channels-last``;
* :func:`start_runtime` is what every command calls first: it applies the one runtime
  configuration (global ``--threads``, the command's ``--device`` and speed options).

``--seed`` (:data:`seed_option`) is a plain whole number that each command passes straight to the
library call it makes (``seed=seed``); the library draws its random choices from
``torch.Generator().manual_seed(seed)`` or from streams derived from it (:mod:`advfeatures.seeding`),
never from the global seed.

Nothing here imports torch at import time, so ``advfeatures --help`` stays fast.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError, ModelError

# The built-in datasets (advfeatures.data.DATASETS, kept here so that --help needs no torch; a test
# checks that the two agree).
DATASET_NAMES = ("digits", "fashion-mnist", "mnist", "cifar10")
DEVICES = ("auto", "cpu", "cuda")
# Our architectures by name (advfeatures.models.MODELS; a test checks that the two agree).
ARCH_NAMES = ("mlp", "cnn", "resnet18", "resnet50", "tv_resnet18", "tv_resnet50")


def parse_arch_option(text: str) -> tuple[str, dict[str, Any]]:
    """An architecture on the command line.

    ``"cnn:width=16,hidden=64"`` → ("cnn", {"width": 16, "hidden": 64}); ``"mlp:hidden=256x256"``
    gives hidden=[256, 256] and ``"mlp:hidden=64"`` hidden=[64]. Text whose part after the colon
    has no ``=`` names a factory instead: ``"mypkg.nets:WideResNet"`` → ("mypkg.nets:WideResNet", {}).
    """
    name, _, rest = text.strip().partition(":")
    if rest and name not in ARCH_NAMES and "=" not in rest and "," not in rest:
        if not all(part.isidentifier() for part in name.split(".")) or not all(p.isidentifier() for p in rest.split(".")):
            raise ConfigError(f"bad architecture {text!r}: write NAME[:key=value,...] or module.path:factory")
        return f"{name}:{rest}", {}
    kwargs: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"bad architecture option {text!r}: write NAME or NAME:key=value,key=value (e.g. cnn:width=16)")
        kwargs[key.strip()] = _value(value.strip(), text)
    if not name:
        raise ConfigError(f"bad architecture option {text!r}: it needs a model name first (e.g. cnn:width=16)")
    reserved = {"num_classes", "image_shape", "input_shape", "in_channels"} & set(kwargs)
    if reserved:  # the data decides these: a model is always built for the images and classes it is given
        raise ConfigError(f"bad architecture option {text!r}: {', '.join(sorted(reserved))} come from the data; drop them")
    if name == "mlp" and isinstance(kwargs.get("hidden"), int):
        kwargs["hidden"] = [kwargs["hidden"]]  # an MLP's hidden sizes are a list: mlp:hidden=64 means one layer
    return name, kwargs


def _value(text: str, whole: str) -> Any:
    if "x" in text:
        return [_value(part, whole) for part in text.split("x")]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text in ("true", "false"):
        return text == "true"
    raise ConfigError(f"bad value {text!r} in architecture option {whole!r}: use numbers, NxM lists, true or false")


def parse_list(text: str, option: str, *, example: str, cast: Callable[[str], Any] = str, kind: str = "names") -> list[Any]:
    """A comma-separated option value as a list: items stripped, empty ones dropped (``"a, b,"`` →
    ["a", "b"]), each through ``cast``. One-line errors naming ``option`` when nothing is left (a
    value such as ``","`` would otherwise do nothing) or an item does not cast."""
    items = [v.strip() for v in str(text).split(",") if v.strip()]
    if not items:
        raise ConfigError(f"{option} lists nothing ({text!r}); give comma-separated {kind} such as {example}")
    try:
        return [cast(v) for v in items]
    except ValueError:
        raise ConfigError(f"{option} must be comma-separated {kind} such as {example}, got {text!r}") from None


def parse_json_object(text: str | None, what: str) -> dict[str, Any]:
    """``--arch-kwargs '{"depth": 28}'`` → a dict (one-line error otherwise)."""
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} must be a JSON object such as '{{\"width\": 16}}': {exc.msg}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a JSON object such as '{{\"width\": 16}}', got {text!r}")
    return value


@dataclass(frozen=True)
class ModelLoader:
    """How to read the command's model files: ``arch`` (ours by name, or ``module.path:factory``)
    for files that do not describe themselves, and ``layer``, the module whose output is the
    representation g(x) where the model offers none of its own."""

    arch: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    layer: str | None = None

    def load(self, path: str | Path | None, device, data=None, *, same_classes: bool = True):
        """The model in ``path`` on ``device`` (None for None), checked against ``data`` (an
        ImageDataset) when given: a model built for other images (or, with ``same_classes``, other
        classes) is refused here, before any work."""
        if path is None:
            return None
        from ..models import as_classifier, load_any_model

        _current_folder_importable()
        shape = tuple(data.image_shape) if data is not None else None
        classes = data.num_classes if data is not None and same_classes else None
        model = load_any_model(path, arch=self.arch, arch_kwargs=dict(self.arch_kwargs), in_shape=shape, num_classes=classes,
                               device=device)
        if data is not None:
            from ..validate import check_model_fits

            check_model_fits(model, data, path, same_classes=same_classes)
        return as_classifier(model, layer=self.layer) if self.layer else model

    def describe(self) -> dict[str, Any]:
        return {"arch": self.arch, "arch_kwargs": dict(self.arch_kwargs), "layer": self.layer}

    def build(self, data):
        """A fresh, untrained model of ``arch`` for ``data``'s images and classes."""
        from ..models import MODELS, build_from_factory, build_model

        if self.arch is None:
            raise ConfigError("say which architecture to build: --arch NAME or --arch module.path:factory")
        if self.arch in MODELS:
            return build_model(self.arch, data.image_shape, data.num_classes, **self.arch_kwargs)
        _current_folder_importable()
        model = build_from_factory(self.arch, self.arch_kwargs)
        model.arch["in_shape"] = list(data.image_shape)  # so that later commands check the data against it
        return model


def _current_folder_importable() -> None:
    """A factory's module in the folder the command runs from imports as it would in ``python``
    there (a console script does not put that folder on ``sys.path``); appended, so it never
    shadows an installed package."""
    import os
    import sys

    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)


def model_options(f: Callable) -> Callable:
    """Add ``--arch``, ``--arch-kwargs`` and ``--layer``; the command receives ``loader``."""

    @functools.wraps(f)
    def wrapper(*args, arch: str | None, arch_kwargs: str | None, layer: str | None, **kwargs):
        name, kw = parse_arch_option(arch) if arch else (None, {})
        kw.update(parse_json_object(arch_kwargs, "--arch-kwargs"))
        if kw and name is None:
            raise ConfigError("--arch-kwargs needs --arch (the architecture they configure)")
        return f(*args, loader=ModelLoader(name, kw, layer), **kwargs)

    options = [
        click.option("--arch", default=None, metavar="NAME|MODULE:FACTORY",
                     help="Architecture of model files that do not record one (a plain state dict): one of ours "
                          "(mlp, cnn, resnet18, resnet50, tv_resnet18, tv_resnet50; NAME:key=value,...) or an importable "
                          "function or class returning an nn.Module, e.g. mynets:WideResNet."),
        click.option("--arch-kwargs", default=None, metavar="JSON", help="Keyword arguments of --arch as a JSON object."),
        click.option("--layer", default=None, metavar="NAME",
                     help="The module whose output is the representation g(x): its name in model.named_modules(), or "
                          "as the checkpoint names it (a torchvision-layout ResNet's layer4, avgpool; module.model.layer4 "
                          "in a MadryLab file) [default: the model's features, else the input of its last nn.Linear]."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


@dataclass(frozen=True)
class DataSource:
    """A built-in dataset by name, or the user's data at a path (an ImageFolder tree, .npz/.npy
    arrays, MadryLab's released tensors)."""

    dataset: str | None = "digits"
    data: str | None = None
    root: str | None = None
    workers: int = 0  # DataLoader processes decoding an image folder (the batches are the same)

    def load(self, *, seed: int = 0):
        """(train, test) splits; ``seed`` draws the split where the data has none of its own."""
        from ..data import load_data

        return load_data(self.dataset, self.data, root=self.root, seed=seed, workers=self.workers)

    def split(self, which: str, *, seed: int = 0):
        train, test = self.load(seed=seed)
        return train if which == "train" else test

    @property
    def label(self) -> str:
        return str(self.data) if self.data is not None else str(self.dataset)

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "data": self.data, "data_root": self.root}


workers_option = click.option(
    "--workers", default=0, show_default=True, type=click.IntRange(min=0), metavar="N",
    help="Processes decoding the images of a --data image folder (PNG/JPEG) while the model works; the "
         "batches, and so the results, are the same as with 0 (decode in this process).")


def data_options(help: str = "Built-in dataset.") -> Callable[[Callable], Callable]:
    """Add ``--dataset``, ``--data`` and ``--data-root``; the command receives ``source``."""

    def decorate(f: Callable) -> Callable:
        @functools.wraps(f)
        def wrapper(*args, dataset: str | None, data: str | None, data_root: str | None, workers: int, **kwargs):
            return f(*args, source=DataSource(dataset or ("digits" if data is None else None), data, data_root, workers), **kwargs)

        options = [
            click.option("--dataset", type=click.Choice(DATASET_NAMES), default=None,
                         help=f"{help} [default: digits]. With --data, the test split comes from this built-in set "
                              "(how MadryLab's constructed CIFAR sets are evaluated)."),
            click.option("--data", default=None, metavar="PATH",
                         help="Your own data instead: an ImageFolder tree (a folder per class, or train/ and test/), "
                              "a .npz file, a folder of images.npy + labels.npy, or MadryLab's released CIFAR_ims/CIFAR_lab."),
            click.option("--data-root", default=None, type=click.Path(file_okay=False),
                         help="Folder holding a built-in dataset's files (mnist, cifar10; fashion-mnist has a default)."),
            workers_option,
        ]
        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate


def model_file_option(*names: str, required: bool = True, multiple: bool = False,
                      help: str = "A model file: advfeatures' own .safetensors, a state dict (.pt/.pth/.safetensors, "
                                  "with --arch), a MadryLab robustness checkpoint or a torchvision-layout ResNet.") -> Callable:
    return click.option(*names, required=required, multiple=multiple, type=click.Path(dir_okay=False, path_type=Path), help=help)


seed_option = click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0, max=2**63 - 1),
                           help="Seed of every random choice.")
device_option = click.option("--device", default="auto", show_default=True, type=click.Choice(DEVICES),
                             help="Where to compute: auto picks a GPU when there is one.")


def out_option(*, folder: bool, required: bool = True, help: str | None = None) -> Callable:
    return click.option("--out", "out", required=required, default=None,
                        type=click.Path(file_okay=not folder, dir_okay=folder, path_type=Path),
                        help=help or ("Folder for the output files." if folder else "Write the results as JSON here."))


def speed_options(f: Callable) -> Callable:
    """Add ``--compile``, ``--bf16`` and ``--channels-last`` (from the one table of runtime options,
    :func:`advfeatures.runtime.runtime_options`); the command receives ``speed``, a dict to pass to
    :func:`start_runtime` (``start_runtime(device, **speed)``)."""
    from ..runtime.config import runtime_options

    rows = [r for r in runtime_options() if r["name"] in ("compile", "bf16", "channels_last")]

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, speed={r["name"]: kwargs.pop(r["name"]) for r in rows}, **kwargs)

    for row in reversed(rows):
        wrapper = click.option(row["option"], row["name"], is_flag=True, help=row["help"])(wrapper)
    return wrapper


def start_runtime(device: str | None = None, *, config=None, **options: Any):
    """Configure where and how fast this command computes, once, at its start: one
    :class:`~advfeatures.runtime.RuntimeConfig` from the global ``--threads``, the command's
    ``--device`` and ``options`` (speed options, ``distributed=True`` for a command that joins
    ``torchrun``'s group), or the given ``config``, applied by
    :func:`advfeatures.runtime.apply_runtime`. Returns the :class:`~advfeatures.runtime.Runtime`
    (its ``device``, ``context`` and ``accelerate``). Torch's thread count is given back when the
    command ends."""
    from ..runtime.config import RuntimeConfig, apply_runtime
    from . import threads_given

    if config is None:
        config = RuntimeConfig.from_options(**{"device": device, "threads": threads_given(), "distributed": False, **options})
    runtime = apply_runtime(config)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        root = ctx.find_root()
        if isinstance(root.obj, dict) and "runtime" not in root.obj:
            root.call_on_close(runtime.restore)  # the first runtime knows the count from before the command
        if isinstance(root.obj, dict):
            root.obj["runtime"] = runtime
    return runtime


def write_result(path: str | Path, result: dict[str, Any], *, command: str | None = None,
                 arguments: dict[str, Any] | None = None, seed: int | None = None) -> None:
    """Write a command's JSON with the one envelope every command shares: ``format``,
    ``advfeatures_version``, ``command``, ``seed``, ``arguments`` and ``torch_version``, then the
    result's own keys. Inside a
    command, the command's name, its arguments and its ``--seed`` are taken from click's context."""
    import torch

    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        command = command or ctx.info_name
        arguments = ctx.params if arguments is None else arguments
        seed = seed if seed is not None else ctx.params.get("seed")

    from .. import __version__
    from ..storage import write_json_atomic

    envelope = {"format": "advfeatures-result/1", "advfeatures_version": __version__, "command": command, "seed": seed,
                "arguments": _plain(arguments or {}), "torch_version": torch.__version__}
    clash = sorted(k for k in set(envelope) & set(result) if envelope[k] != result[k])
    if clash:  # a programming error, not user input
        raise AssertionError(f"result keys {clash} collide with the envelope")
    write_json_atomic(Path(path), {**envelope, **result})


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "describe"):
        return _plain(value.describe())
    return value
