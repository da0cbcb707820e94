"""``reproduce``: Ilyas et al. 2019 end to end.

1. load the data (fixed split); 2. train a standard and an adversarially trained model on D;
3. build D_R (robust model), D_NR, D_rand and D_det (standard model); 4. train a fresh model on each;
5. evaluate all six on the original test set: the single attacks of ``evaluation.attacks`` (PGD,
   FGSM), the worst-case ensemble at each of their radii (the headline), and the sanity checks;
6. optional extras (inversion, leakage audit, distillation control, transferability);
7. write ``results.json``, ``report.md`` and the figures.

Every step is cached in the run directory (see :mod:`.rundir`), so asking again reuses finished
work and an interrupted run resumes. The steps fill one :class:`~.state.RunState`;
:func:`run_seeds` repeats the whole run for several seeds and aggregates them;
:func:`open_run` reopens a finished run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..construct import build_dataset, is_finished, load_constructed
from ..data import load_data as load_any_data
from ..data.dataset import ImageDataset
from ..data.loaders import load_dataset
from ..runtime.config import Runtime, runtime_applied
from ..runtime.device import resolve_device
from ..seeding import global_seed
from ..errors import DataError
from ..evaluate import accuracy, evaluate_suite, sanity_checks, standard_members, worst_case_evaluation
from ..models import build_model, load_any_model, load_model, save_model
from ..validate import check_model_fits
from ..storage import file_sha256, folder_lock, read_json, write_json_atomic
from ..train import TrainConfig, train_model
from . import findings as findings_mod
from .config import ReproduceConfig, from_dict, to_dict
from .extras import run_extras
from .report import write_aggregate_report, write_report
from .rundir import RunDir, digest
from .state import CONSTRUCTION_MODEL, MODEL_NAMES, SETS, TRAINING_SETS, RunState, named_seeds
from .stats import MARGIN_TEXT, count_of, summary, wilson_interval

log = logging.getLogger(__name__)

__all__ = ["MODEL_NAMES", "Reproduction", "open_run", "run_reproduction", "run_seeds"]


def load_data(cfg: ReproduceConfig) -> tuple[ImageDataset, ImageDataset]:
    """The run's (train, test): the built-in ``dataset``, or the user's ``data`` (with the test
    split of ``data_test`` where given)."""
    if cfg.data is not None:
        train, test = load_any_data(cfg.data_test, cfg.data, root=cfg.data_root, seed=cfg.seed, stream=cfg.data_stream,
                                    workers=cfg.data_workers)
        # your files may be sorted by class (an image folder tree always is), and the limits below and
        # the sanity checks' and the transfer extra's take the first N: both splits are put in one fixed
        # random order (the same for every run seed, so a fixed split stays the same data) first
        train, test = in_fixed_random_order(train), in_fixed_random_order(test)
    else:
        train, test = load_dataset(cfg.dataset, root=cfg.data_root, seed=cfg.seed)
    return train.head(cfg.train_limit), test.head(cfg.evaluation.test_limit)


def in_fixed_random_order(ds: ImageDataset) -> ImageDataset:
    """``ds`` permuted by a generator of fixed seed 0: its first N are a random N, whatever its files' order."""
    return ds.subset(torch.randperm(len(ds), generator=torch.Generator().manual_seed(0)))


def dataset_name(cfg: ReproduceConfig) -> str:
    """The run's data as the report names it: the built-in ``dataset``, or the user's ``data`` file or
    folder (``dataset`` then only names the preset's defaults, not the images)."""
    if cfg.data is None:
        return cfg.dataset
    test = f", tested on {cfg.data_test}'s test split" if cfg.data_test is not None else ""
    return f"{Path(cfg.data).name} (your data{test})"


def data_digest(train: ImageDataset, test: ImageDataset) -> str:
    """The run's data key: ``tensor_digest(images, labels)`` of each split, hashed a batch at a time
    (the same value for an in-memory and a streamed copy of the same images)."""
    return digest([train.digest(), test.digest()])


