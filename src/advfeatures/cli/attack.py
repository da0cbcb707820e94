"""``advfeatures attack`` (one attack on a saved model) and ``advfeatures evaluate`` (the worst-case
ensemble and the sanity checks). Both print a table and, with ``--out``, write JSON atomically.

    advfeatures attack --model m.safetensors --dataset digits --attack square --norm Linf --eps 0.1 --n 200
    advfeatures evaluate --model m.safetensors --dataset digits --norm L2 --eps 0.5 --out eval.json
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import click
import torch

from . import main
from ..data import DATASETS, load_dataset
from ..errors import ConfigError
from ..distributed import resolve_device
from ..attacks.registry import ATTACK_NAMES, NORMS, build_attack
from ..storage import iter_chunks, write_json_atomic

def _load(model_path: str, dataset: str, data_root: str | None, n: int | None, device: torch.device):
    from ..models import load_model

    if n is not None and n < 1:
        raise ConfigError(f"--n must be ≥ 1, got {n}")
    model = load_model(model_path, device=device)
    _, test = load_dataset(dataset, root=data_root)
    test = test.head(n)
    return model, test.images.to(device), test.labels.to(device)


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    cells = [headers] + [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _common(f):
    options = [
        click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False),
                     help="Model file written by save_model (.safetensors)."),
        click.option("--dataset", type=click.Choice(DATASETS), default="digits", show_default=True,
                     help="Dataset whose test split is attacked."),
        click.option("--data-root", type=click.Path(file_okay=False), default=None, help="Folder holding the dataset files."),
        click.option("--norm", type=click.Choice(NORMS, case_sensitive=False), default="Linf", show_default=True),
        click.option("--n", "n", type=int, default=1000, show_default=True, help="Attack the first N test images."),
        click.option("--batch-size", type=int, default=256, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="auto", show_default=True),
        click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the results as JSON here."),
    ]
    for option in reversed(options):  # decorators apply inside out; keep the listed order in --help
        f = option(f)
    return f


def _canonical_norm(norm: str) -> str:
    return {n.lower(): n for n in NORMS}[norm.lower()]


@main.command("attack")
@_common
@click.option("--attack", "attack_name", type=click.Choice(ATTACK_NAMES), default="pgd", show_default=True)
@click.option("--eps", type=float, default=None, help="Budget in [0,1] pixel units (not needed by minimal-norm and spatial attacks).")
@click.option("--steps", type=int, default=None, help="Iterations (epochs for universal); the attack's default if omitted.")
@click.option("--queries", type=int, default=None, help="Query budget of the black-box attacks (nes, square).")
@click.option("--target", type=click.Choice(["random", "least_likely"]), default=None, help="Targeted attack towards these classes.")
def attack_command(model_path, dataset, data_root, norm, n, batch_size, seed, device, out, attack_name, eps, steps, queries, target):
    """Run one attack on a saved model and report its success rate and robust accuracy."""
    from ..attacks.loop import eval_mode

    norm = _canonical_norm(norm)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be ≥ 1, got {batch_size}")
    attack = build_attack(attack_name, norm=norm, eps=eps, steps=steps, queries=queries, seed=seed)
    dev = resolve_device(device)
    model, x, y = _load(model_path, dataset, data_root, n, dev)
    start = time.perf_counter()
    correct = torch.zeros(0, dtype=torch.bool, device=dev)
    fooled = torch.zeros(0, dtype=torch.bool, device=dev)
    success = torch.zeros(0, dtype=torch.bool, device=dev)
    norms: list[torch.Tensor] = []
    queries_used: list[torch.Tensor] = []
    for a, b in iter_chunks(x.shape[0], batch_size):
        res = attack(model, x[a:b], y[a:b], target=target, return_result=True)
        with torch.no_grad(), eval_mode(model):
            ok = model(x[a:b]).argmax(1) == y[a:b]
        wrong = res.predictions != y[a:b]
        if attack.norm in NORMS and eps is not None:  # minimal-norm attacks count only inside the ε-ball
            wrong &= res.norms[norm] <= eps * (1 + 1e-4) + 1e-6
        correct, fooled, success = torch.cat([correct, ok]), torch.cat([fooled, wrong]), torch.cat([success, res.success])
        norms.append(res.norms[norm] if norm in res.norms else res.norms["L2"])
        if res.queries is not None:
            queries_used.append(res.queries.float())
    seconds = time.perf_counter() - start
    norm_all = torch.cat(norms)
    hit = success & correct
    result = {
        "attack": attack.describe(), "dataset": dataset, "model": str(model_path), "n": int(x.shape[0]), "target": target,
        "clean_accuracy": int(correct.sum()) / x.shape[0],
        "robust_accuracy": int((correct & ~fooled).sum()) / x.shape[0],
        "success_rate": float(hit.sum()) / max(1, int(correct.sum())),  # on the correctly classified points
        f"median_{norm}_norm_of_successes": float(norm_all[hit].median()) if hit.any() else None,
        "seconds": round(seconds, 3),
    }
    if queries_used:
        q = torch.cat(queries_used)
        result["mean_queries"] = float(q.mean())
        result["median_queries_of_successes"] = float(q[hit].median()) if hit.any() else None
    rows = [[attack_name, norm, "-" if eps is None else eps, result["n"], result["clean_accuracy"], result["robust_accuracy"],
             result["success_rate"], result[f"median_{norm}_norm_of_successes"] or "-", result.get("mean_queries", "-"), result["seconds"]]]
    click.echo(_table(rows, ["attack", "norm", "eps", "n", "clean_acc", "robust_acc", "success", f"median_{norm}", "queries", "seconds"]))
    if out:
        write_json_atomic(Path(out), result)
        click.echo(f"wrote {out}")


@main.command("evaluate")
@_common
@click.option("--eps", type=float, required=True, help="Budget in [0,1] pixel units.")
@click.option("--steps", type=int, default=100, show_default=True, help="APGD iterations.")
@click.option("--n-target-classes", type=int, default=9, show_default=True, help="Target classes tried by APGD-T.")
@click.option("--queries", type=int, default=5000, show_default=True, help="Square attack query budget.")
@click.option("--sanity/--no-sanity", default=True, show_default=True, help="Also run the sanity checks.")
def evaluate_command(model_path, dataset, data_root, norm, n, batch_size, seed, device, out, eps, steps, n_target_classes, queries, sanity):
    """Worst-case robust accuracy under the AutoAttack-style ensemble (APGD-CE, APGD-T, Square), and the sanity checks."""
    from ..robustness_eval import sanity_checks, worst_case_evaluation

    norm = _canonical_norm(norm)
    if not (math.isfinite(eps) and eps > 0):
        raise ConfigError(f"--eps must be a positive finite number, got {eps}")
    dev = resolve_device(device)
    model, x, y = _load(model_path, dataset, data_root, n, dev)
    report = worst_case_evaluation(model, x, y, norm=norm, eps=eps, batch_size=batch_size, seed=seed, steps=steps,
                                   n_target_classes=n_target_classes, square_queries=queries)
    report.pop("x_adv")
    report.pop("robust")
    rows = [["clean", "-", report["clean_accuracy"], "-"]]
    rows += [[m["name"], m["attacked"], m["robust_accuracy"], m["seconds"]] for m in report["members"]]
    click.echo(f"{dataset}: {report['n']} test images, {norm} ε={eps:g}")
    click.echo(_table(rows, ["after", "attacked", "robust_acc", "seconds"]))
    click.echo(f"worst-case robust accuracy: {report['robust_accuracy']:.2%}")
    result = {"dataset": dataset, "model": str(model_path), **report}
    if sanity:
        measurements: dict[str, Any] = {}
        warnings = sanity_checks(model, x, y, norm=norm, eps=eps, batch_size=batch_size, seed=seed, measurements=measurements)
        result["sanity_checks"] = {"warnings": warnings, "measurements": measurements}
        if warnings:
            for w in warnings:
                click.echo(f"WARNING [{w['check']}]: {w['message']}")
        else:
            click.echo("sanity checks: no warning signs")
    if out:
        write_json_atomic(Path(out), result)
        click.echo(f"wrote {out}")
