"""``advfeatures export``: write a dataset out in a format other tools read.

    advfeatures export --constructed runs/digits-seed0/datasets/d_r --format madrylab --out d_robust_digits
    advfeatures export --dataset fashion-mnist --format imagefolder --out fashion_pngs
    advfeatures export --data my_arrays.npz --format imagefolder --out my_pngs

Formats: ``imagefolder`` (one PNG per image in a folder per class, under ``train/`` and ``test/``
when both splits are written; PNG stores 8 bits, so float images are rounded to 1/255), ``npz``
(``x_train``/``y_train``/``x_test``/``y_test``, images as stored), ``npy`` (a folder of those arrays
as ``.npy`` files, memory-mappable) and ``madrylab`` (the layout of the
paper's released datasets: ``CIFAR_ims`` and ``CIFAR_lab`` tensors, read back by ``--data``). The
output appears whole or not at all.
"""

from __future__ import annotations

from pathlib import Path

import click

from . import main
from .options import data_options, start_runtime

FORMATS = ("imagefolder", "npz", "npy", "madrylab")


@main.command("export")
@data_options("Dataset to write (or the source of --constructed's class names).")
@click.option("--constructed", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="A finished construction folder (D_R, D_NR, D_rand, D_det) to write instead of the data's splits.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True)
@click.option("--split", type=click.Choice(["train", "test", "both"]), default="both", show_default=True,
              help="Which splits of the data to write (a construction is one training set).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder (or .npz file for --format npz).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists (the old one stays until the new one is complete).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed of the split where the data has none of its own.")
def export_command(source, constructed, fmt, split, out, overwrite, seed):
    """Write a dataset (built-in, your own, or a constructed one) as an ImageFolder, .npz or MadryLab tensors."""
    from ..construct import check_built_from, load_constructed
    from ..data import export_dataset

    from ..errors import ConfigError

    for given, what in ((constructed, "--constructed"), (source.data, "--data")):
        if given is not None and overwrite and Path(out).resolve() in (Path(given).resolve(), *Path(given).resolve().parents):
            raise ConfigError(f"--out {out} would replace {what} {given}, the data being exported; choose another --out")
    start_runtime("cpu")
    train, test = source.load(seed=seed)
    if constructed is not None:
        data, manifest = load_constructed(constructed, classes=train.classes, name=constructed.name)
        check_built_from(constructed, manifest, train, strict=False)  # only its class names are taken from the data
        splits = {"train": data}
    else:
        splits = {"train": train, "test": test} if split == "both" else {split: train if split == "train" else test}
    first, *rest = splits.values()
    written = export_dataset(first, out, format=fmt, test=rest[0] if rest else None, overwrite=overwrite)
    counts = ", ".join(f"{len(ds)} {name}" for name, ds in splits.items())
    rounded = fmt == "imagefolder" and any(ds.storage_dtype.is_floating_point for ds in splits.values())
    click.echo(f"wrote {counts} images as {fmt} to {written}"
               + (" (PNG holds 8 bits: float pixels rounded to the nearest 1/255, at most 0.5/255 off)" if rounded else ""))
