"""How long ``reproduce`` will take here, said before it starts.

The estimate is work times speed, each counted apart:

* **Work** (:func:`count_passes`): for every stage of the pipeline, how many images go through
  each kind of pass: ``train`` (a training step: forward, backward w.r.t. the weights and an
  optimiser step, per image), ``grad`` (a forward and a backward pass w.r.t. the *input*, in eval
  mode: one attack or matching step per image), ``forward``, ``fab_step`` (one FAB-T step: the
  linearised boundary's gradient, the projections and a forward pass) and ``square_query`` (one
  Square proposal and its forward pass). These follow from the configuration alone: epochs ×
  images, steps × images. Where the count depends on data a stated assumption is used and the
  stage is marked ``approximate``: how many training images a weak teacher gets wrong, and, for
  the attack stages (``evaluate``, ``worst_case``, ``sanity``), how many points each attack leaves
  unbroken, since a broken point leaves the batch (active sets): on a standard model most points
  fall within a few steps, on a robust one most stay. The estimate assumes :data:`ROBUST_SHARE`
  (:func:`_shares`); the upper bound, every point running every step of every attack, is counted
  exactly and printed beside it.
* **Speed** (:func:`measure_pass_seconds`): seconds per image of each kind of pass, measured on
  this machine with the preset's own model, batch size and thread count on a few random batches
  (a few seconds), through :func:`~advfeatures.train.train_model` itself for the training step
  and through FAB-T and Square themselves for their steps.

:func:`estimate_reproduce_time` multiplies the two and adds them up. A preset that needs a GPU
(``GPU_PRESETS``) also gets a one-line warning when the device is a CPU (:func:`gpu_warning`).
The estimate is for an empty run directory; a resumed run skips its finished steps.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

from .config import GPU_PRESETS, ReproduceConfig
from .state import MODEL_NAMES

# (training images, test images, image shape, classes) of each dataset, before train/test limits
DATASET_SIZES: dict[str, tuple[int, int, tuple[int, int, int], int]] = {
    "digits": (1437, 360, (1, 8, 8), 10),
    "mnist": (60000, 10000, (1, 28, 28), 10),
    "fashion-mnist": (60000, 10000, (1, 28, 28), 10),
    "cifar10": (50000, 10000, (3, 32, 32), 10),
}
KINDS = ("train", "grad", "forward", "fab_step", "square_query")
DISTILL_TEACHER_EPOCHS = 2  # science.distill's default
DISTILL_MISTAKE_SHARE = 0.25  # assumed: Fashion-MNIST's weak teacher got 23% wrong, digits' fewer
INVERSION_IMAGES = 16  # extras.inversion's n
# The attack stages' assumption (their active sets: a broken point leaves the batch). Each attack is
# assumed to leave ROBUST_SHARE of its test points unbroken (they run every step; the digits preset's
# mean worst-case robust accuracy over its six models and three radii is 13%, README), a point it
# breaks to cost BROKEN_STEP_SHARE of the steps, and a later member of the worst-case ensemble (or a
# later restart or target) to run only on the robust share. robust=1 is the upper bound.
ROBUST_SHARE = 0.15
BROKEN_STEP_SHARE = 0.1


def _shares(runs: int, first: bool, robust: float) -> float:
    """How many full runs over all attacked points ``runs`` runs of an attack cost (restarts or
    targets, each on the points no earlier run broke): the first run of a point's first attack
    costs ``robust`` full runs plus ``BROKEN_STEP_SHARE`` for the points it breaks; every other run
    sees only the ``robust`` share, which runs all its steps. 1 per run with ``robust=1``."""
    head = robust + (1 - robust) * BROKEN_STEP_SHARE if first else robust
    return head + (runs - 1) * robust


def member_passes(name: str, *, steps: int, runs: int = 1, queries: int = 0) -> dict[str, int]:
    """Passes per attacked image of one worst-case member when no point is broken (the upper bound):
    ``apgd-ce`` (``runs`` restarts), ``apgd-t`` and ``fab-t`` (``runs`` targets), ``square``. Each
    has its result's forward pass and the ensemble's check (2 forwards); an APGD run ends with a
    forward pass at its last iterate; the targeted ones rank the targets on the clean input first
    (FAB-T also checks the clean input); a FAB step is its own kind (the linearised boundary's
    gradient, the projections and a forward pass), and so is a Square query."""
    if name == "apgd-ce":
        return {"grad": runs * steps, "forward": runs + 2}
    if name == "apgd-t":
        return {"grad": runs * steps, "forward": runs + 3}
    if name == "fab-t":
        return {"fab_step": runs * steps, "forward": 4}
    if name == "square":
        return {"square_query": queries, "forward": 2}
    raise ValueError(f"unknown worst-case member {name!r}")


def _members(norm: str, steps: int, targets: int, queries: int, num_classes: int) -> list[tuple[str, int, dict[str, int]]]:
    """(name, runs, passes) of the ensemble's standard version at ``norm`` (``ensemble.standard_plan``)."""
    from ..evaluate.ensemble import standard_plan

    return [(name, runs, member_passes(name, steps=steps, runs=runs, queries=queries))
            for name, runs in standard_plan(norm, num_classes, targets)]


