"""How long ``reproduce`` will take here, said before it starts.

The estimate is work times speed, each counted apart:

* **Work** (:func:`count_passes`): for every stage of the pipeline, how many images go through
  each of three kinds of pass: ``train`` (a training step: forward, backward w.r.t. the weights and
  an optimiser step, per image), ``grad`` (a forward and a backward pass w.r.t. the *input*, in eval
  mode: one attack or matching step per image) and ``forward``. These follow from the
  configuration alone: epochs × images, steps × images. Where the count depends on data (how many
  training images a weak teacher gets wrong) a stated assumption is used and the stage is marked
  ``approximate``.
* **Speed** (:func:`measure_pass_seconds`): seconds per image of each kind of pass, measured on
  this machine with the preset's own model, batch size and thread count on a few random batches
  (a few seconds), through :func:`~advfeatures.train.train_model` itself for the training step.

:func:`estimate_reproduce_time` multiplies the two and adds them up. A preset that needs a GPU
(``GPU_PRESETS``) also gets a one-line warning when the device is a CPU (:func:`gpu_warning`).
The estimate is for an empty run directory; a resumed run skips its finished steps.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from .config import GPU_PRESETS, ReproduceConfig

# (training images, test images, image shape, classes) of each dataset, before train/test limits
DATASET_SIZES: dict[str, tuple[int, int, tuple[int, int, int], int]] = {
    "digits": (1437, 360, (1, 8, 8), 10),
    "mnist": (60000, 10000, (1, 28, 28), 10),
    "fashion-mnist": (60000, 10000, (1, 28, 28), 10),
    "cifar10": (50000, 10000, (3, 32, 32), 10),
}
KINDS = ("train", "grad", "forward")
DISTILL_TEACHER_EPOCHS = 2  # science.distill's default
DISTILL_MISTAKE_SHARE = 0.25  # assumed: Fashion-MNIST's weak teacher got 23% wrong, digits' fewer
INVERSION_IMAGES = 16  # extras.inversion's n


def _attack_grads(spec: Any) -> tuple[int, int, bool]:
    """(grad passes, forward passes, exact?) per image of one evaluation attack."""
    restarts = max(1, int(getattr(spec, "restarts", 1) or 1))
    if spec.attack == "fgsm":
        return 1, 1, True
    if spec.attack == "pgd":
        return spec.steps * restarts, 1 + restarts, True  # clean forward, plus keep-best's last forward
    return spec.steps * restarts, 1 + restarts, False  # other attacks: about one gradient per step


def count_passes(cfg: ReproduceConfig, n_train: int, n_test: int, *, transfer_archs: list[dict] | None = None) -> dict[str, dict[str, Any]]:
    """Images × passes of each kind, per stage of ``reproduce`` (see the module docstring).

    ``n_train``/``n_test`` are the image counts after ``train_limit``/``test_limit``. Transfer
    architectures' training is counted under keys ``train@<label>`` (their own speed is measured).
    """
    n_train = min(n_train, cfg.train_limit or n_train)
    n_test = min(n_test, cfg.evaluation.test_limit or n_test)
    c = cfg.construction
    stages: dict[str, dict[str, Any]] = {}

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
    grads = forwards = 0
    exact = True
    for spec in cfg.evaluation.attacks:
        g, f, ok = _attack_grads(spec)
        grads, forwards, exact = grads + g, forwards + f, exact and ok
    add("evaluate", grad=6 * n_test * grads, forward=6 * n_test * (1 + forwards), approximate=not exact)

    ex = cfg.extras
    if ex.inversion:
        add("extra_inversion", grad=2 * INVERSION_IMAGES * 2 * c.matching.steps)
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
        for arch in transfer_archs if transfer_archs is not None else (_transfer_archs() if cfg.extras.transfer else []):
            key = f"train@{arch['label']}"
            wall[key], cpu[key] = train_seconds(arch["name"], arch["kwargs"])
    return wall, cpu


def combine(stages: dict[str, dict[str, Any]], per_image: dict[str, float]) -> dict[str, float]:
    """Seconds of each stage: Σ over kinds of images × seconds per image (a kind without a measured
    speed costs nothing and is listed in the estimate's ``unmeasured``)."""
    return {name: sum(v * per_image.get(k, 0.0) for k, v in counts.items() if k != "approximate")
            for name, counts in stages.items()}


def gpu_warning(cfg: ReproduceConfig, device) -> str | None:
    """One line when ``cfg``'s preset needs a GPU and ``device`` is a CPU, else None."""
    why = GPU_PRESETS.get(cfg.preset)
    if why is None or str(getattr(device, "type", device)) != "cpu":
        return None
    return f"the {cfg.preset} preset needs a GPU ({why}); on this CPU it would take days: run it with --device cuda on a GPU machine, or pick a smaller preset (digits, fashion-mnist, mnist)"


def estimate_reproduce_time(cfg: ReproduceConfig, device, *, n_train: int | None = None, n_test: int | None = None,
                            shape: tuple[int, int, int] | None = None, num_classes: int | None = None,
                            per_image: dict[str, float] | None = None, per_image_cpu: dict[str, float] | None = None) -> dict[str, Any]:
    """The estimated wall time of ``reproduce`` with ``cfg`` on ``device``: per stage and in total.

    Image counts and shape default to the dataset's (:data:`DATASET_SIZES`); ``per_image`` (wall
    seconds per image of each kind of pass) defaults to :func:`measure_pass_seconds` here and now.
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
    stages = count_passes(cfg, n_train, n_test)
    calibration = 0.0
    warning = gpu_warning(cfg, device)
    if per_image is None:
        start = time.perf_counter()
        quick = {"batches": 1, "max_batch": 16} if warning else {}  # a GPU preset on a CPU: minutes would be wasted
        per_image, per_image_cpu = measure_pass_seconds(cfg, device, shape=shape, num_classes=num_classes, **quick)
        calibration = time.perf_counter() - start
    seconds = combine(stages, per_image)
    idle = None
    if per_image_cpu is not None and device.type == "cpu":
        idle = sum(combine(stages, per_image_cpu).values()) / max(1, cfg.threads or 1)
    kinds = {k for counts in stages.values() for k, v in counts.items() if k != "approximate" and v}
    total = sum(seconds.values())
    return {
        "preset": cfg.preset,
        "device": str(device),
        "threads": cfg.threads,
        "images": {"train": min(n_train, cfg.train_limit or n_train), "test": min(n_test, cfg.evaluation.test_limit or n_test)},
        "per_image_seconds": dict(per_image),
        "per_image_cpu_seconds": None if per_image_cpu is None else dict(per_image_cpu),
        "stages": {name: {**counts, "seconds": round(seconds[name], 1)} for name, counts in stages.items()},
        "total_seconds": round(total, 1),
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
    """One line for the terminal: the total and the three longest stages."""
    longest = sorted(est["stages"].items(), key=lambda kv: -kv[1]["seconds"])[:3]
    parts = ", ".join(f"{name} {_duration(s['seconds'])}" for name, s in longest)
    threads = f", {est['threads']} threads" if est.get("threads") else ""
    load = f", load average {est['load_average']:g}" if est.get("load_average") is not None else ""
    idle = f" (about {_duration(est['idle_seconds'])} with the machine to itself)" if est.get("idle_seconds") else ""
    line = (f"estimated time: {_duration(est['total_seconds'])}{idle} on {est['device']}{threads} for "
            f"{est['images']['train']} training / {est['images']['test']} test images (longest: {parts}; "
            f"calibrated from timed passes of the preset's model here{load})")
    return line + (f"; warning: {est['gpu_warning']}" if est.get("gpu_warning") else "")
