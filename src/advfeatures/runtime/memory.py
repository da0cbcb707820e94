"""Peak memory: the process's resident high-water mark, and the GPU allocator's."""

from __future__ import annotations

import sys


def peak_rss_mib() -> float | None:
    """This process's resident-memory high-water mark so far, in MiB (None where unknown)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def peak_gpu_mib(device=None) -> float | None:
    """The CUDA caching allocator's peak of allocated memory on ``device`` so far, in MiB (None
    without CUDA); :func:`reset_peak_gpu` starts a new measurement."""
    if "torch" not in sys.modules:
        return None
    import torch

    if not torch.cuda.is_available() or (device is not None and torch.device(device).type != "cuda"):
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def reset_peak_gpu(device=None) -> None:
    import torch

    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.reset_peak_memory_stats(device)
