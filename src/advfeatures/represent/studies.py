"""The representation experiments behind ``advfeatures visualize | generate | saliency | transfer``
(``invert`` is :func:`advfeatures.represent.inversion.compare_inversions`).

Each study has two halves: a function that computes and returns data (tensors and a JSON-ready
dict), and one that runs it on a model and a dataset, draws its figures with
:mod:`advfeatures.represent.figures` into ``out_dir`` and returns the dict, figure paths included.
The command line only parses, calls the second, writes the dict as JSON and prints; from Python the
first is the one to call when no figure is wanted. Images are read by index from the
:class:`~advfeatures.data.dataset.ImageDataset` (``batch``), never as the whole set.

    res = feature_visualization(robust_model, test, Path("runs/vis"), num=8, units=True)
    res["coordinate_from_noise"]["share_raised"], res["units_vs_directions"]["mean_purity_units"]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.dataset import ImageDataset
from ..threats import check_steps
from ..train import TrainConfig
from .figures import cascade_plot, class_grid, image_grid, saliency_grid, transfer_plot
from .generate import GenerationResult, fit_class_gaussians, generate
from .inversion import noise_seeds
from .saliency import cascading_randomization
from .transfer import transfer_table
from .units import layer_activations, live_units, units_vs_directions
from .visualize import add_feature, random_directions, visualize

LIVE_UNIT_IMAGES = 500  # the images on which a coordinate must vary to be drawn as a random live one


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _images(data: ImageDataset, index: torch.Tensor | Sequence[int], device: torch.device) -> torch.Tensor:
    return data.batch(torch.as_tensor(index))[0].to(device)


# -- visualize ------------------------------------------------------------------------------------
def visualization_panels(
    model: nn.Module,
    data: ImageDataset,
    *,
    coordinates: Sequence[int] | None = None,
    num: int = 8,
    steps: int = 200,
    step_size: float = 1.0,
    eps: float | None = None,
    seed: int = 0,
) -> tuple[dict[str, Any], list[torch.Tensor], list[str]]:
    """Engstrom et al.'s visualisation panel: for each of ``coordinates`` (default: ``num`` random
    live ones, varying over the first 500 images) maximise g_k from a noise seed and from a random
    test image, maximise ⟨g, v⟩ for a random direction v from the noise seeds, and add g_k to the
    image within an L2 ball of ``eps`` (feature addition). One generator seeded by ``seed`` draws
    the coordinates, images, noise and directions, in that order.

    Returns the summary (``coordinates``, ``steps``, ``step_size`` and per panel row its summary and
    ``final`` activations), the image rows (seeds and results) and their labels."""
    device = _device(model)
    gen = torch.Generator().manual_seed(int(seed))
    if coordinates is None:
        acts = layer_activations(model, data.head(LIVE_UNIT_IMAGES))
        coordinates = live_units(acts, check_steps(num, "num"), generator=gen, fix="choose the coordinates (--coordinates)")
    coords = [int(c) for c in coordinates]
    images = _images(data, torch.randperm(len(data), generator=gen)[: len(coords)], device)
    noise = noise_seeds(images.cpu(), generator=gen).to(device)
    c = torch.tensor(coords, device=device)
    summary: dict[str, Any] = {"coordinates": coords, "steps": steps, "step_size": step_size}
    rows, labels = [], []
    for seed_name, seeds in (("noise", noise), ("image", images)):  # the paper: half noise, half test images
        res = visualize(model, seeds, coordinates=c, steps=steps, step_size=step_size)
        summary[f"coordinate_from_{seed_name}"] = {**res.summary(), "final": res.final_activation.tolist()}
        rows += [seeds, res.images]
        labels += [f"{seed_name} seed", "max g_k"]
    dirs = random_directions(len(coords), res.directions.shape[1], generator=gen, device=device)
    res = visualize(model, noise, directions=dirs, steps=steps, step_size=step_size)
    summary["direction_from_noise"] = {**res.summary(), "final": res.final_activation.tolist()}
    rows.append(res.images)
    labels.append("max ⟨g, v⟩\n(random v)")
    add = add_feature(model, images, coordinates=c, eps=eps)
    summary["feature_addition"] = {**add.summary(), "final": add.final_activation.tolist()}
    rows.append(add.images)
    labels.append("image + g_k")
    return summary, rows, labels


def feature_visualization(
    model: nn.Module,
    data: ImageDataset,
    out_dir: str | Path,
    *,
    coordinates: Sequence[int] | None = None,
    num: int = 8,
    steps: int = 200,
    step_size: float = 1.0,
    eps: float | None = None,
    units: bool = False,
    top_k: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`visualization_panels` drawn as ``visualize.png``; with ``units``, also Szegedy et
    al.'s units vs directions (:func:`~.units.units_vs_directions`, ``min(num, 8)`` of each, the
    ``top_k`` test images of each drawn as ``units.png``) under ``units_vs_directions``."""
    out_dir = Path(out_dir)
    summary, rows, labels = visualization_panels(model, data, coordinates=coordinates, num=num, steps=steps,
                                                 step_size=step_size, eps=eps, seed=seed)
    fig = image_grid(rows, out_dir / "visualize.png", row_labels=labels, col_labels=[str(v) for v in summary["coordinates"]],
                     title=f"Maximising representation coordinates ({steps} steps of {step_size:g})")
    summary["figure"] = str(fig)
    if units:
        uvd = units_vs_directions(model, data, num=min(num, 8), top_k=top_k, seed=seed)
        top = uvd["units"] + uvd["directions"]
        names = [f"unit {r['unit']}" for r in uvd["units"]] + [f"direction {i}" for i in range(len(uvd["directions"]))]
        uvd["figure"] = str(image_grid([data.batch(torch.as_tensor(r["indices"]))[0] for r in top], out_dir / "units.png",
                                       row_labels=names,
                                       title=f"Top-{top_k} test images: units vs random directions of {uvd['layer']}"))
        summary["units_vs_directions"] = uvd
    return summary


