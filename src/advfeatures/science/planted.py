"""A planted-features benchmark: synthetic images whose robust and non-robust features we know.

Ilyas et al. 2019 argue that a standard model relies on *non-robust* features (useful, but flipped
by a perturbation far smaller than the data's natural variation), that D_R keeps the robust
features, D_NR the non-robust ones, and that D_rand / D_det carry the non-robust features of the
new label. On real images nobody can check which features a constructed set kept. Here each
grey image is

    x = 0.5 + a_r · r[c_r] + a_n · n[c_n] + σ · noise      (clamped to [0, 1])

with two families of ``num_classes`` templates, orthonormal, zero-mean and orthogonal to each other:

* **robust** ``r[c]``: a low-frequency 2-D cosine, large (``robust_amplitude`` a_r: another
  class's pattern wins only after an L2 change of ≈ a_r/√2, a visible one);
* **non-robust** ``n[c]``: a pixel checkerboard (the highest spatial frequency) filling the c-th
  block of a ⌈√C⌉ × ⌈√C⌉ grid, tiny (``nonrobust_amplitude`` a_n: flipped by L2 ≈ a_n/√2, below
  the attack ε) but, with a_n ≫ σ, perfectly predictive.

The non-robust class is always the label (c_n = y); the robust class agrees with the label with
probability ``robust_agreement`` (else it is a random other class). So, as on real data, the
non-robust feature is the more predictive one: a standard model must follow it, while a model
adversarially trained with a_n/√2 < ε < a_r/√2 can only use the robust one.

**Measurement** (:func:`feature_signal`). For a dataset with labels ℓ (the new labels of a
constructed set) and per-class scores s[c], a feature's *share* is E[s[ℓ] − mean_{c≠ℓ} s[c]]
divided by its planted strength: ≈ 1 when the feature of class ℓ is there at full strength, ≈ 0
when it is absent or independent of ℓ, negative when it points elsewhere; its *agreement* is
P(argmax_c s[c] = ℓ). Robust scores are the template projections ⟨x − 0.5, r[c]⟩ (strength a_r).
Non-robust scores are the *high-frequency energy in each class's block* (strength: the contrast
of the noise-free codes, :func:`texture_reference`), which
counts a checkerboard of either phase and any other pixel-scale texture there: the perturbations
a convolutional network's attacks and matchings write into a block are pixel-scale textures but
rarely the exact planted code, and another network reads them as that class all the same. The
signed projection on the exact code is reported beside it (``template_share``). On the clean data
the non-robust share is ≈ 1 and the robust one ≈ p − (1 − p)/(C − 1), p = ``robust_agreement``.

**Swap test** (:func:`swap_dataset`): the robust feature says class a, the non-robust one b ≠ a; a
model "follows robust" when it answers a, "follows non-robust" when it answers b.

:func:`run_planted` trains a standard and a robust model on the benchmark, builds D_R, D_NR, D_rand
and D_det with :func:`advfeatures.construct.build_dataset`, measures every set's shares, trains a
fresh model on each, and reports its accuracy, its accuracy on single-feature test sets and its
swap-test behaviour (``planted.json``, ``planted.png`` and ``planted_examples.png``).

Augmentation stays off on this benchmark: a one-pixel random crop inverts the checkerboard's phase
and moves it across block borders.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..attacks.pgd import PGD
from ..construct import MatchingConfig, RelabelConfig, build_dataset, load_constructed
from ..data.dataset import ImageDataset
from ..errors import ConfigError
from ..evaluate import accuracy, robust_accuracy
from ..seeding import derive_seed
from ..storage import write_json_atomic
from ..threats import check_positive, check_steps
from ..train import AdversaryConfig, TrainConfig, train_model
from .common import pixel_texture, predict, seeded_model, stream_generator
from .figures import plot_planted, plot_planted_examples

log = logging.getLogger(__name__)

FAMILIES = ("robust", "non_robust")
_EXAMPLES = 6  # images per set in the examples figure


# ----------------------------------------------------------------------------------------------
# the generator


@dataclass
class PlantedConfig:
    """The benchmark's distribution (defaults: 12×12 grey images, 4 classes)."""

    size: int = 12
    num_classes: int = 4
    robust_amplitude: float = 1.6  # a_r, L2 norm of the robust pattern
    nonrobust_amplitude: float = 0.3  # a_n, L2 norm of the non-robust code
    noise: float = 0.05  # σ, per-pixel Gaussian noise
    robust_agreement: float = 0.8  # P(robust class = label)

    def validate(self) -> PlantedConfig:
        check_steps(self.size, "size")
        check_steps(self.num_classes, "num_classes")
        if self.num_classes < 2:
            raise ConfigError(f"the planted benchmark needs at least 2 classes, got {self.num_classes}")
        if self.size // math.ceil(math.sqrt(self.num_classes)) < 2 or self.size * self.size < 2 * self.num_classes + 1:
            grid = math.ceil(math.sqrt(self.num_classes))
            raise ConfigError(f"{self.num_classes} classes need a {grid}×{grid} grid of blocks of at least 2×2 pixels; use size ≥ {2 * grid}")
        check_positive("robust_amplitude", self.robust_amplitude)
        check_positive("nonrobust_amplitude", self.nonrobust_amplitude)
        if self.noise < 0 or math.isnan(self.noise):
            raise ConfigError(f"noise must be ≥ 0, got {self.noise}")
        if not 0.0 <= self.robust_agreement <= 1.0:
            raise ConfigError(f"robust_agreement is a probability in [0, 1], got {self.robust_agreement}")
        return self


