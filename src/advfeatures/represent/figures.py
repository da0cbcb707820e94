"""Figures for :mod:`advfeatures.represent`: image grids, saliency maps, the cascading-randomisation
curves and the transfer table, drawn with matplotlib's Agg backend.

Every PNG is written to a temporary name beside its destination and renamed into place
(:func:`advfeatures.storage.atomic_path`), so a reader never sees half a file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..errors import DataError  # noqa: E402
from ..storage import atomic_path  # noqa: E402


def save_png(fig: plt.Figure, path: str | Path, *, dpi: int = 120) -> Path:
    """Save ``fig`` as a PNG at ``path`` atomically and close it."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _to_hwc(img: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] → an array imshow understands (H, W) or (H, W, 3)."""
    a = img.detach().float().cpu().clamp(0, 1).numpy()
    return a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))


def image_grid(
    rows: Sequence[torch.Tensor],
    path: str | Path,
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    cell: float = 0.9,
) -> Path:
    """A grid with one row per tensor of ``rows`` (each (K, C, H, W) in [0, 1]); shorter rows leave
    blank cells. Grey images use the grey colour map with a fixed [0, 1] range, so rows compare."""
    if not rows:
        raise DataError("an image grid needs at least one row of images")
    ncols = max(int(r.shape[0]) for r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(cell * ncols + (1.6 if row_labels else 0.2), cell * len(rows) + 0.6),
                             squeeze=False)
    for i, row in enumerate(rows):
        for j in range(ncols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < row.shape[0]:
                ax.imshow(_to_hwc(row[j]), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            if j == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[i], rotation=0, ha="right", va="center", fontsize=8)
            if i == 0 and col_labels is not None and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(wspace=0.05, hspace=0.08)
    return save_png(fig, path)


def saliency_grid(images: torch.Tensor, maps: Mapping[str, torch.Tensor], path: str | Path, *, title: str | None = None) -> Path:
    """Images in the first row, then one row of absolute saliency maps per method (each map scaled
    to its own maximum)."""
    rows = [images]
    for m in maps.values():
        a = m.detach().float().abs().sum(1, keepdim=True)
        a = a / a.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        rows.append(a)
    return image_grid(rows, path, row_labels=["image", *maps.keys()], title=title)


def cascade_plot(result: Mapping[str, Any], path: str | Path, *, metric: str = "spearman") -> Path:
    """Similarity to the original map (y) as layers are randomised from the top (x), one line per
    method; ``result`` is what :func:`advfeatures.represent.saliency.cascading_randomization` returns."""
    layers = result["layers"]
    fig, ax = plt.subplots(figsize=(max(4.5, 0.55 * len(layers) + 2), 3.4))
    x = np.arange(len(layers))
    for name, scores in result["methods"].items():
        ax.plot(x, scores[metric], marker="o", ms=4, lw=1.6, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(layers, rotation=45, ha="right", fontsize=7)
    ax.set_ylim(-0.25, 1.05)
    ax.axhline(0, color="0.7", lw=0.8)
    ax.set_ylabel(f"{metric} similarity to the original map")
    ax.set_xlabel("layers randomised, cumulatively from the top")
    ax.set_title("Cascading randomisation (Adebayo et al. 2018)", fontsize=10)
    ax.legend(fontsize=8)
    return save_png(fig, path)


def transfer_plot(table: Mapping[str, Any], path: str | Path) -> Path:
    """Grouped bars: test accuracy on the target for each source model and transfer mode."""
    rows = table["rows"]
    sources = list(dict.fromkeys(r["source"] for r in rows))
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    width = 0.8 / max(1, len(modes))
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(sources), 3.4))
    for k, mode in enumerate(modes):
        acc = [next((r["test_accuracy"] for r in rows if r["source"] == s and r["mode"] == mode), np.nan) for s in sources]
        pos = np.arange(len(sources)) + (k - (len(modes) - 1) / 2) * width
        bars = ax.bar(pos, acc, width, label=mode)
        for b, a in zip(bars, acc):
            if np.isfinite(a):
                ax.text(b.get_x() + b.get_width() / 2, a + 0.01, f"{a:.3f}", ha="center", fontsize=7)
    ax.set_xticks(np.arange(len(sources)))
    ax.set_xticklabels(sources)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel(f"test accuracy on {table.get('target', 'target')}")
    ax.set_title("Transfer from source representations", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return save_png(fig, path)
