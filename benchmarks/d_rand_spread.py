"""Where does the spread of the Fashion-MNIST D_rand accuracy over seeds come from?

The ``fashion-mnist`` preset's model trained on D_rand scored 56.6%, 40.3% and 26.5% on the real
test set for run seeds 0, 1 and 2 (docs/reports/fashion-mnist-seeds), while fitting its own
training set at 99.0-99.7%. A run seed changes two things: the *dataset* (the standard model's
initialisation and batch order, then the construction's random targets) and the *training on it*
(the D_rand model's initialisation, batch order and crops). This script separates them:

1. for each data seed, rebuild the standard model and D_rand exactly as the preset's pipeline does
   (same config, same named stream seeds, :func:`advfeatures.construct.build_dataset`) and train
   the preset's D_rand model on it with the pipeline's own training seed: the first rows must
   reproduce the published numbers (a difference is a finding in itself);
2. train the same recipe on each of those datasets with several training seeds (the pipeline's
   training seed of every data seed given, so the recipes are swapped between datasets, plus
   ``--extra-train-seeds``): if the spread is the dataset's, rows of one dataset agree with each
   other and differ between datasets; if it is the training's, a dataset's rows spread as widely
   as the published seeds do;
3. optionally, the same with one training setting changed (``--variants``, e.g. ``lr=0.05`` or
   ``milestones=[]``), to see whether another recipe makes D_rand stable.

For every D_rand model the table gives the real test accuracy after each epoch (does it peak and
then fall?), the final training accuracy, the test accuracy with the BatchNorm statistics
re-estimated on clean training images (x_adv are ε = 4 away from the clean images the model is
tested on, so the running statistics it keeps are those of perturbed images), and the share of
test images given the most frequent class (a collapse onto few classes). For every dataset: the
standard model's clean test accuracy and the share of x_adv it classifies as their target t.

The per-epoch accuracies come from a hook on the objective's ``end_epoch`` (the model is put in
eval mode, scored on the test images, and the loop puts it back in train mode at the next epoch):
no randomness is drawn and no parameter or BatchNorm buffer changes, so the final model is the one
:func:`advfeatures.train.train_model` gives without the hook (step 1 checks it against the
published accuracy).

Standard models and datasets are cached under ``--out`` (rerunning reuses them). Measured on a
shared 2-core CPU (load 2-3) with the preset's two threads: 1.5-4 min per standard model and D_rand,
20-60 s per D_rand model; three data seeds with five training seeds each took about 24 minutes.
Results: /work/notes/drand-results.md (for benchmarks/RESULTS.md).

Usage::

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/d_rand_spread.py --data-seeds 0,1,2 \\
        --extra-train-seeds 3,4 --out /tmp/d_rand_spread --json /tmp/d_rand_spread/main.json
    # then only the variants, on the cached datasets, with three training seeds each:
    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/d_rand_spread.py --data-seeds 0,2 \\
        --extra-train-seeds 3 --preset-seeds 0 --variants "lr=0.05;milestones=[]" --out /tmp/d_rand_spread
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import advfeatures.train as train_mod
from advfeatures.construct import build_dataset, is_finished, load_constructed
from advfeatures.errors import ConfigError
from advfeatures.evaluate import accuracy, predict
from advfeatures.experiments.config import resolve_config
from advfeatures.experiments.pipeline import initial_model, load_data
from advfeatures.experiments.state import named_seeds
from advfeatures.models import load_model, save_model
from advfeatures.runtime.config import runtime_applied
from advfeatures.train import TrainConfig, train_model

PUBLISHED = Path(__file__).resolve().parent.parent / "docs" / "reports" / "fashion-mnist-seeds"


@contextlib.contextmanager
def per_epoch(score):
    """Call ``score(model, epoch)`` at the end of every epoch of :func:`train_model` (through the
    objective's ``end_epoch`` hook, which the loop calls after each epoch's training batches)."""
    real = train_mod.build_objective

    def wrapped(*args, **kwargs):
        objective = real(*args, **kwargs)
        inner = objective.end_epoch

        def end_epoch(model, epoch):
            out = inner(model, epoch)
            score(model, epoch)
            return out

        objective.end_epoch = end_epoch
        return objective

    train_mod.build_objective = wrapped
    try:
        yield
    finally:
        train_mod.build_objective = real


def clean_bn_accuracy(model: nn.Module, clean, test, rows: int = 5000, batch: int = 500) -> float:
    """Test accuracy of a copy of ``model`` whose BatchNorm running statistics are re-estimated
    (a plain average over batches of ``batch``) on the first ``rows`` clean training images."""
    m = copy.deepcopy(model)
    bns = [b for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return float("nan")
    for b in bns:
        b.reset_running_stats()
        b.momentum = None  # cumulative average
    m.train()
    with torch.no_grad():
        for x, _ in clean.head(rows).iter_batches(batch):
            m(x)
    m.eval()
    return accuracy(m, test, batch_size=1000)


def standard_and_d_rand(cfg, train, test, seeds: dict[str, int], out: Path, device) -> dict[str, Any]:
    """The pipeline's standard model and D_rand for ``cfg.seed`` (cached in ``out``)."""
    path = out / "standard.safetensors"
    t0 = time.process_time()
    if path.is_file():
        standard = load_model(path, device=device)
    else:
        tcfg = dataclasses.replace(cfg.standard, seed=seeds["train_standard"] + cfg.standard.seed)
        standard = initial_model(cfg, train, tcfg.seed)
        train_model(standard, train, tcfg, device=device, desc="train standard")
        save_model(standard, path)
        standard = load_model(path, device=device)  # as the pipeline does: the saved copy
    t_std = time.process_time() - t0
    c = cfg.construction
    folder = out / "d_rand"
    t0 = time.process_time()
    if not is_finished(folder, "spread"):
        build_dataset("d_rand", standard, train, folder, relabel=c.relabel, seed=seeds["construct_d_rand"],
                      batch_size=c.batch_size, shard_size=c.shard_size, device=device, key="spread")
    t_con = time.process_time() - t0
    d_rand, manifest = load_constructed(folder, classes=train.classes, name="d_rand")
    return {"standard": standard, "d_rand": d_rand, "summary": manifest["summary"],
            "standard_clean": accuracy(standard, test, batch_size=1000),
            "standard_on_targets": accuracy(standard, d_rand, batch_size=1000),
            "cpu_s": {"standard": t_std, "construct": t_con}}


