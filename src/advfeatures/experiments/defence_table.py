"""The defence report: every training objective on one dataset, side by side.

For each defence of :data:`DEFENCES` one model of the same architecture is trained with the same
data, epochs and seed (free adversarial training gets ``epochs / m`` epochs, its paper's budget),
timed in the same run, and measured on the first ``test_limit`` test images:

* clean accuracy;
* worst-case robust accuracy at Linf ε: the standard ensemble (APGD-CE, APGD-T, FAB-T, Square) of
  :func:`advfeatures.evaluate.worst_case_evaluation`;
* IBP verified accuracy at the same ε (every model: it is a lower bound on robust accuracy for any
  model, and non-trivial only for the IBP-trained one);
* for the Gaussian-noise model, randomized-smoothing certified accuracy against the L2 radius
  (CERTIFY with n0 / n samples), and at a few radii the ensemble's robust accuracy on the noise-
  averaged smoothed model (:class:`~advfeatures.certify.smoothing.NoiseAveraged`);
* training cost: seconds of training over those of standard training, measured in the same run.

Every report runs the soundness check *certified ≤ robust at the same radius* (IBP against the
ensemble at ε, smoothing against the ensemble at each evaluated radius) and records violations.
Trained models are kept under ``out/models`` with their training seconds, so an interrupted run
resumes with the models it already has.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..certify.ibp import ibp_verified_accuracy
from ..certify.smoothing import NoiseAveraged, certified_accuracy, certify_dataset
from ..data import load_dataset
from ..defences import DefenceConfig
from ..errors import ConfigError
from ..models import build_model, load_model, save_model
from ..evaluate import predict, worst_case_evaluation
from ..storage import write_json_atomic, write_text_atomic
from ..threats import check_positive, check_steps
from ..train import AdversaryConfig, TrainConfig, train_model
from .config import apply_overrides, from_dict, to_dict

log = logging.getLogger(__name__)

DEFENCES = ("standard", "pgd", "fast", "free", "trades", "logit_pairing", "ibp", "gaussian")


@dataclass
class DefenceTableConfig:
    dataset: str = "digits"
    data_root: str | None = None
    train_limit: int | None = None
    test_limit: int = 200
    arch: str = "cnn"
    arch_kwargs: dict[str, Any] = field(default_factory=lambda: {"width": 16, "hidden": 64})
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.05
    crop_padding: int = 1
    eps: float = 0.1  # Linf, training and evaluation
    pgd_steps: int = 7
    defence: DefenceConfig = field(default_factory=lambda: DefenceConfig(replays=4, beta=6.0))
    defences: tuple[str, ...] = DEFENCES
    ensemble_steps: int = 50
    square_queries: int = 1000
    sigma: float = 0.25
    smoothing_n0: int = 100
    smoothing_n: int = 1000
    smoothing_alpha: float = 0.001
    smoothing_limit: int = 100  # images certified and attacked for the smoothing curve
    smoothing_radii: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0)
    smoothing_attack_radii: tuple[float, ...] = (0.25, 0.5)
    noise_samples: int = 32
    cost_rounds: int = 3  # interleaved rounds of one timed epoch per defence (the cost column)
    seed: int = 0

    @classmethod
    def resolve(cls, overrides: list[str] | tuple[str, ...] = (), **settings: Any) -> DefenceTableConfig:
        """The defaults, then ``settings`` (top-level fields, e.g. ``dataset``), then ``--set
        key.path=value`` ``overrides``; checked."""
        data = {**to_dict(cls()), **settings}
        return from_dict(cls, apply_overrides(data, overrides)).validate()

    def validate(self) -> DefenceTableConfig:
        unknown = [d for d in self.defences if d not in DEFENCES]
        if unknown or "standard" not in self.defences:
            raise ConfigError(f"defences must include 'standard' (the cost reference) and come from {', '.join(DEFENCES)}; "
                              f"got {list(self.defences)}")
        for name in ("test_limit", "epochs", "batch_size", "pgd_steps", "ensemble_steps", "square_queries",
                     "smoothing_n0", "smoothing_n", "smoothing_limit", "noise_samples", "cost_rounds"):
            check_steps(getattr(self, name), name)
        check_positive("eps", self.eps)
        check_positive("sigma", self.sigma)
        self.defence.validate()
        return self

    def train_config(self, objective: str) -> TrainConfig:
        epochs = max(1, round(self.epochs / self.defence.replays)) if objective == "free" else self.epochs
        adversary = None
        if objective != "standard" and objective != "gaussian":
            adversary = AdversaryConfig(norm="Linf", eps=self.eps, steps=self.pgd_steps, step_size=2.5 * self.eps / self.pgd_steps,
                                        random_start=True)
        return TrainConfig(epochs=epochs, batch_size=self.batch_size, lr=self.lr, crop_padding=self.crop_padding, flip=False,
                           adversary=adversary, objective=objective, defence=self.defence, seed=self.seed).validate()


def _train_or_load(cfg: DefenceTableConfig, name: str, train, out: Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    path, info_path = out / "models" / f"{name}.safetensors", out / "models" / f"{name}.json"
    tcfg = cfg.train_config(name)
    settings = json.loads(json.dumps(asdict(tcfg)))
    if path.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("train_config") == settings and info.get("arch") == [cfg.arch, cfg.arch_kwargs]:
            log.info("defence %s: reusing %s", name, path)
            return load_model(path, device=device), info
    torch.manual_seed(cfg.seed)  # the initial weights: the same for every defence
    model = build_model(cfg.arch, train.image_shape, train.num_classes, **cfg.arch_kwargs).to(device)
    start = time.perf_counter()
    history = train_model(model, train, tcfg, device=device, desc=f"train {name}")
    seconds = time.perf_counter() - start
    save_model(model, path)
    info = {"train_config": settings, "arch": [cfg.arch, cfg.arch_kwargs], "train_seconds": seconds, "history": history}
    write_json_atomic(info_path, info)
    return model, info


def _warm_up(cfg: DefenceTableConfig, train, device: torch.device) -> None:
    """One untimed epoch on a few batches, so that the first timed defence does not pay for the
    allocator's and the kernels' first use (measured: 2× on the first model otherwise)."""
    model = build_model(cfg.arch, train.image_shape, train.num_classes, **cfg.arch_kwargs).to(device)
    tcfg = cfg.train_config("pgd")
    tcfg.epochs = 1
    train_model(model, train.head(4 * cfg.batch_size), tcfg, device=device, desc="warm-up")


def _evaluate_or_load(cfg: DefenceTableConfig, name: str, model, info: dict, x, y, out: Path):
    """The defence's row, its checks and (for the Gaussian model) the smoothing results; cached in
    ``out/evals`` under its settings, so a resumed report does not attack the same model again."""
    # only what this defence's evaluation depends on: the smoothing settings matter for the Gaussian model alone
    settings = {k: v for k, v in json.loads(json.dumps(asdict(cfg))).items() if k not in ("defences", "cost_rounds")
                and (name == "gaussian" or not (k.startswith("smoothing_") or k == "noise_samples"))}
    key = {"eval": settings, "train_config": info["train_config"], "train_seconds": info["train_seconds"]}
    path = out / "evals" / f"{name}.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached["row"], cached["checks"], cached["smoothing"]
    clean = float((predict(model, x) == y).float().mean())
    ens = worst_case_evaluation(model, x, y, norm="Linf", eps=cfg.eps, steps=cfg.ensemble_steps,
                                square_queries=cfg.square_queries, seed=cfg.seed)
    ibp = ibp_verified_accuracy(model, x, y, eps=cfg.eps)
    history = info["history"]
    row = {"defence": name, "epochs": info["train_config"]["epochs"], "epochs_run": len(history), "clean_accuracy": clean,
           "robust_accuracy": ens["robust_accuracy"], "members": [(m["name"], m["robust_accuracy"]) for m in ens["members"]],
           "ibp_verified_accuracy": ibp["verified_accuracy"], "train_seconds": info["train_seconds"],
           "stopped_early": bool(history and history[-1].get("stopped"))}
    violated = bool((ibp["verified"].to(ens["robust"].device) & ~ens["robust"]).any())
    checks = [{"check": f"{name}: IBP-verified points are robust to the ensemble at Linf {cfg.eps:g}", "passed": not violated}]
    smoothing = None
    if name == "gaussian":
        smoothing = _smoothing(cfg, model, x, y, checks)
        row["smoothing_certified_accuracy"] = dict(zip(map(str, cfg.smoothing_radii), smoothing["certified_accuracy"]))
    write_json_atomic(path, {"key": key, "row": row, "checks": checks, "smoothing": smoothing})
    return row, checks, smoothing


def _cost_or_load(cfg: DefenceTableConfig, train, device: torch.device, out: Path) -> dict[str, float]:
    """The interleaved per-epoch seconds, cached in ``out/cost.json`` under the report's settings
    (or taken from a finished ``results.json`` with the same settings)."""
    key = {"config": json.loads(json.dumps(asdict(cfg))), "threads": torch.get_num_threads(), "device": str(device)}
    path = out / "cost.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached["epoch_seconds"]
    previous = out / "results.json"
    if previous.is_file():
        old = json.loads(previous.read_text())
        if old.get("config") == key["config"] and old.get("threads") == key["threads"] \
                and all("epoch_seconds" in r for r in old["rows"]) and [r["defence"] for r in old["rows"]] == list(cfg.defences):
            per_epoch = {r["defence"]: r["epoch_seconds"] for r in old["rows"]}
            write_json_atomic(path, {"key": key, "epoch_seconds": per_epoch})
            return per_epoch
    per_epoch = _interleaved_epoch_seconds(cfg, train, device)
    write_json_atomic(path, {"key": key, "epoch_seconds": per_epoch})
    return per_epoch


def _interleaved_epoch_seconds(cfg: DefenceTableConfig, train, device: torch.device) -> dict[str, float]:
    """Seconds of one training epoch per defence: the median of ``cost_rounds`` rounds, each round
    timing every defence once in turn, so that load from other processes falls on all of them alike
    (the whole-run times are kept beside it)."""
    times: dict[str, list[float]] = {name: [] for name in cfg.defences}
    for _ in range(cfg.cost_rounds):
        for name in cfg.defences:
            tcfg = cfg.train_config(name)
            tcfg.epochs = 1
            torch.manual_seed(cfg.seed)
            model = build_model(cfg.arch, train.image_shape, train.num_classes, **cfg.arch_kwargs).to(device)
            start = time.perf_counter()
            train_model(model, train, tcfg, device=device, desc=f"time {name}")
            times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def defence_table(cfg: DefenceTableConfig, out: str | Path, *, device: str | torch.device = "cpu") -> dict:
    """Train, measure and write ``out/defences.md``, ``out/results.json`` and ``out/smoothing.png``."""
    cfg.validate()
    out = Path(out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    train, test = load_dataset(cfg.dataset, root=cfg.data_root, seed=cfg.seed)
    train = train.head(cfg.train_limit)
    test = test.head(cfg.test_limit)
    x, y = test.images.to(device), test.labels.to(device)
    rows, checks = [], []
    smoothing: dict[str, Any] | None = None
    _warm_up(cfg, train, device)
    for name in cfg.defences:
        model, info = _train_or_load(cfg, name, train, out, device)
        row, row_checks, row_smoothing = _evaluate_or_load(cfg, name, model.eval(), info, x, y, out)
        # IBP bounds cost one forward pass: verified accuracy at smaller radii too, for every model
        row["ibp_verified_curve"] = {f"{f * cfg.eps:g}": ibp_verified_accuracy(model, x, y, eps=f * cfg.eps)["verified_accuracy"]
                                     for f in (0.25, 0.5, 1.0)}
        rows.append(row)
        checks += row_checks
        smoothing = row_smoothing or smoothing
        log.info("defence %s: clean %.1f%%, robust %.1f%%, IBP verified %.1f%%, %.1fs", name, 100 * row["clean_accuracy"],
                 100 * row["robust_accuracy"], 100 * row["ibp_verified_accuracy"], row["train_seconds"])
    per_epoch = _cost_or_load(cfg, train, device, out)
    base = next(r for r in rows if r["defence"] == "standard")
    for r in rows:
        r["epoch_seconds"] = per_epoch[r["defence"]]
        r["cost_ratio"] = r["epochs_run"] * per_epoch[r["defence"]] / (base["epochs_run"] * per_epoch["standard"])
        r["whole_run_ratio"] = r["train_seconds"] / base["train_seconds"]
    result = {"config": json.loads(json.dumps(asdict(cfg))), "n_test": int(x.shape[0]), "n_train": len(train),
              "rows": rows, "smoothing": smoothing, "checks": checks, "threads": torch.get_num_threads()}
    write_json_atomic(out / "results.json", result)
    write_text_atomic(out / "defences.md", render_markdown(result))
    if smoothing is not None:
        plot_smoothing_curve(smoothing, out / "smoothing.png")
    return result


def _smoothing(cfg: DefenceTableConfig, model, x, y, checks: list) -> dict:
    xs, ys = x[: cfg.smoothing_limit], y[: cfg.smoothing_limit]
    start = time.perf_counter()
    cert = certify_dataset(model, xs, ys, sigma=cfg.sigma, n0=cfg.smoothing_n0, n=cfg.smoothing_n,
                           alpha=cfg.smoothing_alpha, seed=cfg.seed)
    certify_seconds = time.perf_counter() - start
    curve = certified_accuracy(cert, cfg.smoothing_radii)
    averaged = NoiseAveraged(model, cfg.sigma, cfg.noise_samples, seed=cfg.seed + 1).eval()
    attacked = []
    for r in cfg.smoothing_attack_radii:
        # every query costs noise_samples passes: a lighter ensemble (steps / 4, 3 target classes, queries / 10)
        ens = worst_case_evaluation(averaged, xs, ys, norm="L2", eps=r, steps=max(10, cfg.ensemble_steps // 4), n_target_classes=3,
                                    square_queries=max(100, cfg.square_queries // 10), seed=cfg.seed, batch_size=100)
        cert_r = certified_accuracy(cert, [r])[0]
        attacked.append({"radius": r, "certified_accuracy": cert_r, "ensemble_robust_accuracy": ens["robust_accuracy"],
                         "noise_averaged_clean_accuracy": ens["clean_accuracy"]})
        checks.append({"check": f"gaussian: smoothing certified accuracy ≤ ensemble robust accuracy of the smoothed model at L2 {r:g}",
                       "passed": cert_r <= ens["robust_accuracy"], "certified": cert_r, "robust": ens["robust_accuracy"]})
    return {"sigma": cfg.sigma, "n": int(xs.shape[0]), "n0": cfg.smoothing_n0, "samples": cfg.smoothing_n,
            "alpha": cfg.smoothing_alpha, "radii": list(cfg.smoothing_radii), "certified_accuracy": curve,
            "abstain_rate": cert["abstain_rate"], "certify_seconds": certify_seconds, "attacked": attacked}


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def render_markdown(result: dict) -> str:
    cfg = result["config"]
    eps = cfg["eps"]
    lines = [f"# Defences on {cfg['dataset']} ({result['n_train']} training images, first {result['n_test']} test images)", "",
             f"One `{cfg['arch']}` {cfg['arch_kwargs']} per defence, {cfg['epochs']} epochs (free AT: epochs / m), "
             f"batch {cfg['batch_size']}, lr {cfg['lr']}, seed {cfg['seed']}, {result['threads']} thread(s). Threat model "
             f"Linf ε = {eps:g}; adversarial training with {cfg['pgd_steps']}-step PGD (random start, step 2.5·ε/steps).", "",
             f"| defence | epochs | clean | robust (ensemble, Linf {eps:g}) | IBP verified (Linf {eps:g}) | "
             f"smoothing certified (L2 {cfg['smoothing_attack_radii'][0]:g}) | s / epoch | cost × standard | whole run s (× standard) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        smooth = r.get("smoothing_certified_accuracy")
        smooth_v = None
        if smooth is not None and result["smoothing"]:
            smooth_v = result["smoothing"]["attacked"][0]["certified_accuracy"]
        name = r["defence"] + (" (stopped early)" if r["stopped_early"] else "")
        lines.append(f"| {name} | {r['epochs']} | {_pct(r['clean_accuracy'])} | {_pct(r['robust_accuracy'])} | "
                     f"{_pct(r['ibp_verified_accuracy'])} | {_pct(smooth_v)} | {r['epoch_seconds']:.2f} | {r['cost_ratio']:.2f} | "
                     f"{r['train_seconds']:.1f} ({r['whole_run_ratio']:.2f}) |")
    lines += ["", "Robust accuracy is the per-example worst case over APGD-CE, APGD-T, FAB-T and Square "
              f"({cfg['ensemble_steps']} steps, {cfg['square_queries']} queries); the gaussian row's robust and IBP columns are "
              "its base classifier's. Cost: epochs run × seconds per epoch (median of "
              f"{cfg['cost_rounds']} interleaved rounds of one epoch per defence) over standard training's, measured in the same "
              "run; the whole-run column is each model's own training time, exposed to the machine's load at that moment."]
    fracs = list(result["rows"][0]["ibp_verified_curve"])
    lines += ["", "IBP verified accuracy at smaller Linf radii:", "", "| defence | " + " | ".join(f"ε = {e}" for e in fracs) + " |",
              "|---|" + "---|" * len(fracs)]
    lines += [f"| {r['defence']} | " + " | ".join(_pct(r["ibp_verified_curve"][e]) for e in fracs) + " |" for r in result["rows"]]
    s = result["smoothing"]
    if s:
        lines += ["", f"## Randomized smoothing (σ = {s['sigma']:g}, first {s['n']} test images, n0 = {s['n0']}, "
                  f"n = {s['samples']}, α = {s['alpha']:g}; abstained on {_pct(s['abstain_rate'])}; CERTIFY took "
                  f"{s['certify_seconds']:.1f} s)", "",
                  "| L2 radius | " + " | ".join(f"{r:g}" for r in s["radii"]) + " |",
                  "|---|" + "---|" * len(s["radii"]),
                  "| certified accuracy | " + " | ".join(_pct(v) for v in s["certified_accuracy"]) + " |", "",
                  "Against the ensemble (L2) on the noise-averaged smoothed model "
                  f"({cfg['noise_samples']} fixed noise draws; a stand-in for the smoothed classifier that attacks can use; "
                  f"a lighter ensemble: APGD-CE and APGD-T with {max(10, cfg['ensemble_steps'] // 4)} steps, 3 target classes, "
                  f"Square with {max(100, cfg['square_queries'] // 10)} queries):", "",
                  "| L2 radius | certified | ensemble robust | noise-averaged clean |", "|---|---|---|---|"]
        lines += [f"| {a['radius']:g} | {_pct(a['certified_accuracy'])} | {_pct(a['ensemble_robust_accuracy'])} | "
                  f"{_pct(a['noise_averaged_clean_accuracy'])} |" for a in s["attacked"]]
    lines += ["", "## Checks", ""]
    lines += [f"- {'PASS' if c['passed'] else 'FAIL'}: {c['check']}" for c in result["checks"]]
    return "\n".join(lines) + "\n"


def plot_smoothing_curve(smoothing: dict, path: Path) -> None:
    """Certified accuracy against L2 radius (and the ensemble's robust accuracy where measured), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..storage import atomic_path

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(smoothing["radii"], [100 * v for v in smoothing["certified_accuracy"]], marker="o", label="certified (CERTIFY)")
    att = smoothing.get("attacked") or []
    if att:
        ax.plot([a["radius"] for a in att], [100 * a["ensemble_robust_accuracy"] for a in att], "s--",
                label="ensemble robust (noise-averaged)")
    ax.set_xlabel("L2 radius")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"randomized smoothing, σ = {smoothing['sigma']:g}")
    ax.set_ylim(0, 100)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
