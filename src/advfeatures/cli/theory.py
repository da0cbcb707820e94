"""``advfeatures theory``: the theory models of Ilyas et al. (Sec. 4), Tsipras et al. and Goodfellow et al.,
each simulated and compared with its closed form."""

from __future__ import annotations

from pathlib import Path

import click

from . import main
from .options import start_runtime


@main.command()
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for theory.json and the figures.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed of every simulation.")
@click.option("--quick", is_flag=True, help="Fewer samples and steps (a smoke test, same comparisons).")
def theory(out: Path, seed: int, quick: bool) -> None:
    """Simulate the two-Gaussian, Tsipras and logistic models and check them against their closed forms."""
    from ..theory.run import run_theory

    start_runtime("cpu")
    results = run_theory(out, seed=seed, quick=quick)
    click.echo(f"wrote {out / 'theory.json'} and {', '.join(results['figures'].values())}")
    click.echo("largest |simulation − closed form| in standard errors:")
    for name, z in results["max_abs_z"].items():
        click.echo(f"  {name:28s} {z:5.2f}")
    gap = max(r["per_example_vs_closed_on_sample_max_rel"] for r in results["gaussian"]["robust"])
    click.echo(f"per-example L2 robust covariance vs Theorem 2 (same samples): up to {100 * gap:.1f}% apart")