# -- generate -------------------------------------------------------------------------------------
def generate_per_class(
    model: nn.Module,
    train: ImageDataset,
    *,
    per_class: int = 4,
    eps: float | None = None,
    steps: int = 60,
    step_size: float | None = None,
    max_dim: int = 1024,
    seed: int = 0,
) -> tuple[GenerationResult, dict[str, Any]]:
    """Santurkar et al.'s generation: ``per_class`` images of every class of ``train`` (class-major),
    from seeds drawn from Gaussians fitted to each class (at ≤ ``max_dim`` values), then targeted
    large-ε L2 PGD. Returns the result and its summary (share reaching the class, per class too)."""
    per_class = check_steps(per_class, "per_class")
    gauss = fit_class_gaussians(train, max_dim=max_dim)
    labels = torch.arange(train.num_classes).repeat_interleave(per_class)
    res = generate(model, labels, gaussians=gauss, eps=eps, steps=steps, step_size=step_size,
                   generator=torch.Generator().manual_seed(int(seed)))
    per = res.success.float().view(train.num_classes, per_class).mean(1).tolist()
    summary = {**res.summary(), "per_class_target_reached": dict(zip(train.classes, per, strict=True)), "per_class": per_class,
               "steps": steps, "eps": eps, "resolution": list(gauss.resolution)}
    return res, summary


def class_generation(model: nn.Module, train: ImageDataset, out_dir: str | Path, *, steps: int = 60,
                     **options: Any) -> dict[str, Any]:
    """:func:`generate_per_class` (``options``: its keyword arguments) drawn as ``generate.png``
    (one row per class) and ``generate-seeds.png`` (the seeds)."""
    out_dir = Path(out_dir)
    res, summary = generate_per_class(model, train, steps=steps, **options)
    summary["figure"] = str(class_grid(res.images, train.classes, out_dir / "generate.png",
                                       title=f"Generated from class Gaussians by targeted L2 PGD ({steps} steps)"))
    summary["seeds_figure"] = str(class_grid(res.seeds, train.classes, out_dir / "generate-seeds.png",
                                             title="Seeds: samples of each class's Gaussian"))
    return summary


# -- saliency -------------------------------------------------------------------------------------
def saliency_study(model: nn.Module, data: ImageDataset, out_dir: str | Path, *, n: int = 8,
                   methods: Sequence[str] = ("gradient", "gradient_x_input", "smoothgrad", "edge"), with_ssim: bool = False,
                   seed: int = 0) -> dict[str, Any]:
    """Adebayo et al.'s cascading randomisation (:func:`~.saliency.cascading_randomization`) on ``n``
    random images of ``data`` (chosen by ``seed``, listed under ``indices``), drawn as
    ``saliency.png`` (the trained model's maps) and ``cascade.png`` (similarity per layer)."""
    out_dir = Path(out_dir)
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(int(seed)))[: check_steps(n, "n")]
    x = _images(data, idx, _device(model))
    res = cascading_randomization(model, x, methods=tuple(methods), seed=seed, with_ssim=with_ssim, return_maps=True)
    maps = res.pop("maps")
    res["indices"] = idx.tolist()
    res["maps_figure"] = str(saliency_grid(x.cpu(), {k: v[0] for k, v in maps.items()}, out_dir / "saliency.png",
                                           title="Saliency maps of the trained model"))
    res["figure"] = str(cascade_plot(res, out_dir / "cascade.png"))
    return res


# -- transfer -------------------------------------------------------------------------------------
def transfer_study(sources: Mapping[str, nn.Module], train: ImageDataset, test: ImageDataset, out_dir: str | Path, *,
                   modes: Sequence[str], epochs: int = 10, lr: float = 0.01, batch_size: int = 128, seed: int = 0,
                   device: str | torch.device = "cpu") -> dict[str, Any]:
    """Salman et al.'s transfer table (:func:`~.transfer.transfer_table`), fine-tuning by SGD for
    ``epochs`` at ``lr`` without augmentation, drawn as ``transfer.png``."""
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, crop_padding=0, flip=False, seed=seed)
    table = transfer_table(sources, train, test, modes=tuple(modes), fine_tune_config=cfg, device=device)
    table["figure"] = str(transfer_plot(table, Path(out_dir) / "transfer.png"))
    return table
