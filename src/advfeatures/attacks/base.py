"""What every attack shares: argument checks, targets, modes, randomness and results.

An attack is configured once with keyword-only hyperparameters and called like a module::

    x_adv = PGD(norm="L2", eps=0.5, steps=20)(model, x, y)
    res = PGD(norm="L2", eps=0.5)(model, x, y, target="random", return_result=True)

It returns detached inputs of the same shape, dtype and device; with ``return_result=True`` an
:class:`AttackResult` with per-example success, perturbation norms and final loss. It runs the model
in eval mode and restores every module's mode, never touches parameter gradients, and draws its
randomness from its own ``torch.Generator`` seeded by ``seed`` (never the global RNG).

``stochastic=True`` (every attack takes it) attacks the model's test-time randomness instead: its
Dropout and RReLU layers stay in train mode while everything else, BatchNorm included, is in eval
mode (no batch statistics, running statistics untouched), and the global RNG those layers draw from
is forked and seeded from the attack's generator for each call, so a call is reproducible and leaves
the caller's RNG as it was (:mod:`.stochastic`). Pair it with EOT (APGD's ``eot_iter``) to average
the randomness out; ``success`` in the result is judged on one more draw.

Hyperparameters are declared once, as the fields of a keyword-only dataclass (:func:`hyperparameters`),
each with its check (:func:`hyper`); the constructor, :meth:`Attack.describe` (what reports and
``config.json`` record) and ``repr`` all come from those fields::

    @hyperparameters
    class PGD(Attack):
        eps: float = hyper(check=positive)
        steps: int = hyper(10, check=count)

        def resolve(self):  # settings derived from the checked fields
            self.threat = make_threat(self.norm, self.eps)

A variant redeclares the fields it changes (another default, or ``init=False`` for one it fixes)
and restates no check.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, dataclass_transform

import torch
from torch import nn

from .. import validate
from ..data.dataset import check_images
from ..errors import ConfigError, DataError, ModelError
from ..threats import check_positive, check_steps, flat_norm, make_threat
from .loop import eval_mode
from .losses import cross_entropy
from .stochastic import model_mode

Check = Callable[[str, Any], Any]  # (name, value) -> the value to keep, or a ConfigError


# --- the checks a hyperparameter may declare --------------------------------------------------------
def positive(name: str, value: Any) -> float:
    return check_positive(name, value)


def positive_or_inf(name: str, value: Any) -> float:
    return check_positive(name, value, allow_inf=True)


def count(name: str, value: Any) -> int:
    """A whole number ≥ 1 (steps, restarts, queries, ...)."""
    return check_steps(value, name)


def flag(name: str, value: Any) -> bool:
    return bool(value)


def seed_value(name: str, value: Any) -> int:
    try:
        value = operator.index(value)  # ints, numpy and 0-d torch integers; not 2.5 or "3"
    except TypeError:
        raise ConfigError(f"{name} must be a whole number in [0, {validate.MAX_SEED}], got {value!r}") from None
    return validate.seed(value, name)


def optional(check: Check) -> Check:
    """``check``, with ``None`` (meaning: derive it) let through."""
    return lambda name, value: None if value is None else check(name, value)


def choice(options, what: str = "") -> Check:
    """One of ``options`` (``what`` names it in the error, e.g. "APGD loss")."""
    def check(name: str, value: Any) -> Any:
        if value not in options:
            raise ConfigError(f"unknown {what or name} {value!r}; choose one of {', '.join(options)}")
        return value
    return check


def norm_of(options: tuple[str, ...], who: str) -> Check:
    """A norm among ``options``, case-insensitive, returned in its canonical spelling."""
    def check(name: str, value: Any) -> str:
        names = {k.lower(): k for k in options}
        key = names.get(str(value).lower())
        if key is None:
            raise ConfigError(f"{who} supports norm {' or '.join(options)}, got {value!r}")
        return key
    return check


def between(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False,
            allow_inf: bool = False, hint: str = "") -> Check:
    """A number in the interval from ``low`` to ``high`` (closed ends unless said open; finite unless
    ``allow_inf``); ``hint`` (e.g. "the paper uses 0.75") goes into the error."""
    def check(name: str, value: Any) -> float:
        v = float(value)
        ok = not math.isnan(v) and (allow_inf or math.isfinite(v))
        ok = ok and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        if not ok:
            where = (f"{'>' if low_open else '≥'} {low:g}" if math.isinf(high) else
                     f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}")
            kind = "a number" if allow_inf else "a finite number"
            raise ConfigError(f"{name} must be {kind} {where}{f' ({hint})' if hint else ''}, got {value}")
        return v
    return check


def hyper(default: Any = MISSING, *, check: Check | None = None, record: bool | None = None,
          shown: Callable[[Any], Any] | None = None, init: bool = True) -> Any:
    """A hyperparameter field: its default, its ``check`` (run once, at construction), whether
    :meth:`Attack.describe` records it (default: yes), and how (``shown``: the recorded form of the
    value). What a redeclaration leaves out (None) it inherits from the field it redeclares."""
    return field(default=default, init=init, metadata={"check": check, "record": record, "shown": shown})


def _declared(cls: type, name: str, key: str, default: Any = None) -> Any:
    """``key`` of field ``name`` as the nearest class of ``cls``'s MRO that says it declares it."""
    for klass in cls.__mro__:
        f = klass.__dict__.get("__dataclass_fields__", {}).get(name)
        if f is not None and f.metadata.get(key) is not None:
            return f.metadata[key]
    return default