def train_d_rand(cfg, tcfg: TrainConfig, data, train, test, seed: int, device) -> dict[str, Any]:
    """One D_rand model: its per-epoch test accuracy and the end-of-training diagnostics."""
    tcfg = dataclasses.replace(tcfg, seed=seed)
    model = initial_model(cfg, data, seed)
    curve: list[float] = []
    t0 = time.process_time()
    with per_epoch(lambda m, e: curve.append(accuracy(m, test, batch_size=1000))):
        history = train_model(model, data, tcfg, device=device, desc="train d_rand")
    cpu = time.process_time() - t0
    pred = predict(model, test, batch_size=1000)
    counts = torch.bincount(pred, minlength=test.num_classes)
    top, top_class = counts.max().item() / len(test), int(counts.argmax())
    return {"curve": curve, "test": accuracy(model, test, batch_size=1000), "train_final": history[-1]["train_accuracy"],
            "clean_bn": clean_bn_accuracy(model, train, test), "top_class_share": top, "top_class": top_class, "cpu_s": cpu}


def parse_variant(text: str) -> dict[str, Any]:
    """``"lr=0.05,epochs=16"`` → {"lr": 0.05, "epochs": 16} (values are JSON)."""
    out = {}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for part in filter(None, (p.strip() for p in text.split(","))):
        k, sep, v = part.partition("=")
        if not sep or k.strip() not in known:
            raise SystemExit(f"--variants: {part!r} must be key=value with a train_d_rand key ({', '.join(sorted(known))})")
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            raise SystemExit(f"--variants: the value of {k.strip()!r} must be JSON (e.g. 0.05, [], [0.5]), got {v!r}") from None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-seeds", default="0,2", help="run seeds whose standard model and D_rand are rebuilt")
    ap.add_argument("--extra-train-seeds", default="3,4", help="D_rand training seeds besides the pipeline's")
    ap.add_argument("--variants", default="", help="';'-separated train_d_rand changes, e.g. 'lr=0.05;milestones=[]'")
    ap.add_argument("--variant-seeds", type=int, default=3, help="training seeds per dataset for each variant")
    ap.add_argument("--preset-seeds", type=int, default=None,
                    help="train the preset's recipe with only the first N training seeds (0: only the variants)")
    ap.add_argument("--out", default="/tmp/d_rand_spread")
    ap.add_argument("--json", default=None, help="also write every number here")
    ap.add_argument("--train-limit", type=int, default=None,
                    help="a smoke test on fewer training images (default: the preset's 20 000; not comparable)")
    args = ap.parse_args()

    data_seeds = [int(s) for s in args.data_seeds.split(",")]
    base_cfg, _ = resolve_config("fashion-mnist")
    rows: list[dict[str, Any]] = []
    datasets: dict[int, dict[str, Any]] = {}
    print(f"load average at the start {os.getloadavg()[0]:.2f}; preset train_d_rand: {dataclasses.asdict(base_cfg.train_d_rand)}")
    with runtime_applied(base_cfg.runtime) as rt:
        print(f"device {rt.device}, torch threads {torch.get_num_threads()}")
        train_seeds = [named_seeds(s)["train_d_rand"] + base_cfg.train_d_rand.seed for s in data_seeds]
        train_seeds += [int(s) for s in args.extra_train_seeds.split(",") if s]
        recipes = [("preset", {}, train_seeds[:args.preset_seeds])] if args.preset_seeds != 0 else []
        for v in filter(None, (p.strip() for p in args.variants.split(";"))):
            recipes.append((v, parse_variant(v), train_seeds[:args.variant_seeds]))
        for s in data_seeds:
            cfg, _ = resolve_config("fashion-mnist", seed=s, train_limit=args.train_limit)
            train, test = load_data(cfg)
            built = standard_and_d_rand(cfg, train, test, named_seeds(s), Path(args.out) / f"seed{s}", rt.device)
            built.update(train=train, test=test, cfg=cfg)
            datasets[s] = built
            pub = PUBLISHED / f"seed{s}" / "results.json"
            pub = json.loads(pub.read_text())["models"] if pub.is_file() else {}
            print(f"\ndata seed {s}: standard clean {built['standard_clean']:.4f} (published "
                  f"{pub.get('standard', {}).get('clean_accuracy', float('nan')):.4f}), standard on (x_adv, t) "
                  f"{built['standard_on_targets']:.4f}, targets reached {built['summary']['share']:.4f}; CPU s "
                  f"{built['cpu_s']['standard']:.0f} + {built['cpu_s']['construct']:.0f}", flush=True)
            built["published_d_rand"] = pub.get("d_rand", {}).get("clean_accuracy")
        print("\n| data seed | recipe | train seed | test acc per epoch | final test | BN on clean | top class (index) | train acc | published |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, change, seeds in recipes:
            for s, built in datasets.items():
                try:
                    tcfg = dataclasses.replace(built["cfg"].train_d_rand, **change).validate()
                except ConfigError as exc:
                    raise SystemExit(f"--variants {name!r}: {exc}") from None
                for ts in seeds:
                    r = train_d_rand(built["cfg"], tcfg, built["d_rand"], built["train"], built["test"], ts, rt.device)
                    own = ts == named_seeds(s)["train_d_rand"] + base_cfg.train_d_rand.seed
                    pub = f"{built['published_d_rand']:.4f}" if own and name == "preset" and built["published_d_rand"] else ""
                    print(f"| {s} | {name} | {ts}{' (own)' if own else ''} | {' '.join(f'{a:.3f}' for a in r['curve'])} | "
                          f"{r['test']:.4f} | {r['clean_bn']:.4f} | {r['top_class_share']:.3f} ({r['top_class']}) | {r['train_final']:.4f} | {pub} |",
                          flush=True)
                    rows.append({"data_seed": s, "recipe": name, "change": change, "train_seed": ts, "own": own, **r})
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        summary = {s: {k: d[k] for k in ("standard_clean", "standard_on_targets", "summary", "cpu_s", "published_d_rand")}
                   for s, d in datasets.items()}
        Path(args.json).write_text(json.dumps({"datasets": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