@dataclass
class PlantedFeatures:
    """The two template families, each (C, 1, H, W), orthonormal, zero-mean and orthogonal to each
    other, and the (C, H, W) 0/1 masks of the classes' blocks."""

    robust: torch.Tensor
    non_robust: torch.Tensor
    blocks: torch.Tensor
    config: PlantedConfig

    def templates(self, family: str) -> torch.Tensor:
        if family not in FAMILIES:
            raise ConfigError(f"unknown feature family {family!r}; choose one of {', '.join(FAMILIES)}")
        return self.robust if family == "robust" else self.non_robust

    def amplitude(self, family: str) -> float:
        return self.config.robust_amplitude if family == "robust" else self.config.nonrobust_amplitude


def _cosine(size: int, u: int, v: int) -> torch.Tensor:
    n = torch.arange(size, dtype=torch.float64)
    cu = torch.cos(math.pi * (2 * n + 1) * u / (2 * size))
    cv = torch.cos(math.pi * (2 * n + 1) * v / (2 * size))
    return cu[:, None] * cv[None, :]


def _low_frequencies(size: int, count: int) -> list[tuple[int, int]]:
    """The ``count`` lowest non-constant 2-D cosine frequencies, by u + v then u."""
    pairs = sorted(((u, v) for u in range(size) for v in range(size) if (u, v) != (0, 0)), key=lambda p: (p[0] + p[1], p[0]))
    return pairs[:count]


def _block_masks(size: int, count: int) -> list[torch.Tensor]:
    """``count`` disjoint square blocks on a ⌈√count⌉ × ⌈√count⌉ grid of the image."""
    grid = math.ceil(math.sqrt(count))
    side = size // grid
    masks = []
    for c in range(count):
        m = torch.zeros(size, size, dtype=torch.float64)
        i, j = divmod(c, grid)
        m[i * side : (i + 1) * side, j * side : (j + 1) * side] = 1.0
        masks.append(m)
    return masks


