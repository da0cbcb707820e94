"""Threat models: the sets an input may move in, and how to move inside them.

A threat model knows three things (as in Foolbox 3's norm classes):

* ``random_start(x0, generator)``: a random point of the set around ``x0``;
* ``step(x, grad, size)``: a step of length ``size`` (in the ball's own norm) along the steepest
  ascent direction of ``grad`` for that norm: sign(g) for Linf, g/‖g‖₂ for L2, a sparse signed step
  for L1;
* ``project(x, x0)``: back into the ball around ``x0`` *and* the [0, 1] box.

Projecting onto the ball first and clamping to the box second always lands in both, because
clamping only moves coordinates towards ``x0`` (which lies in the box), so no norm grows.
``size`` may be a float or a per-example tensor of shape (N,).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from .errors import ConfigError

_TINY = 1e-12


def _per_example(size: float | torch.Tensor, x: torch.Tensor) -> float | torch.Tensor:
    if isinstance(size, torch.Tensor) and size.ndim > 0:
        return size.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
    return size


def flat_norm(delta: torch.Tensor, p: float) -> torch.Tensor:
    """Per-example ``p``-norm of a batch (N, ...)."""
    return torch.linalg.vector_norm(delta.flatten(1), ord=p, dim=1)


def check_positive(name: str, value: float, *, allow_inf: bool = False) -> float:
    value = float(value)
    if math.isnan(value) or value <= 0 or (math.isinf(value) and not allow_inf):
        allowed = "a positive number (or inf)" if allow_inf else "a positive finite number"
        raise ConfigError(f"{name} must be {allowed}, got {value}")
    return value


def check_steps(steps: int, name: str = "steps") -> int:
    try:
        whole = not isinstance(steps, bool) and int(steps) == steps
    except (TypeError, ValueError, OverflowError):  # NaN, ±inf, a string: not a whole number either
        whole = False
    if not whole or steps < 1 or steps > 2**63 - 1:
        raise ConfigError(f"{name} must be a whole number ≥ 1 (and below 2^63), got {steps}")
    return int(steps)


class ThreatModel(ABC):
    """A norm ball of radius ``eps`` intersected with the [0, 1] box."""

    norm: str = ""
    p: float = 0.0

    def __init__(self, eps: float) -> None:
        self.eps = check_positive("eps", eps, allow_inf=self.allows_unbounded)

    allows_unbounded = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps:g})"

    def norm_of(self, delta: torch.Tensor) -> torch.Tensor:
        return flat_norm(delta, self.p)

    @abstractmethod
    def random_start(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...

    @abstractmethod
    def step(self, x: torch.Tensor, grad: torch.Tensor, size: float | torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def project_delta(self, delta: torch.Tensor) -> torch.Tensor:
        """Project a perturbation onto the ball (not the box)."""

    def project(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return (x0 + self.project_delta(x - x0)).clamp_(0.0, 1.0)


def _randn(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _rand(shape, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype)


class LinfBall(ThreatModel):
    norm, p = "Linf", math.inf

    def random_start(self, x0, generator=None):
        return (x0 + (2 * _rand(x0.shape, x0, generator) - 1) * self.eps).clamp_(0.0, 1.0)

    def step(self, x, grad, size):
        return x + _per_example(size, x) * grad.sign()

    def project_delta(self, delta):
        return delta.clamp(-self.eps, self.eps)


class L2Ball(ThreatModel):
    """L2 ball; ``eps=inf`` gives unbounded L2-normalised steps inside the box (used to match
    representations when building D_R / D_NR)."""

    norm, p = "L2", 2.0
    allows_unbounded = True

    def random_start(self, x0, generator=None):
        """A uniformly random direction at a radius drawn uniformly from [0, ε].

        Not a point uniform in the ball's volume: in d dimensions that radius is ε·U^(1/d), on
        average d/(d+1) of ε (98.5% for 8×8 digits), so every start sat on the sphere, and such a
        start costs the attack (benchmarks/crosscheck.py, digits CNN, 50-step PGD at ε = 0.5: 23.9%
        robust before, 21.1% after, torchattacks' PGDL2 21.4%, 19.7% without a random start).
        """
        if math.isinf(self.eps):
            return x0.clone()
        direction = _randn(x0, generator)
        direction = direction / flat_norm(direction, 2).clamp_min(_TINY).view(-1, *([1] * (x0.ndim - 1)))
        radius = self.eps * _rand((x0.shape[0],), x0, generator)
        return (x0 + direction * radius.view(-1, *([1] * (x0.ndim - 1)))).clamp_(0.0, 1.0)

    def step(self, x, grad, size):
        g_norm = flat_norm(grad, 2).clamp_min(_TINY).view(-1, *([1] * (x.ndim - 1)))
        return x + _per_example(size, x) * grad / g_norm

    def project_delta(self, delta):
        if math.isinf(self.eps):
            return delta
        n = flat_norm(delta, 2).view(-1, *([1] * (delta.ndim - 1)))
        return delta * (self.eps / n.clamp_min(_TINY)).clamp(max=1.0)


def project_l1_ball(v: torch.Tensor, eps: float) -> torch.Tensor:
    """Euclidean projection of each row of ``v`` (N, ...) onto the L1 ball of radius ``eps``
    (Duchi et al. 2008, the sort-based algorithm, vectorised over the batch)."""
    shape = v.shape
    flat = v.flatten(1)
    a = flat.abs()
    inside = a.sum(1) <= eps
    u, _ = torch.sort(a, dim=1, descending=True)
    css = u.cumsum(1)
    j = torch.arange(1, u.shape[1] + 1, device=v.device, dtype=v.dtype)
    cond = u - (css - eps) / j > 0
    rho = cond.to(torch.int64).cumsum(1).argmax(1)  # last index where cond holds (cond is a prefix)
    theta = (css.gather(1, rho[:, None]) - eps) / (rho[:, None] + 1).to(v.dtype)
    projected = flat.sign() * (a - theta).clamp_min(0)
    # θ comes from a cumulative sum of large entries: in float32 the result can overshoot ε by a few
    # ulps (seen: 0.0100023 for ε = 0.01 from entries of size ~5); shrink those rows back onto the ball
    size = projected.abs().sum(1, keepdim=True)
    projected = projected * (eps / size.clamp_min(_TINY)).clamp(max=1.0)
    return torch.where(inside[:, None], flat, projected).view(shape)


class L1Ball(ThreatModel):
    """L1 ball with a true Euclidean projection and sparse steepest-ascent steps.

    A step moves the ``sparsity`` share of coordinates with the largest gradient magnitude (those
    that can still move inside the box), each by ``size / k``, so that the step's L1 length is
    ``size`` (the "SLIDE" step of Tramèr & Boneh 2019).
    """

    norm, p = "L1", 1.0

    def __init__(self, eps: float, *, sparsity: float = 0.05) -> None:
        super().__init__(eps)
        if not 0.0 < sparsity <= 1.0:
            raise ConfigError(f"L1 step sparsity must be in (0, 1], got {sparsity}")
        self.sparsity = float(sparsity)

    def random_start(self, x0, generator=None):
        n, d = x0.shape[0], x0[0].numel()
        # a uniform point of the sphere's simplex (exponential spacings) at a radius uniform in [0, ε],
        # as in L2 (a point uniform in the volume would lie within a hair of the sphere)
        e = -torch.log(_rand((n, d), x0, generator).clamp_min(_TINY))
        mags = (e / e.sum(1, keepdim=True)) * self.eps * _rand((n, 1), x0, generator)
        signs = torch.where(_rand((n, d), x0, generator) < 0.5, -1.0, 1.0).to(x0.dtype)
        return (x0 + (mags * signs).view_as(x0)).clamp_(0.0, 1.0)

    def step(self, x, grad, size):
        g = grad.flatten(1)
        xf = x.flatten(1)
        movable = ((g > 0) & (xf < 1)) | ((g < 0) & (xf > 0))
        score = torch.where(movable, g.abs(), torch.zeros_like(g))
        k = max(1, int(round(self.sparsity * g.shape[1])))
        thresh = score.topk(k, dim=1).values[:, -1:]
        chosen = (score >= thresh) & (score > 0)
        count = chosen.sum(1, keepdim=True).clamp_min(1).to(x.dtype)
        direction = (g.sign() * chosen) / count
        return x + _per_example(size, x) * direction.view_as(x)

    def project_delta(self, delta):
        return project_l1_ball(delta, self.eps)


THREATS: dict[str, type[ThreatModel]] = {"Linf": LinfBall, "L2": L2Ball, "L1": L1Ball}


def make_threat(norm: str, eps: float, **kwargs) -> ThreatModel:
    """A threat model by norm name: ``"Linf"``, ``"L2"`` or ``"L1"`` (case-insensitive)."""
    names = {k.lower(): k for k in THREATS}
    key = names.get(str(norm).lower())
    if key is None:
        raise ConfigError(f"unknown norm {norm!r}; choose one of {', '.join(THREATS)}")
    return THREATS[key](eps, **kwargs)
