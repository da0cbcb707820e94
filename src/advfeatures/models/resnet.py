"""ResNets (He et al. 2016). The default is CIFAR-style, as in the `robustness` library: 3×3 stem,
no max-pool. ``stem="imagenet"`` gives the ImageNet layout of torchvision (7×7 stride-2 convolution
and a 3×3 stride-2 max-pool); see :mod:`advfeatures.models.torchvision_resnet`.

The last block's final ReLU is a :class:`PenultimateReLU`, so representation matching can use the
reference implementation's fake ReLU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ModelError
from .base import Classifier, Normalize, PenultimateReLU
from .small import _check_shape


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


class ResNet(Classifier):
    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: Sequence[int],
        in_shape: Sequence[int],
        num_classes: int,
        *,
        width: int = 64,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        stem: str = "cifar",
    ) -> None:
        c, _, _ = _check_shape(in_shape)
        if stem not in ("cifar", "imagenet"):
            raise ModelError(f"ResNet stem must be 'cifar' (3×3) or 'imagenet' (7×7 and max-pool), got {stem!r}")
        layers: list[nn.Module] = []
        if mean is not None and std is not None:
            layers.append(Normalize(mean, std))
        if stem == "cifar":
            layers += [nn.Conv2d(c, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        else:
            layers += [nn.Conv2d(c, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
        in_planes = width
        for stage, n in enumerate(num_blocks):
            planes = width * 2**stage
            for i in range(n):
                blk = block(in_planes, planes, stride=2 if (stage > 0 and i == 0) else 1)
                layers.append(blk)
                in_planes = planes * block.expansion
        layers[-1].relu = PenultimateReLU()  # the representation's last non-linearity
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        super().__init__(nn.Sequential(*layers), nn.Linear(in_planes, num_classes))
        self.num_blocks = tuple(int(n) for n in num_blocks)  # read by the torchvision key map

    def layer_aliases(self) -> dict[str, str]:
        """torchvision's (and robustness's) module names → ours, so that a layer can be named as in
        the checkpoint a model was loaded from: ``conv1``, ``bn1``, ``relu``, ``maxpool``,
        ``layer{k}`` (its output is that of the stage's last block), ``layer{k}.{i}`` and the modules
        inside (``downsample`` = our ``shortcut``), ``avgpool``, ``fc`` / ``linear`` (the head)."""
        children = list(self.features)
        first = {}
        for i, m in enumerate(children):
            first.setdefault(type(m), i)
        out = {"normalizer": first.get(Normalize), "conv1": first.get(nn.Conv2d), "bn1": first.get(nn.BatchNorm2d),
               "relu": first.get(nn.ReLU), "maxpool": first.get(nn.MaxPool2d), "avgpool": first.get(nn.AdaptiveAvgPool2d)}
        aliases = {k: f"features.{i}" for k, i in out.items() if i is not None}
        blocks = iter(i for i, m in enumerate(children) if isinstance(m, (BasicBlock, Bottleneck)))
        for stage, count in enumerate(self.num_blocks, start=1):
            for i in range(count):
                b = next(blocks)
                aliases[f"layer{stage}.{i}"] = f"features.{b}"
                for sub, m in children[b].named_modules():
                    if sub:
                        aliases[f"layer{stage}.{i}.{sub}"] = f"features.{b}.{sub}"
                        if sub.startswith("shortcut") and not isinstance(m, nn.Identity):  # torchvision has none there
                            aliases[f"layer{stage}.{i}.downsample{sub[len('shortcut'):]}"] = f"features.{b}.{sub}"
            aliases[f"layer{stage}"] = f"features.{b}"
        aliases["fc"] = aliases["linear"] = "head"
        return aliases


def resnet18(in_shape: Sequence[int], num_classes: int, **kw) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), in_shape, num_classes, **kw)


def resnet50(in_shape: Sequence[int], num_classes: int, **kw) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), in_shape, num_classes, **kw)
