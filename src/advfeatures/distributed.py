"""Devices, processes and speed options: where the computation runs and how fast.

* :func:`resolve_device` turns ``--device cpu|cuda|auto`` into a ``torch.device`` (under ``torchrun``
  with CUDA, each process takes the GPU of its local rank).
* :func:`init_distributed` joins the process group that ``torchrun`` describes in its environment
  variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): gloo on the
  CPU, NCCL on GPUs. Without those variables it does nothing and the process is rank 0 of 1, so the
  same code runs alone or under ``torchrun --nproc-per-node N``. :func:`rank`, :func:`world_size`,
  :func:`barrier` and :func:`all_reduce_sum` work in both cases.
* :func:`accelerate` wraps a model for speed only: ``torch.compile``, bf16 autocast, channels-last.
  Parameters are shared with the original model; the logits come back in float32. Compilation and
  channels-last change results by float rounding only; bf16 by bf16 rounding (about 3 significant
  digits), which is why it is off by default.
* :func:`tune_allocator` raises glibc malloc's mmap and trim thresholds. With the defaults, the
  large short-lived tensors of an attack step are mmapped and unmapped every step, and each step
  page-faults its memory in again: on our 2-core machines 67–94 ms per step against 48–52 ms with
  ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824``.
  :func:`tune_allocator` applies the same two settings from inside a running process (``mallopt``),
  so the command-line tool gets them without the environment variable. ``ADVFEATURES_MALLOC=default``
  turns it off; :func:`allocator_settings` says what a process runs under (benchmarks record it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from .errors import ConfigError

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda", "auto")
MMAP_THRESHOLD = 32 << 20  # bytes: blocks below this come from the heap and are reused
TRIM_THRESHOLD = 1 << 30  # bytes: free heap kept before it is given back to the kernel
RECOMMENDED_GLIBC_TUNABLES = f"glibc.malloc.mmap_threshold={MMAP_THRESHOLD}:glibc.malloc.trim_threshold={TRIM_THRESHOLD}"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers from glibc's malloc.h
_TUNED: dict[str, int] | None = None


# ----------------------------------------------------------------------------------------------
# devices


def resolve_device(device: str | torch.device = "auto", *, local_rank: int | None = None) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available) as a device; with CUDA, the GPU of
    ``local_rank`` (default: this process's ``LOCAL_RANK``, 0 outside ``torchrun``)."""
    if isinstance(device, torch.device):
        name = device.type
    else:
        name = str(device).lower()
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


# ----------------------------------------------------------------------------------------------
# process groups


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: a single process, no group

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether the environment describes a multi-process job (``torchrun`` sets these variables)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_distributed(device: str | torch.device = "auto", *, timeout_s: float = 1800.0) -> tuple[DistContext, torch.device]:
    """Join ``torchrun``'s process group (if there is one) and pick this process's device.

    Returns the context (rank, world size, local rank, backend) and the device; a process started
    without ``torchrun`` gets rank 0 of 1 and no group. Calling it again returns the same answer.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank=local_rank)
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend()), dev
    if not launched_by_torchrun():
        return DistContext(), dev
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run one process without torchrun")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise ConfigError(f"{var} is not set: start the processes with torchrun (e.g. torchrun --nproc-per-node 2 ...)")
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s),
                            device_id=dev if dev.type == "cuda" else None)
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    log.info("rank %d of %d (%s, %s)", ctx.rank, ctx.world_size, backend, dev)
    return ctx, dev


def is_distributed() -> bool:
    """Whether this process belongs to a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    """Wait for every process of the group (nothing to wait for in a single process)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over all processes (``t`` itself in a single process); in place."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj, src: int = 0):
    """``obj`` as rank ``src`` has it, on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shutdown() -> None:
    """Leave the process group (if any); safe to call twice."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------
# speed options


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
    float32 logits. Channels-last converts the model's weights in place (values unchanged).
    """
    if not (compile or bf16 or channels_last):
        return model
    device_type = torch.device(device).type if device is not None else next(
        (p.device.type for p in model.parameters()), "cpu")
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
    import shutil

    if not hasattr(torch, "compile"):
        return False, "this torch has no torch.compile"
    if not any(shutil.which(cc) for cc in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++")):
        return False, "torch.compile on the CPU needs a C++ compiler (g++ or clang++) on PATH"
    return True, ""


# ----------------------------------------------------------------------------------------------
# the allocator


def _libc() -> ctypes.CDLL | None:
    try:
        import platform

        if platform.libc_ver()[0] != "glibc":
            return None
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except (OSError, ValueError):
        return None


def tune_allocator() -> dict[str, int] | None:
    """Raise glibc's mmap threshold to 32 MiB and its trim threshold to 1 GiB for this process
    (what ``GLIBC_TUNABLES`` would set at start-up). Returns the settings applied, or None when
    nothing was changed: not glibc, ``GLIBC_TUNABLES`` already given, or ``ADVFEATURES_MALLOC=default``.
    """
    global _TUNED
    if _TUNED is not None:
        return _TUNED
    if os.environ.get("ADVFEATURES_MALLOC", "").lower() == "default" or "GLIBC_TUNABLES" in os.environ:
        return None
    libc = _libc()
    if libc is None:
        return None
    ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        log.warning("mallopt refused the allocator settings; CPU steps may page-fault (set GLIBC_TUNABLES=%s)", RECOMMENDED_GLIBC_TUNABLES)
        return None
    _TUNED = {"mmap_threshold": MMAP_THRESHOLD, "trim_threshold": TRIM_THRESHOLD}
    log.debug("allocator tuned: %s", _TUNED)
    return _TUNED


def allocator_settings() -> dict[str, str | int | None]:
    """What this process allocates under: glibc or not, ``GLIBC_TUNABLES``, ``LD_PRELOAD`` (jemalloc,
    tcmalloc) and whether :func:`tune_allocator` changed the thresholds."""
    import platform

    return {
        "libc": " ".join(platform.libc_ver()) or "unknown",
        "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES"),
        "LD_PRELOAD": os.environ.get("LD_PRELOAD"),
        "mallopt": f"mmap_threshold={_TUNED['mmap_threshold']} trim_threshold={_TUNED['trim_threshold']}" if _TUNED else None,
    }


def peak_rss_mib() -> float | None:
    """This process's resident-memory high-water mark so far, in MiB (None where unknown)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)
