"""``advfeatures reproduce``: the paper end to end on one dataset."""

from __future__ import annotations

from pathlib import Path

import click

from . import main


@main.command()
@click.option("--preset", default="digits", show_default=True, help="digits, fashion-mnist, mnist or cifar10.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="JSON or TOML file of settings over the preset.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override one setting, e.g. --set standard.epochs=5 (repeatable).")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory [default: runs/<preset>-seed<seed>].")
@click.option("--dataset", help="Dataset to use instead of the preset's (digits, fashion-mnist, mnist, cifar10).")
@click.option("--data-root", type=click.Path(), help="Folder holding the dataset's files (mnist, cifar10; fashion-mnist has a default).")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), help="Where to compute [default: auto].")
@click.option("--seed", type=int, help="Run seed (data split, initialisation, attacks) [default: 0].")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and the final summary.")
@click.pass_context
def reproduce(ctx: click.Context, preset: str, config_file: str | None, overrides: tuple[str, ...], out: str | None,
              dataset: str | None, data_root: str | None, device: str | None, seed: int | None, quiet: bool) -> None:
    """The paper end to end: models, D_R, D_NR, D_rand and D_det, a model on each, the report.

    Trains standard and robust models, builds D_R, D_NR, D_rand and D_det, trains on each, evaluates
    them all under attack and writes results.json, report.md and figures."""
    import logging

    from ..experiments.config import resolve_config
    from ..experiments.pipeline import Reproduction
    from ..progress import set_progress_enabled

    if quiet:
        logging.getLogger().setLevel(logging.WARNING)
        set_progress_enabled(False)
    cfg, given = resolve_config(preset, config_file=config_file, overrides=list(overrides), dataset=dataset, data_root=data_root,
                                device=device, seed=seed)
    out_dir = Path(out) if out else Path("runs") / f"{cfg.preset}-seed{cfg.seed}"
    results = Reproduction(cfg, given, out_dir).execute()
    click.echo(summary_table(results))
    click.echo(f"\nreport: {out_dir / 'report.md'}\nresults: {out_dir / 'results.json'}")


def summary_table(results: dict) -> str:
    models = results["models"]
    attacks = models["standard"]["robust_accuracy"]
    head = ["training set", "clean"] + [f"{a['attack']} {a['norm']} {a['eps']:.3g}" for a in attacks]
    rows = [[m["training_set"], f"{m['clean_accuracy']:.3f}"] + [f"{r['accuracy']:.3f}" for r in m["robust_accuracy"]]
            for m in models.values()]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head)] + [fmt.format(*r) for r in rows]
    lines.append("")
    for f in results["findings"]:
        lines.append(f"[{'ok' if f['holds'] else 'NO'}] {f['claim']}: {f['detail']}")
    return "\n".join(lines)

