"""Basic iterative method and the iterative least-likely class method (Kurakin et al. 2017,
"Adversarial examples in the physical world").

BIM repeats small FGSM steps and clips back into the Linf ε-ball and the [0, 1] box::

    x₀ = x,   xₙ₊₁ = Clip_{x,ε}(xₙ + α · sign ∇ₓ CE(f(xₙ), y))

Paper defaults: α = 1/255 (one grey level), no random start, and
``min(ε·255 + 4, 1.25·ε·255)`` iterations (ε in [0, 1] units; rounded down, at least one), and the
final iterate is returned (``keep_best=False``). Otherwise it is :class:`~.pgd.PGD` with other
defaults, so it shares the one optimisation loop.

Kurakin's count makes the steps travel ``steps · α ≥ ε`` (1.25 ε for small ε, ε + 4/255 for large),
so the ε-ball's surface is within reach. When the caller chooses ``steps`` but not ``step_size``,
:func:`bim_step_size` keeps that property: α = ``max(1/255, 1.25 ε / steps)``, capped at ε (a single
step is then FGSM). With α fixed at 1/255, ten steps at ε = 16/255 could move only 10/255.

The iterative least-likely class method ("iter. l.l.") is the same iteration aimed at the class the
model finds least likely on the clean input, ``y_LL = argmin_i f_i(x)``, descending
``CE(f(xₙ), y_LL)``: :class:`IterativeLeastLikely` does this by default, and is equivalent to
``BIM(eps=ε)(model, x, y, target="least_likely")``. Its success is reaching ``y_LL``.

Usage::

    x_adv = BIM(eps=8 / 255)(model, x, y)
    res = IterativeLeastLikely(eps=8 / 255)(model, x, y, return_result=True)
"""

from __future__ import annotations

from .base import count, hyper, hyperparameters, optional
from .pgd import PGD


def kurakin_steps(eps: float) -> int:
    """Kurakin et al.'s iteration count ``min(ε·255 + 4, 1.25·ε·255)`` (rounded down, at least 1)."""
    return max(1, int(min(eps * 255 + 4, 1.25 * eps * 255) + 1e-9))  # 1e-9: ε = k/255 in floats


def bim_step_size(eps: float, steps: int | None) -> float:
    """BIM's default α: Kurakin's 1/255 with Kurakin's step count (``steps=None``); for a chosen
    count, ``max(1/255, 1.25 ε / steps)`` capped at ε, so that the steps can reach the ball's surface
    (they travel at least 1.25 ε, as Kurakin's own count does for small ε)."""
    if steps is None:
        return 1 / 255
    return min(eps, max(1 / 255, 1.25 * eps / steps))


@hyperparameters
class BIM(PGD):
    """Basic iterative method (Linf): PGD from the clean input with Kurakin's α = 1/255 and steps;
    with a chosen ``steps`` and no ``step_size``, α = :func:`bim_step_size` so that ε is reachable."""

    name = "bim"

    norm: str = hyper("Linf", init=False)
    steps: int | None = hyper(None, check=optional(count))  # None: Kurakin's count
    random_start: bool | None = hyper(False, init=False)
    restarts: int = hyper(1, init=False)
    keep_best: bool = hyper(False)
    early_stop: bool = hyper(False, init=False)
    sparsity: float | None = hyper(None, init=False)

    def resolve(self) -> None:
        self.ball()  # ε checked before the defaults below use it
        if self.step_size is None:
            self.step_size = bim_step_size(self.eps, self.steps)
        if self.steps is None:
            self.steps = kurakin_steps(self.eps)
        super().resolve()


@hyperparameters
class IterativeLeastLikely(BIM):
    """BIM aimed at the least-likely class of the clean input (used when no ``target`` is given)."""

    name = "iterative_least_likely"

    def resolve_target(self, model, x, y, target, num_classes):
        return super().resolve_target(model, x, y, "least_likely" if target is None else target, num_classes)
