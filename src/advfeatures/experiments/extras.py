"""Optional stages of ``reproduce`` beside the paper's main table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pipeline import Reproduction


def run_extras(rep: Reproduction) -> dict[str, Any]:
    return {}
