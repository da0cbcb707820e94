"""``reproduce``: Ilyas et al. 2019 end to end.

1. load the data (fixed split); 2. train a standard and an adversarially trained model on D;
3. build D_R (robust model), D_NR, D_rand and D_det (standard model); 4. train a fresh model on each;
5. evaluate all six on the original test set (clean, L2 PGD at two radii, Linf PGD, FGSM);
6. optional extras (inversion, leakage audit, distillation control, transferability);
7. write ``results.json``, ``report.md`` and the figures.

Every step is cached in the run directory (see :mod:`.rundir`), so asking again reuses finished
work and an interrupted run resumes.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..construct import build_dataset, is_finished, load_constructed
from ..data.dataset import ImageDataset
from ..data.loaders import load_dataset
from ..distributed import resolve_device
from ..evaluate import accuracy, evaluate_suite
from ..models import build_model, load_model, save_model
from ..storage import tensor_digest
from ..train import TrainConfig, train_model
from .config import ReproduceConfig, to_dict
from .rundir import RunDir, digest

log = logging.getLogger(__name__)

MODEL_NAMES = ("standard", "adversarial", "d_r", "d_nr", "d_rand", "d_det")
TRAINING_SETS = {"standard": "D", "adversarial": "D (adversarial training)", "d_r": "D_R", "d_nr": "D_NR",
                 "d_rand": "D_rand", "d_det": "D_det"}
CONSTRUCTION_MODEL = {"d_r": "adversarial", "d_nr": "standard", "d_rand": "standard", "d_det": "standard"}


def load_data(cfg: ReproduceConfig) -> tuple[ImageDataset, ImageDataset]:
    train, test = load_dataset(cfg.dataset, root=cfg.data_root, seed=cfg.seed)
    return train.head(cfg.train_limit), test.head(cfg.evaluation.test_limit)


class Reproduction:
    """One run of the pipeline in one run directory."""

    def __init__(self, cfg: ReproduceConfig, given: dict[str, Any], out_dir: str | Path, *, data: tuple[ImageDataset, ImageDataset] | None = None) -> None:
        self.cfg = cfg
        self.given = given
        self.device = resolve_device(cfg.device)
        # load (and so check) the data before anything is written
        self.train, self.test = data if data is not None else load_data(cfg)
        self.run = RunDir(out_dir)
        self.data_key = digest([tensor_digest(self.train.images, self.train.labels), tensor_digest(self.test.images, self.test.labels)])
        self.models: dict[str, torch.nn.Module] = {}
        self.model_keys: dict[str, str] = {}
        self.histories: dict[str, list] = {}
        self.datasets: dict[str, ImageDataset] = {}
        self.manifests: dict[str, dict[str, Any]] = {}
        self.evaluations: dict[str, dict[str, Any]] = {}

    # -- steps ------------------------------------------------------------------------------
    def seed_for(self, offset: int) -> int:
        return self.cfg.seed * 1000 + offset

    def train_step(self, name: str, data: ImageDataset, tcfg: TrainConfig, input_key: str, offset: int) -> None:
        tcfg = dataclasses.replace(tcfg, seed=self.seed_for(offset) + tcfg.seed)
        key = digest({"model": to_dict(self.cfg.model), "train": dataclasses.asdict(tcfg), "data": input_key,
                      "classes": data.num_classes, "shape": list(data.image_shape)})
        path = self.run.path("models", f"{name}.safetensors")

        def compute() -> dict[str, Any]:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(tcfg.seed)  # weight initialisation only; the global state is restored
                model = build_model(self.cfg.model.arch, data.image_shape, data.num_classes, **self.cfg.model.kwargs)
            ckpt = self.run.path("models", f".{name}.{key}.ckpt")
            history = train_model(model, data, tcfg, device=self.device, checkpoint=ckpt, desc=f"train {name}")
            save_model(model, path, extra={"key": key, "training_set": TRAINING_SETS[name]})
            ckpt.unlink(missing_ok=True)
            return {"history": history, "train_count": len(data)}

        result = self.run.step(f"train_{name}", key, compute, artifacts=[path])
        self.models[name] = load_model(path, device=self.device)
        self.model_keys[name] = key
        self.histories[name] = result["history"]

    def construct_step(self, kind: str, offset: int) -> None:
        source_model = CONSTRUCTION_MODEL[kind]
        c = self.cfg.construction
        settings = {"matching": dataclasses.asdict(c.matching)} if kind in ("d_r", "d_nr") else {"relabel": dataclasses.asdict(c.relabel)}
        seed = self.seed_for(offset)
        key = digest({"kind": kind, **settings, "model": self.model_keys[source_model], "data": self.data_key,
                      "seed": seed, "shard_size": c.shard_size})
        folder = self.run.path("datasets", kind)

        def compute() -> dict[str, Any]:
            if not is_finished(folder, key):
                self.run.reset_folder(folder, key)
                build_dataset(kind, self.models[source_model], self.train, folder, matching=c.matching, relabel=c.relabel,
                              seed=seed, batch_size=c.batch_size, shard_size=c.shard_size, device=self.device, key=key)
            _, manifest = load_constructed(folder, classes=self.train.classes)
            return {"summary": manifest["summary"], "count": manifest["count"], "built_with": source_model}

        result = self.run.step(f"construct_{kind}", key, compute, artifacts=[folder / "manifest.json"])
        self.datasets[kind], self.manifests[kind] = load_constructed(folder, classes=self.train.classes, name=kind)
        self.manifests[kind]["result"] = result
        self.model_keys[f"data_{kind}"] = key

    def evaluate_step(self, name: str) -> dict[str, Any]:
        ev = self.cfg.evaluation
        key = digest({"model": self.model_keys[name], "attacks": [dataclasses.asdict(a) for a in ev.attacks],
                      "data": self.data_key, "seed": self.cfg.seed})
        return self.run.step(f"evaluate_{name}", key, lambda: evaluate_suite(
            self.models[name], self.test, ev.attacks, batch_size=ev.batch_size, device=self.device,
            seed=self.seed_for(900), desc=f"eval {name}"))

    # -- the whole pipeline -----------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        threads = torch.get_num_threads()
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        try:
            return self._execute()
        finally:
            torch.set_num_threads(threads)

    def _execute(self) -> dict[str, Any]:
        cfg = self.cfg
        started = time.perf_counter()
        self.run.root.mkdir(parents=True, exist_ok=True)
        from ..storage import write_json_atomic

        write_json_atomic(self.run.path("config.json"), {"given": self.given, "resolved": to_dict(cfg)})
        log.info("reproduce: %s, %d training / %d test images, device %s, run directory %s", cfg.dataset,
                 len(self.train), len(self.test), self.device, self.run.root)
        self.train_step("standard", self.train, cfg.standard, self.data_key, 1)
        self.train_step("adversarial", self.train, cfg.adversarial, self.data_key, 2)
        for i, kind in enumerate(("d_r", "d_nr", "d_rand", "d_det")):
            self.construct_step(kind, 10 + i)
        train_cfgs = {"d_r": cfg.train_d_r, "d_nr": cfg.train_d_nr, "d_rand": cfg.train_d_rand, "d_det": cfg.train_d_det}
        for i, kind in enumerate(("d_r", "d_nr", "d_rand", "d_det")):
            self.train_step(kind, self.datasets[kind], train_cfgs[kind], self.model_keys[f"data_{kind}"], 20 + i)
        self.evaluations = {name: self.evaluate_step(name) for name in MODEL_NAMES}
        extras = self.extras()
        results = self.results(self.evaluations, extras, time.perf_counter() - started)
        from .report import write_report

        write_report(self, results)
        return results

    def extras(self) -> dict[str, Any]:
        from .extras import run_extras

        return run_extras(self)

    def results(self, evaluations: dict[str, Any], extras: dict[str, Any], seconds: float) -> dict[str, Any]:
        cfg = self.cfg
        models = {}
        for name in MODEL_NAMES:
            ev = evaluations[name]
            models[name] = {
                "training_set": TRAINING_SETS[name],
                "clean_accuracy": ev["clean_accuracy"],
                "robust_accuracy": ev["robust_accuracy"],
                "train_accuracy_final": self.histories[name][-1]["train_accuracy"] if self.histories[name] else None,
            }
        constructions = {}
        for kind in ("d_r", "d_nr", "d_rand", "d_det"):
            m = self.manifests[kind]
            constructions[kind] = {"built_with": CONSTRUCTION_MODEL[kind], "count": m["count"], "summary": m["summary"],
                                   "settings": m["config"]["matching"] or m["config"]["relabel"]}
        # accuracy of the models used for construction on the constructed sets, with the new labels
        for kind in ("d_rand", "d_det"):
            constructions[kind]["standard_model_accuracy_on_new_labels"] = accuracy(
                self.models["standard"], self.datasets[kind], batch_size=cfg.evaluation.batch_size, device=self.device)
        out = {
            "format": "advfeatures-results/1",
            "preset": cfg.preset,
            "dataset": {"name": cfg.dataset, "train_count": len(self.train), "test_count": len(self.test),
                        "image_shape": list(self.train.image_shape), "classes": self.train.classes,
                        "chance_accuracy": 1.0 / self.train.num_classes},
            "config": {"given": self.given, "resolved": to_dict(cfg)},
            "seeds": {"run": cfg.seed, "data_split": cfg.seed, "derivation": "stage seed = run seed × 1000 + stage offset (+ the stage's own seed)"},
            "versions": versions(),
            "device": str(self.device),
            "models": models,
            "constructions": constructions,
            "extras": extras,
            "timing": {"total_seconds": seconds, "steps": self.run.timings},
        }
        out["findings"] = findings(out)
        out["paper_reference"] = PAPER_REFERENCE
        return out


def versions() -> dict[str, str]:
    import numpy
    import safetensors
    import sklearn

    return {"advfeatures": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "scikit-learn": sklearn.__version__, "safetensors": safetensors.__version__,
            "platform": platform.platform()}


PAPER_REFERENCE = {
    "source": "Ilyas et al. 2019, CIFAR-10, ResNet-50; robust accuracy under L2 PGD at eps 0.25",
    "models": {
        "standard": {"clean_accuracy": 0.953, "robust_accuracy": 0.0866, "note": "8.66% for the released model; 4.49% with a 7-step attack"},
        "adversarial": {"clean_accuracy": 0.908, "robust_accuracy": 0.823},
        "d_r": {"clean_accuracy": 0.841, "robust_accuracy": 0.483},
        "d_nr": {"clean_accuracy": 0.877, "robust_accuracy": 0.008},
        "d_rand": {"clean_accuracy": 0.633, "robust_accuracy": 0.0},
        "d_det": {"clean_accuracy": 0.437, "robust_accuracy": 0.0},
    },
}


def _l2_entries(model: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted((r for r in model["robust_accuracy"] if r["norm"] == "L2" and r["attack"] == "pgd"), key=lambda r: r["eps"])


def findings(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The paper's qualitative claims, checked against this run's numbers (never assumed)."""
    m = results["models"]
    chance = results["dataset"]["chance_accuracy"]
    n = results["dataset"]["test_count"]
    margin = 3 * (chance * (1 - chance) / max(n, 1)) ** 0.5  # 3 standard errors above chance
    out = []

    def add(claim: str, holds: bool, detail: str) -> None:
        out.append({"claim": claim, "holds": bool(holds), "detail": detail})

    std_l2, adv_l2, dr_l2 = _l2_entries(m["standard"]), _l2_entries(m["adversarial"]), _l2_entries(m["d_r"])
    if std_l2:
        big = std_l2[-1]
        add("The standard model's robust accuracy at the larger L2 radius is far below its clean accuracy",
            big["accuracy"] < 0.5 * m["standard"]["clean_accuracy"],
            f"clean {m['standard']['clean_accuracy']:.3f}, L2 PGD ε={big['eps']:g}: {big['accuracy']:.3f}")
        add("The adversarially trained model is much more robust than the standard one",
            adv_l2[-1]["accuracy"] >= big["accuracy"] + 0.1,
            f"L2 PGD ε={big['eps']:g}: adversarial {adv_l2[-1]['accuracy']:.3f} vs standard {big['accuracy']:.3f}")
        small = 0  # the paper compares at ε = 0.25, half its training radius: our smaller radius
        add("The model trained on D_R is more robust than the standard model (at the smaller L2 radius, as in the paper)",
            dr_l2[small]["accuracy"] > std_l2[small]["accuracy"],
            f"L2 PGD ε={std_l2[small]['eps']:g}: D_R {dr_l2[small]['accuracy']:.3f} vs standard {std_l2[small]['accuracy']:.3f}; "
            f"at ε={big['eps']:g}: {dr_l2[-1]['accuracy']:.3f} vs {big['accuracy']:.3f}")
        nr_l2 = _l2_entries(m["d_nr"])
        add("The model trained on D_NR is less robust than the one trained on D_R",
            nr_l2[small]["accuracy"] < dr_l2[small]["accuracy"],
            f"L2 PGD ε={std_l2[small]['eps']:g}: D_NR {nr_l2[small]['accuracy']:.3f} vs D_R {dr_l2[small]['accuracy']:.3f}")
    for kind, label in (("d_rand", "D_rand"), ("d_det", "D_det")):
        acc = m[kind]["clean_accuracy"]
        add(f"The model trained on {label} is well above chance on the original test set",
            acc > chance + max(margin, 0.1), f"{acc:.3f} vs chance {chance:.3f}")
    return out
