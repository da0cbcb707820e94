"""Deprecated alias of :mod:`advfeatures.runtime` (devices, threads, process group, speed options,
allocator, peak memory), kept so that existing imports work while they move; new code imports from
``advfeatures.runtime``."""

from __future__ import annotations

from .runtime.allocator import (  # noqa: F401
    MMAP_THRESHOLD,
    RECOMMENDED_GLIBC_TUNABLES,
    TRIM_THRESHOLD,
    allocator_settings,
    tune_allocator,
)
from .runtime.device import DEFAULT_DEVICE, DEVICES, resolve_device  # noqa: F401
from .runtime.group import (  # noqa: F401
    DistContext,
    all_reduce_sum,
    barrier,
    broadcast_object,
    init_distributed,
    is_distributed,
    launched_by_torchrun,
    rank,
    shutdown,
    world_size,
)
from .runtime.memory import peak_rss_mib  # noqa: F401
from .runtime.speed import AcceleratedModel, accelerate, compile_available, unwrap  # noqa: F401
