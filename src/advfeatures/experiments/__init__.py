"""Experiments: presets, the ``reproduce`` pipeline, and its report."""

from .config import PRESETS, ReproduceConfig, resolve_config
from .pipeline import Reproduction

__all__ = ["PRESETS", "ReproduceConfig", "Reproduction", "resolve_config"]