def new_state(cfg: ReproduceConfig, given: dict[str, Any], out_dir: str | Path, *,
              data: tuple[ImageDataset, ImageDataset] | None = None, device: torch.device | None = None) -> RunState:
    """A run's state before any step: the data is loaded (and so checked) before anything is written.
    ``device``: the applied runtime's (default: ``cfg.device`` resolved). ``cfg.seed`` is split into
    the named stream seeds here (:func:`.state.named_seeds`), which every step draws from."""
    train, test = data if data is not None else load_data(cfg)
    device = resolve_device(cfg.device) if device is None else device
    return RunState(config=cfg, given=given, run=RunDir(out_dir), device=device, train=train, test=test,
                    data_key=data_digest(train, test), seeds=named_seeds(cfg.seed))


# -- steps --------------------------------------------------------------------------------------
def given_model_step(state: RunState, name: str, path: str, arch: str | None, kwargs: dict[str, Any]) -> None:
    """Use the user's model file as ``name`` instead of training it (``reproduce --robust-model``)."""
    model = load_any_model(path, arch=arch, arch_kwargs=kwargs, in_shape=state.train.image_shape,
                           num_classes=state.train.num_classes, device=state.device)
    check_model_fits(model, state.train, path)
    state.models[name] = model
    state.keys[name] = digest({"file": file_sha256(path), "arch": arch, "kwargs": kwargs})
    state.histories[name] = []


def initial_model(cfg: ReproduceConfig, data: ImageDataset, seed: int) -> torch.nn.Module:
    """The run's model for ``data``, initialised from ``seed``: the global random state is forked and
    set to it for the initialisation only, then restored."""
    with global_seed(seed):
        return build_model(cfg.model.arch, data.image_shape, data.num_classes, **cfg.model.kwargs)


def train_step(state: RunState, name: str, data: ImageDataset, tcfg: TrainConfig, input_key: str) -> None:
    cfg = state.config
    tcfg = dataclasses.replace(tcfg, seed=state.seeds[f"train_{name}"] + tcfg.seed)
    key = digest({"model": to_dict(cfg.model), "train": dataclasses.asdict(tcfg), "data": input_key,
                  "classes": data.num_classes, "shape": list(data.image_shape)})
    path = state.run.path("models", f"{name}.safetensors")

    def compute() -> dict[str, Any]:
        model = initial_model(cfg, data, tcfg.seed)
        ckpt = state.run.path("models", f".{name}.{key}.ckpt")
        history = train_model(model, data, tcfg, device=state.device, checkpoint=ckpt, desc=f"train {name}")
        save_model(model, path, extra={"key": key, "training_set": TRAINING_SETS[name]})
        ckpt.unlink(missing_ok=True)
        return {"history": history, "train_count": len(data)}

    result = state.run.step(f"train_{name}", key, compute, artifacts=[path])
    state.models[name] = load_model(path, device=state.device)
    state.keys[name] = key
    state.histories[name] = result["history"]


def construct_step(state: RunState, kind: str) -> None:
    source_model = CONSTRUCTION_MODEL[kind]
    c = state.config.construction
    settings = {"matching": dataclasses.asdict(c.matching)} if kind in ("d_r", "d_nr") else {"relabel": dataclasses.asdict(c.relabel)}
    seed = state.seeds[f"construct_{kind}"]
    key = digest({"kind": kind, **settings, "model": state.keys[source_model], "data": state.data_key,
                  "seed": seed, "shard_size": c.shard_size})
    folder = state.run.path("datasets", kind)

    def compute() -> dict[str, Any]:
        if not is_finished(folder, key):
            state.run.reset_folder(folder, key)
            build_dataset(kind, state.models[source_model], state.train, folder, matching=c.matching, relabel=c.relabel,
                          seed=seed, batch_size=c.batch_size, shard_size=c.shard_size, device=state.device, key=key)
        # only the manifest is needed here: a streamed source's set is not loaded whole for it
        _, manifest = load_constructed(folder, classes=state.train.classes, stream=not state.train.in_memory)
        return {"summary": manifest["summary"], "count": manifest["count"], "built_with": source_model}

    result = state.run.step(f"construct_{kind}", key, compute, artifacts=[folder / "manifest.json"])
    # a streamed source's constructed sets stay in their shards too (read per batch, the same values)
    state.datasets[kind], state.manifests[kind] = load_constructed(folder, classes=state.train.classes, name=kind,
                                                                   stream=not state.train.in_memory)
    state.manifests[kind]["result"] = result
    state.keys[f"data_{kind}"] = key


