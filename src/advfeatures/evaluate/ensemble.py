"""The worst-case ensemble: AutoAttack's protocols (Croce & Hein 2020), or any list of attacks.

Each member runs only on the points every earlier member left robust, and a point counts as broken
as soon as one member finds a valid adversarial example (inside the ε-ball and the [0, 1] box,
misclassified), so the ensemble's robust accuracy is at most that of any member on the points it
saw: never weaker than its strongest member. Inside each member, with ``early_stop`` (on for
evaluation) a point also leaves the working batch as soon as it is broken, so later steps cost less
and the points broken are the same (see each attack's docstring).

The protocols, next to AutoAttack's settings (``autoattack/autoattack.py``, ``set_version``):

=================  ==========================================  ==========================================
version            ours                                        AutoAttack
=================  ==========================================  ==========================================
``standard``       APGD-CE: 100 steps, 1 restart, ρ = 0.75,    ``apgd``: n_iter=100, n_restarts=1,
(Linf, L2)         α = 0.75, η⁽⁰⁾ = 2ε, random start           rho=.75, eot_iter=1
                   APGD-T: targeted DLR, 9 targets (top 2–10   ``apgd-t``: n_target_classes=9,
                   on the clean input), 1 restart, 100 steps   n_restarts=1, n_iter=100
                   FAB-T: 9 targets, 100 steps, 1 restart,     ``fab-t``: n_target_classes=9,
                   α_max = 0.1, η = 1.05, β = 0.9              n_restarts=1, n_iter=100 (same α, η, β)
                   Square: 5 000 queries, p_init = 0.8,        ``square``: n_queries=5000, p_init=.8,
                   1 restart                                   n_restarts=1
``standard`` (L1)  APGD-CE 5 restarts, APGD-T 5 targets,        the same counts; AutoAttack's APGD-L1
                   FAB-T; no Square (ours has no L1 Square)    also uses ``use_largereps``, ours does not
``rand``           APGD-CE and APGD-DLR, 100 steps, 1          ``apgd-ce``, ``apgd-dlr``: n_restarts=1,
                   restart, gradients averaged over 20 EOT     eot_iter=20
                   draws per step
``custom``         the ``members`` given                       ``attacks_to_run``
=================  ==========================================  ==========================================

Departures: AutoAttack's Square draws one window position per iteration for the whole batch, ours
one per example; targeted DLR needs 4 classes, so on fewer classes APGD-T uses targeted CE; on two
classes APGD-T and FAB-T are skipped (there is no other target than the untargeted one). Members
with fewer targets than 9 use every class but the label. AutoAttack runs APGD-T's and FAB-T's
targets one after the other; ours stacks consecutive targets' rows in one batch of up to the
members' ``batch_rows`` = 256 rows (fewer, larger passes when few points are left; on one CPU
thread passes of one to a few hundred rows cost the least per row, and 1024 was slower than one by
one on the robust digits model, see ``benchmarks/ensemble_profile.py``; on a GPU larger batches
pay): the same points fall to FAB-T, and APGD-T's random starts are drawn for the stacked batch.
Test-time randomness (``stochastic``, on by default in ``rand``): every member, the clean check and
the judging of each member's output run the model with its stochastic layers (Dropout of every kind,
RReLU) in train mode and everything else, BatchNorm included, in eval mode, so BatchNorm keeps its
running statistics and never updates them (:mod:`advfeatures.attacks.stochastic`); each module's own
mode is restored afterwards. The draws come from the global RNG forked and seeded from ``seed``, so
an evaluation is reproducible and leaves the caller's RNG as it was. AutoAttack leaves the mode to
the caller, who must put a Dropout model in train mode, BatchNorm included, for its ``rand`` version
to see the dropout. ``stochastic=False`` (the default of ``standard`` and ``custom``) runs everything
in eval mode, where Dropout is off; randomness a model draws in ``forward`` whatever its mode is seen
either way (seeded only when ``stochastic``).

Usage::

    report = worst_case_evaluation(model, x, y, norm="Linf", eps=8 / 255)            # standard
    report = worst_case_evaluation(model, x, y, norm="L2", eps=0.5, version="rand")  # randomised model
    report["robust_accuracy"], [m["robust_accuracy"] for m in report["members"]]
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..attacks.apgd import APGD, APGDT
from ..attacks.base import Attack, check_labels, num_classes_of
from ..attacks.fab import FABT
from ..attacks.square import Square
from ..attacks.stochastic import evaluation_draws, model_mode, stochastic_layers
from ..data.dataset import ImageDataset
from ..errors import ConfigError
from ..storage import iter_chunks
from ..threats import check_steps, make_threat
from .metrics import check_inputs, device_of, predict

log = logging.getLogger(__name__)

VERSIONS = ("standard", "rand", "custom")


@dataclass
class Member:
    """One attack of an ensemble; ``target`` is passed as ``target=`` (a mode such as ``"random"``,
    or one class per evaluated point), and success always means misclassification."""

    name: str
    attack: Attack
    target: Any = None


def _as_members(members: Sequence) -> list[Member]:
    out = []
    for m in members:
        if isinstance(m, Member):
            out.append(m)
        elif isinstance(m, (tuple, list)) and len(m) in (2, 3) and isinstance(m[0], str) and isinstance(m[1], Attack):
            out.append(Member(*m))
        else:
            raise ConfigError(f"an ensemble member must be a Member or a (name, attack[, target]) tuple, got {m!r}")
    if not out:
        raise ConfigError("the ensemble needs at least one member")
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"ensemble member names must be distinct, got {names}")
    return out


def standard_members(model: nn.Module, x: torch.Tensor, *, norm: str, eps: float, version: str = "standard",
                     steps: int = 100, n_target_classes: int = 9, square_queries: int = 5000, eot_iter: int = 20,
                     early_stop: bool = True, seed: int = 0, stochastic: bool | None = None) -> list[Member]:
    """The members of AutoAttack's ``standard`` or ``rand`` version (see the module docstring);
    ``stochastic`` (default: on for ``rand``, off for ``standard``) makes them attack the model's
    test-time randomness."""
    if version not in ("standard", "rand"):
        raise ConfigError(f"unknown evaluation version {version!r}; choose one of {', '.join(VERSIONS)}")
    norm = make_threat(norm, eps).norm
    k = num_classes_of(model, x[:1])
    stochastic = version == "rand" if stochastic is None else bool(stochastic)
    common = {"norm": norm, "eps": eps, "steps": steps, "early_stop": early_stop, "seed": seed, "stochastic": stochastic}
    if version == "rand":
        members = [Member("apgd-ce", APGD(loss="ce", eot_iter=eot_iter, **common))]
        if k > 2:
            members.append(Member("apgd-dlr", APGD(loss="dlr", eot_iter=eot_iter, **common)))
        return members
    build = {
        "apgd-ce": lambda runs: APGD(loss="ce", restarts=runs, **common),
        "apgd-t": lambda runs: APGDT(num_targets=runs, targeted_loss="dlr" if k >= 4 else "ce", **common),
        "fab-t": lambda runs: FABT(num_targets=runs, **common),
        "square": lambda _runs: Square(norm=norm, eps=eps, max_queries=square_queries, early_stop=early_stop, seed=seed,
                                       stochastic=stochastic),
    }
    return [Member(name, build[name](runs)) for name, runs in standard_plan(norm, k, n_target_classes)]


def _stochastic_of(members: list[Member], stochastic: bool | None) -> bool:
    """Whether the evaluation is stochastic: what every member says (they must agree, and agree
    with ``stochastic`` where it is given), since the clean check and the judging follow it."""
    flags = {bool(m.attack.stochastic) for m in members}
    if len(flags) > 1:
        on = [m.name for m in members if m.attack.stochastic]
        raise ConfigError(f"ensemble members disagree on stochastic (on for {', '.join(on)} only); "
                          "make every member with the same stochastic=")
    (flag,) = flags
    if stochastic is not None and bool(stochastic) != flag:
        raise ConfigError(f"stochastic={bool(stochastic)} but the members were made with stochastic={flag}; "
                          f"make them with Attack(..., stochastic={bool(stochastic)}) or drop the stochastic argument")
    return flag


def standard_plan(norm: str, num_classes: int, n_target_classes: int) -> list[tuple[str, int]]:
    """(member, runs) of the standard version at a canonical ``norm`` for ``num_classes`` classes:
    APGD-CE (5 restarts in L1, else 1), APGD-T and FAB-T over their target classes (more than two
    classes only; APGD-T 5 targets in L1), Square (not in L1). :func:`standard_members` builds these;
    ``experiments.estimate`` counts their passes from the same list."""
    l1 = norm == "L1"
    plan = [("apgd-ce", 5 if l1 else 1)]
    if num_classes > 2:
        plan += [("apgd-t", min(5 if l1 else n_target_classes, num_classes - 1)),
                 ("fab-t", min(n_target_classes, num_classes - 1))]
    if not l1:
        plan.append(("square", 1))
    return plan


def worst_case_evaluation(
    model: nn.Module,
    x: torch.Tensor | ImageDataset,
    y: torch.Tensor | None = None,
    *,
    norm: str,
    eps: float,
    version: str = "standard",
    members: Sequence | None = None,
    batch_size: int = 256,
    seed: int = 0,
    steps: int = 100,
    n_target_classes: int = 9,
    square_queries: int = 5000,
    eot_iter: int = 20,
    early_stop: bool = True,
    stochastic: bool | None = None,
) -> dict[str, Any]:
    """Per-example worst case over ``members`` (given: ``version="custom"``, implied), or over the
    ``version``'s members (``"standard"``: APGD-CE, APGD-T, FAB-T, Square; ``"rand"``: APGD-CE and
    APGD-DLR with EOT), configured by ``steps``, ``n_target_classes``, ``square_queries``, ``eot_iter``
    and ``early_stop``.

    ``stochastic``: evaluate the model's test-time randomness (its Dropout and RReLU layers on,
    BatchNorm on its running statistics; see the module docstring). Default: on for ``rand`` (the
    version for randomised models: a user who picks it for a Dropout model means its dropout), off
    for ``standard``; for ``custom``, what the members were made with (``Attack(stochastic=...)``),
    which must agree with each other and with ``stochastic`` when it is given. With it on, a point
    counts as robust when one draw of the model classifies it correctly (the clean check, made
    once, as AutoAttack's ``rand`` version does: the points it gets wrong are never attacked) and
    no member's output fools one further draw (one per member and batch); an attack's own success
    on its last EOT call is not enough. All draws are seeded from ``seed``.

    Returns ``{"norm", "eps", "version", "stochastic", "n", "clean_accuracy", "robust_accuracy", "members":
    [{"name", "attack", "attacked", "newly_broken", "invalid", "robust_accuracy", "seconds"[,
    "mean_queries"]}], "x_adv": (N, C, H, W) tensor, "robust": (N,) bool tensor}``; each member's
    ``robust_accuracy`` is the ensemble's after that member. ``x_adv`` holds the first valid
    adversarial example found per point (the clean image where none was found).

    ``x`` may be an :class:`~advfeatures.data.ImageDataset` instead of images and labels: it is then
    read a batch at a time (a streamed set never in memory whole) and ``x_adv`` is None.
    """
    check_inputs(x, y)
    data = x if isinstance(x, ImageDataset) else None
    threat = make_threat(norm, eps)
    batch_size = check_steps(batch_size, "batch_size")
    if version not in VERSIONS:
        raise ConfigError(f"unknown evaluation version {version!r}; choose one of {', '.join(VERSIONS)}")
    if version == "custom" and members is None:
        raise ConfigError("version='custom' needs members=[(name, attack), ...]")
    device = device_of(model)
    if data is None:
        x, y = x.detach().to(device), y.to(device)  # x_adv starts as its copy: no autograd history in the report
    else:
        y = data.labels.to(device)

    def read(ii: torch.Tensor) -> torch.Tensor:
        return x[ii] if data is None else data.batch(ii.cpu())[0].to(device)

    # before anything runs: a model without (N, K ≥ 2) logits, or labels it cannot output, would
    # make every point clean-wrong (or clean-right) and the members never run, silently
    probe = read(torch.arange(1, device=device))  # one image: the class count here, the members' settings below
    y = check_labels(y, y, num_classes_of(model, probe))
    if members is None:
        stochastic = version == "rand" if stochastic is None else bool(stochastic)
        members = standard_members(model, probe, norm=norm, eps=eps, version=version, steps=steps,
                                   n_target_classes=n_target_classes, square_queries=square_queries, eot_iter=eot_iter,
                                   early_stop=early_stop, seed=seed, stochastic=stochastic)
    else:
        version = "custom"
    members = _as_members(members)
    stochastic = _stochastic_of(members, stochastic)
    if version == "rand" and not stochastic and stochastic_layers(model):
        log.info("version='rand' with stochastic=False: the model's Dropout/RReLU layers are off (eval mode) and "
                 "their randomness is not evaluated")
    n = y.shape[0]
    draws = evaluation_draws(seed)  # the clean check's and the judging's draws (used only when stochastic)
    robust = predict(model, x if data is None else data, batch_size=batch_size, stochastic=stochastic, seed=draws) == y
    clean_accuracy = int(robust.sum()) / n
    x_adv = x.clone() if data is None else None
    report: list[dict[str, Any]] = []
    tol = 1e-5 + 1e-4 * (threat.eps if math.isfinite(threat.eps) else 0.0)
    for m in members:
        start = time.perf_counter()
        idx = robust.nonzero().squeeze(1)
        broken = invalid = 0
        queries = []
        for a, b in iter_chunks(idx.numel(), batch_size):
            ii = idx[a:b]
            target = m.target[ii.to(m.target.device)].to(device) if isinstance(m.target, torch.Tensor) else m.target
            xb = read(ii)
            res = m.attack(model, xb, y[ii], target=target, return_result=True)
            valid = (threat.norm_of(res.x_adv - xb) <= threat.eps + tol) & (res.x_adv.flatten(1).amin(1) >= 0) \
                & (res.x_adv.flatten(1).amax(1) <= 1)
            with torch.no_grad(), model_mode(model, stochastic=stochastic, seed=draws, device=device):
                fooled = model(res.x_adv).argmax(1) != y[ii]
            invalid += int((fooled & ~valid).sum())
            fooled &= valid
            robust[ii[fooled]] = False
            if x_adv is not None:
                x_adv[ii[fooled]] = res.x_adv[fooled]
            broken += int(fooled.sum())
            if res.queries is not None:
                queries.append(res.queries.float())
        if invalid:
            log.warning("%s returned %d adversarial examples outside the %s ball of radius %g; they were not counted",
                        m.name, invalid, threat.norm, threat.eps)
        entry = {"name": m.name, "attack": m.attack.describe(), "attacked": int(idx.numel()), "newly_broken": broken,
                 "invalid": invalid, "robust_accuracy": int(robust.sum()) / n,
                 "seconds": round(time.perf_counter() - start, 3)}
        if queries:
            entry["mean_queries"] = float(torch.cat(queries).mean())
        report.append(entry)
        log.info("robust accuracy %.2f%% after %s", 100 * entry["robust_accuracy"], m.name)
    return {"norm": threat.norm, "eps": threat.eps, "version": version, "stochastic": stochastic, "n": n,
            "clean_accuracy": clean_accuracy, "robust_accuracy": int(robust.sum()) / n, "members": report, "x_adv": x_adv,
            "robust": robust}
