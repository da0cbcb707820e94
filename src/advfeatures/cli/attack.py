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

from . import main
from ..errors import ConfigError
from ..attacks.registry import ATTACK_NAMES, NORMS, build_attack
from .options import (data_options, device_option, model_file_option, model_options, parse_list, seed_option,
                      start_runtime, write_result)


def _load(model_path: Path, loader, source, n: int | None, device):
    if n is not None and n < 1:
        raise ConfigError(f"--n must be ≥ 1, got {n}")
    test = source.split("test").head(n)
    model = loader.load(model_path, device, test)
    return model, test.images.to(device), test.labels.to(device), test


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    cells = [headers] + [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _common(f):
    options = [
        model_file_option("--model", "model_path"),
        model_options,
        data_options("Dataset whose test split is attacked."),
        click.option("--norm", type=click.Choice(NORMS, case_sensitive=False), default="Linf", show_default=True),
        click.option("--n", "n", type=int, default=1000, show_default=True, help="Attack the first N test images."),
        click.option("--batch-size", type=int, default=256, show_default=True),
        seed_option,
        device_option,
        click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the results as JSON here."),
    ]
    for option in reversed(options):  # decorators apply inside out; keep the listed order in --help
        f = option(f)
    return f


def stochastic_option(default_help: str):
    """``--stochastic/--no-stochastic``, shared by ``attack`` and ``evaluate`` (None when not given)."""
    return click.option("--stochastic/--no-stochastic", default=None,
                        help="Evaluate the model's test-time randomness: Dropout layers on, BatchNorm on its running "
                             f"statistics, draws seeded by --seed. {default_help}")


def _canonical_norm(norm: str) -> str:
    return {n.lower(): n for n in NORMS}[norm.lower()]


@main.command("attack")
@_common
@click.option("--attack", "attack_name", type=click.Choice(ATTACK_NAMES), default="pgd", show_default=True)
@click.option("--eps", type=float, default=None, help="Budget in [0,1] pixel units (not needed by minimal-norm and spatial attacks).")
@click.option("--steps", type=int, default=None, help="Iterations (epochs for universal); the attack's default if omitted.")
@click.option("--queries", type=int, default=None, help="Query budget of the black-box attacks (nes, square).")
@click.option("--step-size", type=float, default=None, help="Step size, for the attacks that take one (pgd, bim, mifgsm, ...).")
@click.option("--restarts", type=int, default=None, help="Restarts, for the attacks that take them (pgd, apgd, fab, ...).")
@click.option("--random-start/--no-random-start", default=None,
              help="Start at a random point of the ball (pgd's default: only restarts after the first).")
@click.option("--target", type=click.Choice(["random", "least_likely"]), default=None, help="Targeted attack towards these classes.")
@click.option("--save-adv", type=click.Path(path_type=Path), default=None,
              help="Also write the adversarial examples as a dataset here (labelled with the true classes; readable by --data).")
@click.option("--save-format", type=click.Choice(["npz", "npy", "imagefolder", "madrylab"]), default="npz", show_default=True,
              help="Format of --save-adv (npz also stores the targets of a targeted attack).")
@stochastic_option("Default: off (eval mode).")
def attack_command(model_path, loader, source, norm, n, batch_size, seed, device, out, attack_name, eps, steps, queries,
                   step_size, restarts, random_start, target, save_adv, save_format, stochastic):
    """Run one attack on a saved model and report its success rate and robust accuracy."""
    from ..evaluate import attack_summary

    norm = _canonical_norm(norm)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be ≥ 1, got {batch_size}")
    options = {"step_size": step_size, "restarts": restarts, "random_start": random_start, "stochastic": stochastic}
    attack = build_attack(attack_name, norm=norm, eps=eps, steps=steps, queries=queries, seed=seed,
                          **{k: v for k, v in options.items() if v is not None})
    dev = start_runtime(device).device
    if save_adv is not None and save_adv.exists():
        raise ConfigError(f"--save-adv {save_adv} already exists; choose another path")
    model, x, y, test = _load(model_path, loader, source, n, dev)
    start = time.perf_counter()
    summary = attack_summary(model, x, y, attack, norm=norm, eps=eps, target=target, batch_size=batch_size,
                             return_adversarial=save_adv is not None)
    adversarial = summary.pop("adversarial", None)
    result = {"attack": attack.describe(), "dataset": source.label, "model": str(model_path), "target": target, "norm": norm,
              **summary, "seconds": round(time.perf_counter() - start, 3)}
    rows = [[attack_name, norm, "-" if eps is None else eps, result["n"], result["clean_accuracy"], result["robust_accuracy"],
             result["success_rate"], result["median_norm_of_successes"] or "-", result.get("mean_queries", "-"), result["seconds"]]]
    click.echo(_table(rows, ["attack", "norm", "eps", "n", "clean_acc", "robust_acc", "success", f"median_{norm}", "queries", "seconds"]))
    if save_adv is not None:
        from ..data import save_adversarial

        save_adversarial(adversarial, y, save_adv, classes=test.classes, format=save_format, name="adversarial")
        click.echo(f"wrote {len(y)} adversarial examples to {save_adv}")
    if out:
        write_result(out, result)
        click.echo(f"wrote {out}")


@main.command("evaluate")
@_common
@click.option("--eps", type=float, required=True, help="Budget in [0,1] pixel units.")
@click.option("--version", type=click.Choice(["standard", "rand", "custom"]), default="standard", show_default=True,
              help="standard: APGD-CE, APGD-T, FAB-T, Square (AutoAttack's); rand: APGD-CE and APGD-DLR with EOT, for "
                   "randomised models; custom: the attacks named by --attacks.")
@click.option("--attacks", default=None, help="With --version custom: comma-separated attack names (e.g. apgd,fab-t,square).")
@click.option("--steps", type=int, default=100, show_default=True, help="Iterations of APGD and FAB.")
@click.option("--n-target-classes", type=int, default=9, show_default=True, help="Target classes tried by APGD-T and FAB-T.")
@click.option("--queries", type=int, default=5000, show_default=True, help="Square attack query budget.")
@click.option("--eot-iter", type=int, default=20, show_default=True, help="EOT draws per step (--version rand).")
@stochastic_option("Default: on for --version rand, off otherwise.")
@click.option("--sanity/--no-sanity", default=True, show_default=True, help="Also run the sanity checks.")
def evaluate_command(model_path, loader, source, norm, n, batch_size, seed, device, out, eps, version, attacks, steps,
                     n_target_classes, queries, eot_iter, stochastic, sanity):
    """Worst-case robust accuracy under AutoAttack's ensemble (APGD-CE, APGD-T, FAB-T, Square), and the sanity checks."""
    from ..evaluate import sanity_checks, worst_case_evaluation

    norm = _canonical_norm(norm)
    if not (math.isfinite(eps) and eps > 0):
        raise ConfigError(f"--eps must be a positive finite number, got {eps}")
    names = None
    if version == "custom":
        if not attacks:
            raise ConfigError("--version custom needs --attacks, e.g. --attacks apgd,fab-t,square")
        names = parse_list(attacks, "--attacks", example="apgd,fab-t,square", kind="attack names")
    elif attacks:
        raise ConfigError(f"--attacks needs --version custom (--version {version} runs its own attacks)")
    dev = start_runtime(device).device
    model, x, y, _ = _load(model_path, loader, source, n, dev)
    members = None if names is None else [(a, build_attack(a, norm=norm, eps=eps, steps=steps, queries=queries, seed=seed,
                                                           stochastic=stochastic)) for a in names]
    report = worst_case_evaluation(model, x, y, norm=norm, eps=eps, version=version, members=members, batch_size=batch_size,
                                   seed=seed, steps=steps, n_target_classes=n_target_classes, square_queries=queries,
                                   eot_iter=eot_iter, stochastic=stochastic)
    report.pop("x_adv")
    report.pop("robust")
    rows = [["clean", "-", report["clean_accuracy"], "-"]]
    rows += [[m["name"], m["attacked"], m["robust_accuracy"], m["seconds"]] for m in report["members"]]
    randomness = ", stochastic layers on" if report["stochastic"] else ""
    click.echo(f"{source.label}: {report['n']} test images, {norm} ε={eps:g}, version {version}{randomness}")
    click.echo(_table(rows, ["after", "attacked", "robust_acc", "seconds"]))
    click.echo(f"worst-case robust accuracy: {report['robust_accuracy']:.2%}")
    result = {"dataset": source.label, "model": str(model_path), **report}
    if sanity:
        measurements: dict[str, Any] = {}
        warnings = sanity_checks(model, x, y, norm=norm, eps=eps, batch_size=batch_size, seed=seed, measurements=measurements,
                                 stochastic=report["stochastic"])
        result["sanity_checks"] = {"warnings": warnings, "measurements": measurements}
        if warnings:
            for w in warnings:
                click.echo(f"WARNING [{w['check']}]: {w['message']}")
        else:
            click.echo("sanity checks: no warning signs")
    if out:
        write_result(out, result)
        click.echo(f"wrote {out}")