def evaluate_step(state: RunState, name: str) -> None:
    """The single attacks of ``evaluation.attacks`` (the PGD / FGSM columns)."""
    cfg, ev = state.config, state.config.evaluation
    key = digest({"model": state.keys[name], "attacks": [dataclasses.asdict(a) for a in ev.attacks],
                  "data": state.data_key, "seed": cfg.seed})
    state.evaluations[name] = state.run.step(f"evaluate_{name}", key, lambda: evaluate_suite(
        state.models[name], state.test, ev.attacks, batch_size=ev.batch_size, device=state.device,
        seed=state.seeds["evaluation"], desc=f"eval {name}"))


def radii(cfg: ReproduceConfig) -> list[tuple[str, float]]:
    """The distinct (norm, ε) of the evaluation's attacks, in their order: where the worst case is measured."""
    out: list[tuple[str, float]] = []
    for spec in cfg.evaluation.attacks:
        if (spec.norm, spec.eps) not in out:
            out.append((spec.norm, spec.eps))
    return out


def worst_case_step(state: RunState, name: str) -> None:
    """The headline: the per-image worst case over APGD-CE, APGD-T, FAB-T and Square at each radius."""
    ev = state.config.evaluation
    wc = ev.worst_case
    key = digest({"model": state.keys[name], "radii": radii(state.config), "settings": dataclasses.asdict(wc),
                  "members": [m.name for m in standard_members(state.models[name], state.test.batch(slice(0, 1))[0], norm="L2", eps=1.0)],
                  "data": state.data_key, "seed": state.seeds["worst_case"]})

    def compute() -> dict[str, Any]:
        rows = []
        for norm, eps in radii(state.config):
            rep = worst_case_evaluation(state.models[name], state.test, norm=norm, eps=eps,
                                        batch_size=ev.batch_size, seed=state.seeds["worst_case"], steps=wc.steps,
                                        n_target_classes=wc.n_target_classes, square_queries=wc.square_queries)
            rows.append({k: rep[k] for k in ("norm", "eps", "n", "clean_accuracy", "robust_accuracy", "members")})
        return {"radii": rows}

    state.worst_case[name] = state.run.step(f"worst_case_{name}", key, compute)["radii"]


def sanity_radius(cfg: ReproduceConfig) -> tuple[str, float]:
    """The radius of the sanity checks: the largest L2 radius evaluated (else the first radius)."""
    l2 = [r for r in radii(cfg) if r[0] == "L2"]
    return max(l2, key=lambda r: r[1]) if l2 else radii(cfg)[0]


def sanity_step(state: RunState, name: str) -> None:
    ev, sc = state.config.evaluation, state.config.evaluation.sanity
    norm, eps = sanity_radius(state.config)
    test = state.test.head(sc.test_limit)
    key = digest({"model": state.keys[name], "norm": norm, "eps": eps, "settings": dataclasses.asdict(sc),
                  "data": state.data_key, "seed": state.seeds["sanity"]})

    def compute() -> dict[str, Any]:
        meas: dict[str, Any] = {}
        found = sanity_checks(state.models[name], test, norm=norm, eps=eps, steps=sc.steps,
                              square_queries=sc.square_queries, batch_size=ev.batch_size, seed=state.seeds["sanity"],
                              measurements=meas)
        return {"norm": norm, "eps": eps, "n": len(test), "flags": [f["check"] for f in found], "findings": found,
                "measurements": meas}

    state.sanity[name] = state.run.step(f"sanity_{name}", key, compute)


# -- the whole pipeline -------------------------------------------------------------------------
def run_reproduction(cfg: ReproduceConfig, given: dict[str, Any], out_dir: str | Path, *,
                     data: tuple[ImageDataset, ImageDataset] | None = None, runtime: Runtime | None = None) -> RunState:
    """Run (or resume) the whole pipeline in ``out_dir``; the returned state holds ``results``.

    ``runtime``: the one the caller applied (the command line's, from ``cfg.runtime``); without it
    ``cfg.runtime`` (device, threads) is applied here for the run and torch's thread count given back
    after it."""
    with contextlib.nullcontext(runtime) if runtime is not None else runtime_applied(cfg.runtime) as rt:
        state = new_state(cfg, given, out_dir, data=data, device=rt.device)
        with folder_lock(state.run.root, what="reproduce run"):  # one run per run directory at a time
            _execute(state)
    return state


