"""Figures of the science experiments, drawn from their plain JSON-ready results.

Matplotlib runs on the Agg backend; every PNG goes to a temporary name beside its destination and
is renamed into place (:func:`advfeatures.storage.atomic_path`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..storage import atomic_path  # noqa: E402
from .common import pixel_texture  # noqa: E402

SETS = ("D", "d_r", "d_nr", "d_rand", "d_det")
NAMES = {"D": "D", "d_r": "D_R", "d_nr": "D_NR", "d_rand": "D_rand", "d_det": "D_det", "standard": "std", "robust": "robust"}
ROBUST_COLOR, NON_ROBUST_COLOR = "#1f77b4", "#d62728"


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically and close it."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def plot_planted(results: dict[str, Any], path: str | Path) -> Path:
    """Three panels: each set's robust / non-robust signal share (w.r.t. its own labels); the swap
    test (which feature each trained model follows); accuracy on the real, robust-only and
    non-robust-only test sets."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    sets = [s for s in SETS if s in results["signal"]]
    pos = np.arange(len(sets))
    ax = axes[0]
    for off, fam, color, label in ((-0.2, "robust", ROBUST_COLOR, "robust (template)"),
                                   (0.2, "non_robust", NON_ROBUST_COLOR, "non-robust (block texture)")):
        ax.bar(pos + off, [results["signal"][s][fam]["share"] for s in sets], 0.4, color=color, label=label)
    ax.scatter(pos + 0.2, [results["signal"][s]["non_robust"]["template_share"] for s in sets], marker="_", s=300, color="k",
               label="non-robust (exact code)", zorder=3)
    ax.axhline(0, color="0.4", lw=0.8)
    ax.set_xticks(pos, [NAMES[s] for s in sets])
    ax.set_ylabel("signal share agreeing with the set's labels")
    ax.set_title("What each training set carries")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)

    models = [m for m in ("standard", "robust") if m in results.get("models", {})] + \
             [k for k in SETS[1:] if k in results.get("constructed", {})]
    info = {**results.get("models", {}), **{k: v["model"] for k, v in results.get("constructed", {}).items()}}
    pos = np.arange(len(models))
    ax = axes[1]
    rob = np.array([info[m]["swap"]["follows_robust"] for m in models])
    non = np.array([info[m]["swap"]["follows_non_robust"] for m in models])
    ax.bar(pos, rob, 0.6, color=ROBUST_COLOR, label="follows robust")
    ax.bar(pos, non, 0.6, bottom=rob, color=NON_ROBUST_COLOR, label="follows non-robust")
    ax.bar(pos, 1 - rob - non, 0.6, bottom=rob + non, color="0.8", label="neither")
    ax.set_xticks(pos, [("on " if m in SETS else "") + NAMES[m] for m in models], rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_title("Swap test: robust says a, non-robust says b")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3)

    ax = axes[2]
    width = 0.27
    for off, key, label, color in ((-width, "test_accuracy", "real test", "0.3"),
                                   (0.0, "robust_only_accuracy", "robust feature only", ROBUST_COLOR),
                                   (width, "non_robust_only_accuracy", "non-robust feature only", NON_ROBUST_COLOR)):
        ax.bar(pos + off, [info[m][key] for m in models], width, color=color, label=label)
    chance = 1.0 / results["config"]["data"]["num_classes"]
    ax.axhline(chance, color="k", ls=":", lw=1, label="chance")
    ax.set_xticks(pos, [NAMES[m] for m in models], rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_title("Test accuracy of each trained model")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2)
    fig.suptitle("Planted-features benchmark (ground truth known)")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_planted_examples(images: dict[str, Any], labels: Any, path: str | Path) -> Path:
    """The same training images in every set (rows: D, D_R, D_NR, D_rand, D_det) and, below each, its
    pixel-scale texture (the 2×2 mixed difference) where the non-robust code lives."""
    sets = [s for s in SETS if s in images]
    n = len(images[sets[0]])
    fig, axes = plt.subplots(2 * len(sets), n, figsize=(1.3 * n, 2.6 * len(sets)), squeeze=False)
    for r, name in enumerate(sets):
        x = images[name]
        texture = pixel_texture(x).abs()
        for c in range(n):
            ax = axes[2 * r, c]
            ax.imshow(x[c, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            ax = axes[2 * r + 1, c]
            ax.imshow(texture[c, 0].numpy(), cmap="magma", vmin=0, vmax=0.1)
            ax.set_xticks([]), ax.set_yticks([])
        axes[2 * r, 0].set_ylabel(NAMES[name], fontsize=10)
        axes[2 * r + 1, 0].set_ylabel("texture", fontsize=8)
    for c in range(n):
        axes[0, c].set_title(f"source label {int(labels[c])}", fontsize=8)
    fig.suptitle("Planted benchmark: the same source images in each set (robust pattern above, pixel texture below)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_transfer(result: dict[str, Any], path: str | Path) -> Path:
    """Ilyas et al.'s Fig. 3: transfer rate of the source's adversarial examples to each
    architecture (x) against its real test accuracy when trained on D_rand (y)."""
    fig, ax = plt.subplots(figsize=(6.2, 4.6))
    rows = result["archs"]
    for key, marker, face, label in (("transfer_targeted", "o", None, "targeted (as in D_rand)"),
                                     ("transfer_untargeted", "s", "white", "untargeted")):
        pts = [(r[key], r["d_rand_test_accuracy"], r["label"]) for r in rows if r[key] is not None]
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.scatter(xs, ys, marker=marker, s=55, facecolors=face or "C0", edgecolors="C0", label=label, zorder=3)
        if key == "transfer_targeted":
            placed: list[tuple[float, float]] = []  # label positions, nudged up so that none overlap
            for xv, yv, name in sorted(pts, key=lambda p: p[1]):
                ly = yv + 0.01
                while any(abs(px - xv) < 0.15 and abs(py - ly) < 0.035 for px, py in placed):
                    ly += 0.035
                placed.append((xv, ly))
                moved = ly - yv > 0.02
                ax.annotate(name, (xv, yv), xytext=(xv + 0.015, ly), textcoords="data", fontsize=8,
                            arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.5"} if moved else None)
    if rows:
        src = result.get("source", {})
        corr = result.get("correlation", {}).get("targeted_vs_d_rand", {})
        if corr.get("pearson") is not None:
            ax.text(0.02, 0.97, f"targeted: Pearson {corr['pearson']:.2f}, Spearman {corr['spearman']:.2f} (n={corr['n']})",
                    transform=ax.transAxes, va="top", fontsize=8)
        arch = (src.get("arch") or {}).get("name", "source")
        ax.set_title(f"Transfer from {arch} vs learning from its D_rand")
    ax.set_xlabel("transfer success rate of the source's adversarial examples")
    ax.set_ylabel("real test accuracy after training on D_rand")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(0, 1.02)
    if result.get("chance") is not None:
        ax.axhline(result["chance"], color="k", ls=":", lw=1, label="chance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)
