"""The run as a value: everything one ``reproduce`` run knows, in one plain dataclass.

The pipeline (:mod:`.pipeline`) fills a :class:`RunState` step by step; the extras
(:mod:`.extras`) read it and return plain data; the report (:mod:`.report`) renders it. None of
them imports another's module for its state, so the three sit side by side under the pipeline
instead of in a circle. :func:`advfeatures.experiments.open_run` rebuilds one from a finished run
directory.

The named seeds: every use of randomness in a run is a *stream* of :data:`STREAMS`, and draws
from ``advfeatures.seeding.derive_seed(run seed, stream)`` (for run seed 0 the stream number
itself). ``RunState.seeds`` holds the resulting numbers by name, and ``results.json`` records them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..data.dataset import ImageDataset
from ..seeding import derive_seed
from .config import ReproduceConfig
from .rundir import RunDir

MODEL_NAMES = ("standard", "adversarial", "d_r", "d_nr", "d_rand", "d_det")
SETS = ("d_r", "d_nr", "d_rand", "d_det")
TRAINING_SETS = {"standard": "D", "adversarial": "D (adversarial training)", "d_r": "D_R", "d_nr": "D_NR",
                 "d_rand": "D_rand", "d_det": "D_det"}
SET_LABELS = {"d_r": "D_R", "d_nr": "D_NR", "d_rand": "D_rand", "d_det": "D_det"}
CONSTRUCTION_MODEL = {"d_r": "adversarial", "d_nr": "standard", "d_rand": "standard", "d_det": "standard"}

STREAMS: dict[str, int] = {
    "train_standard": 1, "train_adversarial": 2,
    "construct_d_r": 10, "construct_d_nr": 11, "construct_d_rand": 12, "construct_d_det": 13,
    "train_d_r": 20, "train_d_nr": 21, "train_d_rand": 22, "train_d_det": 23,
    "inversion_held_out_init": 700, "inversion_held_out_train": 701, "inversion": 702,
    "distillation": 800, "transfer": 850,
    "evaluation": 900, "worst_case": 910, "sanity": 920,
    "examples_figure": 990,
}


def named_seeds(run_seed: int) -> dict[str, int]:
    """The seed of every stream of a run seeded with ``run_seed``."""
    return {name: derive_seed(run_seed, stream) for name, stream in STREAMS.items()}


@dataclass
class RunState:
    """One run: its configuration, directory, device, data, and everything the steps produced."""

    config: ReproduceConfig
    given: dict[str, Any]
    run: RunDir
    device: torch.device
    train: ImageDataset
    test: ImageDataset
    data_key: str  # digest of the training and test images and labels
    seeds: dict[str, int]
    models: dict[str, nn.Module] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # each step's cache key (models and datasets)
    histories: dict[str, list] = field(default_factory=dict)
    datasets: dict[str, ImageDataset] = field(default_factory=dict)
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)  # the single attacks, per model
    worst_case: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # per model, one entry per radius
    sanity: dict[str, dict[str, Any]] = field(default_factory=dict)  # per model: the checks' verdict
    extras: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] | None = None
