"""``advfeatures certify`` (IBP verified accuracy or randomized smoothing of a saved model),
``advfeatures physical`` (destruction rates of simulated print-and-photograph transformations) and
``advfeatures defences`` (the defence report: every training objective on one dataset).

    advfeatures certify --method ibp --model m.safetensors --dataset digits --eps 0.1
    advfeatures certify --method smoothing --model noisy.safetensors --sigma 0.25 --n 1000 --out cert/
    advfeatures physical --model m.safetensors --eps 0.1 --n 200 --out physical.json
    advfeatures defences --dataset digits --out docs/reports/defences-digits
"""

from __future__ import annotations

from pathlib import Path

import click

from . import main
from ..errors import ConfigError
from ..storage import write_text_atomic
from .attack import _load, _table
from .options import (DATASET_NAMES, data_options, device_option, model_file_option, model_options, parse_list,
                      seed_option, start_runtime, write_result)

_DEVICE = device_option


def _radii(text: str) -> list[float]:
    radii = parse_list(text, "--radii", example="0,0.25,0.5", cast=float, kind="numbers")
    if any(not (0 <= r < float("inf")) for r in radii):
        raise ConfigError(f"--radii must be non-negative numbers, got {text!r}")
    return radii


@main.command("certify")
@click.option("--method", type=click.Choice(["ibp", "smoothing"]), required=True,
              help="ibp: verified accuracy in the Linf ε-ball; smoothing: Cohen et al.'s CERTIFY (L2).")
@model_file_option("--model", "model_path")
@model_options
@data_options("Dataset whose test split is used.")
@click.option("--n", "n_images", type=int, default=500, show_default=True, help="Certify the first N test images.")
@click.option("--eps", type=float, default=None, help="ibp: the Linf radius.")
@click.option("--sigma", type=float, default=None, help="smoothing: the noise level the model was trained at.")
@click.option("--n0", type=int, default=100, show_default=True, help="smoothing: samples to guess the class.")
@click.option("--samples", type=int, default=1000, show_default=True, help="smoothing: samples to bound its probability.")
@click.option("--alpha", type=float, default=0.001, show_default=True, help="smoothing: failure probability per image.")
@click.option("--radii", default="0,0.25,0.5,0.75,1.0", show_default=True, help="smoothing: radii of the accuracy curve.")
@seed_option
@_DEVICE
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for certify.json (and, for smoothing, certify.md and smoothing.png).")
def certify_command(method, model_path, loader, source, n_images, eps, sigma, n0, samples, alpha, radii, seed, device, out):
    """Certified accuracy of a saved model: IBP (Linf) or randomized smoothing (L2)."""
    device = start_runtime(device).device
    rs = _radii(radii)  # checked whatever the method, so a bad value is never silently dropped
    model, x, y, _ = _load(model_path, loader, source, n_images, device)
    if method == "ibp":
        from ..certify import ibp_verified_accuracy

        if eps is None:
            raise ConfigError("--method ibp needs --eps (the Linf radius, e.g. --eps 0.1)")
        res = ibp_verified_accuracy(model, x, y, eps=eps)
        summary = {"method": "ibp", "model": str(model_path), "dataset": source.label, "n": res["n"], "eps": eps,
                   "verified_accuracy": res["verified_accuracy"]}
        click.echo(_table([[eps, res["n"], f"{100 * res['verified_accuracy']:.1f}%"]], ["Linf eps", "images", "IBP verified"]))
    else:
        from ..certify.smoothing import certified_accuracy, certify_dataset

        if sigma is None:
            raise ConfigError("--method smoothing needs --sigma (the noise level the model was trained at, e.g. --sigma 0.25)")
        for name, v in (("--n0", n0), ("--samples", samples)):
            if v < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {v}")
        res = certify_dataset(model, x, y, sigma=sigma, n0=n0, n=samples, alpha=alpha, seed=seed)
        curve = certified_accuracy(res, rs)
        summary = {"method": "smoothing", "model": str(model_path), "dataset": source.label, "n": int(x.shape[0]), "sigma": sigma,
                   "n0": n0, "samples": samples, "alpha": alpha, "radii": rs, "certified_accuracy": curve,
                   "abstain_rate": res["abstain_rate"], "radius": res["radius"].tolist(), "prediction": res["prediction"].tolist()}
        table = _table([[r, f"{100 * a:.1f}%"] for r, a in zip(rs, curve)], ["L2 radius", "certified accuracy"])
        click.echo(table)
        click.echo(f"abstained on {100 * res['abstain_rate']:.1f}% of {x.shape[0]} images")
    if out:
        out = Path(out)
        write_result(out / "certify.json", summary)
        if method == "smoothing":
            from ..experiments.defence_table import plot_smoothing_curve

            write_text_atomic(out / "certify.md", f"# Randomized smoothing, σ = {sigma:g}\n\n```\n{table}\n```\n")
            plot_smoothing_curve({"sigma": sigma, "radii": rs, "certified_accuracy": curve}, out / "smoothing.png")


@main.command("physical")
@model_file_option("--model", "model_path")
@model_options
@data_options("Dataset whose test split is used.")
@click.option("--n", "n_images", type=int, default=200, show_default=True, help="Attack the first N test images.")
@click.option("--eps", type=float, required=True, help="Linf budget of FGSM, BIM, iterative least-likely and EOT-BIM.")
@click.option("--eot-samples", type=int, default=16, show_default=True, help="Random photos averaged per EOT step.")
@seed_option
@_DEVICE
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the results as JSON here.")
def physical_command(model_path, loader, source, n_images, eps, eot_samples, seed, device, out):
    """Destruction rates (Kurakin et al. 2017) of simulated print-and-photograph transformations."""
    from ..physical import destruction_table, physical_markdown, physical_study

    if eot_samples < 1:
        raise ConfigError(f"--eot-samples must be ≥ 1, got {eot_samples}")
    device = start_runtime(device).device
    model, x, y, _ = _load(model_path, loader, source, n_images, device)
    res = physical_study(model, x, y, eps=eps, eot_samples=eot_samples, seed=seed)
    title, head, rows = destruction_table(res)
    click.echo(title)
    click.echo(_table(rows, head))
    if out:
        write_result(out, res)
        write_text_atomic(Path(out).with_suffix(".md"), physical_markdown(res, dataset=source.label, model_name=Path(model_path).name,
                                                                          eot_samples=eot_samples))


@main.command("defences")
@click.option("--dataset", type=click.Choice(DATASET_NAMES), default="digits", show_default=True)
@click.option("--data-root", type=click.Path(file_okay=False), default=None)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for defences.md, results.json, smoothing.png, models/.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a setting of DefenceTableConfig (JSON values), e.g. --set epochs=30 --set defence.beta=1.")
@_DEVICE
def defences_command(dataset, data_root, out, overrides, device):
    """Train every defence on one dataset and write the defence table (clean, robust, certified, cost)."""
    from ..experiments.defence_table import DefenceTableConfig, defence_table

    cfg = DefenceTableConfig.resolve(overrides, dataset=dataset, data_root=data_root)
    result = defence_table(cfg, out, device=start_runtime(device).device)
    click.echo((Path(out) / "defences.md").read_text(encoding="utf-8"))
    failed = [c["check"] for c in result["checks"] if not c["passed"]]
    if failed:
        click.echo("FAILED checks: " + "; ".join(failed), err=True)
