"""Every attack by name, built from a name and keyword arguments (used by the CLI and by the
evaluation suites of configs)::

    build_attack("apgd-t", norm="L2", eps=0.5, steps=100)
    build_attack("pgd", norm="L2", eps=0.5, steps=50, step_size=0.05, restarts=3, random_start=True)

The common options (``norm``, ``eps``, ``steps``, ``queries``, ``seed``) reach every attack that
takes them (``steps`` is ``epochs`` for ``universal``, ``queries`` is ``max_queries``); any other
keyword goes to the attack's constructor, and a keyword the attack does not take is a one-line
:class:`ConfigError` naming the ones it does (never silently dropped).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

NORMS = ("Linf", "L2", "L1")
_LP = ("Linf", "L2")
# other libraries' names for our keywords: a clear pointer instead of "unknown keyword"
_ALIASES = {"alpha": "step_size", "eps_step": "step_size", "abs_stepsize": "step_size", "n_restarts": "restarts",
            "n_iter": "steps", "max_iter": "steps", "n_queries": "queries", "num_random_init": "random_start"}


@dataclass(frozen=True)
class AttackEntry:
    cls: str  # "module:Class" inside advfeatures.attacks
    norms: tuple[str, ...]  # the norms it works in (empty: spatial attacks, no norm)
    needs_eps: bool = True  # False: minimal-norm or spatial attacks
    fixed: dict[str, Any] = field(default_factory=dict)  # what the name itself sets (e.g. loss="dlr")
    steps_key: str = "steps"
    # at its defaults, each example's result depends on it alone, not on the rest of its batch (False:
    # random draws made for the whole batch, one perturbation shared by the batch, or a batch-level
    # line search or early abort); the tests hold every attack with True to it
    batch_independent: bool = True

    def load(self) -> type:
        import importlib

        module, name = self.cls.split(":")
        return getattr(importlib.import_module(f"{__package__}.{module}"), name)


REGISTRY: dict[str, AttackEntry] = {
    "pgd": AttackEntry("pgd:PGD", NORMS, fixed={"early_stop": True}),
    "fgsm": AttackEntry("pgd:FGSM", NORMS, steps_key=""),
    "bim": AttackEntry("bim:BIM", ("Linf",)),
    "iterative-ll": AttackEntry("bim:IterativeLeastLikely", ("Linf",)),
    "mifgsm": AttackEntry("momentum:MIFGSM", _LP),
    "difgsm": AttackEntry("momentum:DIFGSM", _LP, batch_independent=False),  # one random resize per step
    "apgd": AttackEntry("apgd:APGD", NORMS, batch_independent=False),  # random start
    "apgd-dlr": AttackEntry("apgd:APGD", NORMS, fixed={"loss": "dlr"}, batch_independent=False),
    "apgd-t": AttackEntry("apgd:APGDT", NORMS, batch_independent=False),
    "fab": AttackEntry("fab:FAB", NORMS, needs_eps=False),
    "fab-t": AttackEntry("fab:FABT", NORMS, needs_eps=False),
    "cw-linf": AttackEntry("cw:CWLinf", ("Linf",), batch_independent=False),  # random start
    "cw-l2": AttackEntry("cw:CWL2", ("L2",), needs_eps=False, batch_independent=False),  # early abort on the batch
    "deepfool": AttackEntry("deepfool:DeepFool", _LP, needs_eps=False),
    "lbfgs": AttackEntry("lbfgs:LBFGSAttack", ("L2",), needs_eps=False, batch_independent=False),  # batch line search
    "nes": AttackEntry("nes:NES", _LP, batch_independent=False),  # random probes
    "square": AttackEntry("square:Square", _LP, batch_independent=False),  # random windows
    "universal": AttackEntry("universal:Universal", _LP, steps_key="epochs", batch_independent=False),  # one δ
    "spatial": AttackEntry("spatial:SpatialGrid", (), needs_eps=False, steps_key=""),
    "stadv": AttackEntry("spatial:StAdv", (), needs_eps=False),
}
ATTACK_NAMES = tuple(REGISTRY)


def accepted_keywords(cls: type) -> list[str]:
    """The keyword arguments ``cls``'s constructor takes: its declared hyperparameters."""
    return [f.name for f in dataclasses.fields(cls) if f.init]


def build_attack(name: str, *, norm: str, eps: float | None, steps: int | None = None, queries: int | None = None,
                 seed: int = 0, **options: Any):
    """An attack by its CLI name: the common options where the attack takes them, ``options`` (any
    other constructor keyword, ``None`` meaning the attack's default) checked against its constructor."""
    entry = REGISTRY.get(name)
    if entry is None:
        raise ConfigError(f"unknown attack {name!r}; choose one of {', '.join(REGISTRY)}")
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
    cls = entry.load()
    valid = accepted_keywords(cls)
    for key in options:
        if key not in valid:
            hint = f" (did you mean {_ALIASES[key]}?)" if key in _ALIASES and _ALIASES[key] in valid else ""
            raise ConfigError(f"{name} takes no option {key!r}{hint}; it takes {', '.join(k for k in valid if k != 'seed')}")
    common = {"norm": norm if entry.norms else None, "eps": eps, entry.steps_key: steps, "max_queries": queries, "seed": seed}
    kwargs = {k: v for k, v in {**common, **entry.fixed}.items() if k in valid and v is not None}
    kwargs.update({k: v for k, v in options.items() if v is not None})
    return cls(**kwargs)