def planted_features(config: PlantedConfig | None = None) -> PlantedFeatures:
    """Robust templates = the C lowest non-constant 2-D cosines; non-robust = a checkerboard filling
    each class's block; all made orthonormal, zero-mean and mutually orthogonal by one QR step
    (which moves the checkerboards by a few per cent at most, under 2% at the default 12×12)."""
    cfg = (config or PlantedConfig()).validate()
    s, c = cfg.size, cfg.num_classes
    checker = torch.tensor([[(-1.0) ** (i + j) for j in range(s)] for i in range(s)], dtype=torch.float64)
    blocks = _block_masks(s, c)
    raw = [torch.ones(s, s, dtype=torch.float64)] + [_cosine(s, u, v) for u, v in _low_frequencies(s, c)] + [checker * b for b in blocks]
    q, r = torch.linalg.qr(torch.stack([t.flatten() for t in raw], 1))
    q = q * torch.sign(torch.diagonal(r)).view(1, -1)  # keep each template's orientation
    basis = q.T.reshape(-1, 1, s, s).float()
    return PlantedFeatures(robust=basis[1 : c + 1].contiguous(), non_robust=basis[c + 1 : 2 * c + 1].contiguous(),
                           blocks=torch.stack(blocks).float(), config=cfg)


def _other_class(c: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    return (c + torch.randint(1, num_classes, c.shape, generator=generator)) % num_classes


def render(features: PlantedFeatures, robust_class: torch.Tensor, nonrobust_class: torch.Tensor, *,
           generator: torch.Generator, robust_amplitude: float | None = None, nonrobust_amplitude: float | None = None) -> torch.Tensor:
    """Images with the given robust and non-robust classes (amplitude 0 leaves a feature out)."""
    cfg = features.config
    a_r = cfg.robust_amplitude if robust_amplitude is None else robust_amplitude
    a_n = cfg.nonrobust_amplitude if nonrobust_amplitude is None else nonrobust_amplitude
    n = robust_class.shape[0]
    noise = torch.randn((n, 1, cfg.size, cfg.size), generator=generator)
    x = 0.5 + a_r * features.robust[robust_class] + a_n * features.non_robust[nonrobust_class] + cfg.noise * noise
    return x.clamp_(0.0, 1.0)


def planted_dataset(features: PlantedFeatures, n: int, *, generator: torch.Generator, name: str = "planted") -> ImageDataset:
    """``n`` images of the benchmark's distribution: label y uniform, non-robust class y, robust class
    y with probability ``robust_agreement`` (else a random other class)."""
    check_steps(n, "n")
    cfg = features.config
    y = torch.randint(0, cfg.num_classes, (n,), generator=generator)
    keep = torch.rand(n, generator=generator) < cfg.robust_agreement
    c_r = torch.where(keep, y, _other_class(y, cfg.num_classes, generator))
    x = render(features, c_r, y, generator=generator)
    return ImageDataset(x, y, [f"class{c}" for c in range(cfg.num_classes)], name,
                        {"robust_class": c_r, "nonrobust_class": y.clone(), "planted": asdict(cfg)})


def swap_dataset(features: PlantedFeatures, n: int, *, generator: torch.Generator, name: str = "planted-swap") -> ImageDataset:
    """The swap test: robust class a, non-robust class b ≠ a, labelled a (``info`` holds both)."""
    check_steps(n, "n")
    cfg = features.config
    a = torch.randint(0, cfg.num_classes, (n,), generator=generator)
    b = _other_class(a, cfg.num_classes, generator)
    x = render(features, a, b, generator=generator)
    return ImageDataset(x, a, [f"class{c}" for c in range(cfg.num_classes)], name,
                        {"robust_class": a.clone(), "nonrobust_class": b, "planted": asdict(cfg)})


def single_feature_dataset(features: PlantedFeatures, n: int, family: str, *, generator: torch.Generator) -> ImageDataset:
    """Images carrying only one family's feature (the other's amplitude set to 0), labelled by it."""
    cfg = features.config
    y = torch.randint(0, cfg.num_classes, (n,), generator=generator)
    zero = {"robust_amplitude": 0.0} if family == "non_robust" else {"nonrobust_amplitude": 0.0}
    features.templates(family)  # validates the name
    x = render(features, y, y, generator=generator, **zero)
    return ImageDataset(x, y, [f"class{c}" for c in range(cfg.num_classes)], f"planted-{family}-only")


# ----------------------------------------------------------------------------------------------
# measurement

def feature_scores(images: torch.Tensor, features: PlantedFeatures, family: str) -> torch.Tensor:
    """(N, C) projections of ``images − 0.5`` on one family's templates (signed, phase-exact)."""
    t = features.templates(family).flatten(1).to(images.device)
    return (images.flatten(1) - 0.5) @ t.T


def texture_energy(images: torch.Tensor, features: PlantedFeatures) -> torch.Tensor:
    """(N, C) high-frequency energy inside each class's block, whatever its phase or pattern.

    The 2×2 mixed difference ``(a − b − c + d)/4`` returns a checkerboard's amplitude and nearly
    nothing of a smooth pattern; its squares are summed over each block (windows assigned by their
    top-left pixel), so the planted code of amplitude a_n contributes ≈ a_n² to its own block.
    """
    r = pixel_texture(images)
    h, w = r.shape[-2:]
    masks = features.blocks[:, :h, :w].to(images)
    return torch.einsum("nhw,chw->nc", r[:, 0].pow(2), masks)


def texture_reference(features: PlantedFeatures) -> float:
    """The texture contrast of the noise-free planted codes themselves (what a share of 1 means)."""
    c = features.config.num_classes
    codes = 0.5 + features.amplitude("non_robust") * features.non_robust
    return float(_contrast(texture_energy(codes, features), torch.arange(c))[0].mean())


def _contrast(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    own = scores.gather(1, labels.view(-1, 1)).squeeze(1)
    others = (scores.sum(1) - own) / (scores.shape[1] - 1)
    return own - others, (scores.argmax(1) == labels).float()


def feature_signal(images: torch.Tensor, labels: torch.Tensor, features: PlantedFeatures) -> dict[str, dict[str, float]]:
    """How much of each planted feature agrees with ``labels`` (see the module docstring).

    ``robust``: ``share`` and ``agreement`` of the signed template projections. ``non_robust``:
    ``share`` and ``agreement`` of the block texture energy (normalised by a_n²), and
    ``template_share`` / ``template_agreement`` of the exact signed code.
    """
    labels = labels.to(images.device).long()
    a_r, a_n = features.amplitude("robust"), features.amplitude("non_robust")
    c_r, agree_r = _contrast(feature_scores(images, features, "robust"), labels)
    c_t, agree_t = _contrast(texture_energy(images, features), labels)
    c_n, agree_n = _contrast(feature_scores(images, features, "non_robust"), labels)
    return {"robust": {"share": float(c_r.mean()) / a_r, "agreement": float(agree_r.mean())},
            "non_robust": {"share": float(c_t.mean()) / texture_reference(features), "agreement": float(agree_t.mean()),
                           "template_share": float(c_n.mean()) / a_n, "template_agreement": float(agree_n.mean())}}


def swap_behaviour(model: torch.nn.Module, swap: ImageDataset, *, device: str | torch.device = "cpu") -> dict[str, float]:
    """How often ``model`` answers the robust class, the non-robust class, or neither on the swap test."""
    pred = predict(model, swap.images, device=device)
    a, b = pred == swap.info["robust_class"], pred == swap.info["nonrobust_class"]
    return {"follows_robust": float(a.float().mean()), "follows_non_robust": float(b.float().mean()),
            "neither": float((~a & ~b).float().mean())}


# ----------------------------------------------------------------------------------------------
# the experiment


@dataclass
class PlantedRun:
    """Everything :func:`run_planted` does, with its defaults in one place."""

    data: PlantedConfig = field(default_factory=PlantedConfig)
    n_train: int = 2000
    n_test: int = 1000
    arch: str = "cnn"
    arch_kwargs: dict[str, Any] = field(default_factory=lambda: {"width": 8, "hidden": 32})
    # no LR decay: the non-robust code is learnt late, from the examples whose robust class disagrees
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=30, batch_size=64, lr=0.1, milestones=(), crop_padding=0,
                                                                   flip=False))
    robust_eps: float = 0.8  # adversarial training: L2 ε between a_n/√2 (0.21) and a_r/√2 (1.13)
    robust_steps: int = 7
    matching: MatchingConfig = field(default_factory=lambda: MatchingConfig(steps=200, step_size=0.1))
    relabel: RelabelConfig = field(default_factory=lambda: RelabelConfig(eps=0.5, steps=50, step_size=0.05))
    eval_eps: float = 0.25

    @classmethod
    def preset(cls, quick: bool) -> PlantedRun:
        if not quick:
            return cls(data=PlantedConfig(size=16, num_classes=10), n_train=5000, n_test=2000)
        # 18 epochs, not 12: at 12 the robust model sits on a tipping point (at seed 0 it had learnt
        # the robust pattern of only some classes under one thread with oneDNN convolutions, and all
        # of them with oneDNN off or two threads), so the findings hung on float rounding. Still
        # near the edge: at 18 epochs seeds 0 and 2 pass every check, seed 1 does not (retrained
        # D_R / D_rand models), and with n_train=800 the robust model of seed 2 collapses again
        return cls(n_train=600, n_test=400, robust_steps=4,
                   train=TrainConfig(epochs=18, batch_size=64, lr=0.1, milestones=(), crop_padding=0, flip=False),
                   matching=MatchingConfig(steps=100, step_size=0.1), relabel=RelabelConfig(eps=0.5, steps=20, step_size=0.05))


