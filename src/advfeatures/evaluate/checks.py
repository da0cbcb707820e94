"""Sanity checks: the warning signs of obfuscated gradients (Athalye et al. 2018) and of a broken
evaluation (the shape of AutoAttack's ``checks.py``), one small function each.

Each check returns a finding ``{"check", "message", "details"}`` or ``None``; the message says what
was seen and what to do. :func:`sanity_checks` runs them all and returns the findings (an empty
list: no warning sign), logging one warning per finding.

* :func:`check_randomized` — two identical calls give different outputs (attack with EOT);
* :func:`check_softmax_outputs` — the model returns probabilities, not logits;
* :func:`check_gradients` — zero or non-finite input gradients;
* :func:`check_fgsm_vs_pgd` — one-step FGSM beats many-step PGD;
* :func:`check_black_box_vs_white_box` — the black-box Square attack beats the white-box ones;
* :func:`check_unbounded_attack` — an attack with a ball holding the whole box does not reach ~100%;
* :func:`check_accuracy_falls_with_eps` — robust accuracy does not fall as ε grows.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from ..attacks.base import Attack
from ..attacks.loop import eval_mode
from ..attacks.losses import margin
from ..attacks.pgd import FGSM, PGD
from ..attacks.square import Square
from ..attacks.stochastic import evaluation_draws, model_mode
from ..data.dataset import ImageDataset
from ..errors import ConfigError
from ..threats import check_steps, make_threat
from .metrics import batches, check_inputs, correct_mask, device_of, robust_accuracy, size_of, take

log = logging.getLogger(__name__)

Finding = dict[str, Any]


def _finding(check: str, message: str, **details) -> Finding:
    return {"check": check, "message": message, "details": details}


def unbounded_eps(norm: str, x: torch.Tensor) -> float:
    """A radius whose ball contains the whole [0, 1] box around any image."""
    d = x[0].numel()
    return {"Linf": 1.0, "L2": math.sqrt(d), "L1": float(d)}[norm]


def check_randomized(model: nn.Module, x: torch.Tensor) -> Finding | None:
    with torch.no_grad(), eval_mode(model):
        out1, out2 = model(x), model(x)
    if torch.allclose(out1, out2, rtol=1e-4, atol=1e-5):
        return None
    diff = float((out1 - out2).abs().max())
    return _finding("randomized_model", "the model's outputs differ between two identical calls: it is randomised; "
                    "attack its expectation with EOT (evaluate version='rand') and fix its seed to evaluate",
                    max_difference=diff)


def check_softmax_outputs(model: nn.Module, x: torch.Tensor) -> Finding | None:
    with torch.no_grad(), eval_mode(model):
        out = model(x)
    if bool((out >= 0).all()) and torch.allclose(out.sum(1), torch.ones_like(out[:, 0]), atol=1e-4):
        return _finding("softmax_outputs", "the model returns probabilities, not logits: losses on them saturate; "
                        "remove the final softmax before attacking")
    return None


def check_gradients(model: nn.Module, x: torch.Tensor | ImageDataset, y: torch.Tensor | None = None, *,
                    batch_size: int = 256, stochastic: bool = False, seed: int | torch.Generator = 0) -> list[Finding]:
    """Zero or non-finite input gradients of the margin on ``(x, y)`` (or a dataset ``x``, read per batch);
    with ``stochastic``, of the model with its stochastic layers on, as a stochastic attack sees it."""
    zero = bad = 0
    data = x if isinstance(x, ImageDataset) else (x, y)
    n, device = size_of(data), device_of(model)
    with model_mode(model, stochastic=stochastic, seed=seed, device=device), torch.enable_grad():
        for xb, yb in batches(data, batch_size):
            xb = xb.to(device).detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(margin(model(xb), yb.to(device)).sum(), xb)
            flat = grad.flatten(1)
            bad += int((~torch.isfinite(flat)).any(1).sum())
            zero += int((flat == 0).all(1).sum())
    found = []
    if bad:
        found.append(_finding("nonfinite_gradients", f"{bad} of {n} inputs have non-finite input gradients; "
                              "the model's loss is not differentiable there (masking or numerical trouble)", points=bad))
    if zero:
        found.append(_finding("zero_gradients", f"{zero} of {n} inputs have an exactly zero input gradient: "
                              "gradients are masked (quantisation, thresholds...); use BPDA or a black-box attack",
                              points=zero))
    return found


def check_fgsm_vs_pgd(fgsm: float, pgd: float, *, steps: int, tolerance: float) -> Finding | None:
    if fgsm < pgd - tolerance:
        return _finding("fgsm_beats_pgd", f"one-step FGSM ({fgsm:.1%}) is stronger than {steps}-step PGD ({pgd:.1%}): "
                        "iterative attacks are being misled (masked or noisy gradients)", fgsm=fgsm, pgd=pgd)
    return None


def check_black_box_vs_white_box(square: float, white: float, *, tolerance: float) -> Finding | None:
    if square < white - tolerance:
        return _finding("black_box_beats_white_box", f"the black-box Square attack ({square:.1%}) beats the white-box "
                        f"attacks ({white:.1%}): the gradients are not informative (gradient masking)",
                        square=square, white_box=white)
    return None


def check_unbounded_attack(success: float, *, eps: float, required: float) -> Finding | None:
    if success < required:
        return _finding("unbounded_attack_fails", f"PGD with an unbounded budget (ε={eps:g}) fools only {success:.1%} of the "
                        "correctly classified points instead of ~100%: the attack is being blocked, not the model robust",
                        success=success, eps=eps)
    return None


def check_accuracy_falls_with_eps(radii: list[float], accs: list[float], clean: float, *, tolerance: float) -> Finding | None:
    rises = any(later > earlier + tolerance for earlier, later in zip(accs, accs[1:]))
    flat = clean > 0 and min(accs) >= clean - tolerance  # not even the unbounded attack lowers accuracy
    if rises or flat:
        return _finding("accuracy_not_falling_with_eps", "robust accuracy does not fall as ε grows "
                        f"({', '.join(f'{r:g}: {a:.1%}' for r, a in zip(radii, accs))}; clean {clean:.1%}): "
                        "a larger ball can only help the attacker", eps=radii, accuracy=accs)
    return None


def sanity_checks(
    model: nn.Module,
    x: torch.Tensor | ImageDataset,
    y: torch.Tensor | None = None,
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
    stochastic: bool = False,
) -> list[Finding]:
    """Every check above on ``(x, y)``. Accuracies are compared with an absolute ``tolerance``; the
    unbounded attack must fool at least ``unbounded_success`` of the correctly classified points.
    Pass a dict as ``measurements`` to receive the numbers the checks were based on. ``x`` may be
    an :class:`~advfeatures.data.ImageDataset` (its own labels), read a batch at a time.

    ``stochastic``: run the model as a stochastic evaluation does (its Dropout/RReLU layers on,
    BatchNorm on its running statistics, seeded from ``seed``): the gradient check, the clean
    accuracy and every attack here, so the checks vet the model the evaluation attacked. The
    randomised-output and softmax checks stay in eval mode (they look for randomness and
    probabilities beyond the stochastic layers)."""
    check_inputs(x, y)
    threat = make_threat(norm, eps)
    norm, eps = threat.norm, threat.eps
    steps = check_steps(steps)
    if not 0 <= tolerance < 1:
        raise ConfigError(f"tolerance must be in [0, 1), got {tolerance}")
    device = device_of(model)
    data = x if isinstance(x, ImageDataset) else (x.to(device), y.to(device))
    n = size_of(data)
    head = take(data, torch.arange(min(n, batch_size)))[0].to(device)
    meas: dict[str, Any] = {} if measurements is None else measurements
    found = [f for f in (check_randomized(model, head), check_softmax_outputs(model, head)) if f]
    if found and found[0]["check"] == "randomized_model":
        meas["max_output_difference"] = found[0]["details"]["max_difference"]
    xs, ys = (data, None) if isinstance(data, ImageDataset) else data
    draws = evaluation_draws(seed)  # the seeds of the stochastic passes below (used only when stochastic)
    stochastic = bool(stochastic)
    grads = check_gradients(model, xs, ys, batch_size=batch_size, stochastic=stochastic, seed=draws)
    meas["zero_gradient_points"] = next((f["details"]["points"] for f in grads if f["check"] == "zero_gradients"), 0)
    meas["nonfinite_gradient_points"] = next((f["details"]["points"] for f in grads if f["check"] == "nonfinite_gradients"), 0)
    found += grads

    correct = correct_mask(model, data, batch_size=batch_size, stochastic=stochastic, seed=draws)
    meas["clean_accuracy"] = clean = int(correct.sum()) / n

    def acc(attack: Attack) -> float:
        return robust_accuracy(model, data, attack, batch_size=batch_size, clean_correct=correct, desc="sanity")

    def pgd(radius: float, loss: str = "margin") -> PGD:
        return PGD(norm=norm, eps=radius, steps=steps, loss=loss, early_stop=True, seed=seed, stochastic=stochastic)

    meas["stochastic"] = stochastic
    meas["fgsm"] = a_fgsm = acc(FGSM(norm=norm, eps=eps, seed=seed, stochastic=stochastic))
    a_pgd_m = acc(pgd(eps))
    meas["pgd"] = a_pgd = min(acc(pgd(eps, "ce")), a_pgd_m)
    found.append(check_fgsm_vs_pgd(a_fgsm, a_pgd, steps=steps, tolerance=tolerance))
    if norm in ("Linf", "L2"):
        meas["square"] = a_sq = acc(Square(norm=norm, eps=eps, max_queries=square_queries, seed=seed,
                                                stochastic=stochastic))
        found.append(check_black_box_vs_white_box(a_sq, min(a_fgsm, a_pgd), tolerance=tolerance))

    big = unbounded_eps(norm, head)
    a_unb = acc(pgd(big))
    meas["unbounded_success"] = fooled = (clean - a_unb) / clean if clean > 0 else 1.0
    found.append(check_unbounded_attack(fooled, eps=big, required=unbounded_success))

    radii = [r for r in (0.25 * eps, 0.5 * eps, eps, 2 * eps, 4 * eps) if r < big] + [big]
    accs = [a_pgd_m if r == eps else a_unb if r == big else acc(pgd(r)) for r in radii]
    meas["curve"] = {"eps": radii, "robust_accuracy": accs}
    found.append(check_accuracy_falls_with_eps(radii, accs, clean, tolerance=tolerance))
    found = [f for f in found if f]
    for f in found:
        log.warning("sanity check %s: %s", f["check"], f["message"])
    return found