@dataclass_transform(kw_only_default=True, field_specifiers=(hyper, field))
def hyperparameters(cls: type) -> type:
    """``@dataclass(kw_only=True)`` for attacks: keyword-only constructor from the fields; ``repr``
    and ``describe`` are the one derived pair of :class:`Attack`, and attacks compare (and hash) by
    identity, as before they were dataclasses."""
    return dataclass(kw_only=True, repr=False, eq=False)(cls)

TARGET_MODES = ("random", "least_likely")


@dataclass
class AttackResult:
    x_adv: torch.Tensor
    success: torch.Tensor  # (N,) bool: misclassified (untargeted) or classified as the target
    norms: dict[str, torch.Tensor]  # {"L2": (N,), "Linf": (N,), "L1": (N,)} of x_adv − x
    loss: torch.Tensor  # (N,) cross-entropy w.r.t. the label (untargeted) or the target (targeted)
    predictions: torch.Tensor  # (N,) the model's class for x_adv
    target: torch.Tensor | None = None
    queries: torch.Tensor | None = None  # (N,) model queries, for black-box attacks
    extra: dict = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if self.success.numel() else 0.0


def _first_weight(model: nn.Module) -> torch.Tensor | None:
    try:
        tensors = list(model.parameters()) + list(model.buffers())
    except (AttributeError, TypeError):
        return None
    return next((t for t in tensors if t.is_floating_point()), None)


@contextmanager
def explained_mismatch(model: nn.Module, x: torch.Tensor) -> Iterator[None]:
    """Turn torch's error for images of another dtype or device than the model's weights (float64
    images into a float32 model, CPU images into a CUDA model) into one line naming the fix. Only a
    RuntimeError that speaks of types or devices, raised while the two really differ, is rewritten:
    a model that casts or moves its input itself runs as before."""
    try:
        yield
    except RuntimeError as exc:
        w = _first_weight(model) if isinstance(x, torch.Tensor) else None
        text = str(exc).lower()
        if w is not None and w.dtype != x.dtype and "type" in text:
            raise ModelError(f"the images are {x.dtype} but the model's weights are {w.dtype}; pass images of the "
                             f"model's dtype (x.to({w.dtype})) or convert the model (model.to({x.dtype}))") from exc
        if w is not None and w.device != x.device and "device" in text:
            raise ModelError(f"the images are on {x.device} but the model is on {w.device}; move one to the other "
                             f"(x.to('{w.device}') or model.to('{x.device}'))") from exc
        raise


