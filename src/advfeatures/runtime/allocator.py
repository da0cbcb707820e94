"""glibc malloc's thresholds, raised from inside the process (no torch needed).

With glibc's defaults, the large short-lived tensors of an attack step are mmapped and unmapped
every step, and each step page-faults its memory in again: on our 2-core machines 67–94 ms per step
against 48–52 ms with ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824``.
:func:`tune_allocator` applies the same two settings from inside a running process (``mallopt``), so
the command-line tool gets them without the environment variable. ``ADVFEATURES_MALLOC=default``
turns it off; :func:`allocator_settings` says what a process runs under (benchmarks record it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 32 << 20  # bytes: blocks below this come from the heap and are reused
TRIM_THRESHOLD = 1 << 30  # bytes: free heap kept before it is given back to the kernel
RECOMMENDED_GLIBC_TUNABLES = f"glibc.malloc.mmap_threshold={MMAP_THRESHOLD}:glibc.malloc.trim_threshold={TRIM_THRESHOLD}"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers from glibc's malloc.h
_TUNED: dict[str, int] | None = None


def _libc() -> ctypes.CDLL | None:
    try:
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
    return {
        "libc": " ".join(platform.libc_ver()) or "unknown",
        "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES"),
        "LD_PRELOAD": os.environ.get("LD_PRELOAD"),
        "mallopt": f"mmap_threshold={_TUNED['mmap_threshold']} trim_threshold={_TUNED['trim_threshold']}" if _TUNED else None,
    }
