"""The only renderer of a reproduction: ``report.md``, the figures and ``results.json`` of one run
(:func:`write_report`), and the aggregate of several seeds (:func:`write_aggregate_report`).

Every section is drawn from plain results (and, for the example images, the run's state); nothing
here computes a number the results do not hold. A reviewer reads first what the numbers are (the
attack behind each, the test images, the intervals, the margin of the findings, the sanity
checks) and where the run departs from the paper.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ..evaluate.ensemble import standard_plan  # noqa: E402
from ..science.figures import save_figure  # noqa: E402
from ..storage import write_json_atomic, write_text_atomic  # noqa: E402
from .state import SET_LABELS, SETS, RunState  # noqa: E402

VERDICT_MARK = {"shown": "✅ shown:", "not shown": "➖ not shown:", "contradicted": "❌ contradicted:"}

# the paper's CIFAR-10 protocol, for the list of departures
PAPER = {"dataset": "cifar10", "arch": "resnet50", "epochs": 150, "adv_eps": 0.5, "adv_steps": 7, "matching_steps": 1000,
         "relabel_steps": 100, "relabel_eps": 0.5, "eval_steps": 7, "test_images": 10_000, "lr_ratio_d_nr": 10}


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _interval(iv: list[float] | None) -> str:
    return "" if not iv else f" ({100 * iv[0]:.1f}–{100 * iv[1]:.1f})"


def attack_label(r: dict[str, Any]) -> str:
    """A single attack's column name with the settings behind it."""
    steps = r.get("steps")
    parts = [f"{steps} step{'s' if steps != 1 else ''}"] if steps else []
    if r.get("step_size") is not None and r["attack"] != "fgsm":
        parts.append(f"step {r['step_size']:.3g}")
    if r.get("restarts", 1) != 1:
        parts.append(f"{r['restarts']} restarts")
    return f"{r['attack'].upper()} {r['norm']} ε={r['eps']:.3g} ({', '.join(parts)})"


def ensemble_text(settings: dict[str, Any], num_classes: int) -> str:
    """The ensemble as it ran on ``num_classes`` classes (:func:`~advfeatures.evaluate.standard_plan`):
    APGD-T and FAB-T attack min(n_target_classes, classes − 1) targets, and only with more than two classes."""
    runs = dict(standard_plan("L2", num_classes, settings["n_target_classes"]))
    steps = settings["steps"]
    parts = [f"APGD-CE ({steps} steps)"]
    if "apgd-t" in runs:
        parts += [f"APGD-T ({runs['apgd-t']} target classes × {steps} steps)",
                  f"FAB-T ({runs['fab-t']} target classes × {steps} steps)"]
    parts.append(f"Square ({settings['square_queries']} queries)")
    return ", ".join(parts) + ("" if "apgd-t" in runs else " (no APGD-T or FAB-T: with two classes there is no other target "
                                                           "than the untargeted attacks' own)")


# -- figures --------------------------------------------------------------------------------------
def examples_figure(state: RunState, path: Path, *, n: int = 8) -> None:
    """Rows: training images; columns: the image and its D_R, D_NR, D_rand, D_det versions."""
    classes = state.train.classes
    gen = torch.Generator().manual_seed(state.seeds["examples_figure"])
    idx = torch.randperm(len(state.train), generator=gen)[:n]
    fig, axes = plt.subplots(n, 5, figsize=(5 * 1.5, n * 1.6), constrained_layout=True)
    sets = [("D", state.train)] + [(SET_LABELS[kind], state.datasets[kind]) for kind in SETS]
    shown = [(title, *ds.batch(idx)) for title, ds in sets]  # only these n images are read
    for row in range(idx.numel()):
        panels = [(title, x[row].cpu(), classes[int(y[row])]) for title, x, y in shown]
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