def _execute(state: RunState) -> None:
    cfg = state.config
    started = time.perf_counter()
    if cfg.robust_model is not None:  # read (and so checked) before anything is written
        given_model_step(state, "adversarial", cfg.robust_model, cfg.robust_model_arch, cfg.robust_model_kwargs)
    state.run.root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(state.run.path("config.json"), {"given": state.given, "resolved": to_dict(cfg)})
    log.info("reproduce: %s, %d training / %d test images, device %s, seed %d, run directory %s", dataset_name(cfg),
             len(state.train), len(state.test), state.device, cfg.seed, state.run.root)
    train_step(state, "standard", state.train, cfg.standard, state.data_key)
    if cfg.robust_model is None:
        train_step(state, "adversarial", state.train, cfg.adversarial, state.data_key)
    for kind in SETS:
        construct_step(state, kind)
    train_cfgs = {"d_r": cfg.train_d_r, "d_nr": cfg.train_d_nr, "d_rand": cfg.train_d_rand, "d_det": cfg.train_d_det}
    for kind in SETS:
        train_step(state, kind, state.datasets[kind], train_cfgs[kind], state.keys[f"data_{kind}"])
    for name in MODEL_NAMES:
        evaluate_step(state, name)
        if cfg.evaluation.worst_case.enabled:
            worst_case_step(state, name)
        if cfg.evaluation.sanity.enabled:
            sanity_step(state, name)
    state.extras = run_extras(state)
    state.results = results_of(state, time.perf_counter() - started)
    write_report(state, state.results)


class Reproduction:
    """One run of the pipeline in one run directory (``Reproduction(cfg, given, out).execute()``)."""

    def __init__(self, cfg: ReproduceConfig, given: dict[str, Any], out_dir: str | Path, *,
                 data: tuple[ImageDataset, ImageDataset] | None = None, runtime: Runtime | None = None) -> None:
        self.cfg, self.given, self.out_dir, self.data, self.runtime = cfg, given, Path(out_dir), data, runtime
        self.state: RunState | None = None

    def execute(self) -> dict[str, Any]:
        self.state = run_reproduction(self.cfg, self.given, self.out_dir, data=self.data, runtime=self.runtime)
        return self.state.results


# -- results.json -------------------------------------------------------------------------------
def _with_interval(acc: float, n: int) -> list[float]:
    return list(wilson_interval(count_of(acc, n), n))


def results_of(state: RunState, seconds: float) -> dict[str, Any]:
    cfg, n = state.config, len(state.test)
    models = {}
    for name in MODEL_NAMES:
        ev = state.evaluations[name]
        models[name] = {
            "training_set": TRAINING_SETS[name],
            "clean_accuracy": ev["clean_accuracy"],
            "clean_interval": _with_interval(ev["clean_accuracy"], n),
            "robust_accuracy": [{**r, "interval": _with_interval(r["accuracy"], n)} for r in ev["robust_accuracy"]],
            "worst_case": [{**r, "interval": _with_interval(r["robust_accuracy"], r["n"])} for r in state.worst_case.get(name, [])],
            "sanity": state.sanity.get(name),
            "train_accuracy_final": state.histories[name][-1]["train_accuracy"] if state.histories[name] else None,
        }
    constructions = {}
    for kind in SETS:
        m = state.manifests[kind]
        constructions[kind] = {"built_with": CONSTRUCTION_MODEL[kind], "count": m["count"], "summary": m["summary"],
                               "settings": m["config"]["matching"] or m["config"]["relabel"]}
    # accuracy of the models used for construction on the constructed sets, with the new labels
    for kind in ("d_rand", "d_det"):
        constructions[kind]["standard_model_accuracy_on_new_labels"] = accuracy(
            state.models["standard"], state.datasets[kind], batch_size=cfg.evaluation.batch_size, device=state.device)
    out = {
        "format": "advfeatures-results/2",
        "preset": cfg.preset,
        "dataset": {"name": dataset_name(cfg), "train_count": len(state.train), "test_count": n,
                    "image_shape": list(state.train.image_shape), "classes": state.train.classes,
                    "chance_accuracy": 1.0 / state.train.num_classes, "digest": state.data_key,
                    # what always answering the test split's most common class scores (= chance when balanced)
                    "majority_class_share": majority_share(state.test),
                    "classes_without_test_images": classes_without_images(state.test)},
        "config": {"given": state.given, "resolved": to_dict(cfg)},
        "seeds": {"run": cfg.seed, "data_split": cfg.seed, "streams": state.seeds,
                  "derivation": "stream seed = advfeatures.seeding.derive_seed(run seed, stream) = "
                                "(run seed × 1000003 + stream) mod (2^63 − 1); training adds the stage's own seed"},
        "robust_accuracy_definition": "share of test images classified correctly both clean and under attack",
        "interval": "Wilson score interval, 95%",
        "versions": versions(),
        "device": str(state.device),
        "models": models,
        "constructions": constructions,
        "extras": state.extras,
        "timing": {"total_seconds": seconds, "steps": state.run.timings},
    }
    out["findings"] = findings_mod.findings([out], margin=cfg.evaluation.margin_se)
    out["margin"] = MARGIN_TEXT.format(margin=cfg.evaluation.margin_se)
    out["paper_reference"] = PAPER_REFERENCE
    return out


