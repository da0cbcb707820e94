"""ImageNet-layout ResNets with torchvision's shapes, and the key map between its names and ours.

``tv_resnet18`` / ``tv_resnet50`` are our :class:`~advfeatures.models.resnet.ResNet` with the
ImageNet stem (7×7 stride-2 convolution, batch norm, ReLU, 3×3 stride-2 max-pool), the same blocks
as torchvision (stride in the first 3×3 convolution of a basic block, in the 3×3 one of a
bottleneck: "ResNet v1.5"), global average pooling and a linear head. So a torchvision, timm or
MadryLab ``robustness`` ImageNet ResNet checkpoint loads without torchvision, and, like every model
of ours, has ``features`` / ``head`` and a :class:`~advfeatures.models.base.PenultimateReLU`.

The key map (``s`` = 1 when the model starts with a ``Normalize`` layer, else 0; ``b`` numbers the
blocks in order, the first one right after the stem)::

    torchvision / timm / robustness          ours
    conv1.*                                  features.{s}.*
    bn1.*                                    features.{s+1}.*
    (relu, maxpool: no weights)              features.{s+2}, features.{s+3} (CIFAR stem: relu only)
    layer{k}.{i}.conv1|bn1|…|conv3|bn3.*     features.{b}.conv1|bn1|…|conv3|bn3.*
    layer{k}.{i}.downsample.{0,1}.*          features.{b}.shortcut.{0,1}.*
    fc.*  (robustness CIFAR ResNets: linear.*)   head.*

The same map serves our CIFAR ResNets (``resnet18`` / ``resnet50``), whose blocks are those of
``robustness.cifar_models`` (there the projection shortcut is already called ``shortcut``).
:func:`from_torchvision` renames a state dict into ours, :func:`to_torchvision` back; keys the map
does not know are passed through unchanged, so that a mismatch is reported by the loader by name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

from ..errors import ModelError
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet50

_LAYER = re.compile(r"^layer(\d+)\.(\d+)\.(.*)$")
_DEPTHS = {("basic", (2, 2, 2, 2)): 18, ("bottleneck", (3, 4, 6, 3)): 50}


def tv_resnet18(in_shape: Sequence[int], num_classes: int, **kw) -> ResNet:
    """ResNet-18 in torchvision's ImageNet layout (7×7 stem and max-pool)."""
    return resnet18(in_shape, num_classes, stem="imagenet", **kw)


def tv_resnet50(in_shape: Sequence[int], num_classes: int, **kw) -> ResNet:
    """ResNet-50 in torchvision's ImageNet layout (7×7 stem and max-pool)."""
    return resnet50(in_shape, num_classes, stem="imagenet", **kw)


def torchvision_prefixes(model: ResNet) -> dict[str, str]:
    """torchvision module prefix → ours (``"layer2.0"`` → ``"features.6"``, ``"fc"`` → ``"head"``)."""
    children = list(model.features)
    convs = [i for i, m in enumerate(children) if isinstance(m, torch.nn.Conv2d)]
    bns = [i for i, m in enumerate(children) if isinstance(m, torch.nn.BatchNorm2d)]
    blocks = [i for i, m in enumerate(children) if isinstance(m, (BasicBlock, Bottleneck))]
    out = {"conv1": f"features.{convs[0]}", "bn1": f"features.{bns[0]}", "fc": "head", "linear": "head"}
    it = iter(blocks)
    for stage, count in enumerate(model.num_blocks, start=1):
        for i in range(count):
            out[f"layer{stage}.{i}"] = f"features.{next(it)}"
    return out


def is_torchvision_layout(keys: Sequence[str] | Mapping[str, object]) -> bool:
    """Whether state-dict keys are named like torchvision's / robustness's ResNets."""
    keys = set(keys)
    return "conv1.weight" in keys and any(k.startswith("layer1.0.") for k in keys)


def from_torchvision(state: Mapping[str, torch.Tensor], model: ResNet) -> dict[str, torch.Tensor]:
    """``state`` with torchvision / robustness key names renamed to ``model``'s."""
    prefixes = torchvision_prefixes(model)
    out = {}
    for key, value in state.items():
        m = _LAYER.match(key)
        if m:
            rest = m.group(3)
            rest = "shortcut" + rest[len("downsample"):] if rest.startswith("downsample.") else rest
            prefix = prefixes.get(f"layer{m.group(1)}.{m.group(2)}")
            out[f"{prefix}.{rest}" if prefix else key] = value
            continue
        head, _, rest = key.partition(".")
        out[f"{prefixes[head]}.{rest}" if head in prefixes and rest else key] = value
    return out


def to_torchvision(state: Mapping[str, torch.Tensor], model: ResNet) -> dict[str, torch.Tensor]:
    """``model``'s state dict with torchvision's key names (the inverse of :func:`from_torchvision`;
    a leading ``Normalize`` layer's ``mean`` / ``std`` have no torchvision name and are dropped)."""
    inverse = {ours: tv for tv, ours in torchvision_prefixes(model).items() if tv != "linear"}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        prefix = ".".join(parts[:2]) if parts[0] == "features" else parts[0]
        rest = parts[2:] if parts[0] == "features" else parts[1:]
        if prefix not in inverse:
            continue
        if inverse[prefix].startswith("layer") and rest and rest[0] == "shortcut":
            rest = ["downsample", *rest[1:]]
        out[".".join([inverse[prefix], *rest])] = value
    return out


def infer_resnet(state: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, int]]:
    """Our architecture name and constructor arguments for a torchvision / robustness-layout ResNet
    state dict: the stem's kernel (7 → ImageNet layout ``tv_resnet*``, 3 → CIFAR ``resnet*``), the
    block type and count per stage, the width; raises ModelError for other depths."""
    counts: dict[int, set[int]] = {}
    for key in state:
        m = _LAYER.match(key)
        if m:
            counts.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    stages = tuple(len(counts[k]) for k in sorted(counts))
    block = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
    kernel = int(state["conv1.weight"].shape[-1])
    depth = _DEPTHS.get((block, stages))
    if depth is None or kernel not in (3, 7):
        raise ModelError(f"a ResNet with {block} blocks {list(stages)} per stage and a {kernel}×{kernel} stem is not one of "
                         "ours (ResNet-18: basic [2, 2, 2, 2]; ResNet-50: bottleneck [3, 4, 6, 3]; stem 3×3 or 7×7); "
                         "pass arch='module:factory' naming code that builds it")
    width = int(state["conv1.weight"].shape[0])
    return ("tv_" if kernel == 7 else "") + f"resnet{depth}", ({"width": width} if width != 64 else {})
