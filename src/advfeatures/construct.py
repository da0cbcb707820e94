"""The four training sets of Ilyas et al. 2019, "Adversarial Examples Are Not Bugs, They Are Features".

* **D_R** (:func:`robust_dataset`): for every training image x, start at a *different random
  training image* and minimise ‖g(x_r) − g(x)‖₂ / ‖g(x)‖₂ through the **robust** model's
  representation g, by L2-normalised steps inside [0, 1] with no ε limit; keep x's label.
* **D_NR** (:func:`non_robust_dataset`): exactly the same procedure through the **standard** model.
  It is representation matching, not a targeted attack.
* **D_rand** / **D_det** (:func:`relabelled_dataset`): targeted L2 PGD on the standard model towards
  t ~ Uniform(other classes) (``mode="random"``) or t = (y + 1) mod C (``mode="det"``), relabelled
  with t.

g is the model's representation in the sense of :func:`advfeatures.models.representation`: its
``features`` where it has them, else the input of its last ``nn.Linear``, or the layer named by
``layer=`` (any ``named_modules()`` name), so a user's ``nn.Module`` works too. The fake ReLU is
applied only where the model has our ``PenultimateReLU`` (inside the named layer); the manifest's
``matching.fake_relu`` records whether it was actually applied (``fake_relu_requested`` what was asked).

Constructions are written shard by shard (``shard-00000.safetensors`` …, then ``manifest.json``).
Each shard's randomness comes from (seed, shard index) and the start-image pairing from the seed
alone, so a resumed construction, or one split across ``torchrun`` ranks, produces the same tensors
as one uninterrupted single-process run. Memory stays bounded by one shard: a shard's results are
written and dropped before the next one starts, the source is read a batch at a time (so a source
streamed from disk never has to fit in memory), and the manifest's statistics are read back one
shard and a few small columns at a time; :func:`load_constructed` can stream a finished set too.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .attacks.base import random_targets
from .attacks.loop import eval_mode, optimize_inputs
from .attacks.pgd import PGD
from .data.dataset import ImageDataset
from .data.source import RowFileSource
from .distributed import barrier
from .errors import AdvFeaturesError, ConfigError, DataError
from .models.base import as_classifier, fake_relu, fake_relu_applies
from .progress import progress
from .seeding import generator
from .storage import (MANIFEST, folder_lock, read_json, iter_chunks, missing_shards, read_manifest, read_sharded, safetensors_layout,
                      fault_point, json_digest, save_safetensors_atomic, shard_key, shard_path, tensor_digest, write_json_atomic, write_manifest)
from .threats import L2Ball, check_positive, check_steps

log = logging.getLogger(__name__)

KINDS = ("d_r", "d_nr", "d_rand", "d_det")


@dataclass
class MatchingConfig:
    """Representation matching for D_R / D_NR (the paper's CIFAR values: 1000 steps of 0.1)."""

    steps: int = 1000
    step_size: float = 0.1
    start: Literal["random_image", "noise"] = "random_image"  # noise: the paper's ablation
    normalize: bool = True  # divide by ‖g(x)‖₂, as the reference implementation does
    fake_relu: bool = True  # identity backward through the representation's last ReLU

    def validate(self) -> MatchingConfig:
        check_steps(self.steps)
        check_positive("step_size", self.step_size)
        if self.start not in ("random_image", "noise"):
            raise ConfigError(f"start must be 'random_image' or 'noise', got {self.start!r}")
        return self


@dataclass
class RelabelConfig:
    """Targeted L2 PGD for D_rand / D_det (the paper's CIFAR values: ε=0.5, step 0.1, 100 steps)."""

    eps: float = 0.5
    steps: int = 100
    step_size: float = 0.1
    norm: str = "L2"

    def validate(self) -> RelabelConfig:
        check_positive("eps", self.eps)
        check_steps(self.steps)
        check_positive("step_size", self.step_size)
        return self


def shard_generator(seed: int, shard: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of one shard: independent of how shards are split across processes."""
    return generator(seed, 7919 * (shard + 1), device=device)


def random_pairing(n: int, seed: int) -> torch.Tensor:
    """For each index i a different index p[i] ≠ i, uniformly random (a derangement), from ``seed``."""
    if n < 2:
        raise ConfigError("representation matching needs at least 2 training images to pair them")
    g = torch.Generator().manual_seed(int(seed))
    p = torch.randperm(n, generator=g)
    fixed = (p == torch.arange(n)).nonzero().flatten()
    # swap each fixed point with its neighbour in the cycle order: stays a permutation, no fixed points
    for i in fixed.tolist():
        j = (i + 1) % n
        p[i], p[j] = p[j].clone(), p[i].clone()
    while bool((p == torch.arange(n)).any()):  # rare cascades
        i = int((p == torch.arange(n)).nonzero()[0])
        j = (i + 1) % n
        p[i], p[j] = p[j].clone(), p[i].clone()
    return p


def match_representation(model: nn.Module, x_target: torch.Tensor, x_start: torch.Tensor, cfg: MatchingConfig, *,
                         layer: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ‖g(x) − g(x_target)‖₂ (/ ‖g(x_target)‖₂) from ``x_start``; returns (x, final distance).
    g is ``model``'s representation, or the output of its layer named ``layer``."""
    with torch.no_grad(), eval_mode(model):
        goal = as_classifier(model, layer).features(x_target).flatten(1)
    return match_goal(model, goal, x_start, cfg, layer=layer)


def match_goal(model: nn.Module, goal: torch.Tensor, x_start: torch.Tensor, cfg: MatchingConfig, *,
               layer: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ‖g(x) − goal‖₂ (/ ‖goal‖₂ with ``cfg.normalize``) from ``x_start`` for given
    representation vectors ``goal`` (N, D), by L2-normalised steps inside [0, 1] with no ε limit."""
    clf = as_classifier(model, layer)
    goal = goal.detach().flatten(1)
    scale = goal.norm(dim=1).clamp_min(1e-12) if cfg.normalize else torch.ones(goal.shape[0], device=goal.device)

    def distance(x: torch.Tensor) -> torch.Tensor:
        return (clf.features(x).flatten(1) - goal).norm(dim=1) / scale

    with eval_mode(model), fake_relu(model, cfg.fake_relu, layer=layer):
        res = optimize_inputs(distance, x_start, threat=L2Ball(float("inf")), steps=cfg.steps, step_size=cfg.step_size,
                              maximize=False, keep_best=True)
    return res.x, res.loss


def _shards_to_do(n: int, shard_size: int, rank: int, world_size: int, folder: Path) -> tuple[int, list[int]]:
    num_shards = max(1, -(-n // shard_size))
    todo = [i for i in missing_shards(folder, num_shards) if i % world_size == rank]
    return num_shards, todo


def build_dataset(
    kind: str,
    model: nn.Module,
    source: ImageDataset,
    folder: str | Path,
    *,
    matching: MatchingConfig | None = None,
    relabel: RelabelConfig | None = None,
    seed: int = 0,
    batch_size: int = 500,
    shard_size: int = 5000,
    device: str | torch.device = "cpu",
    rank: int = 0,
    world_size: int = 1,
    key: str = "",
    layer: str | None = None,
) -> dict[str, Any] | None:
    """Build D_R / D_NR (``kind`` "d_r"/"d_nr", through ``model``'s representation) or D_rand / D_det
    ("d_rand"/"d_det", targeted PGD on ``model``) from ``source`` into ``folder``.

    Shards already on disk are kept (resume). This process builds the shards whose index ≡ ``rank``
    (mod ``world_size``); rank 0 writes the manifest once all shards exist and returns it (other
    ranks, or rank 0 while shards are missing, return None). Under ``torchrun`` (``torch.distributed``
    initialised) every rank waits for the others before rank 0 looks for missing shards.

    ``layer`` names the layer of ``model`` whose output is g for D_R / D_NR (default: the model's
    representation, see :func:`advfeatures.models.representation`).

    ``key`` identifies the construction in every shard and the manifest; without one it is derived
    from the settings, the model's weights and the images, so that shards left by a call with other
    settings are refused rather than resumed, or relabelled by a new manifest.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown construction {kind!r}; choose one of {', '.join(KINDS)}")
    check_steps(batch_size, "batch_size")
    check_steps(shard_size, "shard_size")
    device = torch.device(device)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = len(source)
    num_shards, todo = _shards_to_do(n, shard_size, rank, world_size, folder)
    matching = (matching or MatchingConfig()).validate() if kind in ("d_r", "d_nr") else None
    relabel = (relabel or RelabelConfig()).validate() if kind in ("d_rand", "d_det") else None
    pairing = random_pairing(n, seed) if matching is not None and matching.start == "random_image" else None
    if relabel is not None and source.num_classes < 2:
        raise ConfigError(f"{kind} relabels every image with another class, but {source.name} has {source.num_classes}; "
                          "it needs at least 2 classes")
    if relabel is not None and source.num_classes == 2 and rank == 0:
        log.warning("%s: with 2 classes the target is always the other class, so D_rand and D_det are the same set", kind)
    if matching is not None:
        as_classifier(model, layer)  # an unknown layer name fails here, before any work
    if not key:  # called without one (from Python): these settings, this model's weights and these images make it
        key = "auto-" + json_digest({"kind": kind, "seed": seed, "shard_size": shard_size, "n": n, "layer": layer,
                                     "matching": asdict(matching) if matching else None,
                                     "relabel": asdict(relabel) if relabel else None,
                                     "model": tensor_digest(*model.state_dict().values()), "data": source.digest(batch_size)})
    _refuse_foreign_shards(folder, num_shards, key)
    model = model.to(device)
    for shard in progress(todo, desc=f"{kind} shards"):
        lo, hi = shard * shard_size, min(n, (shard + 1) * shard_size)
        gen = shard_generator(seed, shard, device)
        parts: dict[str, list[torch.Tensor]] = {}
        images = torch.empty((hi - lo, *source.image_shape), dtype=torch.float32)  # filled in place: no second copy
        # read per batch (a streamed source stays on disk; an image folder with workers decodes ahead in them)
        batches = source.iter_batches(batch_size, order=torch.arange(lo, hi), device=device)
        for (a, b), (x, y) in zip(progress(list(iter_chunks(hi - lo, batch_size)), desc=f"{kind} shard {shard}"), batches):
            idx = torch.arange(lo + a, lo + b)
            if matching is not None:
                if pairing is not None:
                    start = source.batch(pairing[idx])[0].to(device)
                else:
                    start = (0.5 + 0.25 * torch.randn(x.shape, generator=gen, device=device)).clamp_(0, 1)
                x_new, dist = match_representation(model, x, start, matching, layer=layer)
                new_label, stat = y, dist
                extra = {"start_index": pairing[idx] if pairing is not None else torch.full_like(idx, -1),
                         "pixel_l2_to_source": (x_new - x).flatten(1).norm(dim=1)}
            else:
                assert relabel is not None
                t = random_targets(y, source.num_classes, gen) if kind == "d_rand" else (y + 1) % source.num_classes
                attack = PGD(norm=relabel.norm, eps=relabel.eps, steps=relabel.steps, step_size=relabel.step_size,
                             random_start=False, seed=seed)
                x_new = attack(model, x, y, target=t)
                with torch.no_grad(), eval_mode(model):
                    stat = (model(x_new).argmax(1) == t).float()
                new_label, extra = t, {}
            images[a:b] = x_new.detach()
            for k, v in {"labels": new_label, "source_labels": y, "source_index": idx, "stat": stat, **extra}.items():
                parts.setdefault(k, []).append(v.detach().cpu())
        tensors = {"images": images.float(), **{k: torch.cat(v) for k, v in parts.items()}}
        save_safetensors_atomic(tensors, shard_path(folder, shard), metadata={"kind": kind, "shard": str(shard), "key": key})
        del parts, tensors, images
        fault_point("shard", shard)  # the interruption tests' kill -9 (storage.fault_point)
    barrier()  # every rank's shards are on disk before rank 0 writes the manifest
    if rank != 0 or missing_shards(folder, num_shards):
        return None
    matching_record = None
    if matching is not None:  # what was applied, not only what was asked: the fake ReLU needs our PenultimateReLU
        matching_record = {**asdict(matching), "fake_relu": bool(matching.fake_relu and fake_relu_applies(model, layer)),
                           "fake_relu_requested": matching.fake_relu, "layer": layer}
    return finish_manifest(folder, kind=kind, num_shards=num_shards, config={
        "kind": kind, "seed": seed, "shard_size": shard_size, "source": source.name, "source_count": n,
        "image_shape": list(source.image_shape), "num_classes": source.num_classes, "matching": matching_record, "relabel": asdict(relabel) if relabel else None}, key=key)


def settings_key(settings: dict[str, Any]) -> str:
    """The fingerprint of a construction's settings (16 hex digits): a folder holds one key."""
    return json_digest(settings)


SETTINGS_FILE = "construct.json"


def construct_folder(
    kind: str,
    model: nn.Module,
    source: ImageDataset,
    folder: str | Path,
    *,
    settings: dict[str, Any],
    rank: int = 0,
    world_size: int = 1,
    **build: Any,
) -> tuple[str, dict[str, Any] | None]:
    """:func:`build_dataset` into a folder that is checked first and holds one construction only.

    ``settings`` (JSON-ready: the model file's hash, the data, the configurations, the seed...)
    describe the construction; their :func:`settings_key` is written to ``construct.json`` before
    the first shard and to the manifest at the end. A folder whose manifest has the same key is
    finished (nothing is done); one holding another key, finished or not, is refused. Rank 0 holds
    the folder's lock while building. A construction refused before its first shard (a setting the
    data cannot take) leaves the folder as it was, so that the corrected command runs.

    ``build``: :func:`build_dataset`'s keyword arguments. Returns ``("finished", None)`` when the
    folder already held this construction, else ``("built", manifest)`` (the manifest is None on
    ranks other than 0).
    """
    folder = Path(folder)
    key = settings_key(settings)
    manifest_path = folder / MANIFEST
    if manifest_path.is_file():
        found = read_json(manifest_path)
        found = found.get("key") if isinstance(found, dict) else None
        if found == key:
            return "finished", None
        raise ConfigError(f"{folder} holds a different construction (key {found}, these options give {key}); choose another --out")
    settings_path = folder / SETTINGS_FILE
    found = read_json(settings_path) if settings_path.is_file() else None
    if found is not None and (not isinstance(found, dict) or found.get("key") != key):
        raise ConfigError(f"{folder} holds part of a different construction; resume it with its own options or choose another --out")
    main_rank = rank == 0
    with folder_lock(folder, what="construction") if main_rank else contextlib.nullcontext():
        barrier()  # every rank has checked the folder before rank 0 writes to it
        wrote_settings = main_rank and found is None
        if main_rank:
            write_json_atomic(settings_path, {"key": key, "settings": settings})
        try:
            return "built", build_dataset(kind, model, source, folder, rank=rank, world_size=world_size, key=key, **build)
        except AdvFeaturesError:
            if wrote_settings and not any(folder.glob("shard-*.safetensors")):
                settings_path.unlink(missing_ok=True)
            raise


def _refuse_foreign_shards(folder: Path, num_shards: int, key: str) -> None:
    """A resumed construction keeps only shards it wrote itself: each shard records its
    construction's key, and one from another construction (another seed, model or size) is refused
    rather than mixed in."""
    for i in range(num_shards):
        p = shard_path(folder, i)
        if p.is_file():
            found = shard_key(p)
            if (found or "") != key:
                raise DataError(f"{p} belongs to another construction (key {found}, this one is {key or 'unkeyed'}); "
                                "delete it (or the folder) and run again, or choose another --out")


def finish_manifest(folder: Path, *, kind: str, num_shards: int, config: dict[str, Any], key: str) -> dict[str, Any]:
    """Write the manifest with the construction's success statistics (reading only the small
    per-example columns, never the images)."""
    columns = ("stat", "labels", "source_labels") + (("pixel_l2_to_source",) if kind in ("d_r", "d_nr") else ())
    tensors = _read_columns([shard_path(folder, i) for i in range(num_shards)], columns)
    stat = tensors["stat"].float()
    if kind in ("d_r", "d_nr"):
        pixel = tensors["pixel_l2_to_source"].float()
        # a distance of 1 is what the zero vector achieves; larger values (from images whose own
        # representation is nearly zero) would swamp a plain mean, so the mean is taken of min(d, 1)
        summary = {"metric": "relative_representation_distance", "mean": float(stat.clamp(max=1.0).mean()),
                   "median": float(stat.median()), "p90": float(stat.quantile(0.9)),
                   "share_below_0.1": float((stat < 0.1).float().mean()), "mean_pixel_l2_to_source": float(pixel.mean())}
    else:
        summary = {"metric": "target_reached", "share": float(stat.mean()), "count": int(stat.sum())}
        if int(config["num_classes"]) == 2:
            summary["note"] = "2 classes: every target is the other class, so D_rand and D_det are the same set"
        # by target class (the new label), over every class of the data: the largest *source* label
        # of a few images (--n) can be below the largest target
        summary["per_class_share"] = [float(stat[tensors["labels"] == c].mean()) if bool((tensors["labels"] == c).any()) else None
                                      for c in range(int(config["num_classes"]))]
    return write_manifest(folder, num_shards=num_shards, config=config, extra={"kind": kind, "key": key, "summary": summary})


def _read_columns(paths: list[Path], keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Some keys of each shard, concatenated in order, without loading the others."""
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    for p in paths:
        try:
            with safe_open(str(p), framework="pt") as f:
                for k in keys:
                    parts[k].append(f.get_tensor(k))
        except (SafetensorError, OSError) as exc:
            raise DataError(f"{p} is not a readable shard ({exc}); delete it and resume the construction") from None
    return {k: torch.cat(v) for k, v in parts.items()}


def load_constructed(folder: str | Path, *, classes: list[str], name: str | None = None,
                     stream: bool = False) -> tuple[ImageDataset, dict[str, Any]]:
    """A finished construction as an :class:`ImageDataset` (with its new labels) and its manifest.

    With ``stream`` the images stay in their shards and are read a batch at a time (the same
    values: clamped to [0, 1] as they are read); only the labels and statistics are loaded.
    """
    if not stream:
        tensors, manifest = read_sharded(folder)  # every shard checked against the manifest's sha256
        for k in ("images", "labels", "source_labels", "stat"):
            if k not in tensors:
                raise DataError(f"the shards of {folder} lack {k!r}; they are not a construction of ours")
        images: torch.Tensor | RowFileSource = tensors["images"]
        if images.dtype.is_floating_point and images.numel() and not (
                bool(torch.isfinite(images).all()) and float(images.min()) >= -1e-4 and float(images.max()) <= 1 + 1e-4):
            raise DataError(f"{folder} holds images outside [0, 1] or non-finite pixels; it is not a valid construction")
        images = images.float().clamp_(0, 1)  # float32 rounding at the box's edges
    else:
        manifest, paths = read_manifest(folder)
        tensors = _read_columns(paths, ("labels", "source_labels", "stat"))
        images = RowFileSource([safetensors_layout(p)["images"] for p in paths], clamp=True)
    recorded = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    if recorded.get("num_classes") not in (None, len(classes)):  # recorded since the manifest has it
        raise DataError(f"{folder} was built from data with {recorded['num_classes']} classes, but this data has "
                        f"{len(classes)}; use it with the dataset it was built from")
    labels = tensors["labels"]
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.ndim != 1:
        raise DataError(f"{folder} holds labels of type {labels.dtype} and shape {tuple(labels.shape)}, not whole-number "
                        "class indices; it is not a valid construction")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
        raise DataError(f"{folder} holds labels outside 0..{len(classes) - 1}; it was not built from this dataset")
    if isinstance(manifest.get("count"), int) and manifest["count"] != labels.numel():
        raise DataError(f"{folder}: the manifest counts {manifest['count']} images but the shards hold {labels.numel()}")
    ds = ImageDataset(images, tensors["labels"].long(), classes, name or manifest.get("kind", "constructed"),
                      {"source_labels": tensors["source_labels"], "stat": tensors["stat"]})
    return ds, manifest


def check_built_from(folder: str | Path, manifest: dict[str, Any], data: ImageDataset, *, strict: bool = True) -> None:
    """Refuse ``data`` given beside the construction in ``folder`` when it is not the data the
    construction was built from: other image shapes or another class count always (its class names,
    its leakage baselines and its test accuracies would be of other data), another source by name
    with ``strict`` (a warning without: exporting only takes the class names). A source under
    another name whose first images are the very ones the construction recorded (an export of the
    same data, read back) is the same source."""
    cfg = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    shape, name, classes = cfg.get("image_shape"), cfg.get("source"), cfg.get("num_classes")
    fix = "pass the --dataset / --data it was built from"
    if isinstance(shape, list) and tuple(shape) != tuple(data.image_shape):
        raise DataError(f"{folder} was built from {name or 'data'} with {tuple(shape)} images, but {data.name} has "
                        f"{tuple(data.image_shape)}; {fix} (its class names are taken from it)")
    if isinstance(classes, int) and classes != data.num_classes:
        raise DataError(f"{folder} was built from {name or 'data'} with {classes} classes, but {data.name} has "
                        f"{data.num_classes}; {fix}")
    same = _same_images(folder, data)
    if same is True:
        return
    if same is False and strict and name == data.name:  # the same source by name, other images
        raise DataError(f"{folder} was built from other images of {name} than these (the data changed since, or it "
                        f"was split another way); {fix}, split as it was then")
    if not isinstance(name, str) or name == data.name:
        return
    if strict:
        raise DataError(f"{folder} was built from {name}, not from {data.name} (other images of the same shape and "
                        f"classes); {fix}")
    log.warning("%s was built from %s, not %s: its class names are taken from %s", folder, name, data.name, data.name)


def _same_images(folder: str | Path, data: ImageDataset) -> bool | None:
    """Whether ``data``'s first images are those ``construct.json`` recorded (their digest); None
    where the folder records no digest (a construction made from Python)."""
    path = Path(folder) / SETTINGS_FILE
    try:
        settings = read_json(path).get("settings") if path.is_file() else None
    except (DataError, AttributeError):
        return None
    if not isinstance(settings, dict) or not isinstance(settings.get("n"), int) or not isinstance(settings.get("data_digest"), str):
        return None
    return settings["n"] <= len(data) and data.head(settings["n"]).digest() == settings["data_digest"]


def is_finished(folder: str | Path, key: str) -> bool:
    """Whether ``folder`` holds a finished construction made with the same configuration ``key``."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return False
    found = read_json(path)
    return isinstance(found, dict) and found.get("key") == key


def robust_dataset(robust_model: nn.Module, source: ImageDataset, folder: str | Path, **kw) -> dict[str, Any] | None:
    """D_R: representation matching through the adversarially trained model."""
    return build_dataset("d_r", robust_model, source, folder, **kw)


def non_robust_dataset(standard_model: nn.Module, source: ImageDataset, folder: str | Path, **kw) -> dict[str, Any] | None:
    """D_NR: the same representation matching through the standard model."""
    return build_dataset("d_nr", standard_model, source, folder, **kw)


def relabelled_dataset(standard_model: nn.Module, source: ImageDataset, folder: str | Path, *, mode: str = "random", **kw) -> dict[str, Any] | None:
    """D_rand (``mode="random"``) or D_det (``mode="det"``)."""
    if mode not in ("random", "det"):
        raise ConfigError(f"mode must be 'random' or 'det', got {mode!r}")
    return build_dataset("d_rand" if mode == "random" else "d_det", standard_model, source, folder, **kw)
