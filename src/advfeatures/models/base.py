"""Classifiers that expose their penultimate representation.

Every model here is an ``nn.Module`` mapping images in [0,1] (NCHW, float32) to logits, built as
``head(features(x))``: ``features`` is everything but the last linear layer (the representation
``g`` of Ilyas et al. 2019) and ``head`` is that layer. Normalisation (mean/std) is a layer at the
start of ``features``, so attacks always see [0,1] inputs.

Any other ``nn.Module`` (a user's, or one loaded from outside) has a representation too, read in the
same forward pass that computes its logits, by a forward hook:

* by default the *input of its last* ``nn.Linear`` (in ``named_modules()`` order), which is the
  penultimate representation of every classifier that ends in a linear layer;
* or the *output* of the layer the user names by its ``named_modules()`` name, flattened to (N, D).

The fake ReLU (identity backward) exists only where a model has our :class:`PenultimateReLU`; on any
other model :func:`fake_relu` leaves the gradient as it is and says so once, and
:func:`fake_relu_applies` tells callers (the constructions' manifests) whether it took effect.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import ModelError

log = logging.getLogger(__name__)
_warned_no_fake_relu: set[str] = set()


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as the model's first layer."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if any(s <= 0 for s in std):
            raise ModelError(f"normalisation std must be positive, got {list(std)}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class _FakeReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # noqa: D102
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad_output):  # noqa: D102
        return grad_output


class PenultimateReLU(nn.Module):
    """The ReLU that ends ``features``.

    With ``fake = True`` its backward pass is the identity (the reference implementation's "fake
    ReLU"), so that coordinates of the representation clipped at zero still carry gradient during
    representation matching. The forward pass is always a ReLU.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fake = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fake and torch.is_grad_enabled():
            return _FakeReLUFunction.apply(x)
        return torch.relu(x)


def _fake_relu_layers(model: nn.Module, layer: str | None = None) -> list[PenultimateReLU]:
    """The :class:`PenultimateReLU` modules that shape the representation: all of ``model``'s, or
    those inside the named ``layer`` (a fake ReLU elsewhere would not change its gradient)."""
    root = model if layer is None else _named_module(model, layer)
    return [m for m in root.modules() if isinstance(m, PenultimateReLU)]


def fake_relu_applies(model: nn.Module, layer: str | None = None) -> bool:
    """Whether :func:`fake_relu` changes the gradient of ``model``'s representation (at ``layer``)."""
    return bool(_fake_relu_layers(model, layer))


@contextmanager
def fake_relu(model: nn.Module, enabled: bool = True, *, layer: str | None = None) -> Iterator[nn.Module]:
    """Within the block, every :class:`PenultimateReLU` of ``model`` (inside ``layer`` when named)
    passes gradients through. A model without one is left as it is, with a warning (once per model
    class): its representation's ReLUs, if any, keep their true gradient."""
    layers = _fake_relu_layers(model, layer)
    if enabled and not layers:
        kind = type(model).__name__
        if kind not in _warned_no_fake_relu:
            _warned_no_fake_relu.add(kind)
            log.warning("%s has no advfeatures PenultimateReLU%s: the fake ReLU is not applied (gradients "
                        "through its last ReLU stay true ones)", kind, f" inside layer {layer!r}" if layer else "")
    old = [m.fake for m in layers]
    for m in layers:
        m.fake = enabled
    try:
        yield model
    finally:
        for m, f in zip(layers, old):
            m.fake = f


class Classifier(nn.Module):
    """``logits = head(features(x))`` with the representation available as :meth:`features`."""

    def __init__(self, features: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.features = features
        self.head = head

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    @property
    def representation_dim(self) -> int:
        return self.head.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _aliases(model: nn.Module) -> dict[str, str]:
    """Other names of ``model``'s layers → their ``named_modules()`` names: those a model offers
    through ``layer_aliases()`` (our ResNets answer to torchvision's / robustness's ``layer4``,
    ``avgpool``, ``fc`` …, the names in the checkpoint they were loaded from), under the prefix the
    offering module sits at."""
    out: dict[str, str] = {}
    for prefix, m in model.named_modules():
        offer = getattr(m, "layer_aliases", None)
        if not callable(offer):
            continue
        lead = prefix + "." if prefix else ""
        for alias, name in offer().items():
            out.setdefault(lead + alias, lead + name)
    return out


def layer_names(model: nn.Module) -> list[str]:
    """The names a layer can be given by: ``model.named_modules()`` (without the root), then the
    other names a model offers for its layers (an ImageNet ResNet of ours: torchvision's ``layer4``,
    ``avgpool`` …)."""
    own = [name for name, _ in model.named_modules() if name]
    known = set(own)
    return own + [a for a in _aliases(model) if a not in known]


def _few(names: list[str], k: int = 8) -> str:
    if len(names) <= k:
        return ", ".join(names)
    half = k // 2
    return ", ".join(names[:half]) + f", … ({len(names) - k} more) …, " + ", ".join(names[-half:])


# the first names a checkpoint's keys carry around the model itself: DataParallel / DDP's
# "module.", torch.compile's "_orig_mod.", a MadryLab AttackerModel's "model." / "attacker.model."
_NAME_PREFIXES = ("module.", "_orig_mod.", "attacker.model.", "model.")


def _lookup(model: nn.Module, modules: dict[str, nn.Module], layer: str) -> nn.Module | None:
    if layer in modules:
        return modules[layer]
    alias = _aliases(model).get(layer)
    if alias is not None and alias in modules:
        return modules[alias]
    # inside a wrapper (DataParallel's "module.", the speed options' "original.", a robustness
    # model's Normalize in front of the user's net: "1."): the name the wrapped model knows it by
    found = {id(m): m for name, m in modules.items() if name.endswith("." + layer)}
    found.update({id(modules[n]): modules[n] for a, n in _aliases(model).items() if a.endswith("." + layer) and n in modules})
    return next(iter(found.values())) if len(found) == 1 else None


def _named_module(model: nn.Module, layer: str) -> nn.Module:
    """The submodule named ``layer``: a ``named_modules()`` name, another name the model offers for
    it (see :func:`layer_names`), the name inside a wrapper when unambiguous, or any of these as the
    checkpoint's keys spell it (``module.layer4``, ``module.model.layer4`` of a robustness file)."""
    modules = dict(model.named_modules())
    name = layer or ""
    while name:
        found = _lookup(model, modules, name)
        if found is not None:
            return found
        prefix = next((p for p in _NAME_PREFIXES if name.startswith(p) and len(name) > len(p)), None)
        if prefix is None:
            break
        name = name[len(prefix):]
    names = layer_names(model)
    close = difflib.get_close_matches(layer or "", names, n=4, cutoff=0.6)
    hint = f" (close: {', '.join(close)})" if close else ""
    raise ModelError(f"{type(model).__name__} has no layer {layer!r}{hint}; name one of its {len(names)} layers "
                     f"(model.named_modules(), or as its checkpoint names them): {_few(names) or '(none)'} (all of them, in Python: "
                     "advfeatures.models.layer_names(model))")


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The name and module of ``model``'s last ``nn.Linear`` (in ``named_modules()`` order)."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ModelError(f"{type(model).__name__} exposes no representation: it has no nn.Linear layer; "
                         "name a layer (layer=..., one of model.named_modules()) or give it `features` and `head`")
    return found[-1]


class LayerOutput(nn.Module):
    """g(x) read by a forward hook during one forward pass of ``model``: the input of its last
    ``nn.Linear`` (``layer=None``) or the output of the layer named ``layer``, flattened to (N, D).

    The whole model runs (the layers after the hooked one too): a hook sees the tensor inside the
    autograd graph, so gradients of g(x) reach the input exactly as through ``features``.
    """

    def __init__(self, model: nn.Module, layer: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.layer = layer
        if layer is None:
            self.hooked_name, self.hooked = last_linear(model)
        else:
            self.hooked_name, self.hooked = layer, _named_module(model, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        caught: list[object] = []
        if self.layer is None:
            handle = self.hooked.register_forward_pre_hook(lambda _m, args: caught.append(args[0] if args else None))
        else:
            handle = self.hooked.register_forward_hook(lambda _m, _i, out: caught.append(out))
        try:
            self.model(x)
        finally:
            handle.remove()
        what = f"the input of {self.hooked_name!r}" if self.layer is None else f"layer {self.hooked_name!r}"
        if not caught:
            raise ModelError(f"{what} never ran in {type(self.model).__name__}'s forward pass; name a layer it uses")
        out = caught[-1]  # a layer used twice: its last use, nearest to the logits
        if not isinstance(out, torch.Tensor):
            raise ModelError(f"{what} gives a {type(out).__name__}, not a tensor; name a layer whose output is one")
        return out.flatten(1)


class HookedClassifier(nn.Module):
    """Any ``nn.Module`` seen as a classifier with a representation: ``features`` is a
    :class:`LayerOutput` and ``head`` the last ``nn.Linear`` (``layer=None``; an ``nn.Identity``
    for a named layer, which has no linear head). ``forward`` is the model's own forward, so the
    logits are exactly the model's."""

    def __init__(self, model: nn.Module, layer: str | None = None) -> None:
        super().__init__()
        self.features = LayerOutput(model, layer)
        self.head: nn.Module = self.features.hooked if layer is None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features.model(x)


def as_classifier(model: nn.Module, layer: str | None = None) -> nn.Module:
    """A model with ``features`` (g) and ``head``.

    Without ``layer``: a model that has both is returned as is; an ``nn.Sequential`` ending in
    ``nn.Linear`` is split into the two (sharing parameters); any other model becomes a
    :class:`HookedClassifier` reading the input of its last ``nn.Linear``. With ``layer`` (a
    ``named_modules()`` name): a :class:`HookedClassifier` reading that layer's output.
    """
    if layer is not None:
        return HookedClassifier(model, layer)
    if hasattr(model, "features") and hasattr(model, "head"):
        return model
    if isinstance(model, nn.Sequential) and len(model) >= 2 and isinstance(model[-1], nn.Linear):
        return Classifier(nn.Sequential(*list(model)[:-1]), model[-1])
    return HookedClassifier(model)


def representation(model: nn.Module, x: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """The representation g(x) flattened to (N, D): ``features(x)``, the input of the last
    ``nn.Linear``, or the output of the named ``layer`` (see :func:`as_classifier`)."""
    return as_classifier(model, layer).features(x).flatten(1)