def _add(total: dict[str, float], counts: dict[str, float], times: float = 1.0) -> None:
    for k, v in counts.items():
        total[k] = total.get(k, 0.0) + v * times


def _attack(total: dict[str, float], passes: dict[str, int], n: float, *, runs: int = 1, first: bool = True,
            robust: float = 1.0) -> None:
    """Add one attack on ``n`` points: its step kinds (all but ``forward``) as :func:`_shares` says,
    its forward passes on every point it attacks (all ``n`` for a first attack, else the robust share)."""
    steps = _shares(runs, first, robust) / runs
    for k, v in passes.items():
        total[k] = total.get(k, 0.0) + v * n * ((1.0 if first else robust) if k == "forward" else steps)


def worst_case_passes(cfg: ReproduceConfig, n_test: int, *, num_classes: int = 10, robust: float = 1.0) -> dict[str, float]:
    """Passes of one model's worst-case ensemble over every radius (``pipeline.radii``): ``n_test``
    clean forwards per radius, then each member on the points every earlier one left robust
    (:func:`_shares`; ``robust=1``: every member on every point, all its steps)."""
    from .pipeline import radii

    wc = cfg.evaluation.worst_case
    total: dict[str, float] = {}
    for norm, _eps in radii(cfg):
        _add(total, {"forward": n_test})
        for i, (_name, runs, passes) in enumerate(_members(norm, wc.steps, wc.n_target_classes, wc.square_queries, num_classes)):
            _attack(total, passes, n_test, runs=runs, first=i == 0, robust=robust)
    return total


def sanity_passes(cfg: ReproduceConfig, n_test: int, *, shape: tuple[int, ...], robust: float = 1.0) -> dict[str, float]:
    """Passes of one model's sanity checks (``evaluate.sanity_checks`` on the first
    ``sanity.test_limit`` test images, at ``pipeline.sanity_radius``): two calls and a softmax check
    on one batch, a gradient and a clean forward per image, FGSM, margin and CE PGD at ε, Square,
    PGD with an unbounded budget and PGD at the curve's other radii (0.25, 0.5, 2 and 4 ε where they
    are inside the unbounded one); each PGD and Square only on the points still robust. The unbounded
    attack is assumed to break every point (what the check expects) unless ``robust=1``."""
    from .pipeline import sanity_radius

    ev, sc = cfg.evaluation, cfg.evaluation.sanity
    n = min(n_test, sc.test_limit or n_test)
    norm, eps = sanity_radius(cfg)
    d = math.prod(shape)
    big = {"Linf": 1.0, "L2": math.sqrt(d), "L1": float(d)}[norm]  # evaluate.checks.unbounded_eps
    curve = [r for r in (0.25 * eps, 0.5 * eps, 2 * eps, 4 * eps) if r < big]
    total = {"forward": 3 * min(n, ev.batch_size) + n, "grad": n}
    pgd = {"grad": sc.steps, "forward": 2}  # steps, the last iterate's forward, robust_mask's check
    _attack(total, {"grad": 1, "forward": 1}, n)  # FGSM: no active set
    for _ in range(2 + len(curve)):  # margin and CE PGD at ε, then the curve
        _attack(total, pgd, n, robust=robust)
    _attack(total, pgd, n, robust=robust if robust >= 1 else 0.0)
    if norm in ("Linf", "L2"):
        _attack(total, {"square_query": sc.square_queries, "forward": 1}, n, robust=robust)
    return total


