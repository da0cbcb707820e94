"""Models from outside: one loader for every model file we accept, none of which runs code.

:func:`load_any_model` reads

* **our own files** (safetensors written by :func:`~advfeatures.models.save_model`): as
  :func:`~advfeatures.models.load_model`;
* **a plain state dict** (``.pt`` / ``.pth`` / ``.safetensors``; or a checkpoint dict holding it
  under ``"model"``, ``"state_dict"``, ``"model_state_dict"``, ``"net"``, … or an EMA copy's
  ``"ema"`` / ``"state_dict_ema"``, beside anything else a training script saves, such as an
  optimizer's state; the ``module.`` prefix of ``DataParallel`` / DDP and the ``_orig_mod.`` of
  ``torch.compile`` are dropped) plus
  ``arch``: one of our :data:`~advfeatures.models.MODELS` by name, or ``"module.path:factory"``
  naming an importable function or class that returns an ``nn.Module``, called with
  ``arch_kwargs``. Importing that module is the user's choice of code, never the file's;
* **a MadryLab ``robustness`` checkpoint** (auto-detected: a ``"model"`` / ``"state_dict"`` entry
  whose keys sit under ``module.model.``, ``module.attacker.model.`` and
  ``module.normalizer.new_mean|new_std``). Its CIFAR ResNet-18/50 (``robustness.cifar_models``)
  load into our ``resnet18`` / ``resnet50`` and its ImageNet ResNets (torchvision layout) into
  ``tv_resnet18`` / ``tv_resnet50``; its input normaliser becomes our ``Normalize`` layer. With
  ``arch="module:factory"`` any other of its architectures loads into the user's module, behind a
  ``Normalize`` layer;
* **a torchvision-layout ResNet state dict** (``conv1``, ``bn1``, ``layer1.0.conv1`` … ``fc``, as
  torchvision and timm save them): auto-detected, or into the ResNet ``arch`` names (see
  :mod:`advfeatures.models.torchvision_resnet` for the key map).

Files are read with ``safetensors`` or ``torch.load(weights_only=True)``, whose unpickler builds
tensors and plain containers only: a pickle naming any other code (a crafted ``__reduce__``, a
whole pickled ``nn.Module``) is refused with one line, before anything in it runs.

``num_classes`` comes from the last linear weight where not given. ``in_shape`` (C, H, W) comes
from the data (the CLI passes the dataset's image shape); for a ResNet it may be left out: C is read
from the stem convolution and (H, W) recorded as 32×32 (CIFAR stem) or 224×224 (ImageNet stem).

A model built from a factory records ``arch = {"factory": ..., "kwargs": ..., "normalize": ...}``
(and ``"in_shape"`` where given),
so :func:`~advfeatures.models.save_model` writes it as one safetensors file; re-loading it needs the
factory named again (``load_any_model(path, arch="module.path:factory")``, the CLI's ``--arch``):
the recorded name is a record, not an instruction, and the error says so.
"""

from __future__ import annotations

