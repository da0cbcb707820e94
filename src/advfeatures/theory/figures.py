"""One figure per theory model, drawn from the plain results of :mod:`advfeatures.theory.run`.

Lines are closed forms, markers are simulations (with ±2 standard-error bars where they are visible).
Figures are drawn on matplotlib's Agg canvas through :class:`matplotlib.figure.Figure` (no pyplot, so
importing this module does not switch the backend of an interactive session); every PNG is written to
a temporary name in the target folder and then renamed, so a reader never sees half a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..storage import atomic_path

_CLOSED = dict(lw=1.8)
_SIM = dict(ls="none", marker="o", ms=4.5, mfc="white", mew=1.3, capsize=2)


def _figure(rows: int, cols: int, size: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols)


def save_figure(fig: Figure, path: Path) -> Path:
    """Save ``fig`` as PNG at ``path`` atomically (:func:`advfeatures.storage.atomic_path`)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    return Path(path)


def _finish(fig: Figure, title: str, path: Path) -> Path:
    """The figure's overall title, a tight layout, then :func:`save_figure`."""
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return save_figure(fig, path)


def _legend_note(ax: Axes) -> None:
    ax.plot([], [], color="0.3", **_CLOSED, label="closed form")
    ax.plot([], [], color="0.3", ls="none", marker="o", mfc="white", mew=1.3, label="simulation")


