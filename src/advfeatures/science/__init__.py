"""The science around Ilyas et al. 2019: checks of its claims and of the replies to it.

* :mod:`.planted` — a synthetic benchmark with a robust and a non-robust feature per class whose
  ground truth is known: what D_R, D_NR, D_rand and D_det keep, and what models trained on them use.
* :mod:`.leakage` — Goh's robust-feature leakage audit of D_rand / D_det (Distill 2019).
* :mod:`.distill` — Wallace's control: learning from a model's mistakes with its wrong labels.
* :mod:`.transfer` — transfer rate of a source model's adversarial examples vs learning from its
  D_rand, across architectures (Ilyas et al., Fig. 3).
"""

from .distill import distillation_control, mistakes_dataset
from .leakage import leakage_audit
from .planted import (
    PlantedConfig,
    PlantedRun,
    planted_dataset,
    planted_features,
    run_planted,
    swap_dataset,
)
from .transfer import plot_transfer, transfer_experiment

__all__ = [
    "PlantedConfig",
    "PlantedRun",
    "distillation_control",
    "leakage_audit",
    "mistakes_dataset",
    "planted_dataset",
    "planted_features",
    "plot_transfer",
    "run_planted",
    "swap_dataset",
    "transfer_experiment",
]
