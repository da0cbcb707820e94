"""Training objectives beside standard and PGD adversarial training, each a small file over the
shared loop of :func:`advfeatures.train.train_model` (``TrainConfig.objective``):

=================  ==============================================================================
``standard``       cross-entropy (PGD training when ``adversary`` is set, as before objectives)
``pgd``            Madry et al. 2018: cross-entropy on PGD examples (``adversary``)
``trades``         Zhang et al. 2019: CE(clean) + β·KL(f(x) ‖ f(x')), x' maximising the KL
``fast``           Wong et al. 2020: FGSM from a random start, step 1.25·ε, overfitting check
``free``           Shafahi et al. 2019: m replays per batch, the perturbation carried across them
``logit_pairing``  Kannan et al. 2018: CE(f(x'), y) + λ·‖f(x) − f(x')‖²
``ibp``            Gowal et al. 2018: κ·CE(z) + (1−κ)·CE(ẑ) with ε and κ ramped
``gaussian``       Cohen et al. 2019: Gaussian noise augmentation at σ, for randomized smoothing
=================  ==============================================================================

Hyperparameters live in :class:`DefenceConfig` (``TrainConfig.defence``); the threat model, steps
and step size of every inner maximisation are the ``adversary``'s.
"""

from __future__ import annotations

from .base import DefenceConfig, Objective, PGDTraining
from .fast import FastAdversarialTraining
from .free import FreeAdversarialTraining
from .gaussian import GaussianAugmentation
from .ibp import IBPTraining
from .logit_pairing import LogitPairing
from .trades import TRADES
from ..errors import ConfigError

OBJECTIVES: dict[str, type[Objective]] = {
    "standard": Objective,
    "pgd": PGDTraining,
    "trades": TRADES,
    "fast": FastAdversarialTraining,
    "free": FreeAdversarialTraining,
    "logit_pairing": LogitPairing,
    "ibp": IBPTraining,
    "gaussian": GaussianAugmentation,
}


def check_objective(name: str, has_adversary: bool) -> None:
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    if OBJECTIVES[name].needs_adversary and not has_adversary:
        raise ConfigError(f"objective {name!r} needs an adversary (its norm, eps and steps); set adversary, "
                          "e.g. adversary.norm=Linf adversary.eps=0.1")


def build_objective(name: str, cfg: DefenceConfig, adversary=None, *, seed: int = 0) -> Objective:
    """The objective ``name`` with its hyperparameters and (where it needs one) the PGD adversary whose
    threat model, steps and step size its inner maximisation uses. ``standard`` with an adversary is
    PGD training (the behaviour of configs written before objectives existed)."""
    check_objective(name, adversary is not None)
    cfg.validate()
    if name == "standard" and adversary is not None:
        name = "pgd"
    return OBJECTIVES[name](cfg, adversary, seed=seed)


__all__ = ["OBJECTIVES", "DefenceConfig", "Objective", "PGDTraining", "TRADES", "FastAdversarialTraining",
           "FreeAdversarialTraining", "LogitPairing", "IBPTraining", "GaussianAugmentation", "build_objective",
           "check_objective"]
