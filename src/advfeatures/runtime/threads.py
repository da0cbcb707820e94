"""How many CPU threads torch uses.

torch's default is one thread per physical core, whatever else the machine is doing. On our shared
2-core machines, with another process busy on one core, that made one-off commands several times
slower (measured here with another process on one core: L2 PGD-20 through the digits CNN on 360
8×8 images took 0.54 s with one thread and 5.95 s with two; through the Fashion-MNIST CNN on 512
28×28 images 2.4–2.9 s against 10.0–10.5 s; and at a load average of 10, ``advfeatures attack
--attack pgd --norm l2 --eps 1 --steps 50`` on the 360 digits test images attacked in 5.9 s with
``OMP_NUM_THREADS=1`` and 78.4 s with 2). Threads that must meet at every operator wait for the
slowest, and a core shared with another process makes one of them slow.

So the default, :func:`default_threads`, takes only the cores that are free: the cores this process
may run on, less the machine's other load (the one-minute load average, rounded), at least one and
at most torch's own default. On an idle 2-core machine that is two threads, on a busy one, one.
Thread count changes results by float rounding only; a run that must be bit-identical (the
``reproduce`` presets) sets its count explicitly.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager


def available_cores() -> int:
    """The logical CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def other_load() -> float:
    """The machine's one-minute load average (0 where unknown)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def choose_threads(cores: int, load: float, cap: int | None = None) -> int:
    """The thread count for ``cores`` usable cores under ``load``: the free cores, between 1 and
    ``cap`` (torch's own default)."""
    free = cores - int(load + 0.5)
    return max(1, min(free, cap if cap is not None else cores))


def default_threads() -> int:
    """:func:`choose_threads` for this machine now (``OMP_NUM_THREADS``, when set, wins)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return choose_threads(available_cores(), other_load(), _torch_default())


_TORCH_DEFAULT: int | None = None  # torch's own thread count, noted before we first change it


def _torch_default() -> int | None:
    if _TORCH_DEFAULT is not None:
        return _TORCH_DEFAULT
    if "torch" not in sys.modules:
        return None
    return sys.modules["torch"].get_num_threads()


def set_threads(n: int | None) -> int:
    """Set torch's intra-op thread count to ``n`` (None: :func:`default_threads`); returns it."""
    import torch

    from ..errors import ConfigError

    global _TORCH_DEFAULT
    if _TORCH_DEFAULT is None:
        _TORCH_DEFAULT = torch.get_num_threads()
    if n is None:
        n = default_threads()
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"threads must be a whole number ≥ 1, got {n!r}")
    torch.set_num_threads(n)
    return n


@contextmanager
def using_threads(n: int | None):
    """Run the block with ``n`` torch threads (None: :func:`default_threads`), then restore."""
    import torch

    before = torch.get_num_threads()
    try:
        yield set_threads(n)
    finally:
        torch.set_num_threads(before)
