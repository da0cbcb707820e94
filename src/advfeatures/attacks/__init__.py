"""Attacks: one shared optimisation loop (:mod:`.loop`) and one small file per attack."""

from .apgd import APGD, APGDT
from .base import Attack, AttackResult, least_likely_targets, random_targets
from .bim import BIM, IterativeLeastLikely
from .cw import CWL2, CWLinf
from .deepfool import DeepFool
from .fab import FAB, FABT
from .lbfgs import LBFGSAttack
from .loop import OptimizationResult, eval_mode, optimize_inputs
from .losses import cross_entropy, dlr, margin
from .minimal import minimal_eps_by_bisection
from .momentum import DIFGSM, MIFGSM
from .pgd import FGSM, PGD
from .masking import BPDA, EOT, GaussianNoise, Quantize
from .nes import NES
from .spatial import SpatialGrid, StAdv
from .square import Square
from .stochastic import STOCHASTIC_LAYERS, model_mode, stochastic_layers
from .universal import Universal, UniversalPerturbation, fooling_rate, universal_perturbation

__all__ = [
    "BPDA",
    "STOCHASTIC_LAYERS",
    "EOT",
    "GaussianNoise",
    "NES",
    "Quantize",
    "SpatialGrid",
    "Square",
    "StAdv",
    "Universal",
    "UniversalPerturbation",
    "fooling_rate",
    "universal_perturbation",
    "APGD",
    "APGDT",
    "BIM",
    "CWL2",
    "CWLinf",
    "DIFGSM",
    "DeepFool",
    "FAB",
    "FABT",
    "IterativeLeastLikely",
    "LBFGSAttack",
    "MIFGSM",
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
    "minimal_eps_by_bisection",
    "model_mode",
    "optimize_inputs",
    "random_targets",
    "stochastic_layers",
]
