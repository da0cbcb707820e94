"""Worst-case robustness evaluation and the sanity checks that catch a broken one.

* :func:`worst_case_evaluation` — the standard ensemble of AutoAttack (Croce & Hein 2020): APGD-CE,
  APGD-T (targeted DLR against the top ``n_target_classes`` classes) and Square (5 000 queries,
  black-box), each run only on the points every earlier member left robust. A point counts as
  broken as soon as one member finds a valid adversarial example (inside the ε-ball and the [0, 1]
  box, misclassified), so the ensemble's robust accuracy is at most that of any member on the
  points it saw: never weaker than its strongest member. Any list of members can replace the
  standard one.
* :func:`robustness_curve` — robust accuracy against ε for one attack family.
* :func:`sanity_checks` — the warning signs of obfuscated gradients (Athalye et al. 2018) and of a
  broken evaluation (AutoAttack's checks): a model that is random between calls, probabilities
  instead of logits, zero or non-finite input gradients, one-step FGSM beating many-step PGD, a
  black-box attack beating the white-box ones, an unbounded attack that does not reach ~100%, and
  accuracy that does not fall as ε grows. Each finding is a dict ``{"check", "message", "details"}``;
  an empty list means no warning sign.

Usage::

    report = worst_case_evaluation(model, x, y, norm="Linf", eps=8 / 255)
    report["robust_accuracy"], [m["robust_accuracy"] for m in report["members"]]
    for w in sanity_checks(model, x, y, norm="Linf", eps=8 / 255): print(w["message"])
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .attacks.base import Attack, num_classes_of
from .attacks.loop import eval_mode
from .attacks.losses import margin
from .attacks.pgd import FGSM, PGD
from .attacks.square import Square
from .data.dataset import check_images
from .errors import ConfigError, DataError
from .storage import iter_chunks
from .threats import check_steps, make_threat

log = logging.getLogger(__name__)


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


def standard_members(model: nn.Module, x: torch.Tensor, *, norm: str, eps: float, steps: int = 100, n_target_classes: int = 9,
                     square_queries: int = 5000, seed: int = 0) -> list[Member]:
    """AutoAttack's standard version: APGD-CE, APGD-T and Square (FAB-T is left out)."""
    from .attacks.apgd import APGD, APGDT  # imported lazily: the ensemble works with any members

    k = num_classes_of(model, x[:1])
    targeted_loss = "dlr" if k >= 4 else "ce"  # the targeted DLR needs four classes
    members = [Member("apgd-ce", APGD(norm=norm, eps=eps, steps=steps, loss="ce", seed=seed))]
    if k > 2:
        members.append(Member("apgd-t", APGDT(norm=norm, eps=eps, steps=steps, num_targets=min(n_target_classes, k - 1),
                                              targeted_loss=targeted_loss, seed=seed)))
    if str(norm).lower() in ("linf", "l2"):
        members.append(Member("square", Square(norm=norm, eps=eps, max_queries=square_queries, seed=seed)))
    return members