def _evaluate_passes(cfg: ReproduceConfig, n_test: int, robust: float) -> tuple[dict[str, float], bool]:
    """Passes of one model's single attacks (``evaluate_suite``: a clean forward, then each attack
    on the points classified correctly, PGD with its active set), and whether they are exact."""
    total: dict[str, float] = {"forward": n_test}
    exact = True
    for spec in cfg.evaluation.attacks:
        restarts = max(1, int(getattr(spec, "restarts", 1) or 1))
        if spec.attack == "fgsm":
            _attack(total, {"grad": 1, "forward": 1}, n_test)
            continue
        # PGD: steps per restart, the last iterate's forward, robust_mask's check; other attacks:
        # about one gradient per step (approximate)
        exact = exact and spec.attack == "pgd"
        _attack(total, {"grad": spec.steps * restarts, "forward": restarts + 1}, n_test, runs=restarts, robust=robust)
    return total, exact


def count_passes(cfg: ReproduceConfig, n_train: int, n_test: int, *, transfer_archs: list[dict] | None = None,
                 num_classes: int = 10, shape: tuple[int, ...] | None = None, robust: float = 1.0) -> dict[str, dict[str, Any]]:
    """Images × passes of each kind, per stage of ``reproduce`` (see the module docstring).

    ``n_train``/``n_test`` are the image counts after ``train_limit``/``test_limit``. Transfer
    architectures' training is counted under keys ``train@<label>`` (their own speed is measured).
    The attack stages (``evaluate``, ``worst_case``, ``sanity``: all six models) depend on how many
    points their attacks break: ``robust=1`` (the default) counts them as if no point were ever
    broken, an upper bound; ``robust=ROBUST_SHARE`` is the estimate's assumption (:func:`_shares`).
    """
    n_train = min(n_train, cfg.train_limit or n_train)
    n_test = min(n_test, cfg.evaluation.test_limit or n_test)
    shape = tuple(shape) if shape is not None else DATASET_SIZES.get(cfg.dataset, (0, 0, (3, 32, 32), 10))[2]
    c = cfg.construction
    stages: dict[str, dict[str, Any]] = {}
    models = len(MODEL_NAMES)

    def add(name: str, *, approximate: bool = False, **counts: float) -> None:
        stages[name] = {**{k: 0 for k in KINDS}, **{k: int(round(v)) for k, v in counts.items()}, "approximate": approximate}

    add("train_standard", train=cfg.standard.epochs * n_train)
    adv = cfg.adversarial
    add("train_adversarial", train=adv.epochs * n_train, grad=adv.epochs * n_train * adv.adversary.steps)
    for kind in ("d_r", "d_nr"):
        add(f"construct_{kind}", grad=n_train * c.matching.steps, forward=2 * n_train)  # goal representation + final check
    for kind in ("d_rand", "d_det"):
        add(f"construct_{kind}", grad=n_train * c.relabel.steps, forward=2 * n_train)  # targets + final check
    for name in ("train_d_r", "train_d_nr", "train_d_rand", "train_d_det"):
        add(name, train=getattr(cfg, name).epochs * n_train)
    single, exact = _evaluate_passes(cfg, n_test, robust)
    add("evaluate", approximate=robust < 1 or not exact, **{k: models * v for k, v in single.items()})
    ev = cfg.evaluation
    if ev.worst_case.enabled:
        wc = worst_case_passes(cfg, n_test, num_classes=num_classes, robust=robust)
        add("worst_case", approximate=robust < 1, **{k: models * v for k, v in wc.items()})
    if ev.sanity.enabled:
        sanity = sanity_passes(cfg, n_test, shape=shape, robust=robust)
        add("sanity", approximate=robust < 1, **{k: models * v for k, v in sanity.items()})

    ex = cfg.extras
    if ex.inversion:
        add("extra_inversion", grad=2 * min(INVERSION_IMAGES, n_test) * 2 * c.matching.steps)  # at most the test split
    if ex.distillation:  # teacher; then two students (teacher's wrong labels, random wrong labels) on its mistakes
        mistakes = DISTILL_MISTAKE_SHARE * n_train
        add("extra_distillation", approximate=True, forward=n_train + 2 * n_test,
            train=DISTILL_TEACHER_EPOCHS * n_train + 2 * cfg.standard.epochs * mistakes)
    if ex.transfer:
        limit = min(n_train, ex.transfer_train_limit or n_train)
        counts: dict[str, float] = {"grad": 2 * n_test * c.relabel.steps, "forward": n_test}  # targeted + untargeted examples
        for arch in transfer_archs if transfer_archs is not None else _transfer_archs():
            counts[f"train@{arch['label']}"] = (cfg.standard.epochs + cfg.train_d_rand.epochs) * limit
            counts["forward"] += 3 * n_test
        add("extra_transfer", **counts)
    return stages


