"""Certified robustness: interval bounds (:mod:`.bounds`, :func:`ibp_verified_accuracy`) and
randomized smoothing (:mod:`.smoothing`) with exact Clopper–Pearson bounds (:mod:`.stats`)."""

from __future__ import annotations

from .bounds import interval_bounds, margin_bounds, verified
from .ibp import ibp_verified_accuracy

__all__ = ["interval_bounds", "margin_bounds", "verified", "ibp_verified_accuracy"]