def _bar(entry: dict[str, Any], value_key: str, interval_key: str, aggregate: bool) -> tuple[float, float, float]:
    """(value, lower error, upper error): mean ± std over seeds, or the value and its Wilson interval."""
    if aggregate:
        return entry["mean"], entry["std"], entry["std"]
    v = entry[value_key]
    lo, hi = entry.get(interval_key) or (v, v)
    return v, v - lo, hi - v


def _columns(results: dict[str, Any], aggregate: bool) -> tuple[list[str], list[tuple[str, list, list, list]], list]:
    """Names; bar series (label, values, lower errors, upper errors); single-PGD markers (label, values)."""
    models = results["models"]
    names = list(models)
    first = models[names[0]]

    def series_of(label: str, pick) -> tuple[str, list, list, list]:
        return (label, *map(list, zip(*[pick(models[k]) for k in names])))

    if aggregate:
        series = [series_of("clean", lambda m: _bar(m["clean_accuracy"], "", "", True))]
    else:
        series = [series_of("clean", lambda m: _bar(m, "clean_accuracy", "clean_interval", False))]
    for i, w in enumerate(first.get("worst_case") or []):
        if w["norm"] == "L2":
            series.append(series_of(f"worst case L2 ε={w['eps']:g}",
                                    lambda m, i=i: _bar(m["worst_case"][i], "robust_accuracy", "interval", aggregate)))
    key = "mean" if aggregate else "accuracy"
    markers = [(f"L2 PGD ε={r['eps']:g}", [models[k]["robust_accuracy"][i][key] for k in names])
               for i, r in enumerate(first["robust_accuracy"]) if r["norm"] == "L2" and r["attack"] == "pgd"]
    return names, series, markers


