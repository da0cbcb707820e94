"""Optional stages of ``reproduce`` beside the paper's main table, each cached like the others:

* ``inversion``: invert test images through the standard and the robust model (Engstrom et al.
  2019) and score how close each gets, with a held-out classifier of another architecture;
* ``leakage``: how much of D_rand's / D_det's accuracy a linear classifier on provably robust
  features recovers (the Distill discussion of the paper);
* ``distillation``: a model trained only on a weak teacher's mistakes, with its wrong labels;
* ``transfer``: the paper's Fig. 3, several architectures' transfer rates against how well each
  learns from D_rand.

Each returns a JSON-ready dict with a ``markdown`` section for the report and its ``figures``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch

from ..models import build_model
from ..train import train_model
from .config import to_dict
from .rundir import digest

if TYPE_CHECKING:
    from .pipeline import Reproduction

TRANSFER_ARCHS = [
    {"name": "mlp", "kwargs": {"hidden": [256]}, "label": "MLP 256"},
    {"name": "mlp", "kwargs": {"hidden": [128, 128]}, "label": "MLP 128-128"},
    {"name": "cnn", "kwargs": {"width": 8, "hidden": 32}, "label": "CNN w8"},
    {"name": "cnn", "kwargs": {"width": 16, "hidden": 64}, "label": "CNN w16"},
    {"name": "cnn", "kwargs": {"width": 32, "hidden": 128}, "label": "CNN w32"},
]


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def run_extras(rep: Reproduction) -> dict[str, Any]:
    ex = rep.cfg.extras
    out: dict[str, Any] = {}
    if ex.inversion:
        out["inversion"] = inversion(rep)
    if ex.leakage:
        out["leakage"] = leakage(rep)
    if ex.distillation:
        out["distillation"] = distillation(rep)
    if ex.transfer:
        out["transfer"] = transfer(rep)
    return out


def inversion(rep: Reproduction, *, n: int = 16) -> dict[str, Any]:
    from ..represent import inversion_comparison

    steps = rep.cfg.construction.matching.steps * 2
    key = digest({"std": rep.model_keys["standard"], "adv": rep.model_keys["adversarial"], "n": n, "steps": steps,
                  "data": rep.data_key, "seed": rep.cfg.seed, "held_out": "mlp256"})
    folder = rep.run.path("extras", "inversion")

    def compute() -> dict[str, Any]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(rep.seed_for(700))
            held_out = build_model("mlp", rep.train.image_shape, rep.train.num_classes, hidden=(256,))
        train_model(held_out, rep.train, dataclasses.replace(rep.cfg.standard, seed=rep.seed_for(701)), device=rep.device,
                    desc="held-out MLP")
        res = inversion_comparison(rep.models["standard"], rep.models["adversarial"], rep.test, folder, n=n, steps=steps,
                                   step_size=rep.cfg.construction.matching.step_size, start="noise", seed=rep.seed_for(702),
                                   held_out_model=held_out)
        return {k: res[k] for k in ("standard", "robust", "robust_closer", "start_pixel_l2", "held_out_accuracy_on_targets",
                                    "n", "steps", "step_size", "start")}

    res = rep.run.step("extra_inversion", key, compute, artifacts=[folder / "inversion.png"])
    s, r = res["standard"], res["robust"]
    md = "\n".join([
        "## Inverting representations (Engstrom et al. 2019)",
        "",
        f"{res['n']} test images inverted from noise seeds through each model ({res['steps']} L2 steps of {res['step_size']:g}): "
        "lower pixel distance to the target image, and higher accuracy of a held-out MLP on the inverted images, mean the "
        "representation kept more of what a person sees.",
        "",
        "| model | pixel L2 to target | representation distance reached | held-out MLP accuracy on inversions |",
        "|---|---|---|---|",
        f"| standard | {s['pixel_l2']:.2f} | {s['representation_distance']:.3f} | {_pct(s['held_out_accuracy'])} |",
        f"| robust | {r['pixel_l2']:.2f} | {r['representation_distance']:.3f} | {_pct(r['held_out_accuracy'])} |",
        "",
        f"Seeds start at pixel L2 {res['start_pixel_l2']:.2f}; the held-out MLP scores {_pct(res['held_out_accuracy_on_targets'])} "
        f"on the target images themselves. Robust inversions closer: **{'yes' if res['robust_closer'] else 'no'}**.",
        "",
        "![inversion](extras/inversion/inversion.png)",
    ])
    return {**res, "markdown": md, "figures": {"inversion": "extras/inversion/inversion.png"}}


def leakage(rep: Reproduction) -> dict[str, Any]:
    from ..science.leakage import leakage_audit

    eps = rep.cfg.construction.relabel.eps
    rows = {}
    for kind in ("d_rand", "d_det"):
        key = digest({"data": rep.model_keys[f"data_{kind}"], "eps": eps, "test": rep.data_key})
        rows[kind] = rep.run.step(f"extra_leakage_{kind}", key, lambda kind=kind: leakage_audit(
            rep.datasets[kind], rep.train, rep.test, eps=eps, norm=rep.cfg.construction.relabel.norm))
    lines = [
        "## Robust-feature leakage (the Distill discussion)",
        "",
        "A linear classifier that sees only a few provably robust features (projections whose change under the",
        f"construction's L2 ε = {eps:g} is bounded), trained on the constructed set with its new labels and tested on the",
        "real test set. Accuracy it recovers is accuracy that robust features could explain.",
        "",
        "| set | model trained on it (real test) | leakage classifier (real test) | same classifier trained on D | chance |",
        "|---|---|---|---|---|",
    ]
    for kind, label in (("d_rand", "D_rand"), ("d_det", "D_det")):
        r = rows[kind]
        lines.append(f"| {label} | {_pct(rep.evaluations[kind]['clean_accuracy'])} | {_pct(r['leakage_accuracy'])} | "
                     f"{_pct(r['real_accuracy'])} | {_pct(r['chance'])} |")
    return {**rows, "markdown": "\n".join(lines)}


def distillation(rep: Reproduction) -> dict[str, Any]:
    from ..science.distill import distillation_control

    cfg = rep.cfg
    key = digest({"data": rep.data_key, "train": dataclasses.asdict(cfg.standard), "model": to_dict(cfg.model), "seed": cfg.seed})
    res = rep.run.step("extra_distillation", key, lambda: distillation_control(
        None, rep.train, rep.test, arch=cfg.model.arch, arch_kwargs=cfg.model.kwargs, train_cfg=cfg.standard,
        seed=rep.seed_for(800), device=rep.device))
    if res.get("trained"):
        body = (f"A weak teacher ({res['teacher']['epochs']} epochs; {_pct(res['teacher']['test_accuracy'])} on the test set) "
                f"got {res['mistakes']} training images wrong ({_pct(res['mistake_share'])}). A fresh model trained only on those "
                f"images, with the teacher's wrong labels, scores **{_pct(res['student_test_accuracy'])}** on the real test set "
                f"(chance {_pct(res['chance'])}; the same images with random wrong labels: "
                f"{_pct(res.get('control_random_wrong_labels_test_accuracy'))}; labels drawn uniformly from the other classes "
                "teach a model to avoid the true class, so this control may fall below chance).")
    else:
        body = f"Not run: {res.get('note')}."
    md = "\n".join(["## Learning from incorrectly labelled data (distillation control)", "", body])
    return {**res, "markdown": md}


def transfer(rep: Reproduction) -> dict[str, Any]:
    from ..science.transfer import plot_transfer, transfer_experiment

    cfg = rep.cfg
    relabel = cfg.construction.relabel
    key = digest({"src": rep.model_keys["standard"], "d_rand": rep.model_keys["data_d_rand"], "archs": TRANSFER_ARCHS,
                  "train": dataclasses.asdict(cfg.standard), "d_rand_train": dataclasses.asdict(cfg.train_d_rand),
                  "eps": relabel.eps, "seed": cfg.seed, "train_limit": cfg.extras.transfer_train_limit})
    figure = rep.run.path("extras", "transfer.png")

    def compute() -> dict[str, Any]:
        limit = cfg.extras.transfer_train_limit
        res = transfer_experiment(rep.models["standard"], rep.train.head(limit), rep.test, rep.datasets["d_rand"].head(limit),
                                  archs=TRANSFER_ARCHS,
                                  train_cfg=cfg.standard, d_rand_cfg=cfg.train_d_rand, eps=relabel.eps, norm=relabel.norm,
                                  steps=relabel.steps, step_size=relabel.step_size, seed=rep.seed_for(850),
                                  batch_size=cfg.evaluation.batch_size, device=rep.device)
        plot_transfer(res, figure)
        return res

    res = rep.run.step("extra_transfer", key, compute, artifacts=[figure])
    lines = ["## Transferability and learning from D_rand (the paper's Figure 3)", "",
             f"Adversarial examples of the standard model (targeted L2 PGD, ε = {relabel.eps:g}, as in D_rand) tested on several "
             "architectures trained on D; beside each, its real test accuracy when trained on D_rand"
             + (f" (each trained on the first {cfg.extras.transfer_train_limit} images of D and of D_rand)." if cfg.extras.transfer_train_limit else "."), "",
             "| architecture | accuracy (trained on D) | targeted transfer rate | untargeted transfer rate | accuracy when trained on D_rand |",
             "|---|---|---|---|---|"]
    for a in res["archs"]:
        lines.append(f"| {a['label']} | {_pct(a['real_test_accuracy'])} | {_pct(a['transfer_targeted'])} | "
                     f"{_pct(a['transfer_untargeted'])} | {_pct(a['d_rand_test_accuracy'])} |")
    corr = res["correlation"]["targeted_vs_d_rand"]
    if corr.get("pearson") is not None:
        lines += ["", f"Correlation of targeted transfer rate with D_rand accuracy over {corr['n']} architectures: "
                      f"Pearson {corr['pearson']:.2f}, Spearman {corr['spearman']:.2f}."]
    lines += ["", "![transfer](extras/transfer.png)"]
    return {**res, "markdown": "\n".join(lines), "figures": {"transfer": "extras/transfer.png"}}