def _transfer_archs() -> list[dict]:
    from .extras import TRANSFER_ARCHS

    return TRANSFER_ARCHS


def _timed(fn, device) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one call."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def measure_pass_seconds(cfg: ReproduceConfig, device, *, shape: tuple[int, int, int], num_classes: int = 10,
                         batches: int = 5, max_batch: int | None = None,
                         transfer_archs: list[dict] | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds per image of each kind of pass with the preset's model on ``device`` (random data,
    ``batches`` timed batches after one untimed warm-up; an attack pass by its best batch), as
    (wall seconds, this process's CPU seconds). ``max_batch`` caps the batch size (a quick, rougher
    calibration of a model too large for this device)."""
    import torch
    import torch.nn.functional as F

    from ..data.dataset import ImageDataset
    from ..models import build_model
    from ..progress import progress_disabled
    from ..runtime.device import resolve_device
    from ..runtime.threads import using_threads
    from ..train import train_model

    device = resolve_device(device)
    # bars off, the preset's threads, the global random state untouched
    with progress_disabled(), using_threads(cfg.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)

        def train_seconds(arch: str, kwargs: dict) -> float:
            b = min(cfg.standard.batch_size, max_batch or cfg.standard.batch_size)
            model = build_model(arch, shape, num_classes, **kwargs)
            data = ImageDataset(torch.rand(b * batches, *shape, generator=g), torch.randint(0, num_classes, (b * batches,), generator=g),
                                [str(i) for i in range(num_classes)], "calibration")
            tcfg = dataclasses.replace(cfg.standard, epochs=1, milestones=())
            train_model(model, data.head(b), tcfg, device=device)  # warm-up
            w, c = _timed(lambda: train_model(model, data, tcfg, device=device), device)
            return w / len(data), c / len(data)

        wall, cpu = {}, {}
        wall["train"], cpu["train"] = train_seconds(cfg.model.arch, cfg.model.kwargs)
        model = build_model(cfg.model.arch, shape, num_classes, **cfg.model.kwargs).to(device).eval()
        b = min(cfg.construction.batch_size, cfg.evaluation.batch_size, 512, max_batch or 512)
        x = torch.rand(b, *shape, generator=g).to(device)
        y = torch.randint(0, num_classes, (b,), generator=g).to(device)

        def grad_pass() -> None:
            xx = x.detach().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xx), y, reduction="sum"), xx)

        def forward_pass() -> None:
            with torch.no_grad():
                model(x)

        for kind, fn in (("grad", grad_pass), ("forward", forward_pass)):
            fn()
            best = min((_timed(fn, device) for _ in range(batches)), key=lambda t: t[0])
            wall[kind], cpu[kind] = best[0] / b, best[1] / b
        if cfg.evaluation.worst_case.enabled or cfg.evaluation.sanity.enabled:
            from .pipeline import radii

            _attack_seconds(model, x[: min(b, 256)], wall, cpu, num_classes=num_classes, repeats=min(batches, 2),
                            norm="L2" if any(n == "L2" for n, _ in radii(cfg)) else "Linf")
        for arch in transfer_archs if transfer_archs is not None else (_transfer_archs() if cfg.extras.transfer else []):
            key = f"train@{arch['label']}"
            wall[key], cpu[key] = train_seconds(arch["name"], arch["kwargs"])
    return wall, cpu


def _attack_seconds(model, x, wall: dict, cpu: dict, *, num_classes: int, repeats: int, norm: str,
                    steps: int = 1, queries: int = 5) -> None:
    """Seconds per image of a FAB-T step and of a Square query (``fab_step``, ``square_query``),
    timed by the attacks themselves on ``x`` labelled with the model's own classes and a radius too
    small to break any point, so that every point runs every step (best of ``repeats``, after a
    warm-up; a batch of at most 256: FAB's steps cost several gradient passes each, and on a much
    smaller batch the per-call overhead of its many small operations would dominate)."""
    import torch

    from ..attacks.fab import FABT
    from ..attacks.square import Square

    with torch.no_grad():
        y = model(x).argmax(1)
    target = (y + 1) % num_classes
    fab = FABT(norm=norm, eps=1e-6, steps=steps, num_targets=1)
    square = Square(norm=norm, eps=1e-6, max_queries=queries)
    for kind, fn, units in (("fab_step", lambda: fab.run(model, x, y, target, None), steps),
                            ("square_query", lambda: square(model, x, y), queries)):
        fn()
        best = min((_timed(fn, x.device) for _ in range(max(1, repeats))), key=lambda t: t[0])
        wall[kind], cpu[kind] = best[0] / (units * x.shape[0]), best[1] / (units * x.shape[0])


def combine(stages: dict[str, dict[str, Any]], per_image: dict[str, float]) -> dict[str, float]:
    """Seconds of each stage: Σ over kinds of images × seconds per image (a kind without a measured
    speed costs nothing and is listed in the estimate's ``unmeasured``)."""
    return {name: sum(v * per_image.get(k, 0.0) for k, v in counts.items() if k != "approximate")
            for name, counts in stages.items()}


def gpu_warning(cfg: ReproduceConfig, device, *, n_train: int | None = None, seconds: float | None = None) -> str | None:
    """One line when ``cfg``'s preset needs a GPU and ``device`` is a CPU, else None. It states the
    run's own size (the model, epochs and matching steps of ``cfg``, on ``n_train`` training images,
    the dataset's count by default, cut to ``train_limit``) and, given ``seconds`` (the estimate),
    how long that would take here."""
    if cfg.preset not in GPU_PRESETS or str(getattr(device, "type", device)) != "cpu":
        return None
    n = DATASET_SIZES.get(cfg.dataset, (0,))[0] if n_train is None else n_train
    n = min(n, cfg.train_limit) if cfg.train_limit and n else (n or cfg.train_limit)
    epochs = max(cfg.standard.epochs, cfg.adversarial.epochs)
    images = f" on {n:,} training images".replace(",", " ") if n else ""
    why = f"a {cfg.model.arch}, {epochs} epochs and {cfg.construction.matching.steps} matching steps{images}"
    how_long = (f"on this CPU it would take about {_duration(seconds)} (estimated)" if seconds is not None
                else "on this CPU it would take far longer (with --device cpu, the estimate printed gives the figure)")
    return (f"the {cfg.preset} preset needs a GPU ({why}); {how_long}: run it with --device cuda on a GPU machine, "
            "or pick a smaller preset (digits, fashion-mnist, mnist)")


def estimate_reproduce_time(cfg: ReproduceConfig, device, *, n_train: int | None = None, n_test: int | None = None,
                            shape: tuple[int, int, int] | None = None, num_classes: int | None = None,
                            per_image: dict[str, float] | None = None, per_image_cpu: dict[str, float] | None = None,
                            robust: float = ROBUST_SHARE) -> dict[str, Any]:
    """The estimated wall time of ``reproduce`` with ``cfg`` on ``device``: per stage and in total.

    Image counts and shape default to the dataset's (:data:`DATASET_SIZES`); ``per_image`` (wall
    seconds per image of each kind of pass) defaults to :func:`measure_pass_seconds` here and now.
    The attack stages assume that each attack leaves ``robust`` of its points unbroken
    (:func:`count_passes`); ``upper_seconds`` is the time if no point were ever broken.
    ``total_seconds`` is at the machine's load while calibrating; on a CPU, ``idle_seconds`` is what
    the same work would take with the machine to itself (CPU seconds / threads; an optimistic bound
    with several threads), since a shared machine's load can change the wall time several-fold.
    """
    from ..runtime.device import resolve_device

    device = resolve_device(device)
    size = DATASET_SIZES.get(cfg.dataset, (0, 0, (3, 32, 32), 10))
    n_train = size[0] if n_train is None else n_train
    n_test = size[1] if n_test is None else n_test
    shape = size[2] if shape is None else tuple(shape)
    num_classes = size[3] if num_classes is None else num_classes
    stages = count_passes(cfg, n_train, n_test, num_classes=num_classes, shape=shape, robust=robust)
    upper = count_passes(cfg, n_train, n_test, num_classes=num_classes, shape=shape, robust=1.0)
    calibration = 0.0
    on_the_wrong_device = gpu_warning(cfg, device) is not None
    if per_image is None:
        start = time.perf_counter()
        quick = {"batches": 1, "max_batch": 16} if on_the_wrong_device else {}  # a GPU preset on a CPU: minutes would be wasted
        per_image, per_image_cpu = measure_pass_seconds(cfg, device, shape=shape, num_classes=num_classes, **quick)
        calibration = time.perf_counter() - start
    seconds, upper_seconds = combine(stages, per_image), combine(upper, per_image)
    idle = None
    if per_image_cpu is not None and device.type == "cpu":
        idle = sum(combine(stages, per_image_cpu).values()) / max(1, cfg.threads or 1)
    kinds = {k for counts in stages.values() for k, v in counts.items() if k != "approximate" and v}
    total = sum(seconds.values())
    warning = gpu_warning(cfg, device, n_train=n_train, seconds=total)
    return {
        "preset": cfg.preset,
        "device": str(device),
        "threads": cfg.threads,
        "images": {"train": min(n_train, cfg.train_limit or n_train), "test": min(n_test, cfg.evaluation.test_limit or n_test)},
        "per_image_seconds": dict(per_image),
        "per_image_cpu_seconds": None if per_image_cpu is None else dict(per_image_cpu),
        "stages": {name: {**counts, "seconds": round(seconds[name], 1), "upper_seconds": round(upper_seconds[name], 1)}
                   for name, counts in stages.items()},
        "total_seconds": round(total, 1),
        "upper_seconds": round(sum(upper_seconds.values()), 1),
        "robust_share": robust,
        "idle_seconds": None if idle is None else round(idle, 1),
        "approximate_seconds": round(sum(seconds[n] for n, c in stages.items() if c["approximate"]), 1),
        "unmeasured": sorted(kinds - set(per_image)),
        "calibration_seconds": round(calibration, 1),
        "load_average": _load(),
        "gpu_warning": warning,
    }


def _load() -> float | None:
    try:
        import os

        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 72 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def format_estimate(est: dict[str, Any]) -> str:
    """One line for the terminal: the total (and the upper bound if no attack broke any point), the
    three longest stages, and what the attack stages assume."""
    longest = sorted(est["stages"].items(), key=lambda kv: -kv[1]["seconds"])[:3]
    parts = ", ".join(f"{name} {_duration(s['seconds'])}" for name, s in longest)
    threads = f", {est['threads']} thread{'' if est['threads'] == 1 else 's'}" if est.get("threads") else ""
    load = f", load average {est['load_average']:g}" if est.get("load_average") is not None else ""
    upper = est.get("upper_seconds")
    bound = f" (up to {_duration(upper)} if no point is broken)" if upper and _duration(upper) != _duration(est["total_seconds"]) else ""
    idle = f", about {_duration(est['idle_seconds'])} with the machine to itself" if est.get("idle_seconds") else ""
    assumed = (f"; attacks assumed to leave {est['robust_share']:.0%} of points robust"
               if bound and est.get("robust_share") is not None else "")
    line = (f"estimated time: {_duration(est['total_seconds'])}{bound} on {est['device']}{threads}{idle}, for "
            f"{est['images']['train']} training / {est['images']['test']} test images (longest: {parts}{assumed}; "
            f"calibrated from timed passes here{load})")
    return line + (f"; warning: {est['gpu_warning']}" if est.get("gpu_warning") else "")
