"""``advfeatures reproduce``: the paper end to end on one dataset."""

from __future__ import annotations

from pathlib import Path

import click

from . import main
from .options import workers_option


@main.command()
@click.option("--preset", default=None, help="digits, fashion-mnist, mnist or cifar10 [default: digits; with --data, chosen by "
              "the images' size and printed].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="JSON or TOML file of settings over the preset.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override one setting, e.g. --set standard.epochs=5 (repeatable).")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory [default: runs/<preset>-seed<seed>].")
@click.option("--dataset", help="Dataset to use instead of the preset's (digits, fashion-mnist, mnist, cifar10).")
@click.option("--data-root", type=click.Path(), help="Folder holding the dataset's files (mnist, cifar10; fashion-mnist has a default).")
@click.option("--data", default=None, metavar="PATH",
              help="Your own data: an ImageFolder tree, .npz, a folder of .npy arrays or MadryLab's CIFAR_ims/CIFAR_lab "
                   "(with --dataset, that set's test split evaluates the models).")
@workers_option
@click.option("--robust-model", default=None, type=click.Path(dir_okay=False, exists=True),
              help="Build D_R from this robust model instead of training one (any model file: ours, a state dict with "
                   "--robust-arch, a MadryLab robustness checkpoint, a torchvision-layout ResNet).")
@click.option("--robust-arch", default=None, metavar="NAME|MODULE:FACTORY", help="Architecture of a --robust-model that records none.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), help="Where to compute [default: auto].")
@click.option("--seed", type=int, help="Run seed [default: the --config file's, else 0]: the data split, and every stream "
              "(initialisations, constructions, attacks) as advfeatures.seeding.derive_seed(seed, stream), streams named "
              "in advfeatures.experiments.state.STREAMS.")
@click.option("--seeds", "seed_list", metavar="LIST", help="Run every seed of a list (0,1,2 or 0-4), each in DIR/seed<N>, and "
              "write an aggregate report (mean ± std over seeds) in DIR [default DIR: runs/<preset>-seeds<LIST>].")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and the final summary.")
@click.option("--estimate/--no-estimate", default=None,
              help="Print the run's estimated time first, from a few timed passes of its model here [default: on, "
                   "except for the digits preset, which finishes in minutes].")
@click.pass_context
def reproduce(ctx: click.Context, preset: str, config_file: str | None, overrides: tuple[str, ...], out: str | None,
              dataset: str | None, data_root: str | None, data: str | None, workers: int, robust_model: str | None, robust_arch: str | None,
              device: str | None, seed: int | None, seed_list: str | None, quiet: bool, estimate: bool | None) -> None:
    """The paper end to end: models, D_R, D_NR, D_rand and D_det, a model on each, the report.

    Trains standard and robust models, builds D_R, D_NR, D_rand and D_det, trains on each, evaluates
    them all under attack and writes results.json, report.md and figures."""
    import logging

    from ..errors import ConfigError
    from ..experiments.config import resolve_config
    from ..experiments.pipeline import Reproduction, run_seeds
    from ..progress import set_progress_enabled
    from ..seeding import parse_seeds

    if quiet:
        logging.getLogger().setLevel(logging.WARNING)
        set_progress_enabled(False)
    from . import threads_given

    chosen = None  # the image shape and count a preset was chosen by (--data without --preset)
    direct = {"dataset": dataset, "data_root": data_root, "device": device, "seed": seed, "threads": threads_given()}
    if data is not None:
        from ..data import load_data
        from ..experiments.config import choose_preset

        # only the size and count are needed here: read lazily, the run loads the data itself
        train, _ = load_data(dataset, data, root=data_root, seed=seed or 0, stream=True)
        shape, count = train.image_shape, len(train)
        del train
        direct.update({"data": str(data), "data_test": dataset, "dataset": None, "data_workers": workers or None})
        if preset is None:
            preset, settings, _ = choose_preset(shape, count)
            overrides = (*_as_overrides(settings), *overrides)
            chosen = (shape, count)  # said once the --config / --set values are laid over it (below)
    if robust_model is not None:
        from .options import parse_arch_option

        arch, arch_kwargs = parse_arch_option(robust_arch) if robust_arch else (None, {})
        direct.update({"robust_model": str(robust_model), "robust_model_arch": arch, "robust_model_kwargs": arch_kwargs or None})
    elif robust_arch is not None:
        raise ConfigError("--robust-arch describes --robust-model: give the model file too")
    # the command's own options (--seed, --device, --threads, ...) are the last layer over the preset,
    # --config and --set: cfg.seed is --seed when given. The pipeline splits it into the named
    # stream seeds (experiments.state.named_seeds) that every step draws from.
    cfg, given = resolve_config(preset or "digits", config_file=config_file, overrides=list(overrides), **direct)
    if chosen is not None:
        from ..experiments.config import choose_preset

        click.echo(f"reproduce on {data}: {choose_preset(*chosen, resolved=cfg)[2]} (pass --preset to choose another)")
    from ..experiments.pipeline import load_data as load_run_data
    from .options import start_runtime

    runtime = start_runtime(config=cfg.runtime)  # device and threads, once, shared with the pipeline
    checked = load_run_data(cfg)  # the data is read (and so checked) before any estimate or work
    _before_a_long_run(cfg, estimate, checked, runtime.device)
    # default run folders: the preset's name, or your data's and the preset's
    name = cfg.preset if data is None else f"{Path(data).stem}-{cfg.preset}"
    if seed_list is not None:
        if seed is not None:
            raise ConfigError("give either --seed (one run) or --seeds (several), not both")
        seeds = parse_seeds(seed_list)
        out_dir = Path(out) if out else Path("runs") / f"{name}-seeds{'-'.join(map(str, seeds))}"
        # without --out, each seed's run is the single-seed default folder, so earlier runs are reused
        run_dirs = None if out else {s: Path("runs") / f"{name}-seed{s}" for s in seeds}
        results = run_seeds(cfg, given, out_dir, seeds, run_dirs=run_dirs, runtime=runtime)
        click.echo(aggregate_table(results))
    else:
        out_dir = Path(out) if out else Path("runs") / f"{name}-seed{cfg.seed}"
        results = Reproduction(cfg, given, out_dir, data=checked, runtime=runtime).execute()
        click.echo(summary_table(results))
    click.echo(f"\nreport: {out_dir / 'report.md'}\nresults: {out_dir / 'results.json'}")


def _before_a_long_run(cfg, estimate: bool | None, data, device) -> None:
    """A preset that needs a GPU says so on a CPU (one line, exit 2) before anything starts; then
    the estimated time (calibrated by a few timed passes here, at this machine's current load)."""
    from ..errors import ConfigError
    from ..experiments.estimate import estimate_reproduce_time, format_estimate, gpu_warning

    train, test = data
    warning = gpu_warning(cfg, device, n_train=len(train))  # the run's own size (data, --set train_limit)
    timed = estimate or (estimate is None and cfg.preset != "digits")
    if warning is not None:
        if cfg.device == "auto":
            raise ConfigError(f"{warning}; to run it on this CPU all the same, pass --device cpu")
        if not timed:  # else the estimate's line carries the warning, with the estimated time
            click.echo(f"warning: {warning}", err=True)
    if timed:
        sizes = {"n_train": len(train), "n_test": len(test), "shape": tuple(train.image_shape), "num_classes": train.num_classes}
        click.echo(format_estimate(estimate_reproduce_time(cfg, device, **sizes)), err=True)


def _as_overrides(settings: dict, prefix: str = "") -> list[str]:
    """Nested settings as ``--set`` texts (values as JSON)."""
    import json

    out: list[str] = []
    for key, value in settings.items():
        if isinstance(value, dict):
            out += _as_overrides(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={json.dumps(value)}")
    return out


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*head)] + [fmt.format(*r) for r in rows]