import importlib
import json
import logging
import pickle
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from ..errors import ModelError
from .base import Classifier, Normalize
from .registry import MODELS, build_model, load_model
from .resnet import ResNet
from .torchvision_resnet import from_torchvision, infer_resnet, is_torchvision_layout

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def load_any_model(
    path: str | Path,
    *,
    arch: str | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
    in_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """The classifier stored at ``path`` in eval mode on ``device`` (formats: see the module)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist; check the path")
    if arch_kwargs is not None and not isinstance(arch_kwargs, Mapping):
        raise ModelError(f"arch_kwargs must be a JSON object (a dict), got {type(arch_kwargs).__name__}")
    kwargs = dict(arch_kwargs or {})
    obj, meta = _read(path)
    if "arch" in meta:  # one of our own files
        recorded = _json(meta["arch"], path)
        if "factory" not in recorded:
            if arch is not None and arch != recorded.get("name"):
                raise ModelError(f"{path} is an advfeatures {recorded.get('name')!r} model; drop arch={arch!r} or pass "
                                 f"{recorded.get('name')!r}")
            return load_model(path, device=device)
        if arch is None:
            raise ModelError(f"{path} holds a model built by the factory {recorded['factory']!r}; loading never imports "
                             f"code a file names: pass arch={recorded['factory']!r} (--arch) to re-load it")
        if not isinstance(recorded.get("kwargs", {}), dict):
            raise ModelError(f"{path} has unreadable metadata; save it again with save_model")
        kwargs = {**recorded.get("kwargs", {}), **kwargs}
        model = _from_factory(arch, kwargs, obj, path, normalize=recorded.get("normalize"), fmt="advfeatures",
                              in_shape=in_shape or recorded.get("in_shape"))
        model.extra = _json(meta.get("extra", "{}"), path)
        return model.to(device).eval()

    state = _state_dict_of(obj, path)
    state, normalize, fmt = _split_robustness(state)
    if arch is None:
        if not is_torchvision_layout(state):
            raise ModelError(f"{path} is a plain state dict: pass arch (one of {', '.join(sorted(MODELS))}, or "
                             "'module.path:factory' naming code that builds the model)")
        arch, inferred = infer_resnet(state)
        kwargs = {**inferred, **kwargs}
        fmt = fmt if fmt == "robustness" else "torchvision"
        log.info("%s: a %s-layout checkpoint, loaded as %s", path, fmt, arch)
    if ":" in arch:
        model = _from_factory(arch, kwargs, state, path, normalize=normalize, fmt=fmt, in_shape=in_shape)
    elif arch in MODELS:
        model = _ours(arch, kwargs, state, path, normalize=normalize, in_shape=in_shape, num_classes=num_classes)
        model.extra = {"loaded_from": str(path), "format": fmt}
    else:
        raise ModelError(f"unknown arch {arch!r}; choose one of {', '.join(sorted(MODELS))}, or 'module.path:factory'")
    return model.to(device).eval()


def build_from_factory(spec: str, arch_kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """``factory(**arch_kwargs)`` for ``spec = "module.path:factory"``, with ``arch`` recorded so
    that :func:`~advfeatures.models.save_model` can write it (re-load with :func:`load_any_model`)."""
    kwargs = dict(arch_kwargs or {})
    factory = import_factory(spec)
    try:
        model = factory(**kwargs)
    except (Exception, SystemExit) as exc:  # the user's code: any failure (sys.exit too) becomes one line naming the call
        raise ModelError(f"{spec}(**{kwargs}) failed: {type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec} returned a {type(model).__name__}, not an nn.Module; name a factory that builds the model")
    model.arch = {"factory": spec, "kwargs": kwargs, "normalize": None}
    return model


def import_factory(spec: str) -> Callable[..., Any]:
    """The callable named by ``"module.path:attr"`` (``attr`` may be dotted, e.g. ``Class.method``)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ModelError(f"arch {spec!r} must read 'module.path:factory' (e.g. 'mypkg.nets:make_net')")
    try:
        obj: Any = importlib.import_module(module_name)
    except SystemExit as exc:  # a script that parses its arguments (argparse: our command line, printed above) or exits
        # when imported; stderr is left as it is (capturing it would also capture the loggers the module sets up)
        raise ModelError(f"importing {module_name!r} for arch {spec!r} exited (SystemExit: {_first_line(exc)}): it runs as "
                         "a script when imported; put the model's code in a module that only defines it, or guard the "
                         "script's part with `if __name__ == '__main__':`") from None
    except Exception as exc:  # ImportError, or the module's own import-time failure
        parts = module_name.split(".")
        not_found = isinstance(exc, ModuleNotFoundError) and exc.name in {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        fix = "put it on PYTHONPATH" if not_found else "it was found but failed to import: fix the error in it"
        detail = _first_line(exc)
        if isinstance(exc, SyntaxError) and exc.filename:
            detail = f"{exc.msg} at {exc.filename}:{exc.lineno}"
        raise ModelError(f"cannot import {module_name!r} for arch {spec!r} ({type(exc).__name__}: {detail}); {fix}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"{module_name!r} has no {attr!r} (arch {spec!r}); name a function or class it defines")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelError(f"{spec} is a {type(obj).__name__}, not a function or class")
    return obj


# --- reading ---------------------------------------------------------------------------------


def _is_safetensors(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def _read(path: Path) -> tuple[Any, dict[str, str]]:
    if _is_safetensors(path):
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            return load_file(str(path)), meta
        except (SafetensorError, OSError) as exc:
            raise ModelError(f"{path} is not a readable safetensors file ({_first_line(exc)})") from None
    try:
        with warnings.catch_warnings():  # torch announces it would dispatch a TorchScript archive to torch.jit.load,
            # then (weights_only) refuses it: only the refusal is true, and it is reported below
            warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True), {}
    except Exception as exc:  # a refused or malformed pickle raises many kinds; all end in one line
        message = str(exc)
        if "TorchScript" in message:  # torch.jit.save's archive is code (a program), not a state dict
            raise ModelError(f"{path} is a TorchScript archive (torch.jit.save), which is code we do not run; save the "
                             "model's weights instead (torch.save(model.state_dict(), 'weights.pt')) and load those "
                             "with --arch") from None
        unsafe = _UNSAFE.search(message)
        if unsafe:
            raise ModelError(f"{path} names code ({unsafe.group(1)}) that loading it would run; we only read tensors "
                             f"(torch.load(weights_only=True)): {_resave_hint(path)}") from None
        raise ModelError(f"{path} is neither a safetensors file nor a torch checkpoint we can read safely "
                         f"({type(exc).__name__}: {_first_line(exc)})") from None


class _Stub:
    """Whatever a pickle names, in :func:`_pickle_outline`: built from anything, holding nothing."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        pass


class _TensorStub(_Stub):
    pass


class _Dict(dict):
    """An ``OrderedDict`` in :func:`_pickle_outline` (a state dict's carries ``_metadata``)."""


class _OutlineUnpickler(pickle.Unpickler):
    """Reads a pickle's containers and where its tensors are, importing and calling nothing of the
    file's: every global it names becomes :class:`_Stub` (tensors :class:`_TensorStub`)."""

    _TENSORS = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
                ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_parameter_with_state")}

    def find_class(self, module, name):
        if (module, name) in self._TENSORS:
            return _TensorStub
        if (module, name) == ("collections", "OrderedDict"):
            return _Dict
        return _Stub

    def persistent_load(self, pid):
        return None


def _pickle_outline(path: Path) -> Any:
    """The top of a torch checkpoint's pickle, code-free (see :class:`_OutlineUnpickler`), or None."""
    import io
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                name = next(n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
                data = z.read(name)
        else:
            data = path.read_bytes()
        return _OutlineUnpickler(io.BytesIO(data)).load()
    except Exception:  # an outline is a courtesy for the hint: any failure leaves the generic one
        return None


def _resave_hint(path: Path) -> str:
    """How to keep only the weights of a checkpoint we refuse, naming the entry that holds them."""
    top = _pickle_outline(path)
    if isinstance(top, dict):
        weights = [k for k, v in top.items() if isinstance(k, str) and isinstance(v, dict) and v
                   and all(isinstance(t, _TensorStub) for t in v.values())]
        if weights:
            key = next((k for k in _WRAPPER_KEYS if k in weights), weights[0])
            where = f"its weights are the {len(top[key])} tensors under {key!r}" + (
                f" (tensors also under {', '.join(repr(k) for k in weights if k != key)})" if len(weights) > 1 else "")
            return (f"{where}; if you trust the file, keep only them: torch.save(torch.load({str(path)!r}, "
                    f"weights_only=False)[{key!r}], 'weights.pt') and load weights.pt")
    if isinstance(top, _Stub) and not isinstance(top, _TensorStub):  # a whole pickled object (an nn.Module)
        return (f"if you trust the file, re-save its state dict: torch.save(torch.load({str(path)!r}, "
                "weights_only=False).state_dict(), 'weights.pt') and load weights.pt")
    return ("if you trust the file, load it with torch.load(path, weights_only=False) and re-save only its state dict "
            "(a dict of tensors) with torch.save(state_dict, 'weights.pt'), then load that")


# where training scripts put the weights in a checkpoint dict, in the order we look (the model's own
# weights before an EMA copy kept beside them: timm's "state_dict" / "state_dict_ema")
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "net", "network", "weights", "ema", "model_ema",
                 "state_dict_ema", "ema_state_dict")
# prefixes a wrapper adds to every key: DataParallel / DDP's "module.", torch.compile's "_orig_mod."
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _state_dict_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        held = [k for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)]
        # the first that holds tensors only ({"model": {"name": "resnet18"}, "state_dict": {...}} is
        # a config beside the weights), else the first, whose other entries the error below names
        weights = [k for k in held if obj[k] and all(isinstance(v, torch.Tensor) for v in obj[k].values())]
        key = (weights or held or [None])[0]
        if key is not None:
            if len(obj) > 1:
                log.info("%s: the weights under %r of a checkpoint holding %s", path, key, ", ".join(map(str, obj)))
            obj = obj[key]
    if not isinstance(obj, Mapping) or not obj:
        raise ModelError(f"{path} holds a {type(obj).__name__}, not a state dict (a dict of tensors, or a checkpoint "
                         f"with one under {' / '.join(repr(k) for k in _WRAPPER_KEYS[:3])} …)")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(f"{path}: {len(bad)} entries of its state dict are not tensors ({', '.join(bad[:4])}); "
                         f"save model.state_dict() (or put it under one of {', '.join(repr(k) for k in _WRAPPER_KEYS)})")
    state = {str(k): v for k, v in obj.items()}
    stripped = True
    while state and stripped:  # wrappers around wrappers: DDP around a compiled model, and the reverse
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                stripped = True
    return state


def _split_robustness(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, list[float]] | None, str]:
    """A MadryLab ``AttackerModel`` state dict → (the classifier's own state, its normaliser, format)."""
    if not any(k.startswith("model.") for k in state) or not (
            "normalizer.new_mean" in state or any(k.startswith("attacker.model.") for k in state)):
        return state, None, "state_dict"
    inner = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    normalize = None
    if "normalizer.new_mean" in state and "normalizer.new_std" in state:
        normalize = {"mean": state["normalizer.new_mean"].flatten().tolist(),
                     "std": state["normalizer.new_std"].flatten().tolist()}
    return inner, normalize, "robustness"


def _json(text: str, path: Path) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ModelError(f"{path} has unreadable metadata; save it again with save_model") from None
    if not isinstance(value, dict):
        raise ModelError(f"{path} has unreadable metadata; save it again with save_model")
    return value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


# --- building --------------------------------------------------------------------------------


def _ours(name: str, kwargs: dict[str, Any], state: dict[str, torch.Tensor], path: Path, *,
          normalize: dict[str, list[float]] | None, in_shape: Sequence[int] | None, num_classes: int | None) -> nn.Module:
    resnet = name.startswith(("resnet", "tv_resnet"))
    tv_names = resnet and is_torchvision_layout(state)
    if is_torchvision_layout(state):  # a ResNet's keys say which of ours it is: name that, not a wall of keys
        try:
            inferred, inferred_kwargs = infer_resnet(state)
        except ModelError:  # a depth of none of ours: the key check below names what differs
            inferred, inferred_kwargs = name, {}
        if inferred != name:
            raise ModelError(f"{path} holds a {inferred} (read from its torchvision-layout keys), not a {name}: pass "
                             f"arch={inferred!r} (--arch) or leave arch out")
        kwargs = {**inferred_kwargs, **kwargs}  # its width, as when arch is left out, unless given
    if normalize is not None:
        kwargs = {**kwargs, **{k: v for k, v in normalize.items() if k not in kwargs}}
    if in_shape is None:
        if not resnet:
            raise ModelError(f"arch {name!r} needs the input shape (C, H, W): pass in_shape (the CLI takes it from the data)")
        stem = state.get("conv1.weight") if tv_names else next((v for k, v in state.items() if v.ndim == 4), None)
        if stem is None:
            raise ModelError(f"{path}: no stem convolution found to read the input channels from; pass in_shape")
        size = 224 if name.startswith("tv_") else 32
        in_shape = (int(stem.shape[1]), size, size)
    asked = num_classes
    if num_classes is None:
        num_classes = _num_classes(state, path)
    try:
        model = build_model(name, in_shape, num_classes, **kwargs)
    except TypeError as exc:  # an argument the constructor does not take
        raise ModelError(f"arch {name!r} does not take arch_kwargs {json.dumps(kwargs)} ({_first_line(exc)})") from None
    if tv_names and isinstance(model, ResNet):
        state = from_torchvision(state, model)
    if normalize is not None:
        norm = next(m for m in model.features if isinstance(m, Normalize))
        state = {**state, "features.0.mean": torch.tensor(normalize["mean"]).view_as(norm.mean),
                 "features.0.std": torch.tensor(normalize["std"]).view_as(norm.std)}
    head = state.get("head.weight")
    if asked is not None and isinstance(model, Classifier) and head is not None and head.ndim == 2 and head.shape[0] != asked:
        own = model.state_dict()
        if all(k in ("head.weight", "head.bias") for k in own if k in state and state[k].shape != own[k].shape):
            raise ModelError(f"{path} is a classifier of {head.shape[0]} classes, not of the {asked} asked for (the data's): "
                             f"pick data with {head.shape[0]} classes (to fine-tune it on {asked}, load it in Python with "
                             f"num_classes={head.shape[0]} and replace model.head)")
    load_state_strict(model, state, path, f"arch {name!r}")
    return model


def _num_classes(state: Mapping[str, torch.Tensor], path: Path) -> int:
    for key in ("head.weight", "fc.weight", "linear.weight"):
        if key in state and state[key].ndim == 2:
            return int(state[key].shape[0])
    weights = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    if not weights:
        raise ModelError(f"{path}: no linear weight to read the number of classes from; pass num_classes")
    return int(weights[-1].shape[0])


def _from_factory(spec: str, kwargs: dict[str, Any], state: dict[str, torch.Tensor], path: Path, *,
                  normalize: dict[str, list[float]] | None, fmt: str, in_shape: Sequence[int] | None = None) -> nn.Module:
    inner = build_from_factory(spec, kwargs)
    model: nn.Module = inner
    if normalize is not None:  # a robustness checkpoint: its normaliser in front of the user's classifier
        model = nn.Sequential(Normalize(normalize["mean"], normalize["std"]), inner)
        if not any(k.startswith("0.") for k in state):
            state = {**{f"1.{k}": v for k, v in state.items()}, "0.mean": model[0].mean.clone(), "0.std": model[0].std.clone()}
    load_state_strict(model, state, path, f"arch {spec!r} with arch_kwargs {json.dumps(kwargs)}")
    model.arch = {"factory": spec, "kwargs": kwargs, "normalize": normalize}
    if in_shape is not None:  # recorded for the code that adapts images to a model (transfer)
        model.arch["in_shape"] = [int(s) for s in in_shape]
    model.extra = {"loaded_from": str(path), "format": fmt}
    return model


def _fits(keys: set[str], own: Mapping[str, torch.Tensor]) -> bool:
    return keys <= set(own) and all(k in keys for k in own if not k.endswith("num_batches_tracked"))


def _without_attribute_prefix(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor],
                              path: str | Path) -> Mapping[str, torch.Tensor]:
    """``state`` without the one first name all its keys share, where that is what makes them fit:
    the attribute a wrapper held the model under (a PyTorch Lightning module's ``self.model`` or
    ``self.net``, whose checkpoint keys read ``model.conv1.weight``). Otherwise ``state`` itself."""
    if not state or _fits(set(state), own) or not all("." in k for k in state):
        return state
    firsts = {k.partition(".")[0] for k in state}
    if len(firsts) != 1:
        return state
    inner = {k.partition(".")[2]: v for k, v in state.items()}
    if not _fits(set(inner), own):
        return state
    log.info("%s: its keys sit under %r (the attribute a wrapper held the model under); read without it", path, *firsts)
    return inner


# the buffers thop.profile registers on every module it counts (and leaves in the state dict)
_THOP_BUFFERS = ("total_ops", "total_params")


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, what: str) -> None:
    """``model.load_state_dict(state)`` where every key and shape must match, else one line naming
    the first few missing, unexpected and mis-shaped keys (BatchNorm's ``num_batches_tracked``
    counters, absent from some older checkpoints, may be missing; thop's ``total_ops`` /
    ``total_params`` counters are ignored; keys that all sit under one
    wrapper's attribute, ``model.`` in a Lightning checkpoint, are read without it where that fits). Floating-point values of any
    width load converted to the model's dtype; meta tensors and integers for float weights are
    refused."""
    own = model.state_dict()
    thop = [k for k in state if k.rpartition(".")[2] in _THOP_BUFFERS and k not in own]
    if thop:  # thop.profile's counters, left in the state dict of a model it measured: not weights
        log.info("%s: %d thop counters (total_ops / total_params) ignored", path, len(thop))
        state = {k: v for k, v in state.items() if k not in set(thop)}
    state = _without_attribute_prefix(state, own, path)
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    misshaped = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} ({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} ({', '.join(unexpected[:3])}{', …' if len(unexpected) > 3 else ''})")
        if misshaped:
            parts.append("mis-shaped " + str(len(misshaped)) + " (" + ", ".join(
                f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in misshaped[:3]) + ")")
        raise ModelError(f"{path} does not fit {what}: keys {'; '.join(parts)}; pass the arch (and arch_kwargs, "
                         "in_shape, num_classes) the file was saved from")
    # values load_state_dict would copy without a word: a file of shapes only (meta tensors), or
    # integers where the model has float weights (a quantized export); a float of any width
    # (float16, bfloat16, float64) is converted to the model's dtype, as it should be
    sparse = [k for k in own if k in state and state[k].layout != torch.strided]
    if sparse:
        raise ModelError(f"{path} stores {len(sparse)} weights as {state[sparse[0]].layout} tensors ({', '.join(sparse[:3])}); "
                         "save the dense ones (tensor.to_dense()) in the state dict")
    meta = [k for k in own if k in state and state[k].is_meta]
    if meta:
        raise ModelError(f"{path} holds no weights, only their shapes ({len(meta)} meta tensors, e.g. {meta[0]}): it was "
                         "saved from a model on the meta device; save its state_dict() after loading real weights")
    ints = [k for k in own if k in state and own[k].is_floating_point() and not state[k].is_floating_point()]
    if ints:
        raise ModelError(f"{path} stores {state[ints[0]].dtype} values for {len(ints)} floating-point weights "
                         f"({', '.join(ints[:3])}{', …' if len(ints) > 3 else ''}); a quantized or integer export cannot "
                         "be read as the float model: save the float model's state_dict()")
    full = {**{k: v for k, v in own.items() if k not in state}, **state}
    try:
        model.load_state_dict(full)
    except RuntimeError as exc:  # what the checks above did not foresee: still one line
        raise ModelError(f"{path} does not load into {what}: {' '.join(str(exc).split())[:240]}") from None
