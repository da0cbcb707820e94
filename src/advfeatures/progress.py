"""Progress bars for long loops: on stderr, only on a terminal, never in logs or piped output.

* :func:`progress` wraps any iterable (epochs, shards, batches) in a bar.
* :func:`progress_batches` is the loop of one-off commands (``attack``, ``evaluate``, ``invert``…):
  it yields ``(start, stop)`` index pairs over ``n`` items in batches and counts items, so the bar
  shows images per second and the time left::

      for a, b in progress_batches(len(x), batch_size, desc="attack pgd"):
          x_adv[a:b] = attack(model, x[a:b], y[a:b])

Bars are drawn when all of these hold: progress is enabled (``--quiet`` turns it off through
:func:`set_progress_enabled`), stderr is a terminal, and this is rank 0 of a ``torchrun`` job.
``ADVFEATURES_PROGRESS=1`` draws them even where stderr is not a terminal (``=0``: never). They go
to stderr, so a command's stdout (its JSON) stays clean, and leave no trace once finished.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_ENABLED = True


def set_progress_enabled(enabled: bool) -> None:
    global _ENABLED
    _ENABLED = enabled


@contextmanager
def progress_disabled():
    """No bars inside the block (e.g. a calibration run), the previous setting restored after."""
    global _ENABLED
    before, _ENABLED = _ENABLED, False
    try:
        yield
    finally:
        _ENABLED = before


def progress_enabled(stream=None) -> bool:
    """Whether a bar would be drawn now on ``stream`` (default: stderr); see the module docstring."""
    forced = os.environ.get("ADVFEATURES_PROGRESS", "").strip()
    if not _ENABLED or forced == "0" or os.environ.get("RANK", "0") not in ("", "0"):
        return False
    if forced == "1":
        return True
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def progress(iterable: Iterable[T] | None = None, **kwargs) -> tqdm:
    """A tqdm bar on stderr that respects ``--quiet``, stays out of logs that are not a terminal, and
    leaves no trace once finished. ``disable=True`` turns this one off."""
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("file", sys.stderr)
    off = kwargs.pop("disable", False) or not progress_enabled(kwargs["file"])
    return tqdm(iterable, disable=off, **kwargs)


def progress_batches(n: int, batch_size: int, *, desc: str | None = None, unit: str = "img", **kwargs) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` over ``n`` items in batches of ``batch_size``, with a bar counting items."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    with progress(total=n, desc=desc, unit=unit, **kwargs) as bar:
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            yield start, stop
            bar.update(stop - start)