def run_planted(out_dir: str | Path, *, seed: int = 0, quick: bool = False, config: PlantedRun | None = None,
                device: str | torch.device = "cpu") -> dict[str, Any]:
    """Train, construct, retrain and measure on the planted benchmark; writes ``planted.json`` and
    ``planted.png`` into ``out_dir`` and returns the results."""
    run = config or PlantedRun.preset(quick)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    feats = planted_features(run.data)
    train = planted_dataset(feats, run.n_train, generator=stream_generator(seed, 1), name="planted-train")
    test = planted_dataset(feats, run.n_test, generator=stream_generator(seed, 2), name="planted-test")
    swap = swap_dataset(feats, run.n_test, generator=stream_generator(seed, 3))
    only = {fam: single_feature_dataset(feats, run.n_test, fam, generator=stream_generator(seed, 4 + i)) for i, fam in enumerate(FAMILIES)}
    shape, classes = train.image_shape, train.num_classes

    def fit(data: ImageDataset, stream: int, cfg: TrainConfig, desc: str) -> torch.nn.Module:
        model = seeded_model(run.arch, shape, classes, seed=derive_seed(seed, stream), **run.arch_kwargs)
        train_model(model, data, replace(cfg, seed=seed + stream), device=device, desc=desc)
        return model

    def describe(model: torch.nn.Module) -> dict[str, Any]:
        attack = PGD(norm="L2", eps=run.eval_eps, steps=20, seed=seed)
        return {"test_accuracy": accuracy(model, test, device=device),
                f"robust_accuracy_L2_{run.eval_eps:g}": robust_accuracy(model, test, attack, device=device, desc="eval"),
                "robust_only_accuracy": accuracy(model, only["robust"], device=device),
                "non_robust_only_accuracy": accuracy(model, only["non_robust"], device=device),
                "swap": swap_behaviour(model, swap, device=device)}

    results: dict[str, Any] = {"config": _jsonable(asdict(run)), "seed": seed,
                               "thresholds": {"robust_flip_l2": run.data.robust_amplitude / math.sqrt(2),
                                              "non_robust_flip_l2": run.data.nonrobust_amplitude / math.sqrt(2)},
                               "signal": {"D": feature_signal(train.images, train.labels, feats)}, "models": {}}
    log.info("planted: training the standard model")
    standard = fit(train, 10, run.train, "standard")
    log.info("planted: training the robust model (L2 ε=%g)", run.robust_eps)
    robust_cfg = replace(run.train, adversary=AdversaryConfig(norm="L2", eps=run.robust_eps, steps=run.robust_steps,
                                                                step_size=2.5 * run.robust_eps / run.robust_steps))
    robust = fit(train, 11, robust_cfg, "robust")
    results["models"]["standard"] = describe(standard)
    results["models"]["robust"] = describe(robust)

    builders = {"d_r": robust, "d_nr": standard, "d_rand": standard, "d_det": standard}
    constructed: dict[str, dict[str, Any]] = {}
    examples = {"D": train.images[:_EXAMPLES]}
    for i, (kind, model) in enumerate(builders.items()):
        folder = out / kind
        if folder.exists():  # shards of an earlier run would be resumed as if they were this run's
            shutil.rmtree(folder)
        build_dataset(kind, model, train, folder, matching=run.matching, relabel=run.relabel, seed=seed + 100 + i, device=device)
        data, manifest = load_constructed(folder, classes=train.classes, name=kind)
        examples[kind] = data.images[:_EXAMPLES]
        entry = {"summary": manifest["summary"], "signal": feature_signal(data.images, data.labels, feats)}
        if kind in ("d_rand", "d_det"):
            entry["signal_vs_source_label"] = feature_signal(data.images, data.info["source_labels"].long(), feats)
        log.info("planted: training on %s", kind)
        entry["model"] = describe(fit(data, 20 + i, run.train, kind))
        constructed[kind] = entry
        results["signal"][kind] = entry["signal"]
    results["constructed"] = constructed
    results["checks"] = planted_checks(results)
    results["figures"] = {"summary": str(plot_planted(results, out / "planted.png")),
                          "examples": str(plot_planted_examples(examples, train.labels[:_EXAMPLES], out / "planted_examples.png"))}
    write_json_atomic(out / "planted.json", results)
    return results