def _findings(results: dict) -> list[str]:
    mark = {"shown": "ok", "not shown": "not shown", "contradicted": "NO"}
    return [f"[{mark[f['verdict']]}] {f['claim']}: {f['detail']}" for f in results["findings"]]


def summary_table(results: dict) -> str:
    models = results["models"]
    first = next(iter(models.values()))
    head = (["training set", "clean"] + [f"worst {w['norm']} {w['eps']:.3g}" for w in first.get("worst_case") or []]
            + [f"{a['attack']} {a['norm']} {a['eps']:.3g}" for a in first["robust_accuracy"]])
    rows = [[m["training_set"], f"{m['clean_accuracy']:.3f}"] + [f"{w['robust_accuracy']:.3f}" for w in m.get("worst_case") or []]
            + [f"{r['accuracy']:.3f}" for r in m["robust_accuracy"]] for m in models.values()]
    return "\n".join(_table(head, rows) + [""] + _findings(results))


def aggregate_table(results: dict) -> str:
    models = results["models"]
    first = next(iter(models.values()))

    def cell(e: dict) -> str:
        return f"{e['mean']:.3f}±{e['std']:.3f}"

    head = (["training set", "clean"] + [f"worst {w['norm']} {w['eps']:.3g}" for w in first["worst_case"]]
            + [f"{a['attack']} {a['norm']} {a['eps']:.3g}" for a in first["robust_accuracy"]])
    rows = [[m["training_set"], cell(m["clean_accuracy"])] + [cell(w) for w in m["worst_case"]]
            + [cell(r) for r in m["robust_accuracy"]] for m in models.values()]
    return "\n".join([f"seeds {', '.join(map(str, results['seeds']))} (mean ± std)"] + _table(head, rows) + [""]
                     + _findings(results))
