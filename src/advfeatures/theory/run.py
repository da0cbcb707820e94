"""Run the three theory models, compare every simulation with its closed form, write JSON and figures.

:func:`run_theory` is what ``advfeatures theory`` calls. Every comparison is reported with its
standard error and the gap in standard errors (``z``), so a reader can see at a glance whether the
simulation agrees with the formula "to within sampling error". Deterministic given ``seed``: every
experiment draws from its own :class:`torch.Generator`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..seeding import generator
from . import figures, gaussian, logistic, tsipras

log = logging.getLogger(__name__)

_DTYPE = torch.float64


def _floats(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.flatten()]


def _z(simulated: float, closed: float, se: float) -> float:
    return (simulated - closed) / se if se > 0 else (0.0 if simulated == closed else math.inf)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file in the same folder, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # same folder: rename is atomic
    try:
        with open(tmp, "w") as handle:
            json.dump(data, handle, indent=2, allow_nan=True)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------------
# Ilyas et al., Sec. 4


def _spectrum(condition: float, dim: int) -> torch.Tensor:
    """``dim`` log-spaced eigenvalues with the given condition number, rescaled to trace ``dim``."""
    s = torch.logspace(0, math.log10(condition), dim, dtype=_DTYPE)
    return s * dim / s.sum()


def run_gaussian(*, seed: int, quick: bool) -> dict[str, Any]:
    n = 5_000 if quick else 20_000
    n_acc = 20_000 if quick else 100_000
    spectrum = torch.tensor([0.05, 0.2, 0.5, 1.0, 2.0, 5.0], dtype=_DTYPE)
    data = gaussian.TwoGaussians.with_spectrum(spectrum, mahalanobis=2.0)
    out: dict[str, Any] = {"spectrum": _floats(spectrum), "mean": _floats(data.mean), "mahalanobis": 2.0}

    # standard maximum likelihood
    x, y = data.sample(n, generator=generator(seed, 1))
    mean_hat, cov_hat = gaussian.fit_standard(x, y)
    mean_se = torch.sqrt(data.cov.diagonal() / n)
    var = data.cov.diagonal()
    cov_se = torch.sqrt((var[:, None] * var[None, :] + data.cov**2) / n)
    out["standard_fit"] = {
        "n": n,
        "max_mean_z": float(((mean_hat - data.mean) / mean_se).abs().max()),
        "max_cov_z": float(((cov_hat - data.cov) / cov_se).abs().max()),
    }

    # the ML classifier's accuracy under L2 attack
    w = gaussian.classifier_weights(data.mean, data.cov)
    rows = []
    for k, eps in enumerate([0.0, 0.05, 0.1, 0.2, 0.3]):
        closed = gaussian.accuracy(w, data, eps=eps)
        sim, se = gaussian.simulate_accuracy(w, data, eps=eps, n=n_acc, generator=generator(seed, 100 + k))
        rows.append({"eps": eps, "closed": closed, "simulated": sim, "se": se, "z": _z(sim, closed, se)})
    out["accuracy"] = rows

    # Theorem 1: vulnerability vs metric misalignment, fixed trace and fixed Mahalanobis separation
    dim, conditions = 6, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    penalty = 2.0 / float(_spectrum(conditions[-1], dim).min())
    eps_l2 = 0.5
    rows = []
    for k, condition in enumerate(conditions):
        family = gaussian.TwoGaussians.with_spectrum(_spectrum(condition, dim), mahalanobis=2.0)
        closed = gaussian.vulnerability(family.cov, penalty=penalty)
        sim, se = gaussian.simulate_vulnerability(family, penalty=penalty, n=n, generator=generator(seed, 200 + k))
        wk = gaussian.classifier_weights(family.mean, family.cov)
        acc_closed = gaussian.accuracy(wk, family, eps=eps_l2)
        acc_sim, acc_se = gaussian.simulate_accuracy(wk, family, eps=eps_l2, n=n_acc, generator=generator(seed, 300 + k))
        rows.append(
            {
                "condition": condition,
                "closed": closed,
                "simulated": sim,
                "se": se,
                "z": _z(sim, closed, se),
                "misalignment": gaussian.metric_misalignment(wk, family.cov),
                "l2_eps": eps_l2,
                "l2_accuracy_closed": acc_closed,
                "l2_accuracy_simulated": acc_sim,
                "l2_accuracy_se": acc_se,
                "standard_accuracy": gaussian.accuracy(wk, family),
            }
        )
    out["vulnerability"] = {"penalty": penalty, "dim": dim, "rows": rows}

    # Theorem 2: robust covariance, closed form vs numerical min-max on the same samples
    x, y = data.sample(n, generator=generator(seed, 2))
    mean_hat, cov_hat = gaussian.fit_standard(x, y)
    rows = []
    for eps in [0.5, 1.0, 2.0] if quick else [0.25, 0.5, 1.0, 2.0]:
        lam_true = gaussian.multiplier_for_budget(data.cov, eps=eps)
        lam_sample = gaussian.multiplier_for_budget(cov_hat, eps=eps)
        robust_true = gaussian.robust_covariance(data.cov, lam=lam_true)
        closed_true = torch.linalg.eigvalsh(robust_true)
        closed_sample = gaussian.robust_covariance(cov_hat, lam=lam_sample)
        mu_ms, cov_ms = gaussian.fit_robust(x, y, eps=eps, budget="mean_square")
        mu_pe, cov_pe = gaussian.fit_robust(x, y, eps=eps, budget="per_example")
        eig_closed_sample = torch.linalg.eigvalsh(closed_sample)
        eig_ms, eig_pe = torch.linalg.eigvalsh(cov_ms), torch.linalg.eigvalsh(cov_pe)
        rows.append(
            {
                "eps": eps,
                "lam": lam_true,
                "closed": _floats(closed_true),
                "closed_on_sample": _floats(eig_closed_sample),
                "mean_square": _floats(eig_ms),
                "per_example": _floats(eig_pe),
                # same samples: only optimiser error separates these two
                "mean_square_vs_closed_on_sample": float(torch.linalg.norm(cov_ms - closed_sample) / torch.linalg.norm(closed_sample)),
                # sampling error: relative error of eigenvalue i is about √(2/n)
                "mean_square_vs_closed_max_z": float(((eig_ms - closed_true) / (closed_true * math.sqrt(2 / n))).abs().max()),
                # not sampling error: the per-example ball is a different problem
                "per_example_vs_closed_on_sample_max_rel": float(((eig_pe - eig_closed_sample) / eig_closed_sample).abs().max()),
                "mean_shift_mean_square": float((mu_ms - mean_hat).norm()),
                "mean_shift_per_example": float((mu_pe - mean_hat).norm()),
                "alignment_closed": gaussian.gradient_alignment(data.mean, robust_true, direction=data.mean),
                "alignment_mean_square_fit": gaussian.gradient_alignment(mu_ms, cov_ms, direction=data.mean),
                "alignment_per_example_fit": gaussian.gradient_alignment(mu_pe, cov_pe, direction=data.mean),
            }
        )
        log.info("gaussian: robust fits at eps=%g done", eps)
    out["robust"] = rows
    grid = [0.05 * k for k in range(0, 51)]
    curve = []
    for eps in grid:
        # ε → 0 means λ → ∞ and Σ_r → Σ*
        robust = data.cov if eps == 0 else gaussian.robust_covariance(data.cov, lam=gaussian.multiplier_for_budget(data.cov, eps=eps))
        curve.append(
            {
                "eps": eps,
                "eigenvalues": _floats(torch.linalg.eigvalsh(robust)),
                "alignment": gaussian.gradient_alignment(data.mean, robust, direction=data.mean),
            }
        )
    out["robust_curve"] = curve
    out["alignment_standard"] = {
        "closed": gaussian.gradient_alignment(data.mean, data.cov, direction=data.mean),
        "fit": gaussian.gradient_alignment(mean_hat, cov_hat, direction=data.mean),
    }

    # a 2-D picture: samples, the standard and robust boundaries and gradients
    angle = math.radians(20)
    rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=_DTYPE)
    cov2 = rot @ torch.diag(torch.tensor([1.0, 0.03], dtype=_DTYPE)) @ rot.T
    data2 = gaussian.TwoGaussians(torch.tensor([0.7, 0.2], dtype=_DTYPE), cov2)
    x2, y2 = data2.sample(4_000, generator=generator(seed, 3))
    eps2 = 0.5
    mu2, sig2 = gaussian.fit_robust(x2, y2, eps=eps2)
    keep = 400
    out["example_2d"] = {
        "mean": _floats(data2.mean),
        "cov": [_floats(row) for row in data2.cov],
        "eps": eps2,
        "x": [_floats(row) for row in x2[:keep]],
        "y": _floats(y2[:keep]),
        "w_standard": _floats(gaussian.classifier_weights(data2.mean, data2.cov)),
        "w_robust": _floats(gaussian.classifier_weights(mu2, sig2)),
        "alignment_standard": gaussian.gradient_alignment(data2.mean, data2.cov, direction=data2.mean),
        "alignment_robust": gaussian.gradient_alignment(mu2, sig2, direction=data2.mean),
    }
    return out


# ----------------------------------------------------------------------------------------------
# Tsipras et al. 2019


def run_tsipras(*, seed: int, quick: bool) -> dict[str, Any]:
    dim = 100
    n = 10_000 if quick else 50_000
    ps = [0.6, 0.75, 0.9, 0.95]
    eta = 2 / math.sqrt(dim)
    eps_grid = [round(eta * k / 8, 6) for k in range(0, 25)]  # 0 … 3η
    eps_sim = [0.0, eta / 2, eta, 2 * eta]
    out: dict[str, Any] = {"dim": dim, "eta": eta, "ps": ps, "eps_grid": eps_grid, "curves": {}, "checks": []}
    stream = 0
    for p in ps:
        dist = tsipras.TsiprasDistribution(p=p, dim=dim)
        classifiers = {
            "averaging": tsipras.averaging_classifier(dist),
            "robust_feature": tsipras.robust_feature_classifier(dist),
            "bayes": tsipras.bayes_classifier(dist),
        }
        curves = {name: [tsipras.accuracy(w, dist, eps=e) for e in eps_grid] for name, w in classifiers.items()}
        best_robust, best_standard = [], []
        for e in eps_grid:
            w, acc = tsipras.most_robust_classifier(dist, eps=e)
            best_robust.append(acc)
            best_standard.append(tsipras.accuracy(w, dist))
        curves["most_robust_robust"] = best_robust
        curves["most_robust_standard"] = best_standard
        out["curves"][str(p)] = curves
        sim_points = eps_sim if (p == 0.9 or not quick) else [0.0, 2 * eta]
        for name, w in classifiers.items():
            for e in sim_points:
                stream += 1
                closed = tsipras.accuracy(w, dist, eps=e)
                sim, se = tsipras.simulate_accuracy(w, dist, eps=e, n=n, generator=generator(seed, 1000 + stream))
                out["checks"].append(
                    {"p": p, "classifier": name, "eps": e, "closed": closed, "simulated": sim, "se": se, "z": _z(sim, closed, se)}
                )
        w_best, robust_acc = tsipras.most_robust_classifier(dist, eps=2 * eta)
        standard_acc = tsipras.accuracy(w_best, dist)
        out.setdefault("bound_at_2eta", []).append(
            {
                "p": p,
                "most_robust_standard": standard_acc,
                "most_robust_robust": robust_acc,
                "bound": tsipras.robust_accuracy_bound(p=p, standard_accuracy=standard_acc),
                "bayes_standard": tsipras.accuracy(classifiers["bayes"], dist),
                "bayes_robust": tsipras.accuracy(classifiers["bayes"], dist, eps=2 * eta),
                "bayes_bound": tsipras.robust_accuracy_bound(p=p, standard_accuracy=tsipras.accuracy(classifiers["bayes"], dist)),
            }
        )

    # adversarial training (Goodfellow's closed form, α = 0) moves the weight onto the robust feature
    dist = tsipras.TsiprasDistribution(p=0.9, dim=dim)
    x, y = dist.sample(2_000 if quick else 5_000, generator=generator(seed, 1500))
    rows = []
    for k, eps in enumerate([0.0, eta / 2, eta, 2 * eta]):
        # lr 0.3: with the nonsmooth ε‖w‖₁ term a larger fixed step makes the objective oscillate
        fit = logistic.train_logistic(x, y, eps=eps, alpha=0.0, steps=300 if quick else 600, lr=0.3)
        w, b = fit.w, float(fit.b)
        standard = tsipras.accuracy(w, dist, bias=b)
        robust = tsipras.accuracy(w, dist, eps=eps, bias=b)
        sim, se = tsipras.simulate_accuracy(w, dist, eps=eps, bias=b, n=n, generator=generator(seed, 1600 + k))
        rows.append(
            {
                "eps": eps,
                # share of the mean clean margin w₁ + η·Σⱼwⱼ that comes from the robust feature
                "robust_feature_margin_share": float(w[0] / (w[0] + dist.eta * w[1:].sum())),
                "robust_feature_weight_share": float(w[0].abs() / w.abs().sum()),
                "standard_accuracy": standard,
                "robust_accuracy": robust,
                "robust_accuracy_simulated": sim,
                "se": se,
                "z": _z(sim, robust, se),
            }
        )
    out["adversarial_training"] = {"p": 0.9, "rows": rows}
    return out


# ----------------------------------------------------------------------------------------------
# Goodfellow et al. 2015


def run_logistic(*, seed: int, quick: bool) -> dict[str, Any]:
    mean = torch.tensor([1.0, 0.6] + [0.15] * 8, dtype=_DTYPE)
    data = gaussian.TwoGaussians(mean, torch.eye(mean.numel(), dtype=_DTYPE))
    n_train = 2_000
    n = 10_000 if quick else 50_000
    steps = 200 if quick else 500
    eps_train = 0.25
    x, y = data.sample(n_train, generator=generator(seed, 2000))
    standard = logistic.train_logistic(x, y, eps=0.0, alpha=1.0, steps=steps)
    closed = logistic.train_logistic(x, y, eps=eps_train, alpha=0.5, adversary="closed_form", steps=steps)
    fgsm = logistic.train_logistic(x, y, eps=eps_train, alpha=0.5, adversary="fgsm", steps=steps)
    out: dict[str, Any] = {
        "mean": _floats(mean),
        "eps_train": eps_train,
        "alpha": 0.5,
        "steps": steps,
        "w_standard": _floats(standard.w),
        "w_adversarial": _floats(closed.w),
        "w_adversarial_fgsm": _floats(fgsm.w),
        "closed_vs_fgsm_training_max_weight_gap": float((closed.w - fgsm.w).abs().max()),
        "objective_closed_form": closed.objective,
        "objective_fgsm": fgsm.objective,
    }

    # per example: closed form vs the loss PGD actually reaches
    xe, ye = data.sample(2_000, generator=generator(seed, 2001))
    b = float(closed.b)
    formula = logistic.adversarial_loss(closed.w, b, xe, ye, eps=eps_train)
    reached = logistic.logistic_loss(closed.w, b, logistic.pgd(closed.w, b, xe, ye, eps=eps_train, generator=generator(seed, 2002)), ye)
    one_step = logistic.logistic_loss(closed.w, b, logistic.fgsm(closed.w, b, xe, ye, eps=eps_train), ye)
    out["per_example"] = {
        "max_gap_pgd": float((formula - reached).abs().max()),
        "max_gap_fgsm": float((formula - one_step).abs().max()),
        "closed": _floats(formula[:300]),
        "pgd": _floats(reached[:300]),
    }

    rows = []
    for k, eps in enumerate([0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]):
        for name, fit in (("standard", standard), ("adversarial", closed)):
            bias = float(fit.b)
            sim = logistic.simulate(fit.w, bias, data, eps=eps, n=n, generator=generator(seed, 2100 + 2 * k + (name == "standard")))
            acc = logistic.robust_accuracy(fit.w, bias, data, eps=eps)
            loss = logistic.expected_adversarial_loss(fit.w, bias, data, eps=eps)
            rows.append(
                {
                    "model": name,
                    "eps": eps,
                    "accuracy_closed": acc,
                    "accuracy_simulated": sim["accuracy"],
                    "accuracy_se": sim["accuracy_se"],
                    "accuracy_z": _z(sim["accuracy"], acc, sim["accuracy_se"]),
                    "loss_closed": loss,
                    "loss_simulated": sim["loss"],
                    "loss_se": sim["loss_se"],
                    "loss_z": _z(sim["loss"], loss, sim["loss_se"]),
                }
            )
    out["rows"] = rows
    return out


# ----------------------------------------------------------------------------------------------


def _max_abs_z(results: dict[str, Any]) -> dict[str, float]:
    g, t, lg = results["gaussian"], results["tsipras"], results["logistic"]
    return {
        "gaussian_accuracy": max(abs(r["z"]) for r in g["accuracy"]),
        "gaussian_vulnerability": max(abs(r["z"]) for r in g["vulnerability"]["rows"]),
        "gaussian_robust_covariance": max(r["mean_square_vs_closed_max_z"] for r in g["robust"]),
        "tsipras_accuracy": max(abs(r["z"]) for r in t["checks"] if math.isfinite(r["z"])),
        "logistic_accuracy": max(abs(r["accuracy_z"]) for r in lg["rows"]),
        "logistic_loss": max(abs(r["loss_z"]) for r in lg["rows"]),
    }


def run_theory(out_dir: Path, *, seed: int = 0, quick: bool = False) -> dict:
    """Run the two-Gaussian model, Tsipras et al.'s distribution and Goodfellow's logistic regression.

    Writes ``theory.json`` and ``gaussian.png``, ``tsipras.png``, ``logistic.png`` into ``out_dir``
    (created if needed; every file written atomically) and returns the results. ``quick`` uses fewer
    samples and steps (for smoke tests); the comparisons are the same.
    """
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ConfigError(f"seed must be a whole number ≥ 0, got {seed}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; give a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"seed": int(seed), "quick": bool(quick)}
    log.info("theory: two-Gaussian model (Ilyas et al. Sec. 4)")
    results["gaussian"] = run_gaussian(seed=seed, quick=quick)
    log.info("theory: Tsipras et al. trade-off distribution")
    results["tsipras"] = run_tsipras(seed=seed, quick=quick)
    log.info("theory: Goodfellow et al. adversarial logistic regression")
    results["logistic"] = run_logistic(seed=seed, quick=quick)
    results["max_abs_z"] = _max_abs_z(results)
    results["figures"] = {
        "gaussian": figures.plot_gaussian(results["gaussian"], out_dir / "gaussian.png"),
        "tsipras": figures.plot_tsipras(results["tsipras"], out_dir / "tsipras.png"),
        "logistic": figures.plot_logistic(results["logistic"], out_dir / "logistic.png"),
    }
    results["figures"] = {k: str(Path(v).name) for k, v in results["figures"].items()}
    write_json_atomic(out_dir / "theory.json", results)
    return results