def majority_share(test: ImageDataset) -> float:
    """The share of ``test`` in its most common class: the accuracy of a model that ignores its input."""
    return int(torch.bincount(test.labels.long()).max()) / max(1, len(test))


def classes_without_images(ds: ImageDataset) -> list[str]:
    """The classes of ``ds`` that none of its images has (a test split missing a class)."""
    counts = torch.bincount(ds.labels.long(), minlength=ds.num_classes)
    return [ds.classes[i] for i in range(ds.num_classes) if int(counts[i]) == 0]


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


# -- several seeds ------------------------------------------------------------------------------
def seed_dir(out_dir: str | Path, seed: int) -> Path:
    return Path(out_dir) / f"seed{seed}"


def run_seeds(cfg: ReproduceConfig, given: dict[str, Any], out_dir: str | Path, seeds: list[int], *,
              data: tuple[ImageDataset, ImageDataset] | None = None, run_dirs: dict[int, Path] | None = None,
              runtime: Runtime | None = None) -> dict[str, Any]:
    """Run the pipeline once per seed (each in its own run directory, each reusing its finished
    steps), then write the aggregate ``results.json`` and ``report.md`` in ``out_dir``.

    Each seed draws its own data split (unless the dataset or ``data`` fixes one: the aggregate records
    ``same_data_every_seed`` from the per-seed data digests), initialisations and attacks.
    ``run_dirs`` may place a seed's run elsewhere (default ``out_dir/seed<N>``); ``runtime`` as in
    :func:`run_reproduction`.
    """
    per_seed, dirs = [], {}
    with folder_lock(out_dir, what="reproduce run"):  # the aggregate's folder (each seed's run locks its own)
        for s in seeds:
            where = (run_dirs or {}).get(s, seed_dir(out_dir, s))
            dirs[s] = str(where)
            cfg_s = dataclasses.replace(cfg, seed=s)
            per_seed.append(run_reproduction(cfg_s, {**given, "seed": s}, where, data=data, runtime=runtime).results)
        agg = aggregate(per_seed, margin=cfg.evaluation.margin_se)
        agg["runs"] = dirs
        agg["config"] = {"given": {**given, "seeds": list(seeds)}, "resolved": to_dict(cfg)}
        write_aggregate_report(Path(out_dir), agg)
    return agg


