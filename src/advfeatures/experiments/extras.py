"""Optional stages of ``reproduce`` beside the paper's main table, each cached like the others:

* ``inversion``: invert test images through the standard and the robust model (Engstrom et al.
  2019) and score how close each gets, with a held-out classifier of another architecture;
* ``leakage``: how much of D_rand's / D_det's accuracy a linear classifier on provably robust
  features recovers (the Distill discussion of the paper);
* ``distillation``: a model trained only on a weak teacher's mistakes, with its wrong labels;
* ``transfer``: the paper's Fig. 3, several architectures' transfer rates against how well each
  learns from D_rand.

Each takes the run's :class:`~.state.RunState` and returns plain JSON-ready data (its numbers and
the paths of its ``figures``); :mod:`.report` renders them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..models import build_model
from ..seeding import global_seed
from ..train import train_model
from .config import to_dict
from .rundir import digest
from .state import RunState

TRANSFER_ARCHS = [
    {"name": "mlp", "kwargs": {"hidden": [256]}, "label": "MLP 256"},
    {"name": "mlp", "kwargs": {"hidden": [128, 128]}, "label": "MLP 128-128"},
    {"name": "cnn", "kwargs": {"width": 8, "hidden": 32}, "label": "CNN w8"},
    {"name": "cnn", "kwargs": {"width": 16, "hidden": 64}, "label": "CNN w16"},
    {"name": "cnn", "kwargs": {"width": 32, "hidden": 128}, "label": "CNN w32"},
]


def run_extras(state: RunState) -> dict[str, Any]:
    ex = state.config.extras
    out: dict[str, Any] = {}
    if ex.inversion:
        out["inversion"] = inversion(state)
    if ex.leakage:
        out["leakage"] = leakage(state)
    if ex.distillation:
        out["distillation"] = distillation(state)
    if ex.transfer:
        out["transfer"] = transfer(state)
    return out


def inversion(state: RunState, *, n: int = 16) -> dict[str, Any]:
    from ..represent import compare_inversions

    n = min(n, len(state.test))  # a small test split (your own data) inverts all its images
    steps = state.config.construction.matching.steps * 2
    key = digest({"std": state.keys["standard"], "adv": state.keys["adversarial"], "n": n, "steps": steps,
                  "data": state.data_key, "seed": state.config.seed, "held_out": "mlp256"})
    folder = state.run.path("extras", "inversion")

    def compute() -> dict[str, Any]:
        with global_seed(state.seeds["inversion_held_out_init"]):
            held_out = build_model("mlp", state.train.image_shape, state.train.num_classes, hidden=(256,))
        train_model(held_out, state.train, dataclasses.replace(state.config.standard, seed=state.seeds["inversion_held_out_train"]),
                    device=state.device, desc="held-out MLP")
        models = {"standard": state.models["standard"], "robust": state.models["adversarial"]}
        res = compare_inversions(models, state.test, folder, n=n, steps=steps, step_size=state.config.construction.matching.step_size,
                                 start="noise", seed=state.seeds["inversion"], held_out_model=held_out)
        return {k: res[k] for k in ("standard", "robust", "robust_closer", "start_pixel_l2", "held_out_accuracy_on_targets",
                                    "n", "steps", "step_size", "start")}

    res = state.run.step("extra_inversion", key, compute, artifacts=[folder / "inversion.png"])
    return {**res, "figures": {"inversion": "extras/inversion/inversion.png"}}


def leakage(state: RunState) -> dict[str, Any]:
    from ..science.leakage import leakage_audit

    eps = state.config.construction.relabel.eps
    rows = {}
    for kind in ("d_rand", "d_det"):
        key = digest({"data": state.keys[f"data_{kind}"], "eps": eps, "test": state.data_key})
        rows[kind] = state.run.step(f"extra_leakage_{kind}", key, lambda kind=kind: leakage_audit(
            state.datasets[kind], state.train, state.test, eps=eps, norm=state.config.construction.relabel.norm))
    return {**rows, "eps": eps}


def distillation(state: RunState) -> dict[str, Any]:
    from ..science.distill import distillation_control

    cfg = state.config
    key = digest({"data": state.data_key, "train": dataclasses.asdict(cfg.standard), "model": to_dict(cfg.model), "seed": cfg.seed})
    return state.run.step("extra_distillation", key, lambda: distillation_control(
        None, state.train, state.test, arch=cfg.model.arch, arch_kwargs=cfg.model.kwargs, train_cfg=cfg.standard,
        seed=state.seeds["distillation"], device=state.device))


def transfer(state: RunState) -> dict[str, Any]:
    from ..science.transfer import plot_transfer, transfer_experiment

    cfg = state.config
    relabel = cfg.construction.relabel
    key = digest({"src": state.keys["standard"], "d_rand": state.keys["data_d_rand"], "archs": TRANSFER_ARCHS,
                  "train": dataclasses.asdict(cfg.standard), "d_rand_train": dataclasses.asdict(cfg.train_d_rand),
                  "eps": relabel.eps, "seed": cfg.seed, "train_limit": cfg.extras.transfer_train_limit})
    figure = state.run.path("extras", "transfer.png")

    def compute() -> dict[str, Any]:
        limit = cfg.extras.transfer_train_limit
        res = transfer_experiment(state.models["standard"], state.train.head(limit), state.test,
                                  state.datasets["d_rand"].head(limit), archs=TRANSFER_ARCHS, train_cfg=cfg.standard, d_rand_cfg=cfg.train_d_rand, eps=relabel.eps, norm=relabel.norm,
                                  steps=relabel.steps, step_size=relabel.step_size, seed=state.seeds["transfer"],
                                  batch_size=cfg.evaluation.batch_size, device=state.device)
        plot_transfer(res, figure)
        return res

    res = state.run.step("extra_transfer", key, compute, artifacts=[figure])
    return {**res, "eps": relabel.eps, "train_limit": cfg.extras.transfer_train_limit,
            "figures": {"transfer": "extras/transfer.png"}}
