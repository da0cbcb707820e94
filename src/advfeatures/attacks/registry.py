"""Every attack by name, configured from a few common options (used by the CLI and by the
evaluation suites of configs): ``build_attack("apgd-t", norm="L2", eps=0.5, steps=100)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

NORMS = ("Linf", "L2", "L1")


@dataclass(frozen=True)
class AttackEntry:
    build: Callable[..., Any]  # (norm, eps, steps, queries, seed) -> Attack
    norms: tuple[str, ...]  # the norms it works in
    needs_eps: bool = True  # False: minimal-norm or spatial attacks


def _kw(**pairs: Any) -> dict[str, Any]:
    return {k: v for k, v in pairs.items() if v is not None}


def _registry() -> dict[str, AttackEntry]:
    # imported here so that importing the package (and `advfeatures --help`) stays fast
    from . import apgd, bim, cw, deepfool, fab, lbfgs, momentum, pgd
    from .nes import NES
    from .spatial import SpatialGrid, StAdv
    from .square import Square
    from .universal import Universal

    lp = ("Linf", "L2")
    return {
        "pgd": AttackEntry(lambda n, e, s, q, seed: pgd.PGD(norm=n, eps=e, early_stop=True, seed=seed, **_kw(steps=s)), NORMS),
        "fgsm": AttackEntry(lambda n, e, s, q, seed: pgd.FGSM(norm=n, eps=e, seed=seed), NORMS),
        "bim": AttackEntry(lambda n, e, s, q, seed: bim.BIM(eps=e, seed=seed, **_kw(steps=s)), ("Linf",)),
        "iterative-ll": AttackEntry(lambda n, e, s, q, seed: bim.IterativeLeastLikely(eps=e, seed=seed, **_kw(steps=s)), ("Linf",)),
        "mifgsm": AttackEntry(lambda n, e, s, q, seed: momentum.MIFGSM(norm=n, eps=e, seed=seed, **_kw(steps=s)), lp),
        "difgsm": AttackEntry(lambda n, e, s, q, seed: momentum.DIFGSM(norm=n, eps=e, seed=seed, **_kw(steps=s)), lp),
        "apgd": AttackEntry(lambda n, e, s, q, seed: apgd.APGD(norm=n, eps=e, seed=seed, **_kw(steps=s)), NORMS),
        "apgd-dlr": AttackEntry(lambda n, e, s, q, seed: apgd.APGD(norm=n, eps=e, loss="dlr", seed=seed, **_kw(steps=s)), NORMS),
        "apgd-t": AttackEntry(lambda n, e, s, q, seed: apgd.APGDT(norm=n, eps=e, seed=seed, **_kw(steps=s)), NORMS),
        "fab": AttackEntry(lambda n, e, s, q, seed: fab.FAB(norm=n, eps=e, seed=seed, **_kw(steps=s)), NORMS, needs_eps=False),
        "fab-t": AttackEntry(lambda n, e, s, q, seed: fab.FABT(norm=n, eps=e, seed=seed, **_kw(steps=s)), NORMS, needs_eps=False),
        "cw-linf": AttackEntry(lambda n, e, s, q, seed: cw.CWLinf(eps=e, seed=seed, **_kw(steps=s)), ("Linf",)),
        "cw-l2": AttackEntry(lambda n, e, s, q, seed: cw.CWL2(seed=seed, **_kw(steps=s)), ("L2",), needs_eps=False),
        "deepfool": AttackEntry(lambda n, e, s, q, seed: deepfool.DeepFool(norm=n, seed=seed, **_kw(steps=s)), lp, needs_eps=False),
        "lbfgs": AttackEntry(lambda n, e, s, q, seed: lbfgs.LBFGSAttack(seed=seed, **_kw(steps=s)), ("L2",), needs_eps=False),
        "nes": AttackEntry(lambda n, e, s, q, seed: NES(norm=n, eps=e, seed=seed, **_kw(max_queries=q)), lp),
        "square": AttackEntry(lambda n, e, s, q, seed: Square(norm=n, eps=e, seed=seed, **_kw(max_queries=q)), lp),
        "universal": AttackEntry(lambda n, e, s, q, seed: Universal(norm=n, eps=e, seed=seed, **_kw(epochs=s)), lp),
        "spatial": AttackEntry(lambda n, e, s, q, seed: SpatialGrid(seed=seed), (), needs_eps=False),
        "stadv": AttackEntry(lambda n, e, s, q, seed: StAdv(seed=seed, **_kw(steps=s)), (), needs_eps=False),
    }


ATTACK_NAMES = ("pgd", "fgsm", "bim", "iterative-ll", "mifgsm", "difgsm", "apgd", "apgd-dlr", "apgd-t", "fab", "fab-t", "cw-linf", "cw-l2",
                "deepfool", "lbfgs", "nes", "square", "universal", "spatial", "stadv")


def build_attack(name: str, *, norm: str, eps: float | None, steps: int | None = None, queries: int | None = None, seed: int = 0):
    """An attack by its CLI name, configured from the common options (``steps``: iterations, or
    epochs for ``universal``; ``queries``: the black-box budget)."""
    registry = _registry()
    if name not in registry:
        raise ConfigError(f"unknown attack {name!r}; choose one of {', '.join(registry)}")
    entry = registry[name]
    if entry.norms and norm not in entry.norms:
        raise ConfigError(f"{name} works in {' or '.join(entry.norms)}, not {norm}; pass --norm {entry.norms[0]}")
    if entry.needs_eps and eps is None:
        raise ConfigError(f"{name} needs a budget: pass --eps")
    # numbers at the door (advfeatures.validate): no attack sees a nan, negative or infinite budget
    from ..validate import positive, seed as check_seed, whole

    if eps is not None:
        positive("eps", eps)
    for what, value in (("steps", steps), ("queries", queries)):
        if value is not None:
            whole(what, value, minimum=1)
    check_seed(seed)
    return entry.build(norm, eps, steps, queries, seed)