def _device_of(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _check_inputs(x: torch.Tensor, y: torch.Tensor) -> None:
    check_images(x, what="evaluation images")
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataError(f"labels must be a vector with one entry per image ({x.shape[0]})")
    if x.shape[0] == 0:
        raise DataError("no images to evaluate; pass at least one")


def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """The model's classes for ``x``, batch by batch, in eval mode."""
    device = _device_of(model)
    with torch.no_grad(), eval_mode(model):
        return torch.cat([model(x[a:b].to(device)).argmax(1) for a, b in iter_chunks(x.shape[0], batch_size)])


def worst_case_evaluation(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str,
    eps: float,
    members: Sequence | None = None,
    batch_size: int = 256,
    seed: int = 0,
    steps: int = 100,
    n_target_classes: int = 9,
    square_queries: int = 5000,
) -> dict[str, Any]:
    """Per-example worst case over ``members`` (default: APGD-CE, APGD-T, Square; ``steps``,
    ``n_target_classes`` and ``square_queries`` configure those).

    Returns ``{"norm", "eps", "n", "clean_accuracy", "robust_accuracy", "members": [{"name",
    "attack", "attacked", "newly_broken", "invalid", "robust_accuracy", "seconds"[, "mean_queries"]}],
    "x_adv": (N, C, H, W) tensor, "robust": (N,) bool tensor}``; each member's ``robust_accuracy``
    is the ensemble's after that member. ``x_adv`` holds the first valid adversarial example found
    per point (the clean image where none was found).
    """
    _check_inputs(x, y)
    threat = make_threat(norm, eps)
    batch_size = check_steps(batch_size, "batch_size")
    device = _device_of(model)
    x, y = x.to(device), y.to(device)
    if members is None:
        members = standard_members(model, x, norm=norm, eps=eps, steps=steps, n_target_classes=n_target_classes,
                                   square_queries=square_queries, seed=seed)
    members = _as_members(members)
    n = x.shape[0]
    robust = predict(model, x, batch_size=batch_size) == y
    clean_accuracy = int(robust.sum()) / n
    x_adv = x.clone()
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
            res = m.attack(model, x[ii], y[ii], target=target, return_result=True)
            valid = (threat.norm_of(res.x_adv - x[ii]) <= threat.eps + tol) & (res.x_adv.flatten(1).amin(1) >= 0) \
                & (res.x_adv.flatten(1).amax(1) <= 1)
            with torch.no_grad(), eval_mode(model):
                fooled = model(res.x_adv).argmax(1) != y[ii]
            invalid += int((fooled & ~valid).sum())
            fooled &= valid
            robust[ii[fooled]] = False
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
    return {"norm": threat.norm, "eps": threat.eps, "n": n, "clean_accuracy": clean_accuracy,
            "robust_accuracy": int(robust.sum()) / n, "members": report, "x_adv": x_adv, "robust": robust}


AttackFactory = Callable[..., Attack]


def robust_accuracy_of(model: nn.Module, attack: Attack, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256,
                       clean_correct: torch.Tensor | None = None) -> float:
    """Share of points classified correctly both clean and after ``attack`` (untargeted)."""
    device = _device_of(model)
    x, y = x.to(device), y.to(device)
    if clean_correct is None:
        clean_correct = predict(model, x, batch_size=batch_size) == y
    ok = torch.zeros((), dtype=torch.int64, device=device)
    for a, b in iter_chunks(x.shape[0], batch_size):
        x_adv = attack(model, x[a:b], y[a:b])
        with torch.no_grad(), eval_mode(model):
            ok += ((model(x_adv).argmax(1) == y[a:b]) & clean_correct[a:b]).sum()
    return int(ok) / x.shape[0]


def robustness_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps_list: Sequence[float],
                     attack_factory: AttackFactory | None = None, batch_size: int = 256, seed: int = 0) -> dict[str, Any]:
    """Robust accuracy at each ε of ``eps_list``; ``attack_factory(norm=..., eps=...)`` builds the
    attack (default: 20-step PGD with random start). Returns ``{"norm", "eps", "robust_accuracy",
    "clean_accuracy"}``."""
    _check_inputs(x, y)
    if not eps_list:
        raise ConfigError("eps_list is empty; give at least one ε")
    eps_list = [make_threat(norm, e).eps for e in eps_list]
    factory = attack_factory or (lambda *, norm, eps: PGD(norm=norm, eps=eps, steps=20, seed=seed))
    device = _device_of(model)
    x, y = x.to(device), y.to(device)
    correct = predict(model, x, batch_size=batch_size) == y
    accs = [robust_accuracy_of(model, factory(norm=norm, eps=e), x, y, batch_size=batch_size, clean_correct=correct)
            for e in eps_list]
    return {"norm": make_threat(norm, eps_list[0]).norm, "eps": eps_list, "robust_accuracy": accs,
            "clean_accuracy": int(correct.sum()) / x.shape[0]}


def _unbounded_eps(norm: str, x: torch.Tensor) -> float:
    """A radius whose ball contains the whole [0, 1] box around any image."""
    d = x[0].numel()
    return {"Linf": 1.0, "L2": math.sqrt(d), "L1": float(d)}[norm]


def _finding(check: str, message: str, **details) -> dict[str, Any]:
    return {"check": check, "message": message, "details": details}