def accuracy_figure(results: dict[str, Any], path: Path, *, aggregate: bool = False) -> None:
    """The paper's Fig. 2 layout: clean and worst-case robust accuracy per training set, the single
    PGD attack as markers beside each worst-case bar."""
    names, series, markers = _columns(results, aggregate)
    fig, ax = plt.subplots(figsize=(8.5, 3.8))
    width = 0.8 / len(series)
    offsets = {}
    for j, (label, values, lo, hi) in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(names))]
        offsets[label] = xs
        bars = ax.bar(xs, values, width, yerr=[lo, hi], capsize=2, error_kw={"lw": 0.7}, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=2)
    worst = [label for label, *_ in series if label.startswith("worst")]
    for (_, values), target in zip(markers, worst):
        ax.scatter(offsets[target], values, marker="_", s=120, color="k", zorder=3,
                   label="single L2 PGD at the same radius" if target == worst[0] else None)
    ax.axhline(results["dataset"]["chance_accuracy"], color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xticks(range(len(names)), [results["models"][k]["training_set"] for k in names], fontsize=8)
    ax.set_ylabel("accuracy on the original test set")
    ax.set_ylim(0, 1.1)
    bars_mean = "mean ± std over seeds" if aggregate else "error bars: Wilson 95% intervals"
    ax.set_title(f"Clean and worst-case robust accuracy ({results['dataset']['name']}; {bars_mean})", fontsize=10)
    ax.legend(fontsize=7, ncol=len(series) + 2, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    save_figure(fig, path)


# -- sections -------------------------------------------------------------------------------------
def findings_section(results: dict[str, Any]) -> list[str]:
    lines = ["## Findings (checked against the measured numbers)", "", f"Margin: {results['margin']}.", ""]
    for f in results["findings"]:
        lines.append(f"- {VERDICT_MARK[f['verdict']]} {f['claim']} — difference {100 * f['difference']:+.1f} points, "
                     f"standard error {100 * f['standard_error']:.1f} ({f['attack']}; {f['detail']}).")
    return lines + [""]


def departures(results: dict[str, Any]) -> list[str]:
    """Where this run's protocol differs from the paper's CIFAR-10 one, read from its configuration."""
    cfg = results["config"]["resolved"]
    adv = cfg["adversarial"]["adversary"]
    out = []
    if cfg.get("data") is not None:
        out.append(f"Your data ({results['dataset']['name']}) instead of CIFAR-10, with the `{results['preset']}` preset's "
                   f"settings (robust training at L2 ε={adv['eps']:g} instead of {PAPER['adv_eps']}); the paper's numbers "
                   "beside ours are CIFAR-10's.")
    elif cfg["dataset"] != PAPER["dataset"]:
        out.append(f"Dataset {cfg['dataset']} instead of CIFAR-10, so every ε is scaled to it (robust training at L2 "
                   f"ε={adv['eps']:g} instead of {PAPER['adv_eps']}); the paper's numbers beside ours are CIFAR-10's.")
    if cfg["model"]["arch"] != PAPER["arch"]:
        out.append(f"Model `{cfg['model']['arch']}` {cfg['model']['kwargs']} instead of a ResNet-50.")
    n = results["dataset"].get("test_count") or results["dataset"].get("test_count_per_seed", [None])[0]
    if n is not None and n != PAPER["test_images"]:
        out.append(f"{n} test images per run instead of CIFAR-10's {PAPER['test_images']}: each accuracy carries a binomial "
                   f"standard error of up to {50 / n ** 0.5:.1f} points (the intervals and the findings' margin account for it).")
    ratio = cfg["standard"]["lr"] / cfg["train_d_nr"]["lr"]
    if abs(ratio - PAPER["lr_ratio_d_nr"]) > 1e-9:
        out.append(f"Learning rate for D_NR and D_rand {ratio:g}× below the standard one instead of the paper's "
                   f"{PAPER['lr_ratio_d_nr']}× (0.1 vs 0.01).")
    if cfg["standard"]["epochs"] != PAPER["epochs"]:
        out.append(f"{cfg['standard']['epochs']} training epochs instead of {PAPER['epochs']} (same ×0.1 steps at 1/3 and 2/3).")
    m, r = cfg["construction"]["matching"], cfg["construction"]["relabel"]
    if m["steps"] != PAPER["matching_steps"]:
        out.append(f"D_R / D_NR: {m['steps']} representation-matching steps instead of {PAPER['matching_steps']}.")
    if r["steps"] != PAPER["relabel_steps"]:
        out.append(f"D_rand / D_det: {r['steps']} targeted PGD steps (ε={r['eps']:g}) instead of {PAPER['relabel_steps']} "
                   f"(ε={PAPER['relabel_eps']}).")
    wc = cfg["evaluation"].get("worst_case") or {}
    if wc.get("enabled"):
        out.append("Robust accuracy is the worst case over an AutoAttack-style ensemble (" + ensemble_text(wc, len(results["dataset"]["classes"])) + "), not the "
                   f"paper's {PAPER['eval_steps']}-step PGD: AutoAttack's standard protocol" + ("" if (wc["steps"], wc["n_target_classes"], wc["square_queries"]) == (100, 9, 5000)
                                 else ", with fewer steps/targets/queries than AutoAttack's 100/9/5000") + ".")
    out.append("PGD columns use the steps shown in their headers (the paper's table used 7; more steps give lower numbers).")
    if cfg.get("train_limit") or cfg["evaluation"].get("test_limit"):
        train = f"the first {cfg['train_limit']}" if cfg.get("train_limit") else "all"
        test = f"the first {cfg['evaluation']['test_limit']}" if cfg["evaluation"].get("test_limit") else "all"
        order = " (your data in a fixed random order, the same for every seed, so every class is drawn)" if cfg.get("data") else ""
        out.append(f"Subsets: {train} training and {test} test images of the split{order}.")
    return [f"- {line}" for line in out]


def sanity_section(models: dict[str, Any], seeds: list[int] | None = None) -> list[str]:
    lines = ["### Sanity checks (gradient masking)", ""]
    rows = []
    for name, m in models.items():
        if seeds is not None:
            flags = m.get("sanity_flags") or []
            if all(f is None for f in flags):
                continue
            verdict = "; ".join(f"seed {seed}: " + (", ".join(f) if f else "no warning sign")
                                for seed, f in zip(seeds, flags) if f is not None)
            rows.append(f"| {m['training_set']} | {verdict} |")
        elif m.get("sanity"):
            s = m["sanity"]
            verdict = "no warning sign" if not s["flags"] else "; ".join(f"**{f['check']}**: {f['message']}" for f in s["findings"])
            rows.append(f"| {m['training_set']} | {s['norm']} ε={s['eps']:g}, {s['n']} images | {verdict} |")
    if not rows:
        return lines + ["Not run (`evaluation.sanity.enabled = false`).", ""]
    head = ["| model | verdict per seed |", "|---|---|"] if seeds is not None else ["| model | checked at | verdict |", "|---|---|---|"]
    return lines + ["Randomised outputs, softmax outputs, zero or non-finite input gradients, FGSM beating PGD, Square "
                    "(black box) beating the white-box attacks, an unbounded attack below 99%, accuracy not falling with ε "
                    "(AutoAttack's and Athalye et al.'s warning signs).", ""] + head + rows + [""]


def reviewer_section(results: dict[str, Any], *, aggregate: bool = False) -> list[str]:
    cfg = results["config"]["resolved"] if "config" in results else {}
    ds = results["dataset"]
    n = ds["test_count_per_seed"] if aggregate else ds["test_count"]
    n_text = (f"{sum(n)} test images over {len(n)} seeds ({', '.join(map(str, n))} each)" if aggregate
              else f"{n} test images (a binomial standard error of up to {50 / n ** 0.5:.1f} points per accuracy)")
    wc = results.get("worst_case_settings") if aggregate else cfg.get("evaluation", {}).get("worst_case")
    lines = ["## What the numbers are", "",
             f"- **Test images**: {n_text}.",
             f"- **Robust accuracy**: {results['robust_accuracy_definition']}.",
             "- **Headline attack**: " + (f"per image the worst case over {ensemble_text(wc, len(ds['classes']))}, each run only on the images "
                                          "still robust and dropping images as they fall (AutoAttack's standard protocol), at every radius of the table."
                                          if wc and wc.get("enabled") else "the single attacks of the table (the worst case "
                                          "was not run: `evaluation.worst_case.enabled = false`)."),
             "- **Single attacks**: beside it, labelled with their steps and step size (untargeted; PGD's first restart "
             "starts from the image itself; robust means correct on x and on x_adv, as for the headline).",
             f"- **Intervals**: {results['interval']}.",
             "- **Findings**: judged with a stated margin over the noise (below); one inside the noise says 'not shown'.", ""]
    return lines


def main_table(results: dict[str, Any], *, aggregate: bool = False) -> list[str]:
    models, paper = results["models"], results["paper_reference"]["models"]
    first = next(iter(models.values()))
    wc_head = [f"**worst case {w['norm']} ε={w['eps']:.3g}**" for w in first.get("worst_case") or []]
    single = [attack_label(r) for r in first["robust_accuracy"]]

    def cell(entry: dict[str, Any], key: str) -> str:
        if aggregate:
            return f"{100 * entry['mean']:.1f} ± {100 * entry['std']:.1f}{_interval(entry['pooled_interval'])}"
        iv = entry.get("clean_interval") if key == "clean_accuracy" else entry.get("interval")
        return f"{_pct(entry[key])}{_interval(iv)}"

    lines = ["| training set | clean | " + " | ".join(wc_head + single) + " | paper: clean | paper: robust (L2 PGD ε=0.25) |",
             "|---|---|" + "---|" * (len(wc_head) + len(single)) + "---|---|"]
    for name, m in models.items():
        clean = cell(m["clean_accuracy"], "") if aggregate else cell(m, "clean_accuracy")
        wcs = [cell(w, "robust_accuracy") for w in m.get("worst_case") or []]
        singles = [cell(r, "accuracy") for r in m["robust_accuracy"]]
        p = paper.get(name, {})
        lines.append(f"| {m['training_set']} | {clean} | " + " | ".join(wcs + singles)
                     + f" | {_pct(p.get('clean_accuracy'))} | {_pct(p.get('robust_accuracy'))} |")
    return lines


def constructions_section(results: dict[str, Any], figure: str) -> list[str]:
    lines = ["## The constructed datasets", "", "| set | built with | procedure | success |", "|---|---|---|---|"]
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
            if len(results["dataset"]["classes"]) == 2:  # the one other class: D_rand's targets are D_det's
                target = "t = 1 − y (with two classes the only other class, so the targets of D_rand and D_det are the same)"
            proc = f"targeted L2 PGD, ε={cfg['eps']:g}, {cfg['steps']} steps of {cfg['step_size']:g}, {target}"
            succ = (f"targets reached: {_pct(s['share'])} ({s['count']}/{c['count']}); standard model agrees with the new "
                    f"labels on {_pct(c['standard_model_accuracy_on_new_labels'])}")
        lines.append(f"| {SET_LABELS[kind]} | {c['built_with']} model | {proc} | {succ} |")
    return lines + ["", f"![examples]({figure})", ""]


def inversion_section(res: dict[str, Any]) -> list[str]:
    s, r = res["standard"], res["robust"]
    return [
        "## Inverting representations (Engstrom et al. 2019)", "",
        f"{res['n']} test images inverted from noise seeds through each model ({res['steps']} L2 steps of {res['step_size']:g}): "
        "lower pixel distance to the target image, and higher accuracy of a held-out MLP on the inverted images, mean the "
        "representation kept more of what a person sees.", "",
        "| model | pixel L2 to target | representation distance reached | held-out MLP accuracy on inversions |",
        "|---|---|---|---|",
        f"| standard | {s['pixel_l2']:.2f} | {s['representation_distance']:.3f} | {_pct(s['held_out_accuracy'])} |",
        f"| robust | {r['pixel_l2']:.2f} | {r['representation_distance']:.3f} | {_pct(r['held_out_accuracy'])} |", "",
        f"Seeds start at pixel L2 {res['start_pixel_l2']:.2f}; the held-out MLP scores {_pct(res['held_out_accuracy_on_targets'])} "
        f"on the target images themselves. Robust inversions closer: **{'yes' if res['robust_closer'] else 'no'}**.", "",
        f"![inversion]({res['figures']['inversion']})", ""]


def leakage_section(res: dict[str, Any], models: dict[str, Any]) -> list[str]:
    lines = [
        "## Robust-feature leakage (the Distill discussion)", "",
        "A linear classifier that sees only a few provably robust features (projections whose change under the",
        f"construction's L2 ε = {res['eps']:g} is bounded), trained on the constructed set with its new labels and tested on the",
        "real test set. Accuracy it recovers is accuracy that robust features could explain.", "",
        "| set | model trained on it (real test) | leakage classifier (real test) | same classifier trained on D | chance |",
        "|---|---|---|---|---|"]
    for kind in ("d_rand", "d_det"):
        r = res[kind]
        lines.append(f"| {SET_LABELS[kind]} | {_pct(models[kind]['clean_accuracy'])} | {_pct(r['leakage_accuracy'])} | "
                     f"{_pct(r['real_accuracy'])} | {_pct(r['chance'])} |")
    return lines + [""]


def distillation_section(res: dict[str, Any]) -> list[str]:
    if res.get("trained"):
        body = (f"A weak teacher ({res['teacher']['epochs']} epochs; {_pct(res['teacher']['test_accuracy'])} on the test set) "
                f"got {res['mistakes']} training images wrong ({_pct(res['mistake_share'])}). A fresh model trained only on those "
                f"images, with the teacher's wrong labels, scores **{_pct(res['student_test_accuracy'])}** on the real test set "
                f"(chance {_pct(res['chance'])}; the same images with random wrong labels: "
                f"{_pct(res.get('control_random_wrong_labels_test_accuracy'))}; labels drawn uniformly from the other classes "
                "teach a model to avoid the true class, so this control may fall below chance).")
    else:
        body = f"Not run: {res.get('note')}."
    return ["## Learning from incorrectly labelled data (distillation control)", "", body, ""]


def transfer_section(res: dict[str, Any]) -> list[str]:
    limit = res.get("train_limit")
    lines = ["## Transferability and learning from D_rand (the paper's Figure 3)", "",
             f"Adversarial examples of the standard model (targeted L2 PGD, ε = {res['eps']:g}, as in D_rand) tested on several "
             "architectures trained on D; beside each, its real test accuracy when trained on D_rand"
             + (f" (each trained on the first {limit} images of D and of D_rand)." if limit else "."), "",
             "| architecture | accuracy (trained on D) | targeted transfer rate | untargeted transfer rate | accuracy when trained on D_rand |",
             "|---|---|---|---|---|"]
    for a in res["archs"]:
        lines.append(f"| {a['label']} | {_pct(a['real_test_accuracy'])} | {_pct(a['transfer_targeted'])} | "
                     f"{_pct(a['transfer_untargeted'])} | {_pct(a['d_rand_test_accuracy'])} |")
    corr = res["correlation"]["targeted_vs_d_rand"]
    if corr.get("pearson") is not None:
        lines += ["", f"Correlation of targeted transfer rate with D_rand accuracy over {corr['n']} architectures: "
                      f"Pearson {corr['pearson']:.2f}, Spearman {corr['spearman']:.2f}."]
    return lines + ["", f"![transfer]({res['figures']['transfer']})", ""]


def extras_sections(results: dict[str, Any]) -> list[str]:
    ex = results.get("extras") or {}
    lines: list[str] = []
    if "inversion" in ex:
        lines += inversion_section(ex["inversion"])
    if "leakage" in ex:
        lines += leakage_section(ex["leakage"], results["models"])
    if "distillation" in ex:
        lines += distillation_section(ex["distillation"])
    if "transfer" in ex:
        lines += transfer_section(ex["transfer"])
    return lines


def timing_section(results: dict[str, Any]) -> list[str]:
    lines = ["## Timing", "", "Peak memory: the process's resident high-water mark when the step ended (it only rises, so the "
             "step that raises it is the one that needed the memory).", "",
             "| step | seconds | reused | peak memory so far (MiB) |", "|---|---|---|---|"]
    for step, t in results["timing"]["steps"].items():
        peak = t.get("peak_rss_mib_after")
        lines.append(f"| {step} | {t['seconds']:.1f} | {'yes' if t['reused'] else 'no'} | {'' if peak is None else f'{peak:.0f}'} |")
    return lines + [""]


def markdown(results: dict[str, Any], figures: dict[str, str]) -> str:
    ds = results["dataset"]
    lines = [
        f"# Reproduction of Ilyas et al. 2019 on {ds['name']}", "",
        f"{ds['train_count']} training and {ds['test_count']} test images of shape {tuple(ds['image_shape'])}, "
        f"{len(ds['classes'])} classes (chance {_pct(ds['chance_accuracy'])}"
        + (f"; the most common class is {_pct(ds['majority_class_share'])} of the test images"
           if ds.get("majority_class_share", 0) >= ds["chance_accuracy"] + 0.01 else "")
        + (f"; no test image of {', '.join(ds['classes_without_test_images'])}" if ds.get("classes_without_test_images") else "")
        + f"); preset `{results['preset']}`, "
        f"model `{results['config']['resolved']['model']['arch']}`, seed {results['seeds']['run']}, device {results['device']}, "
        f"total time {results['timing']['total_seconds']:.0f} s.", "",
        *reviewer_section(results),
        *sanity_section(results["models"]),
        "### Departures from the paper", "", *departures(results), "",
        *findings_section(results),
        "## Standard and robust accuracy (the paper's Figure 2 and Table 1)", "",
        "All accuracies on the original test set, with Wilson 95% intervals in brackets. **Bold columns are the headline** "
        "(worst case over the ensemble); the single attacks stand beside them. The paper's CIFAR-10 / ResNet-50 numbers are "
        "given for reference; our radii are scaled to this dataset.", "",
        *main_table(results), "",
        f"![accuracy]({figures['accuracy']})", "",
        *constructions_section(results, figures["examples"]),
        *extras_sections(results),
        *timing_section(results),
    ]
    v = results["versions"]
    lines.append(f"advfeatures {v['advfeatures']}, torch {v['torch']}, python {v['python']}. Every number above is in `results.json`.")
    return "\n".join(lines) + "\n"


def write_report(state: RunState, results: dict[str, Any]) -> None:
    figs = {"examples": "figures/constructed_examples.png", "accuracy": "figures/accuracy.png"}
    examples_figure(state, state.run.path(figs["examples"]))
    accuracy_figure(results, state.run.path(figs["accuracy"]))
    results["figures"] = {**figs, **{k: v for section in (results.get("extras") or {}).values() if isinstance(section, dict)
                                     for k, v in (section.get("figures") or {}).items()}}
    write_json_atomic(state.run.path("results.json"), results)
    write_text_atomic(state.run.path("report.md"), markdown(results, figs))


# -- several seeds --------------------------------------------------------------------------------
def aggregate_markdown(agg: dict[str, Any], figure: str, links: dict[Any, str]) -> str:
    ds = agg["dataset"]
    seeds = ", ".join(map(str, agg["seeds"]))
    lines = [
        f"# Reproduction of Ilyas et al. 2019 on {ds['name']}: {len(agg['seeds'])} seeds ({seeds})", "",
        f"Preset `{agg['preset']}`, {ds['train_count']} training images per seed, device {agg['device']}; "
        + ("every seed uses the same training and test images (the same data digest) and draws its own initialisations "
           "and attacks" if ds.get("same_data_every_seed") else "each seed draws its own data split, initialisations and attacks")
        + ". Per-seed reports: "
        + ", ".join(f"[seed {s}]({link})" for s, link in links.items()) + ".", "",
        *reviewer_section(agg, aggregate=True),
        *sanity_section(agg["models"], agg["seeds"]),
        "### Departures from the paper", "", *departures(agg), "",
        *findings_section(agg),
        "## Standard and robust accuracy over seeds", "",
        "Cells: mean ± std over seeds, in points, with the Wilson 95% interval of the pooled counts in brackets. "
        "**Bold columns are the headline** (worst case over the ensemble).", "",
        *main_table(agg, aggregate=True), "",
        f"![accuracy]({figure})", "",
        "## Timing", "", "Seconds per seed run (0 where every step was reused): "
        + ", ".join(f"{t:.0f}" for t in agg["timing"]["per_seed_seconds"]) + ".", "",
    ]
    v = agg["versions"]
    lines.append(f"advfeatures {v['advfeatures']}, torch {v['torch']}, python {v['python']}. Every number above is in `results.json`.")
    return "\n".join(lines) + "\n"


def write_aggregate_report(out_dir: Path, agg: dict[str, Any]) -> None:
    figure = "figures/accuracy.png"
    accuracy_figure(agg, out_dir / figure, aggregate=True)
    agg["figures"] = {"accuracy": figure}
    links = {s: Path(os.path.relpath(Path(p) / "report.md", out_dir)).as_posix() for s, p in (agg.get("runs") or {}).items()}
    write_json_atomic(out_dir / "results.json", agg)
    write_text_atomic(out_dir / "report.md", aggregate_markdown(agg, figure, links))
