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


def _mosaic(rows: Sequence[torch.Tensor], pad: int) -> tuple[np.ndarray, int, int]:
    """All images in one array (one imshow draws the whole grid fast), white gaps between cells."""
    shapes = {tuple(r.shape[1:]) for r in rows if r.shape[0]}
    if len(shapes) > 1:
        raise DataError(f"every image of a grid must have the same shape, got {sorted(shapes)}")
    c, h, w = shapes.pop()
    ncols = max(int(r.shape[0]) for r in rows)
    canvas = np.ones((len(rows) * (h + pad) - pad, ncols * (w + pad) - pad, 3), dtype=np.float32)
    for i, row in enumerate(rows):
        a = row.detach().float().cpu().clamp(0, 1).numpy()
        a = np.repeat(a, 3, axis=1) if c == 1 else a[:, :3]
        for j in range(a.shape[0]):
            canvas[i * (h + pad) : i * (h + pad) + h, j * (w + pad) : j * (w + pad) + w] = np.transpose(a[j], (1, 2, 0))
    return canvas, h, w


def image_grid(
    rows: Sequence[torch.Tensor],
    path: str | Path,
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    cell: float = 0.75,
    max_cols: int = 16,
) -> Path:
    """A grid with one row per tensor of ``rows`` (each (K, C, H, W) in [0, 1], same C, H, W);
    shorter rows leave blank cells; more than ``max_cols`` columns wrap into blocks of rows. Pixel
    values map to grey (or RGB) on a fixed [0, 1] scale, so rows compare."""
    if not rows:
        raise DataError("an image grid needs at least one row of images")
    ncols = max(int(r.shape[0]) for r in rows)
    labels = list(row_labels) if row_labels is not None else [""] * len(rows)
    blocks = max(1, -(-ncols // max_cols))
    width = min(ncols, max_cols)
    grid: list[torch.Tensor] = []
    names: list[str] = []
    heads: list[tuple[int, int]] = []  # (grid row, first column) of each block, for the column labels
    for b in range(blocks):
        if col_labels is not None and b > 0:
            grid.append(rows[0][:0])  # an empty row: room for the next block's column labels
            names.append("")
        heads.append((len(grid), b * max_cols))
        for r, name in zip(rows, labels, strict=True):
            grid.append(r[b * max_cols : (b + 1) * max_cols])
            names.append(name)
    pad = 1
    canvas, h, w = _mosaic(grid, pad)
    scale = cell / max(h, w)
    fig, ax = plt.subplots(figsize=(max(3.0, scale * canvas.shape[1] + (1.4 if row_labels else 0.2)),
                                    scale * canvas.shape[0] + (0.8 if title else 0.3) + (0.3 if col_labels else 0)))
    ax.imshow(canvas, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_yticks([i * (h + pad) + (h - 1) / 2 for i in range(len(grid))])
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xticks([])
    ax.tick_params(length=0)
    if col_labels is not None:
        vertical = max(map(len, col_labels), default=0) > 3
        for row, first in heads:
            for j in range(width):
                if first + j < len(col_labels):
                    ax.text(j * (w + pad) + (w - 1) / 2, row * (h + pad) - 1.5, str(col_labels[first + j]), fontsize=6,
                            ha="center", va="bottom", rotation=90 if vertical else 0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=9, pad=30 if col_labels is not None else 6)
    return save_png(fig, path)


def interpolation_grid(images: torch.Tensor, alphas: Sequence[float], path: str | Path, *, title: str | None = None) -> Path:
    """One row per pair of an interpolation (``images``: (pairs·num, C, H, W), pair-major, as
    :func:`advfeatures.represent.inversion.interpolate` returns them), one column per α."""
    num = len(alphas)
    rows = list(images.view(images.shape[0] // num, num, *images.shape[1:]))
    return image_grid(rows, path, col_labels=[f"α={a:.2f}" for a in alphas], title=title)


def class_grid(images: torch.Tensor, classes: Sequence[str], path: str | Path, *, title: str | None = None) -> Path:
    """One row per class of ``images`` ((K·per_class, C, H, W), class-major), labelled by ``classes``."""
    k = len(classes)
    rows = list(images.cpu().view(k, images.shape[0] // k, *images.shape[1:]))
    return image_grid(rows, path, row_labels=classes, title=title)


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
        for b, a in zip(bars, acc, strict=True):
            if np.isfinite(a):
                ax.text(b.get_x() + b.get_width() / 2, a + 0.01, f"{a:.3f}", ha="center", fontsize=7)
    ax.set_xticks(np.arange(len(sources)))
    ax.set_xticklabels(sources)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel(f"test accuracy on {table.get('target', 'target')}")
    ax.set_title("Transfer from source representations", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return save_png(fig, path)
