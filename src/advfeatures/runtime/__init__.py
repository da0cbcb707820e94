"""Where the computation runs and how fast: one configuration, one function that applies it.

* :class:`RuntimeConfig` / :func:`apply_runtime` (:mod:`.config`): device, threads, process group,
  allocator and speed options, applied once at the start of every entry point (every command via
  :func:`advfeatures.cli.options.start_runtime`, ``reproduce``'s pipeline, a script);
  :func:`runtime_applied` for a block that gives the thread count back.
* :mod:`.device`: :func:`resolve_device`; one default everywhere, ``"auto"`` (:data:`DEFAULT_DEVICE`).
* :mod:`.threads`: torch's CPU thread count; by default only the free cores (measured: on a busy
  2-core machine torch's default of two threads made PGD 4–11× slower than one).
* :mod:`.group`: ``torchrun``'s process group (gloo on CPU, NCCL on GPU) and a few collectives.
* :mod:`.speed`: :func:`accelerate` (``torch.compile``, bf16 autocast, channels-last).
* :mod:`.allocator`: glibc malloc thresholds (:func:`tune_allocator`).
* :mod:`.memory`: peak resident and GPU memory.

Importing this package does not import torch (so ``advfeatures --help`` stays fast): the names
below are loaded from their submodules on first use.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "RuntimeConfig": "config", "Runtime": "config", "apply_runtime": "config", "runtime_applied": "config",
    "runtime_options": "config",
    "DEVICES": "device", "DEFAULT_DEVICE": "device", "resolve_device": "device", "check_device_name": "device",
    "available_cores": "threads", "choose_threads": "threads", "default_threads": "threads",
    "set_threads": "threads", "using_threads": "threads",
    "DistContext": "group", "launched_by_torchrun": "group", "init_distributed": "group", "is_distributed": "group",
    "rank": "group", "world_size": "group", "barrier": "group", "all_reduce_sum": "group",
    "broadcast_object": "group", "shutdown": "group",
    "AcceleratedModel": "speed", "accelerate": "speed", "unwrap": "speed", "compile_available": "speed",
    "channels_last_usable": "speed", "CPU_CHANNELS_LAST": "speed",
    "MMAP_THRESHOLD": "allocator", "TRIM_THRESHOLD": "allocator", "RECOMMENDED_GLIBC_TUNABLES": "allocator",
    "tune_allocator": "allocator", "allocator_settings": "allocator",
    "peak_rss_mib": "memory", "peak_gpu_mib": "memory", "reset_peak_gpu": "memory",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
