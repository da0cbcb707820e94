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
import click

from . import main
from ..errors import ConfigError
from .options import (data_options, device_option, model_file_option, model_options, out_option, parse_list, seed_option,
                      start_runtime, write_result)

_OUT = out_option(folder=True, help="Folder for the PNG and JSON files.")
_DATA = data_options("Dataset (its test split is used, the training split where one is needed).")


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
    from ..represent.inversion import compare_inversions

    dev = start_runtime(device).device
    data = source.split("test", seed=seed)
    m = loader.load(model, dev, data)
    models = {"standard": m, "robust": loader.load(robust_model, dev, data)} if robust_model else {"model": m}
    res = compare_inversions(models, data, out, n=n, steps=steps, step_size=step_size, start=start, seed=seed,
                             held_out_model=loader.load(held_out_model, dev, data), interpolation=interp)
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
    from ..represent.studies import feature_visualization

    chosen = None if coordinates is None else parse_list(coordinates, "--coordinates", example="0,5,9", cast=int,
                                                         kind="whole numbers")
    dev = start_runtime(device).device
    data = source.split("test", seed=seed)
    m = loader.load(model, dev, data)
    results = feature_visualization(m, data, out, coordinates=chosen, num=num, steps=steps,
                                    step_size=step_size, eps=eps, units=units, top_k=top_k, seed=seed)
    if units:
        uvd = results["units_vs_directions"]
        click.echo(f"top-{top_k} label purity: units {uvd['mean_purity_units']:.3f}, random directions "
                   f"{uvd['mean_purity_directions']:.3f}, random images {uvd['chance_purity']:.3f}")
    write_result(out / "visualize.json", results)
    for key in ("coordinate_from_noise", "coordinate_from_image", "direction_from_noise", "feature_addition"):
        r = results[key]
        click.echo(f"{key:22s} activation {r['start_activation']:.3f} → {r['final_activation']:.3f} (raised for {r['share_raised']:.0%})")
    click.echo(f"wrote {results['figure']} and {out / 'visualize.json'}")


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
    from ..represent.studies import class_generation

    dev = start_runtime(device).device
    train = source.split("train", seed=seed)
    m = loader.load(model, dev, train)
    summary = class_generation(m, train, out, per_class=per_class, eps=eps, steps=steps, step_size=step_size, max_dim=max_dim,
                               seed=seed)
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
    from ..represent.studies import saliency_study

    names = parse_list(methods, "--methods", example="gradient,smoothgrad", kind="method names")
    dev = start_runtime(device).device
    data = source.split("test", seed=seed)
    m = loader.load(model, dev, data)
    res = saliency_study(m, data, out, n=n, methods=names, with_ssim=with_ssim, seed=seed)
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
    from ..represent.studies import transfer_study

    if names and len(names) != len(model):
        raise ConfigError(f"give one --name per --model ({len(model)}), got {len(names)}")
    labels = list(names) if names else [p.stem for p in model]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"source names must differ, got {labels}; pass --name for each --model")
    chosen = parse_list(modes, "--modes", example="fixed-feature,full-fine-tuning", kind="modes")
    dev = start_runtime(device).device
    train, test = source.load(seed=seed)
    train, test = train.head(n_train), test.head(n_test)
    # the sources were trained on other classes: only their input shape must fit the target data
    sources = {name: loader.load(p, dev, train, same_classes=False) for name, p in zip(labels, model, strict=True)}
    table = transfer_study(sources, train, test, out, modes=chosen, epochs=epochs,
                           lr=lr, batch_size=batch_size, seed=seed, device=dev)
    write_result(out / "transfer.json", table)
    click.echo(f"test accuracy on {table['target']} ({table['n_train']} training images):")
    click.echo(f"  {'source':16s} " + " ".join(f"{m:>17s}" for m in table["modes"]))
    for name, row in table["table"].items():
        click.echo(f"  {name:16s} " + " ".join(f"{row[m]:17.4f}" for m in table["modes"]))
    click.echo(f"wrote {table['figure']} and {out / 'transfer.json'}")
