"""Experiments: presets, the ``reproduce`` pipeline (one :class:`RunState` per run), and its report."""

from .config import PRESETS, ReproduceConfig, resolve_config
from .pipeline import Reproduction, open_run, run_reproduction, run_seeds
from .state import RunState

__all__ = ["PRESETS", "ReproduceConfig", "Reproduction", "RunState", "open_run", "resolve_config", "run_reproduction",
           "run_seeds"]