def plot_gaussian(res: dict[str, Any], path: Path) -> Path:
    """Four panels: a 2-D example; Theorem 1 vs misalignment; Theorem 2 eigenvalues vs ε; gradient alignment vs ε."""
    fig, axes = _figure(2, 2, (11.5, 9.5))

    # (a) 2-D example
    ax = axes[0, 0]
    ex = res["example_2d"]
    x, y = np.array(ex["x"]), np.array(ex["y"])
    ax.scatter(*x[y > 0].T, s=5, alpha=0.35, color="tab:blue", label="y = +1")
    ax.scatter(*x[y < 0].T, s=5, alpha=0.35, color="tab:red", label="y = −1")
    lim = 1.15 * np.quantile(np.abs(x), 0.995)
    t = np.linspace(-lim, lim, 2)
    mean = np.array(ex["mean"])
    for key, colour, style, label in (
        ("w_standard", "black", "-", "standard"),
        ("w_robust", "tab:green", "--", f"robust (L2 ε = {ex['eps']:g})"),
    ):
        w = np.array(ex[key])
        w = w / np.linalg.norm(w)
        ax.plot(-w[1] * t, w[0] * t, color=colour, ls=style, lw=1.6, label=f"{label} boundary")
        ax.annotate("", xy=0.6 * lim * w, xytext=(0, 0), arrowprops=dict(arrowstyle="-|>", color=colour, lw=2.2))
    ax.annotate("", xy=mean, xytext=(0, 0), arrowprops=dict(arrowstyle="-|>", color="tab:purple", lw=2.2))
    ax.text(mean[0], mean[1] + 0.06 * lim, "μ*", color="tab:purple", fontsize=12, weight="bold")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(
        "(a) x ~ N(y·μ*, Σ*): arrows = input gradients\n"
        f"cos(∇, μ*): standard {ex['alignment_standard']:.2f}, robust {ex['alignment_robust']:.2f}",
        fontsize=10,
    )
    ax.legend(fontsize=7.5, loc="lower right", markerscale=2)

    # (b) Theorem 1
    ax = axes[0, 1]
    vul = res["vulnerability"]
    rows = vul["rows"]
    cond = np.array([r["condition"] for r in rows])
    ax.plot(cond, [r["closed"] for r in rows], color="tab:blue", **_CLOSED)
    ax.errorbar(cond, [r["simulated"] for r in rows], yerr=[2 * r["se"] for r in rows], color="tab:blue", **_SIM)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("condition number of Σ* (trace fixed)")
    ax.set_ylabel("L_adv − L  (Theorem 1)", color="tab:blue")
    twin = ax.twinx()
    twin.plot(cond, [r["l2_accuracy_closed"] for r in rows], color="tab:orange", **_CLOSED)
    twin.errorbar(
        cond,
        [r["l2_accuracy_simulated"] for r in rows],
        yerr=[2 * r["l2_accuracy_se"] for r in rows],
        color="tab:orange",
        **_SIM,
    )
    twin.plot(cond, [r["standard_accuracy"] for r in rows], color="tab:orange", ls=":", lw=1.2)
    twin.set_ylabel(f"ML classifier accuracy: clean (dotted), L2 ε = {rows[0]['l2_eps']:g}", color="tab:orange")
    twin.set_ylim(0, 1.02)
    ax.set_title(f"(b) vulnerability grows with metric misalignment\n(Lagrangian adversary C = {vul['penalty']:.3g})", fontsize=10)
    _legend_note(ax)
    ax.legend(fontsize=8, loc="center left")

    # (c) Theorem 2
    ax = axes[1, 0]
    curve = res["robust_curve"]
    grid = np.array([c["eps"] for c in curve])
    eig = np.array([c["eigenvalues"] for c in curve])
    spectrum = np.array(res["spectrum"])
    colours = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, len(spectrum)))
    for i, colour in enumerate(colours):
        ax.plot(grid, eig[:, i], color=colour, **_CLOSED)
    for row in res["robust"]:
        at = [row["eps"]] * len(spectrum)
        ax.scatter(at, row["mean_square"], s=28, facecolors="white", edgecolors=colours, linewidths=1.3, zorder=3)
        ax.scatter(at, row["per_example"], s=30, marker="x", c=colours, linewidths=1.3, zorder=3)
    ax.set_yscale("log")
    ax.set_xlabel("ε (L2)")
    ax.set_ylabel("eigenvalues of the robust covariance Σ_r")
    ax.plot([], [], color="0.3", **_CLOSED, label="Theorem 2, λ from E‖δ‖² ≤ ε²")
    ax.scatter([], [], s=28, facecolors="white", edgecolors="0.3", label="numerical, E‖δ‖² ≤ ε² budget")
    ax.scatter([], [], s=30, marker="x", c="0.3", label="numerical, per-example ‖δ‖ ≤ ε")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(
        "(c) robust ML pulls Σ towards the identity\n(per-example ball: close to, not on, the closed form)", fontsize=10
    )

    # (d) gradient alignment
    ax = axes[1, 1]
    ax.plot(grid, [c["alignment"] for c in curve], color="tab:green", **_CLOSED, label="robust, closed form")
    eps_fit = [r["eps"] for r in res["robust"]]
    hollow = dict(ls="none", marker="o", mfc="white", mew=1.3)
    ms_fit = [r["alignment_mean_square_fit"] for r in res["robust"]]
    pe_fit = [r["alignment_per_example_fit"] for r in res["robust"]]
    ax.plot(eps_fit, ms_fit, color="tab:green", label="robust fit, E‖δ‖² budget", **hollow)
    ax.plot(eps_fit, pe_fit, ls="none", marker="x", mew=1.3, color="tab:green", label="robust fit, per-example ball")
    ax.axhline(res["alignment_standard"]["closed"], color="black", lw=1.4, label="standard, closed form")
    ax.plot([0], [res["alignment_standard"]["fit"]], color="black", label="standard fit", **hollow)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("ε (L2)")
    ax.set_ylabel("cos(∇ₓ log-odds, μ*)")
    ax.set_title("(d) robust models' gradients align with μ*", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")

    return _finish(fig, "Ilyas et al. 2019, Sec. 4: two Gaussian classes, standard vs robust maximum likelihood", path)


def plot_tsipras(res: dict[str, Any], path: Path) -> Path:
    """Three panels: accuracy vs ε of fixed classifiers; the most robust classifier's trade-off; adversarial training."""
    fig, axes = _figure(1, 3, (16, 5))
    grid = np.array(res["eps_grid"])
    eta = res["eta"]
    ps = res["ps"]
    colours = dict(zip([str(p) for p in ps], matplotlib.colormaps["plasma"](np.linspace(0.05, 0.8, len(ps)))))

    # (a) fixed classifiers for one p
    ax = axes[0]
    p_show = "0.9" if "0.9" in res["curves"] else str(ps[0])
    curves = res["curves"][p_show]
    styles = {"averaging": "tab:blue", "robust_feature": "tab:red", "bayes": "black"}
    names = {"averaging": "averaging (x₂…x_{d+1})", "robust_feature": "robust feature sign(x₁)", "bayes": "Bayes classifier"}
    for name, colour in styles.items():
        ax.plot(grid / eta, curves[name], color=colour, **_CLOSED, label=names[name])
        pts = [c for c in res["checks"] if c["classifier"] == name and str(c["p"]) == p_show]
        ax.errorbar([c["eps"] / eta for c in pts], [c["simulated"] for c in pts], yerr=[2 * c["se"] for c in pts], color=colour, **_SIM)
    _legend_note(ax)
    ax.set_xlabel("L∞ ε / η")
    ax.set_ylabel("accuracy under attack")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"(a) p = {p_show}, d = {res['dim']}, η = 2/√d", fontsize=10)
    ax.legend(fontsize=8, loc="center right")

    # (b) most robust linear classifier: standard vs robust accuracy, per p
    ax = axes[1]
    for p in ps:
        c = res["curves"][str(p)]
        ax.plot(grid / eta, c["most_robust_standard"], color=colours[str(p)], lw=1.8, label=f"p = {p}: standard acc.")
        ax.plot(grid / eta, c["most_robust_robust"], color=colours[str(p)], lw=1.5, ls="--")
    ax.plot([], [], color="0.3", ls="--", label="robust acc. (at its ε)")
    ax.axvline(2, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("L∞ ε / η  (the classifier is the most robust one at this ε)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.45, 1.01)
    ax.set_title(
        "(b) the trade-off: robustness costs standard accuracy\n(closed form; Theorem 2.1 bound is tight at ε = 2η)",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="lower left")

    # (c) adversarial logistic regression on this distribution
    ax = axes[2]
    rows = res["adversarial_training"]["rows"]
    e = np.array([r["eps"] for r in rows]) / eta
    share = [r["robust_feature_margin_share"] for r in rows]
    ax.plot(e, share, "s-", color="tab:red", label="w₁ / (w₁ + η·Σⱼwⱼ): robust feature's share of the margin")
    ax.plot(e, [r["standard_accuracy"] for r in rows], "o-", color="black", label="standard accuracy")
    ax.plot(e, [r["robust_accuracy"] for r in rows], "o--", color="tab:blue", label="robust accuracy at its ε (closed)")
    simulated, bars = [r["robust_accuracy_simulated"] for r in rows], [2 * r["se"] for r in rows]
    ax.errorbar(e, simulated, yerr=bars, color="tab:blue", **_SIM, label="robust accuracy (attack)")
    ax.set_xlabel("training ε / η")
    ax.set_ylim(-0.02, 1.02)
    p_train = res["adversarial_training"]["p"]
    ax.set_title(
        f"(c) adversarially trained logistic regression, p = {p_train}\n(Goodfellow closed-form objective, α = 0)",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="center left")

    return _finish(fig, "Tsipras et al. 2019: one robust feature (right w.p. p) and many weak non-robust ones", path)


def plot_logistic(res: dict[str, Any], path: Path) -> Path:
    """Four panels: closed-form vs PGD loss; closed-form vs FGSM training; robust accuracy vs ε; weights."""
    fig, axes = _figure(2, 2, (11.5, 9))

    ax = axes[0, 0]
    pe = res["per_example"]
    ax.scatter(pe["closed"], pe["pgd"], s=8, alpha=0.6)
    top = max(max(pe["closed"]), max(pe["pgd"]))
    ax.plot([0, top], [0, top], color="black", lw=1)
    ax.set_xlabel("softplus(ε‖w‖₁ − y(wᵀx + b))")
    ax.set_ylabel("logistic loss after L∞ PGD")
    ax.set_title(
        f"(a) worst-case loss, closed form vs attack (ε = {res['eps_train']:g})\n"
        f"max gap: PGD {pe['max_gap_pgd']:.1e}, FGSM {pe['max_gap_fgsm']:.1e}",
        fontsize=10,
    )

    ax = axes[0, 1]
    ax.plot(res["objective_closed_form"], color="tab:blue", lw=3, alpha=0.5, label="closed-form objective")
    ax.plot(res["objective_fgsm"], color="black", lw=1, ls="--", label="FGSM examples each step")
    ax.set_xlabel("gradient-descent step")
    ax.set_ylabel(f"α·J(x) + (1−α)·J_adv,  α = {res['alpha']:g}")
    ax.set_yscale("log")
    ax.set_title(f"(b) adversarial training, two ways\nmax final weight gap {res['closed_vs_fgsm_training_max_weight_gap']:.1e}", fontsize=10)
    ax.legend(fontsize=8)

    ax = axes[1, 0]
    for name, colour in (("standard", "black"), ("adversarial", "tab:green")):
        rows = [r for r in res["rows"] if r["model"] == name]
        eps = [r["eps"] for r in rows]
        ax.plot(eps, [r["accuracy_closed"] for r in rows], color=colour, **_CLOSED, label=f"{name} training")
        ax.errorbar(eps, [r["accuracy_simulated"] for r in rows], yerr=[2 * r["accuracy_se"] for r in rows], color=colour, **_SIM)
    _legend_note(ax)
    ax.set_xlabel("L∞ ε of the attack")
    ax.set_ylabel("accuracy under PGD")
    ax.set_title("(c) robust accuracy on N(y·μ, I): Φ formula vs PGD on fresh samples", fontsize=10)
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    idx = np.arange(len(res["w_standard"]))
    ax.bar(idx - 0.2, res["w_standard"], width=0.4, color="0.4", label="standard")
    ax.bar(idx + 0.2, res["w_adversarial"], width=0.4, color="tab:green", label=f"adversarial (ε = {res['eps_train']:g})")
    ax2 = ax.twinx()
    ax2.plot(idx, res["mean"], "k_", ms=14, mew=2)
    ax2.set_ylabel("μ coordinate (black ticks)")
    ax2.set_ylim(0, max(res["mean"]) * 1.3)
    ax.set_xlabel("input coordinate")
    ax.set_ylabel("weight")
    ax.set_title("(d) the ε‖w‖₁ term inside the softplus shrinks weak features", fontsize=10)
    ax.legend(fontsize=8)

    return _finish(fig, "Goodfellow et al. 2015: adversarial logistic regression in closed form", path)
