"""Attacks: one shared optimisation loop (:mod:`.loop`) and one small file per attack."""

from .base import Attack, AttackResult, least_likely_targets, random_targets
from .loop import OptimizationResult, eval_mode, optimize_inputs
from .losses import cross_entropy, dlr, margin
from .pgd import FGSM, PGD

__all__ = [
    "FGSM",
    "PGD",
    "Attack",
    "AttackResult",
    "OptimizationResult",
    "cross_entropy",
    "dlr",
    "eval_mode",
    "least_likely_targets",
    "margin",
    "optimize_inputs",
    "random_targets",
]
