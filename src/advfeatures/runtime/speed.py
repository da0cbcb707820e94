"""Speed options that change speed, never results beyond float rounding.

:func:`accelerate` wraps a model for speed only: ``torch.compile``, bf16 autocast, channels-last.
Parameters are shared with the original model; the logits come back in float32. Compilation and
channels-last change results by float rounding only; bf16 by bf16 rounding (about 3 significant
digits), which is why it is off by default.
"""

from __future__ import annotations

import logging
import os
import shutil

import torch
from torch import nn

log = logging.getLogger(__name__)

#: Why channels-last is not applied on a CPU. Measured on an AMD EPYC host with torch 2.13.0 (CPU
#: build): a CIFAR ResNet-18 in channels-last, trained (BatchNorm in training mode) for two steps,
#: aborts with "corrupted double-linked list" inside oneDNN's backward pass; with oneDNN disabled
#: the same steps run. It is a GPU option (Tensor Cores want NHWC); on a CPU it bought no speed here.
CPU_CHANNELS_LAST = ("channels-last is not applied on a CPU: torch 2.13's oneDNN backward in channels-last "
                     "corrupted the heap when training a ResNet on this kind of host; it is a GPU option")


def channels_last_usable(requested: bool, device_type: str) -> bool:
    """Whether to apply a requested channels-last layout on ``device_type``: never on a CPU (see
    :data:`CPU_CHANNELS_LAST`; a warning says so once), as asked elsewhere."""
    if requested and device_type == "cpu":
        if not getattr(channels_last_usable, "_warned", False):
            log.warning(CPU_CHANNELS_LAST)
            channels_last_usable._warned = True  # type: ignore[attr-defined]
        return False
    return requested


class _Accelerated(nn.Module):
    """Runs ``inner`` under bf16 autocast (optional) and returns float32."""

    def __init__(self, inner: nn.Module, *, bf16: bool, device_type: str) -> None:
        super().__init__()
        self.inner = inner
        self.bf16 = bf16
        self.device_type = device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.bf16:
            return self.inner(x)
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            out = self.inner(x)
        return out.float()


class AcceleratedModel(nn.Module):
    """A model run faster (compiled, bf16, channels-last) that still offers ``features``, ``head``
    and ``num_classes`` when the original does, sharing its parameters."""

    def __init__(self, model: nn.Module, *, compile: bool, bf16: bool, channels_last: bool, device_type: str) -> None:
        super().__init__()
        self.original = model
        self.channels_last = channels_last

        def wrap(m: nn.Module) -> nn.Module:
            inner = _Accelerated(m, bf16=bf16, device_type=device_type)
            return torch.compile(inner) if compile else inner

        self.whole = wrap(model)
        if hasattr(model, "features") and hasattr(model, "head"):
            self.features = wrap(model.features)
            self.head = model.head

    @property
    def num_classes(self) -> int | None:
        return getattr(self.original, "num_classes", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.whole(x)


def accelerate(model: nn.Module, *, compile: bool = False, bf16: bool = False, channels_last: bool = False,
               device: str | torch.device | None = None) -> nn.Module:
    """``model`` itself when every option is off; otherwise a wrapper that runs it compiled
    (``torch.compile``), under bf16 autocast, and/or with channels-last weights and inputs.

    The wrapper shares the model's parameters (training through it trains the model) and returns
    float32 logits. Channels-last converts the model's weights in place (values unchanged); on a
    CPU it is not applied (:data:`CPU_CHANNELS_LAST`).
    """
    device_type = torch.device(device).type if device is not None else next(
        (p.device.type for p in model.parameters()), "cpu")
    channels_last = channels_last_usable(channels_last, device_type)
    if not (compile or bf16 or channels_last):
        return model
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return AcceleratedModel(model, compile=compile, bf16=bf16, channels_last=channels_last, device_type=device_type)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model under :func:`accelerate`'s wrapper or ``DistributedDataParallel``."""
    while True:
        if isinstance(model, AcceleratedModel):
            model = model.original
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def compile_available() -> tuple[bool, str]:
    """Whether ``torch.compile`` can build kernels here, and if not, why (it needs a C compiler on
    the CPU, and Triton on GPUs)."""
    if not hasattr(torch, "compile"):
        return False, "this torch has no torch.compile"
    if not any(shutil.which(cc) for cc in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++")):
        return False, "torch.compile on the CPU needs a C++ compiler (g++ or clang++) on PATH"
    return True, ""