def num_classes_of(model: nn.Module, x: torch.Tensor) -> int:
    """The model's ``num_classes``, else the width of its logits on one image of ``x``. A model
    must return (N, K) logits with K ≥ 2: one output per image (a sigmoid-style binary model) would
    always be class 0 for argmax, so it is refused rather than evaluated."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    with torch.no_grad(), eval_mode(model), explained_mismatch(model, x):
        out = model(x[:1])
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] < 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"the model must return logits of shape (N, classes) with at least 2 classes, got {got} for one "
                         "image; for a binary model with one logit z, return torch.cat([torch.zeros_like(z), z], 1)")
    return int(out.shape[1])


def check_labels(y: torch.Tensor, x: torch.Tensor, num_classes: int, *, what: str = "labels") -> torch.Tensor:
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.shape[0] != x.shape[0]:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise DataError(f"{what} must be a vector with one entry per image ({x.shape[0]}), got {shape}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise DataError(f"{what} must be integer class indices, got {y.dtype}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(f"{what} must lie in [0, {num_classes - 1}] for a {num_classes}-class model, got [{int(y.min())}, {int(y.max())}]")
    return y.to(device=x.device, dtype=torch.int64)


def random_targets(y: torch.Tensor, num_classes: int, generator: torch.Generator | None) -> torch.Tensor:
    """A uniformly random class different from each label."""
    shift = torch.randint(1, num_classes, y.shape, generator=generator, device=y.device)
    return (y + shift) % num_classes


def least_likely_targets(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmin(1)


def top_targets(model: nn.Module, x: torch.Tensor, num_targets: int, *, repeat: int = 1) -> list[torch.Tensor]:
    """AutoAttack's targets for APGD-T and FAB-T: the classes the model ranks 2nd, 3rd, ... on the
    clean input (at most ``num_targets``, and never more than the other classes), each ``repeat`` times."""
    with torch.no_grad():
        ranked = model(x).argsort(1, descending=True)
    return [ranked[:, j] for j in range(1, min(num_targets, ranked.shape[1] - 1) + 1) for _ in range(repeat)]


@hyperparameters
class Attack:
    """Base class: subclasses declare their hyperparameters as fields (:func:`hyperparameters`),
    derive what follows from them in :meth:`resolve`, and implement :meth:`perturb` (x, y, target
    already checked)."""

    name = "attack"
    norm = "Linf"  # a field in the attacks that take a norm; the threat model's spelling after resolve
    supports_targeted = True

    stochastic: bool = hyper(False, check=flag, record=False)  # recorded (and shown) only when on
    seed: int = hyper(0, check=seed_value, record=False)

    def __post_init__(self) -> None:
        for f in fields(self):
            check = _declared(type(self), f.name, "check")
            if check is not None and f.init:
                setattr(self, f.name, check(f.name, getattr(self, f.name)))
        self._generators: dict[torch.device, torch.Generator] = {}
        self.resolve()

    def resolve(self) -> None:
        """Settings derived from the checked fields (the threat model, default step sizes) and the
        checks that involve several fields; subclasses extend it."""

    def ball(self, sparsity: float | None = None) -> None:
        """Set ``threat`` from ``norm`` and ``eps`` (and the L1 step's ``sparsity``), and both to its spelling."""
        options = {}
        if sparsity is not None:
            if str(self.norm).lower() != "l1":
                raise ConfigError(f"sparsity is an option of the L1 step; drop it for norm {self.norm}")
            options["sparsity"] = sparsity
        self.threat = make_threat(self.norm, self.eps, **options)
        self.norm, self.eps = self.threat.norm, self.threat.eps

    def generator(self, device: torch.device | str) -> torch.Generator:
        """This attack's generator for ``device`` (created from ``seed`` on first use)."""
        device = torch.device(device)
        generators = self.__dict__.setdefault("_generators", {})
        if device not in generators:
            g = torch.Generator(device=device)
            g.manual_seed(self.seed)
            generators[device] = g
        return generators[device]

    def describe(self) -> dict:
        """The hyperparameters for reports and ``config.json``: the name, the norm, then every field
        declared ``record=True`` (as resolved: a derived step size is recorded as the number used)."""
        out = {"attack": self.name, "norm": self.norm}
        for f in fields(self):
            if f.name != "norm" and _declared(type(self), f.name, "record", True):
                shown = _declared(type(self), f.name, "shown")
                value = getattr(self, f.name)
                out[f.name] = shown(value) if shown else value
        if self.stochastic:  # off: the record is what it was before the option existed
            out["stochastic"] = True
        return out

    def __repr__(self) -> str:
        last = ("stochastic", "seed") if self.stochastic else ("seed",)
        args = [f for f in fields(self) if f.init and f.name not in ("stochastic", "seed")]
        args += [f for name in last for f in fields(self) if f.name == name]
        return f"{type(self).__name__}({', '.join(f'{f.name}={getattr(self, f.name)!r}' for f in args)})"

    def running(self, model: nn.Module, device: torch.device | str):
        """The mode the attack runs ``model`` in: eval mode, or with ``stochastic`` its stochastic
        layers on and the global RNG forked and seeded by a seed drawn from this attack's generator
        (:func:`.stochastic.model_mode`). Every module's mode is restored afterwards."""
        if not self.stochastic:
            return eval_mode(model)
        return model_mode(model, stochastic=True, seed=self.generator(device), device=device)

    def resolve_target(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target, num_classes: int) -> torch.Tensor | None:
        if target is None:
            return None
        if not self.supports_targeted:
            raise ConfigError(f"{self.name} is untargeted only; call it without target=")
        if isinstance(target, str):
            if target == "random":
                return random_targets(y, num_classes, self.generator(x.device))
            if target in ("least_likely", "least-likely", "ll"):
                return least_likely_targets(model, x)
            raise ConfigError(f"unknown target mode {target!r}; pass a tensor of classes or one of {', '.join(TARGET_MODES)}")
        return check_labels(target, x, num_classes, what="targets")

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, target=None, return_result: bool = False):
        check_images(x, what=f"{self.name} inputs")
        # Inside a caller's torch.inference_mode() block no input gradient can be taken (enable_grad
        # does not lift it): the attack runs in normal mode, on normal copies of tensors made there.
        with torch.inference_mode(False), explained_mismatch(model, x), self.running(model, x.device):
            x, y, target = (v.clone() if isinstance(v, torch.Tensor) and v.is_inference() else v for v in (x, y, target))
            num_classes = num_classes_of(model, x)
            y = check_labels(y, x, num_classes)
            t = self.resolve_target(model, x, y, target, num_classes)
            out = self.perturb(model, x.detach(), y, t)
            extra: dict = {}
            if isinstance(out, tuple):
                out, extra = out
            x_adv = out.detach().to(x.dtype)
            if not return_result:
                return x_adv
            return self.result(model, x, y, x_adv, t, extra)

    def run_unchecked(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      target: torch.Tensor | None = None) -> torch.Tensor:
        """The attack without :meth:`__call__`'s argument checks, and so without their host
        synchronisations: for callers whose batches are already checked, such as training's inner
        maximisation on every batch. The caller guarantees what ``__call__`` would check: ``x`` NCHW
        in [0, 1], ``y`` (and ``target``, a tensor of classes or None) int64 class indices on ``x``'s
        device within the model's classes; a bad batch gives a wrong answer or a torch error, not one
        of ours. Runs the model in eval mode (restoring every module's; see :meth:`running` for
        ``stochastic``) and returns ``x_adv``, detached."""
        with self.running(model, x.device):
            out = self.perturb(model, x.detach(), y, target)
        return (out[0] if isinstance(out, tuple) else out).detach().to(x.dtype)

    def result(self, model, x, y, x_adv, target, extra) -> AttackResult:
        with torch.no_grad():
            logits = model(x_adv)
            pred = logits.argmax(1)
            ref = y if target is None else target
            success = pred != y if target is None else pred == target
            loss = cross_entropy(logits, ref)
        delta = (x_adv - x).float()
        norms = {"L2": flat_norm(delta, 2), "Linf": flat_norm(delta, float("inf")), "L1": flat_norm(delta, 1)}
        queries = extra.pop("queries", None)
        return AttackResult(x_adv, success, norms, loss, pred, target, queries, extra)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None):
        """The attack itself, for subclasses to implement (x, y, target checked, model in eval mode,
        or in :meth:`running`'s stochastic mode);
        returns ``x_adv`` or ``(x_adv, extra)``. Callers use ``__call__`` or :meth:`run_unchecked`."""
        raise NotImplementedError
