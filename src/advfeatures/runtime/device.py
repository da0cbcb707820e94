"""Which device a computation runs on.

One default everywhere: ``"auto"`` (:data:`DEFAULT_DEVICE`), i.e. the GPU when one is visible and
the CPU otherwise, so the same command line is fast on a GPU machine and still runs on a laptop.
Asking for ``"cuda"`` where there is none is an error, never a silent fall-back to the CPU.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICES = ("cpu", "cuda", "auto")
DEFAULT_DEVICE = "auto"


def check_device_name(device: str) -> str:
    """``device`` lower-cased if it is ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (no torch needed)."""
    name = str(device).lower()
    if name in DEVICES or (name.startswith("cuda:") and name[5:].isdigit()):
        return name
    raise ConfigError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)} (or cuda:N)")


def resolve_device(device: str | torch.device = DEFAULT_DEVICE, *, local_rank: int | None = None) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available) as a device; with CUDA, the GPU of
    ``local_rank`` (default: this process's ``LOCAL_RANK``, 0 outside ``torchrun``)."""
    import torch

    if isinstance(device, torch.device):
        name = device.type
        if device.index is not None and local_rank is None:
            local_rank = device.index
    else:
        name = check_device_name(device)
        if name.startswith("cuda:"):
            name, index = "cuda", int(name.split(":", 1)[1])
            local_rank = index if local_rank is None else local_rank
    if name not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available; use --device cpu or auto")
    index = local_rank if local_rank is not None else int(os.environ.get("LOCAL_RANK", "0"))
    if index >= torch.cuda.device_count():
        raise ConfigError(f"local rank {index} has no GPU: only {torch.cuda.device_count()} visible; start fewer processes")
    return torch.device("cuda", index)
