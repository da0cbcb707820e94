"""Progress bars for long loops, switched off globally by ``--quiet`` (or for non-terminals in CI)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_ENABLED = True


def set_progress_enabled(enabled: bool) -> None:
    global _ENABLED
    _ENABLED = enabled


def progress(iterable: Iterable[T] | None = None, **kwargs) -> tqdm:
    """A tqdm bar that respects ``--quiet``, stays out of logs that are not a terminal, and leaves
    no trace once finished."""
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    off = not _ENABLED or kwargs.pop("disable", False)
    return tqdm(iterable, disable=True if off else None, **kwargs)  # None: tqdm's own "only on a terminal"
