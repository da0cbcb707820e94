"""``results.json``, ``report.md`` and the figures of a reproduction."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ..storage import atomic_path, write_json_atomic, write_text_atomic  # noqa: E402

if TYPE_CHECKING:
    from .pipeline import Reproduction

SETS = ("d_r", "d_nr", "d_rand", "d_det")
SET_LABELS = {"d_r": "D_R", "d_nr": "D_NR", "d_rand": "D_rand", "d_det": "D_det"}


def save_figure(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def examples_figure(rep: Reproduction, path: Path, *, n: int = 8) -> None:
    """Rows: training images; columns: the image and its D_R, D_NR, D_rand, D_det versions."""
    classes = rep.train.classes
    gen = torch.Generator().manual_seed(rep.cfg.seed)
    idx = torch.randperm(len(rep.train), generator=gen)[:n]
    fig, axes = plt.subplots(n, 5, figsize=(5 * 1.5, n * 1.6), constrained_layout=True)
    for row, i in enumerate(idx.tolist()):
        panels = [("D", rep.train.images[i], classes[int(rep.train.labels[i])])]
        for kind in SETS:
            ds = rep.datasets[kind]
            panels.append((SET_LABELS[kind], ds.images[i], classes[int(ds.labels[i])]))
        for col, (title, img, label) in enumerate(panels):
            ax = axes[row, col]
            img = img.float().clamp(0, 1)
            if img.shape[0] == 1:
                ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(img.permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{title}: {label}" if row == 0 else label, fontsize=8)
    fig.suptitle("A training image and its versions in each constructed set (label used for training)", fontsize=9)
    save_figure(fig, path)


def accuracy_figure(results: dict[str, Any], path: Path) -> None:
    """The paper's Fig. 2 layout: standard vs robust accuracy per training set."""
    names = list(results["models"])
    l2 = [r for r in results["models"][names[0]]["robust_accuracy"] if r["norm"] == "L2" and r["attack"] == "pgd"]
    l2 = sorted(l2, key=lambda r: r["eps"])
    series = [("clean", [results["models"][k]["clean_accuracy"] for k in names])]
    for ref in l2:
        series.append((f"L2 PGD ε={ref['eps']:g}", [next(r["accuracy"] for r in results["models"][k]["robust_accuracy"]
                                                        if r["norm"] == "L2" and r["attack"] == "pgd" and r["eps"] == ref["eps"])
                                                   for k in names]))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(series)
    for j, (label, values) in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(names))]
        bars = ax.bar(xs, values, width, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=6)
    ax.axhline(results["dataset"]["chance_accuracy"], color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xticks(range(len(names)), [results["models"][k]["training_set"] for k in names], fontsize=8)
    ax.set_ylabel("accuracy on the original test set")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Standard and robust accuracy ({results['dataset']['name']})", fontsize=10)
    ax.legend(fontsize=7, ncol=len(series) + 1, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    save_figure(fig, path)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def markdown(results: dict[str, Any], figures: dict[str, str]) -> str:
    ds, models, paper = results["dataset"], results["models"], results["paper_reference"]["models"]
    attacks = models["standard"]["robust_accuracy"]
    head = [f"{a['attack'].upper()} {a['norm']} ε={a['eps']:.3g} ({a['steps']} step{'s' if a['steps'] != 1 else ''})" for a in attacks]
    lines = [
        f"# Reproduction of Ilyas et al. 2019 on {ds['name']}",
        "",
        f"{ds['train_count']} training and {ds['test_count']} test images of shape {tuple(ds['image_shape'])}, "
        f"{len(ds['classes'])} classes (chance {_pct(ds['chance_accuracy'])}); preset `{results['preset']}`, "
        f"model `{results['config']['resolved']['model']['arch']}`, device {results['device']}, "
        f"total time {results['timing']['total_seconds']:.0f} s.",
        "",
        "## Findings (checked against this run's numbers)",
        "",
    ]
    for f in results["findings"]:
        lines.append(f"- {'✅' if f['holds'] else '❌ does not hold:'} {f['claim']} ({f['detail']}).")
    lines += [
        "",
        "## Standard and robust accuracy (the paper's Figure 2 and Table 1)",
        "",
        "All accuracies on the original test set. The paper's CIFAR-10 / ResNet-50 numbers (robust accuracy under",
        "L2 PGD at ε = 0.25) are given for reference; our radii are scaled to this dataset (see the configuration).",
        "",
        "| training set | clean | " + " | ".join(head) + " | paper: clean | paper: robust |",
        "|---|---|" + "---|" * len(head) + "---|---|",
    ]
    for name, m in models.items():
        accs = " | ".join(_pct(r["accuracy"]) for r in m["robust_accuracy"])
        p = paper.get(name, {})
        lines.append(f"| {m['training_set']} | {_pct(m['clean_accuracy'])} | {accs} | {_pct(p.get('clean_accuracy'))} | {_pct(p.get('robust_accuracy'))} |")
    lines += ["", f"![accuracy]({figures['accuracy']})", "", "## The constructed datasets", "",
              "| set | built with | procedure | success |", "|---|---|---|---|"]
    for kind in SETS:
        c = results["constructions"][kind]
        s, cfg = c["summary"], c["settings"]
        if kind in ("d_r", "d_nr"):
            proc = f"representation matching from another training image, {cfg['steps']} L2 steps of {cfg['step_size']:g}"
            succ = (f"relative representation distance: median {s['median']:.3f}, 90th pct {s['p90']:.3f}, "
                    f"{_pct(s.get('share_below_0.1'))} below 0.1; "
                    f"mean pixel L2 to the original image {s['mean_pixel_l2_to_source']:.2f}")
        else:
            target = "t ~ uniform over the other classes" if kind == "d_rand" else "t = (y+1) mod C"
            proc = f"targeted L2 PGD, ε={cfg['eps']:g}, {cfg['steps']} steps of {cfg['step_size']:g}, {target}"
            succ = (f"targets reached: {_pct(s['share'])} ({s['count']}/{c['count']}); standard model agrees with the new "
                    f"labels on {_pct(c['standard_model_accuracy_on_new_labels'])}")
        lines.append(f"| {SET_LABELS[kind]} | {c['built_with']} model | {proc} | {succ} |")
    lines += ["", f"![examples]({figures['examples']})", ""]
    extras = results.get("extras") or {}
    for section in extras.values():
        if isinstance(section, dict) and section.get("markdown"):
            lines += [section["markdown"], ""]
    lines += ["## Timing", "", "Peak memory: the process's resident high-water mark when the step ended (it only rises, so the "
              "step that raises it is the one that needed the memory).", "",
              "| step | seconds | reused | peak memory so far (MiB) |", "|---|---|---|---|"]
    for step, t in results["timing"]["steps"].items():
        peak = t.get("peak_rss_mib_after")
        lines.append(f"| {step} | {t['seconds']:.1f} | {'yes' if t['reused'] else 'no'} | {'' if peak is None else f'{peak:.0f}'} |")
    lines += ["", "## Departures from the paper", "",
              "- Dataset, model and every ε, step count and epoch count follow the preset, scaled from the paper's CIFAR-10",
              "  values (see `config.json`); the `cifar10` preset uses the paper's own values.",
              "- Robust accuracy is measured with the number of PGD steps shown in each column (the paper's table used 7;",
              "  more steps give lower, more trustworthy numbers).", ""]
    v = results["versions"]
    lines.append(f"advfeatures {v['advfeatures']}, torch {v['torch']}, python {v['python']}. Every number above is in `results.json`.")
    return "\n".join(lines) + "\n"


def write_report(rep: Reproduction, results: dict[str, Any]) -> None:
    figs = {"examples": "figures/constructed_examples.png", "accuracy": "figures/accuracy.png"}
    examples_figure(rep, rep.run.path(figs["examples"]))
    accuracy_figure(results, rep.run.path(figs["accuracy"]))
    results["figures"] = {**figs, **{k: v for section in (results.get("extras") or {}).values() if isinstance(section, dict)
                                     for k, v in (section.get("figures") or {}).items()}}
    write_json_atomic(rep.run.path("results.json"), results)
    write_text_atomic(rep.run.path("report.md"), markdown(results, figs))
