"""``advfeatures construct``: build D_R, D_NR, D_rand or D_det from a saved model, alone or under torchrun.

    advfeatures construct --kind d_rand --model std.safetensors --dataset fashion-mnist --out d_rand \\
        --steps 50 --step-size 0.5 --eps 2.5
    torchrun --nproc-per-node 2 -m advfeatures.cli construct --kind d_nr --model std.safetensors ...

Under ``torchrun`` every process builds the shards whose index ≡ its rank (mod the number of
processes) and rank 0 writes the manifest once all of them exist: the result is the same dataset,
tensor for tensor, as one process with the same seed. An interrupted construction resumes at the
first missing shard when run again with the same options; a folder holding a different
construction, or files that are not a construction's, is refused before anything is written. (``torchrun`` reads any option that abbreviates one of its own, such as
``--n``, so under it spell the image count ``--num-images``.)
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import click

from . import main
from .options import data_options, device_option, model_file_option, model_options, seed_option, speed_options, start_runtime


def _ours(name: str) -> bool:
    """Whether a file name in a construction folder is one a construction writes."""
    from ..construct import SETTINGS_FILE
    from ..storage import LOCK, MANIFEST

    own = (SETTINGS_FILE, MANIFEST)
    return (name in (*own, LOCK) or re.fullmatch(r"shard-\d{5}\.safetensors", name) is not None
            or re.fullmatch(r"\.(shard-\d{5}\.safetensors|%s)\..*\.tmp" % "|".join(map(re.escape, own)), name) is not None)


def _refuse_foreign_files(out: Path) -> None:
    """A construction's --out is new, empty, or a construction's own folder (to resume or to find
    finished, which :func:`construct_folder` then checks is this construction): a folder holding
    anything else (the user's files) is refused before anything is written, so none of them is ever
    mixed with shards, overwritten or removed."""
    from ..errors import ConfigError

    if not out.is_dir():
        return
    foreign = sorted(p.name for p in out.iterdir() if not _ours(p.name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ConfigError(f"--out {out} holds files that are not a construction's ({shown}); choose a new or empty "
                          "folder for --out (nothing in it was touched)")


@main.command("construct")
@click.option("--kind", type=click.Choice(["d_r", "d_nr", "d_rand", "d_det"]), required=True,
              help="d_r / d_nr: representation matching through --model (robust / standard); d_rand / d_det: targeted PGD on it.")
@model_file_option("--model", "model_path")
@model_options
@data_options("Dataset whose training split is transformed.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the shards and manifest.json.")
@click.option("--steps", type=int, default=None, help="Optimisation steps [d_r/d_nr: 1000, d_rand/d_det: 100].")
@click.option("--step-size", type=float, default=None, help="Step length in L2 pixel units [0.1].")
@click.option("--eps", type=float, default=None, help="L2 budget of d_rand / d_det [0.5].")
@click.option("--matching-start", "start", type=click.Choice(["random_image", "noise"]), default=None, help="d_r / d_nr start [random_image].")
@click.option("--shard-size", type=int, default=5000, show_default=True, help="Images per shard (the unit of resuming and of sharding).")
@click.option("--batch-size", type=int, default=500, show_default=True)
@seed_option
@click.option("--n", "--num-images", "n", type=int, default=None,
              help="Use the first N training images (all by default); spell it --num-images under torchrun, whose own parser takes --n.")
@device_option
@speed_options
def construct_command(kind, model_path, loader, source, out, steps, step_size, eps, start, shard_size, batch_size, seed, n,
                      device, speed):
    """Build one of the paper's four training sets, shard by shard (resumable; torchrun shards it by example index)."""
    from dataclasses import asdict, replace

    from ..construct import MatchingConfig, RelabelConfig, construct_folder, settings_key
    from ..runtime import shutdown
    from ..errors import ConfigError
    from ..storage import file_sha256
    from ..threats import check_steps
    from ..validate import seed as check_seed

    if n is not None and n < 2:
        raise ConfigError(f"--n must be ≥ 2, got {n}")
    # every setting is checked before anything is written: a refused run leaves the folder as it was
    check_steps(shard_size, "--shard-size")
    check_steps(batch_size, "--batch-size")
    check_seed(seed, "--seed")
    matching = relabel = None
    if kind in ("d_r", "d_nr"):
        if eps is not None:
            raise ConfigError("--eps bounds d_rand / d_det only; representation matching has no ε (drop --eps)")
        matching = MatchingConfig()
        matching = replace(matching, **{k: v for k, v in {"steps": steps, "step_size": step_size, "start": start}.items() if v is not None})
        matching.validate()
    else:
        if start is not None:
            raise ConfigError("--matching-start applies to d_r / d_nr only (drop it)")
        if loader.layer is not None:
            raise ConfigError("--layer names the representation of d_r / d_nr; d_rand / d_det attack the logits (drop --layer)")
        relabel = RelabelConfig()
        relabel = replace(relabel, **{k: v for k, v in {"steps": steps, "step_size": step_size, "eps": eps}.items() if v is not None})
        relabel.validate()

    _refuse_foreign_files(out)
    rt = start_runtime(device, distributed=True, **speed)  # joins torchrun's group when it started this process
    ctx = rt.context
    try:
        train, _ = source.load()
        # the model itself, not the loader's --layer wrapper: the construction reads g at the named
        # layer (and applies the fake ReLU inside it) and records the layer in the manifest
        model = replace(loader, layer=None).load(model_path, rt.device, train)
        images = train.head(n)
        if kind in ("d_r", "d_nr") and len(images) < 2:
            raise ConfigError("representation matching needs at least 2 training images to pair them")
        settings = {"kind": kind, "model_sha256": file_sha256(model_path), **loader.describe(), **source.describe(),
                    # the images' content, not only their path: data changed in place is another construction
                    "n": len(images), "data_digest": images.digest(), "seed": seed,
                    "shard_size": shard_size, "matching": asdict(matching) if matching else None,
                    "relabel": asdict(relabel) if relabel else None}
        began = time.perf_counter()
        status, manifest = construct_folder(kind, rt.accelerate(model), images, out, settings=settings, rank=ctx.rank,
                                            world_size=ctx.world_size, matching=matching, relabel=relabel, seed=seed,
                                            batch_size=batch_size, shard_size=shard_size, device=rt.device,
                                            layer=loader.layer if matching else None)
        if status == "finished" and ctx.is_main:
            click.echo(f"{out} already holds this construction (key {settings_key(settings)}); nothing to do")
        if manifest is not None:
            summary = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in manifest["summary"].items()
                                if not isinstance(v, list))
            click.echo(f"wrote {manifest['count']} images in {len(manifest['shards'])} shards to {out} "
                       f"({ctx.world_size} process{'es' if ctx.world_size > 1 else ''}, {time.perf_counter() - began:.1f} s): {summary}")
    finally:
        shutdown()
