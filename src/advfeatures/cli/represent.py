"""``advfeatures invert | visualize | generate | saliency | transfer``: looking inside a saved model's
representation. Each writes PNG figures and one JSON file into ``--out``.

    advfeatures invert --model std.safetensors --robust-model rob.safetensors --dataset digits --out runs/inv
    advfeatures visualize --model rob.safetensors --dataset digits --out runs/vis --units-vs-directions
    advfeatures generate --model rob.safetensors --dataset digits --out runs/gen --per-class 4
    advfeatures saliency --model std.safetensors --dataset digits --out runs/sal
    advfeatures transfer --model std.safetensors --model rob.safetensors --dataset digits --out runs/tr
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import torch

from . import main
from ..errors import ConfigError
from .options import (data_options, device_option, model_file_option, model_options, out_option, resolve_device, seed_option,
                      write_result)

_OUT = out_option(folder=True, help="Folder for the PNG and JSON files.")
_DATA = data_options("Dataset (its test split is used, the training split where one is needed).")


def _ints(text: str | None, what: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated whole numbers, got {text!r}") from None


@main.command()
@model_file_option("--model")
@model_file_option("--robust-model", required=False, help="A robust model: --model is then the standard one, compared side by side.")
@model_file_option("--held-out-model", required=False, help="A classifier (ideally of another architecture) scoring the inverted images.")
@_DATA
@model_options
@_OUT
@click.option("--n", default=16, show_default=True, type=click.IntRange(min=1), help="Test images to invert.")
@click.option("--steps", default=1000, show_default=True, type=click.IntRange(min=1))
@click.option("--step-size", default=0.1, show_default=True, type=float)
@click.option("--start", default="noise", show_default=True, type=click.Choice(["noise", "image"]), help="Seeds: N(0.5, 0.05²) noise or other test images.")
@click.option("--interpolate", "interp", default=0, show_default=True, type=click.IntRange(min=0), help="Also invert this many points between pairs of images (0: no).")
@seed_option
@device_option
def invert(model: Path, robust_model: Path | None, held_out_model: Path | None, source, loader,
           out: Path, n: int, steps: int, step_size: float, start: str, interp: int, seed: int, device: str) -> None:
    """Recover images from their representations g(x), standard vs robust.

    Representation inversion as in Engstrom et al. 2019."""
    from ..represent.figures import image_grid
    from ..represent.inversion import compare_inversions, interpolate

    dev = resolve_device(device)
    data = source.split("test", seed=seed)
    m = loader.load(model, dev, data)
    models = {"standard": m, "robust": loader.load(robust_model, dev, data)} if robust_model else {"model": m}
    res = compare_inversions(models, data, out, n=n, steps=steps, step_size=step_size, start=start, seed=seed,
                             held_out_model=loader.load(held_out_model, dev, data))
    if interp:
        gen = torch.Generator().manual_seed(seed)
        pairs = torch.randperm(len(data), generator=gen)[:8].view(2, 4)
        xa, xb = data.images[pairs[0]].to(dev), data.images[pairs[1]].to(dev)
        res["interpolation"] = {}
        for name, mod in models.items():
            inv, alphas = interpolate(mod, xa, xb, num=interp, steps=steps, step_size=step_size, generator=gen)
            rows = list(inv.images.view(4, interp, *xa.shape[1:]))
            path = image_grid(rows, out / f"interpolation-{name}.png", col_labels=[f"α={a:.2f}" for a in alphas.tolist()],
                              title=f"Inverting (1−α)·g(a) + α·g(b) through the {name} model")
            res["interpolation"][name] = {**inv.summary(), "alphas": alphas.tolist(), "figure": str(path)}
        write_result(out / "inversion.json", res)
    for name in models:
        r = res[name]
        click.echo(f"{name:9s} pixel L2 to target {r['pixel_l2']:.3f}  representation distance {r['representation_distance']:.4f}"
                   + (f"  held-out accuracy {r['held_out_accuracy']:.3f}" if r["held_out_accuracy"] is not None else ""))
    click.echo(f"seeds' pixel L2 to target {res['start_pixel_l2']:.3f}; wrote {res['figure']} and {res['json']}")


@main.command()
@model_file_option("--model")
@_DATA
@model_options
@_OUT
@click.option("--coordinates", default=None, help="Representation coordinates to maximise, e.g. 0,5,9 (default: --num random live ones).")
@click.option("--num", default=8, show_default=True, type=click.IntRange(min=1), help="Coordinates (and random directions) to show.")
@click.option("--steps", default=200, show_default=True, type=click.IntRange(min=1))
@click.option("--step-size", default=1.0, show_default=True, type=float)
@click.option("--eps", default=None, type=float, help="Feature addition's L2 radius (default 0.1·√pixels).")
@click.option("--units-vs-directions", "units", is_flag=True, help="Also the test images that most activate units vs random directions.")
@click.option("--top-k", default=8, show_default=True, type=click.IntRange(min=1))
@seed_option
@device_option
def visualize(model: Path, source, loader, out: Path, coordinates: str | None, num: int, steps: int,
              step_size: float, eps: float | None, units: bool, top_k: int, seed: int, device: str) -> None:
    """Maximise representation coordinates; feature addition; units vs directions.

    Engstrom et al. 2019 (visualisation, addition); Szegedy et al. 2014 (units vs directions)."""
    from ..represent.figures import image_grid
    from ..represent.inversion import noise_seeds
    from ..represent.units import layer_activations, units_vs_directions
    from ..represent.visualize import add_feature, random_directions, visualize as visualize_fn

    dev = resolve_device(device)
    data = source.split("test", seed=seed)
    m = loader.load(model, dev, data)
    gen = torch.Generator().manual_seed(seed)
    coords = _ints(coordinates, "--coordinates")
    if coords is None:
        live = (layer_activations(m, data.images[:500]).std(0) > 0).nonzero().flatten().cpu()
        if live.numel() == 0:
            raise ConfigError("every representation coordinate is constant on the test images; pass --coordinates")
        coords = live[torch.randperm(live.numel(), generator=gen)[:num]].tolist()
    k = len(coords)
    images = data.images[torch.randperm(len(data), generator=gen)[:k]].to(dev)
    noise = noise_seeds(images.cpu(), generator=gen).to(dev)
    c = torch.tensor(coords, device=dev)
    results: dict[str, Any] = {"coordinates": coords, "steps": steps, "step_size": step_size}
    rows, labels = [], []
    for seed_name, seeds in (("noise", noise), ("image", images)):  # the paper: half noise, half test images
        res = visualize_fn(m, seeds, coordinates=c, steps=steps, step_size=step_size)
        results[f"coordinate_from_{seed_name}"] = {**res.summary(), "final": res.final_activation.tolist()}
        rows += [seeds, res.images]
        labels += [f"{seed_name} seed", "max g_k"]
    dirs = random_directions(k, res.directions.shape[1], generator=gen, device=dev)
    res = visualize_fn(m, noise, directions=dirs, steps=steps, step_size=step_size)
    results["direction_from_noise"] = {**res.summary(), "final": res.final_activation.tolist()}
    rows.append(res.images)
    labels.append("max ⟨g, v⟩\n(random v)")
    add = add_feature(m, images, coordinates=c, eps=eps)
    results["feature_addition"] = {**add.summary(), "final": add.final_activation.tolist()}
    rows.append(add.images)
    labels.append("image + g_k")
    fig = image_grid(rows, out / "visualize.png", row_labels=labels, col_labels=[str(v) for v in coords],
                     title=f"Maximising representation coordinates ({steps} steps of {step_size:g})")
    results["figure"] = str(fig)
    if units:
        uvd = units_vs_directions(m, data, num=min(num, 8), top_k=top_k, seed=seed)
        grid = [data.images[r["indices"]] for r in uvd["units"] + uvd["directions"]]
        names = [f"unit {r['unit']}" for r in uvd["units"]] + [f"direction {i}" for i in range(len(uvd["directions"]))]
        uvd["figure"] = str(image_grid(grid, out / "units.png", row_labels=names,
                                       title=f"Top-{top_k} test images: units vs random directions of {uvd['layer']}"))
        results["units_vs_directions"] = uvd
        click.echo(f"top-{top_k} label purity: units {uvd['mean_purity_units']:.3f}, random directions "
                   f"{uvd['mean_purity_directions']:.3f}, random images {uvd['chance_purity']:.3f}")
    write_result(out / "visualize.json", results)
    for key in ("coordinate_from_noise", "coordinate_from_image", "direction_from_noise", "feature_addition"):
        r = results[key]
        click.echo(f"{key:22s} activation {r['start_activation']:.3f} → {r['final_activation']:.3f} (raised for {r['share_raised']:.0%})")
    click.echo(f"wrote {fig} and {out / 'visualize.json'}")


@main.command()
@model_file_option("--model", help="A (robust) classifier written by advfeatures.models.save_model.")
@_DATA
@model_options
@_OUT
@click.option("--per-class", default=4, show_default=True, type=click.IntRange(min=1), help="Images per class.")
@click.option("--eps", default=None, type=float, help="L2 radius (default 0.1·√pixels).")
@click.option("--steps", default=60, show_default=True, type=click.IntRange(min=1))
@click.option("--step-size", default=None, type=float, help="Default 2.5·eps/steps.")
@click.option("--max-dim", default=1024, show_default=True, type=click.IntRange(min=1), help="Fit the Gaussians at a resolution with at most this many values.")
@seed_option
@device_option
def generate(model: Path, source, loader, out: Path, per_class: int, eps: float | None, steps: int,
             step_size: float | None, max_dim: int, seed: int, device: str) -> None:
    """Class-conditional generation from one robust classifier.

    Gaussian seeds per class, then targeted large-ε L2 PGD (Santurkar et al. 2019)."""
    from ..represent.figures import image_grid
    from ..represent.generate import fit_class_gaussians, generate as generate_fn

    dev = resolve_device(device)
    train = source.split("train", seed=seed)
    m = loader.load(model, dev, train)
    gauss = fit_class_gaussians(train, max_dim=max_dim)
    labels = torch.arange(train.num_classes).repeat_interleave(per_class)
    res = generate_fn(m, labels, gaussians=gauss, eps=eps, steps=steps, step_size=step_size,
                      generator=torch.Generator().manual_seed(seed))
    per = res.success.float().view(train.num_classes, per_class).mean(1).tolist()
    summary = {**res.summary(), "per_class_target_reached": dict(zip(train.classes, per, strict=True)), "per_class": per_class,
               "steps": steps, "eps": eps, "resolution": list(gauss.resolution)}
    shape = res.images.shape[1:]
    gen_rows = list(res.images.cpu().view(train.num_classes, per_class, *shape))
    seed_rows = list(res.seeds.cpu().view(train.num_classes, per_class, *shape))
    summary["figure"] = str(image_grid(gen_rows, out / "generate.png", row_labels=train.classes,
                                       title=f"Generated from class Gaussians by targeted L2 PGD ({steps} steps)"))
    summary["seeds_figure"] = str(image_grid(seed_rows, out / "generate-seeds.png", row_labels=train.classes,
                                             title="Seeds: samples of each class's Gaussian"))
    write_result(out / "generate.json", summary)
    click.echo(f"classified as the requested class: {summary['target_reached']:.1%} (mean confidence "
               f"{summary['mean_confidence']:.3f}); wrote {summary['figure']} and {out / 'generate.json'}")


@main.command()
@model_file_option("--model")
@_DATA
@model_options
@_OUT
@click.option("--n", default=8, show_default=True, type=click.IntRange(min=1), help="Test images.")
@click.option("--methods", default="gradient,gradient_x_input,smoothgrad,edge", show_default=True)
@click.option("--ssim", "with_ssim", is_flag=True, help="Also score SSIM.")
@seed_option
@device_option
def saliency(model: Path, source, loader, out: Path, n: int, methods: str, with_ssim: bool,
             seed: int, device: str) -> None:
    """Saliency maps and the cascading-randomisation sanity check.

    Adebayo et al. 2018: a map that explains the model must change when its weights are randomised."""
    from ..represent.figures import cascade_plot, saliency_grid
    from ..represent.saliency import cascading_randomization

    dev = resolve_device(device)
    data = source.split("test", seed=seed)
    m = loader.load(model, dev, data)
    names = tuple(v.strip() for v in methods.split(",") if v.strip())
    if not names:
        raise ConfigError(f"--methods names no method ({methods!r}); give e.g. gradient,smoothgrad")
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    x = data.images[idx].to(dev)
    res = cascading_randomization(m, x, methods=names, seed=seed, with_ssim=with_ssim, return_maps=True)
    maps = res.pop("maps")
    res["indices"] = idx.tolist()
    res["maps_figure"] = str(saliency_grid(x.cpu(), {k: v[0] for k, v in maps.items()}, out / "saliency.png",
                                           title="Saliency maps of the trained model"))
    res["figure"] = str(cascade_plot(res, out / "cascade.png"))
    write_result(out / "saliency.json", res)
    click.echo("Spearman rank correlation with the trained model's map, all layers randomised:")
    for name, scores in res["methods"].items():
        click.echo(f"  {name:18s} {scores['spearman'][-1]:+.3f}")
    click.echo(f"wrote {res['figure']}, {res['maps_figure']} and {out / 'saliency.json'}")


@main.command("transfer")  # the adversarial-transferability experiment is `advfeatures transferability`
@model_file_option("--model", multiple=True, help="A source model; repeat to compare (e.g. standard and robust).")
@click.option("--name", "names", multiple=True, help="A name per --model (default: the file names).")
@_DATA
@model_options
@_OUT
@click.option("--n-train", default=None, type=click.IntRange(min=2), help="Use only the first N training images.")
@click.option("--n-test", default=None, type=click.IntRange(min=1), help="Use only the first N test images.")
@click.option("--modes", default="fixed-feature,full-fine-tuning", show_default=True)
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1), help="Fine-tuning epochs.")
@click.option("--lr", default=0.01, show_default=True, type=float, help="Fine-tuning learning rate (SGD).")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(min=1))
@seed_option
@device_option
def transfer_learning(model: tuple[Path, ...], names: tuple[str, ...], source, loader, out: Path,
             n_train: int | None, n_test: int | None, modes: str, epochs: int, lr: float, batch_size: int, seed: int,
             device: str) -> None:
    """Transfer source representations to --dataset: linear probe and fine-tuning.

    Fixed-feature and full fine-tuning transfer as in Salman et al. 2020."""
    from ..represent.figures import transfer_plot
    from ..represent.transfer import transfer_table
    from ..train import TrainConfig

    if names and len(names) != len(model):
        raise ConfigError(f"give one --name per --model ({len(model)}), got {len(names)}")
    labels = list(names) if names else [p.stem for p in model]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"source names must differ, got {labels}; pass --name for each --model")
    dev = resolve_device(device)
    train, test = source.load(seed=seed)
    train, test = train.head(n_train), test.head(n_test)
    # the sources were trained on other classes: only their input shape must fit the target data
    sources = {name: loader.load(p, dev, train, same_classes=False) for name, p in zip(labels, model, strict=True)}
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, crop_padding=0, flip=False, seed=seed)
    table = transfer_table(sources, train, test, modes=tuple(v.strip() for v in modes.split(",") if v.strip()),
                           fine_tune_config=cfg, device=dev)
    table["figure"] = str(transfer_plot(table, out / "transfer.png"))
    write_result(out / "transfer.json", table)
    click.echo(f"test accuracy on {table['target']} ({table['n_train']} training images):")
    click.echo(f"  {'source':16s} " + " ".join(f"{m:>17s}" for m in table["modes"]))
    for name, row in table["table"].items():
        click.echo(f"  {name:16s} " + " ".join(f"{row[m]:17.4f}" for m in table["modes"]))
    click.echo(f"wrote {table['figure']} and {out / 'transfer.json'}")