def sanity_checks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str,
    eps: float,
    steps: int = 50,
    square_queries: int = 1000,
    tolerance: float = 0.02,
    unbounded_success: float = 0.99,
    batch_size: int = 256,
    seed: int = 0,
    measurements: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Warning signs that the model masks its gradients or that white-box results are unreliable.

    Accuracies are compared with an absolute ``tolerance``; the unbounded attack (a ball containing
    the whole box) must fool at least ``unbounded_success`` of the correctly classified points. Pass
    a dict as ``measurements`` to receive the numbers the checks were based on.
    """
    _check_inputs(x, y)
    threat = make_threat(norm, eps)
    norm, eps = threat.norm, threat.eps
    steps = check_steps(steps)
    if not 0 <= tolerance < 1:
        raise ConfigError(f"tolerance must be in [0, 1), got {tolerance}")
    device = _device_of(model)
    x, y = x.to(device), y.to(device)
    found: list[dict[str, Any]] = []
    meas: dict[str, Any] = {} if measurements is None else measurements
    head = x[:batch_size]

    with torch.no_grad(), eval_mode(model):
        out1, out2 = model(head), model(head)
    if not torch.allclose(out1, out2, rtol=1e-4, atol=1e-5):
        meas["max_output_difference"] = float((out1 - out2).abs().max())
        found.append(_finding("randomized_model", "the model's outputs differ between two identical calls: it is randomised; "
                              "attack its expectation with EOT (advfeatures.attacks.masking.EOT) and fix its seed to evaluate",
                              max_difference=meas["max_output_difference"]))
    if bool((out1 >= 0).all()) and torch.allclose(out1.sum(1), torch.ones_like(out1[:, 0]), atol=1e-4):
        found.append(_finding("softmax_outputs", "the model returns probabilities, not logits: losses on them saturate; "
                              "remove the final softmax before attacking"))

    with eval_mode(model), torch.enable_grad():
        g_zero = g_bad = 0
        for a, b in iter_chunks(x.shape[0], batch_size):
            xb = x[a:b].detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(margin(model(xb), y[a:b]).sum(), xb)
            flat = grad.flatten(1)
            g_bad += int((~torch.isfinite(flat)).any(1).sum())
            g_zero += int((flat == 0).all(1).sum())
    meas["zero_gradient_points"], meas["nonfinite_gradient_points"] = g_zero, g_bad
    if g_bad:
        found.append(_finding("nonfinite_gradients", f"{g_bad} of {x.shape[0]} inputs have non-finite input gradients; "
                              "the model's loss is not differentiable there (masking or numerical trouble)", points=g_bad))
    if g_zero:
        found.append(_finding("zero_gradients", f"{g_zero} of {x.shape[0]} inputs have an exactly zero input gradient: "
                              "gradients are masked (quantisation, thresholds...); use BPDA or a black-box attack",
                              points=g_zero))

    correct = predict(model, x, batch_size=batch_size) == y
    meas["clean_accuracy"] = clean = int(correct.sum()) / x.shape[0]

    def acc(attack: Attack) -> float:
        return robust_accuracy_of(model, attack, x, y, batch_size=batch_size, clean_correct=correct)

    meas["fgsm"] = a_fgsm = acc(FGSM(norm=norm, eps=eps, seed=seed))
    a_pgd_ce = acc(PGD(norm=norm, eps=eps, steps=steps, seed=seed))
    a_pgd_m = acc(PGD(norm=norm, eps=eps, steps=steps, loss="margin", seed=seed))
    meas["pgd"] = a_pgd = min(a_pgd_ce, a_pgd_m)
    if a_fgsm < a_pgd - tolerance:
        found.append(_finding("fgsm_beats_pgd", f"one-step FGSM ({a_fgsm:.1%}) is stronger than {steps}-step PGD "
                              f"({a_pgd:.1%}): iterative attacks are being misled (masked or noisy gradients)",
                              fgsm=a_fgsm, pgd=a_pgd))
    white = min(a_fgsm, a_pgd)
    if norm in ("Linf", "L2"):
        meas["square"] = a_sq = acc(Square(norm=norm, eps=eps, max_queries=square_queries, seed=seed))
        if a_sq < white - tolerance:
            found.append(_finding("black_box_beats_white_box", f"the black-box Square attack ({a_sq:.1%}) beats the white-box "
                                  f"attacks ({white:.1%}): the gradients are not informative (gradient masking)",
                                  square=a_sq, white_box=white))

    big = _unbounded_eps(norm, x)
    a_unb = acc(PGD(norm=norm, eps=big, steps=steps, loss="margin", seed=seed))
    fooled = (clean - a_unb) / clean if clean > 0 else 1.0
    meas["unbounded_success"] = fooled
    if fooled < unbounded_success:
        found.append(_finding("unbounded_attack_fails", f"PGD with an unbounded budget (ε={big:g}) fools only {fooled:.1%} of the "
                              "correctly classified points instead of ~100%: the attack is being blocked, not the model robust",
                              success=fooled, eps=big))

    radii = [r for r in (0.25 * eps, 0.5 * eps, eps, 2 * eps, 4 * eps) if r < big] + [big]
    accs = [a_pgd_m if r == eps else a_unb if r == big else acc(PGD(norm=norm, eps=r, steps=steps, loss="margin", seed=seed))
            for r in radii]
    meas["curve"] = {"eps": radii, "robust_accuracy": accs}
    rises = any(later > earlier + tolerance for earlier, later in zip(accs, accs[1:]))
    flat = clean > 0 and min(accs) >= clean - tolerance  # not even the unbounded attack lowers accuracy
    if rises or flat:
        found.append(_finding("accuracy_not_falling_with_eps", "robust accuracy does not fall as ε grows "
                              f"({', '.join(f'{r:g}: {a:.1%}' for r, a in zip(radii, accs))}; clean {clean:.1%}): "
                              "a larger ball can only help the attacker", eps=radii, accuracy=accs))
    for f in found:
        log.warning("sanity check %s: %s", f["check"], f["message"])
    return found