def aggregate(per_seed: list[dict[str, Any]], *, margin: float = 2.0) -> dict[str, Any]:
    """Mean ± std over seeds and the pooled Wilson interval of every accuracy; findings re-judged
    with the seeds' spread (see :func:`.stats.judge`)."""
    first = per_seed[0]
    counts = [r["dataset"]["test_count"] for r in per_seed]
    models = {}
    for name, m in first["models"].items():
        runs = [r["models"][name] for r in per_seed]
        models[name] = {
            "training_set": m["training_set"],
            "clean_accuracy": summary([r["clean_accuracy"] for r in runs], counts),
            "worst_case": [{"norm": w["norm"], "eps": w["eps"], "members": [x["name"] for x in w["members"]],
                            **summary([r["worst_case"][i]["robust_accuracy"] for r in runs], counts)}
                           for i, w in enumerate(m.get("worst_case") or [])],
            "robust_accuracy": [{"attack": a["attack"], "norm": a["norm"], "eps": a["eps"], "steps": a["steps"],
                                 **summary([r["robust_accuracy"][i]["accuracy"] for r in runs], counts)}
                                for i, a in enumerate(m["robust_accuracy"])],
            "sanity_flags": [sorted((r.get("sanity") or {}).get("flags", [])) if r.get("sanity") else None for r in runs],
        }
    return {
        "format": "advfeatures-results-seeds/1",
        "preset": first["preset"],
        "seeds": [r["seeds"]["run"] for r in per_seed],
        "dataset": {**{k: first["dataset"][k] for k in ("name", "train_count", "image_shape", "classes", "chance_accuracy")},
                    "test_count_per_seed": counts,
                    "majority_class_share_per_seed": [r["dataset"].get("majority_class_share") for r in per_seed],
                    # a fixed split (train and test files) gives every seed the same data; digits' split is drawn per seed
                    "same_data_every_seed": len({r["dataset"].get("digest") for r in per_seed}) == 1
                    and first["dataset"].get("digest") is not None},
        "robust_accuracy_definition": first["robust_accuracy_definition"],
        "interval": "Wilson score interval, 95%, of the counts pooled over seeds; ± is the sample std over seeds",
        "models": models,
        "findings": findings_mod.findings(per_seed, margin=margin),
        "margin": MARGIN_TEXT.format(margin=margin),
        "timing": {"per_seed_seconds": [r["timing"]["total_seconds"] for r in per_seed]},
        "device": first["device"],
        "versions": first["versions"],
        "paper_reference": first["paper_reference"],
        "config": first["config"],
        "worst_case_settings": first["config"]["resolved"]["evaluation"]["worst_case"],
    }


# -- reopening a finished run ---------------------------------------------------------------------
def open_run(path: str | Path, *, data: tuple[ImageDataset, ImageDataset] | None = None, device: str | None = None) -> RunState:
    """A finished (or partly finished) run directory as a :class:`RunState`: its configuration,
    data, trained models, constructed datasets and, when written, its results.

    The data is reloaded from its source with the run's configuration (or taken from ``data``) and
    checked against the digest the run recorded, so a changed dataset is an error, not silently
    other numbers. Nothing is recomputed.
    """
    root = Path(path)
    if not (root / "config.json").is_file():
        raise DataError(f"{root} is not a reproduce run directory (no config.json); pass the --out folder of a run")
    saved = read_json(root / "config.json")
    resolved = dict(saved["resolved"])
    if device is not None:
        resolved["device"] = device
    cfg = from_dict(ReproduceConfig, resolved).validate()
    state = new_state(cfg, saved.get("given", {}), root, data=data)
    results = read_json(root / "results.json") if (root / "results.json").is_file() else None
    recorded = (results or {}).get("dataset", {}).get("digest")
    if recorded is not None and recorded != state.data_key:
        raise DataError(f"the data loaded for {root} differs from the data the run used (digest {state.data_key} vs "
                        f"{recorded}); pass the run's data with data=(train, test)")
    for name in MODEL_NAMES:
        file = root / "models" / f"{name}.safetensors"
        if file.is_file():
            state.models[name] = load_model(file, device=state.device)
    for kind in SETS:
        if (root / "datasets" / kind / "manifest.json").is_file():
            state.datasets[kind], state.manifests[kind] = load_constructed(root / "datasets" / kind,
                                                                           classes=state.train.classes, name=kind)
    state.results = results
    if results is not None:
        for name, m in results["models"].items():
            state.evaluations[name] = {"clean_accuracy": m["clean_accuracy"], "robust_accuracy": m["robust_accuracy"]}
            state.worst_case[name] = m.get("worst_case") or []
            if m.get("sanity"):
                state.sanity[name] = m["sanity"]
        state.extras = results.get("extras") or {}
    return state