def planted_checks(results: dict[str, Any], *, keep: float = 0.75, small: float = 0.3) -> dict[str, bool]:
    """The benchmark's ground truth as booleans: a set *keeps* a feature when its share is at least
    ``keep`` × the clean training set's, and *loses* it when at most ``small`` × that."""
    sig, cons = results["signal"], results["constructed"]
    ref_r, ref_n = sig["D"]["robust"]["share"], sig["D"]["non_robust"]["share"]
    swap = {k: cons[k]["model"]["swap"] for k in cons}
    return {
        "d_r_keeps_robust": sig["d_r"]["robust"]["share"] >= keep * ref_r,
        "d_r_loses_non_robust": sig["d_r"]["non_robust"]["share"] <= small * ref_n,
        "d_nr_keeps_non_robust": sig["d_nr"]["non_robust"]["share"] >= keep * ref_n,
        "d_nr_loses_robust": sig["d_nr"]["robust"]["share"] <= small * ref_r,
        "d_rand_non_robust_follows_new_label": sig["d_rand"]["non_robust"]["share"] >= keep * ref_n,
        "d_det_non_robust_follows_new_label": sig["d_det"]["non_robust"]["share"] >= keep * ref_n,
        "d_rand_robust_stays_with_source_label": cons["d_rand"]["signal_vs_source_label"]["robust"]["share"] >= keep * ref_r,
        "d_det_robust_stays_with_source_label": cons["d_det"]["signal_vs_source_label"]["robust"]["share"] >= keep * ref_r,
        "d_r_model_follows_robust": swap["d_r"]["follows_robust"] > 0.5,
        "d_nr_model_follows_non_robust": swap["d_nr"]["follows_non_robust"] > 0.5,
        "d_rand_model_follows_non_robust": swap["d_rand"]["follows_non_robust"] > 0.5,
        "d_det_model_follows_non_robust": swap["d_det"]["follows_non_robust"] > 0.5,
    }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj
