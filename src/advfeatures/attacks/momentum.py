"""Momentum iterative FGSM (Dong et al. 2018, "Boosting adversarial attacks with momentum") and
input diversity (Xie et al. 2019, "Improving transferability of adversarial examples with input
diversity"): two changes to BIM that make examples transfer better to other models.

MI-FGSM accumulates the L1-normalised gradient with decay μ and steps along the accumulated
direction (its sign for Linf, the L2-normalised direction for L2)::

    gₜ₊₁ = μ · gₜ + ∇ₓJ(xₜ) / ‖∇ₓJ(xₜ)‖₁,     xₜ₊₁ = Proj(xₜ + α · step(gₜ₊₁))

Defaults (Dong et al.): μ = 1.0, T = 10 iterations, α = ε / T, no random start; the last iterate is
returned. With ``diversity_prob = p > 0`` each step's gradient is taken through a random transform
T(x) (Xie et al.): with probability p per example, resize to a random ``r × r`` with
``r ∈ [size, ⌈size·resize_rate⌉)``, zero-pad at a random offset to the fixed
``⌈size·resize_rate⌉``, then (because our models take one input size) resize back to ``size``.
One random size and offset per step serves the whole batch (as in the reference code), drawn from a
CPU generator so no device synchronisation is needed; the per-example coin uses the device's.

Both run on the shared loop (:func:`~.loop.optimize_inputs`): the transform is part of the
objective, the momentum is :class:`MomentumUpdate`. :class:`DIFGSM` is DI²-FGSM (p = 0.5, no momentum); ``MIFGSM(eps=ε, diversity_prob=0.5)`` is
M-DI²-FGSM. Usage::

    x_adv = MIFGSM(eps=16 / 255)(source_model, x, y)     # then evaluate on another model
    x_adv = DIFGSM(eps=16 / 255, momentum=1.0)(source_model, x, y)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..threats import flat_norm
from .base import Attack, between, choice, count, hyper, hyperparameters, optional, positive
from .loop import Update, optimize_inputs
from .losses import LOSSES


def input_diversity(
    x: torch.Tensor,
    *,
    prob: float,
    resize_rate: float,
    size_generator: torch.Generator,
    coin_generator: torch.Generator | None,
) -> torch.Tensor:
    """Xie et al.'s random resize-and-pad, applied to each example with probability ``prob``."""
    if prob <= 0.0:
        return x
    n, _, h, w = x.shape
    out_h, out_w = max(h + 1, math.ceil(h * resize_rate)), max(w + 1, math.ceil(w * resize_rate))
    rnd_h, rnd_w = (int(torch.randint(lo, hi, (1,), generator=size_generator)) for lo, hi in ((h, out_h), (w, out_w)))
    top = int(torch.randint(0, out_h - rnd_h + 1, (1,), generator=size_generator))
    left = int(torch.randint(0, out_w - rnd_w + 1, (1,), generator=size_generator))
    resized = F.interpolate(x, size=(rnd_h, rnd_w), mode="nearest")
    padded = F.pad(resized, (left, out_w - rnd_w - left, top, out_h - rnd_h - top))
    back = F.interpolate(padded, size=(h, w), mode="bilinear", align_corners=False)
    if prob >= 1.0:
        return back
    coin = torch.rand(n, generator=coin_generator, device=x.device) < prob
    return torch.where(coin.view(-1, 1, 1, 1), back, x)


class MomentumUpdate(Update):
    """Dong et al.'s step: accumulate the L1-normalised gradient with decay μ, step along the sum."""

    def __init__(self, threat, step_size: float, momentum: float) -> None:
        super().__init__(threat, step_size)
        self.momentum, self.g = momentum, None

    def step(self, t, x, loss, grad, x0):
        if self.g is None:
            self.g = torch.zeros_like(x)
        l1 = flat_norm(grad, 1).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))
        self.g = self.momentum * self.g + grad / l1
        return super().step(t, x, loss, self.g, x0)

    def select(self, keep):
        if self.g is not None:
            self.g = self.g[keep]


@hyperparameters
class MIFGSM(Attack):
    """Momentum iterative FGSM, optionally with input diversity (``diversity_prob > 0``)."""

    name = "mifgsm"

    norm: str = "Linf"
    eps: float  # checked by the threat model
    steps: int = hyper(10, check=count)
    step_size: float | None = hyper(None, check=optional(positive))  # None: eps / steps
    momentum: float = hyper(1.0, check=between(0.0, hint="Dong et al. use 1.0"))
    diversity_prob: float = hyper(0.0, check=between(0.0, 1.0, hint="a probability; Xie et al. use 0.5"))
    resize_rate: float = hyper(1.1, check=between(1.0, low_open=True, hint="Xie et al. use about 1.1"))
    loss: str = hyper("ce", check=choice(LOSSES, "loss"))

    def resolve(self) -> None:
        self.ball()
        if self.step_size is None:
            self.step_size = self.eps / self.steps

    def perturb(self, model, x, y, target):
        loss_fn = LOSSES[self.loss]
        sign, ref = (1.0, y) if target is None else (-1.0, target)
        size_gen, coin_gen = self.generator("cpu"), self.generator(x.device)

        def objective(z):
            seen = input_diversity(z, prob=self.diversity_prob, resize_rate=self.resize_rate, size_generator=size_gen,
                                   coin_generator=coin_gen)
            return sign * loss_fn(model(seen), ref)

        update = MomentumUpdate(self.threat, self.step_size, self.momentum)
        return optimize_inputs(objective, x, threat=self.threat, steps=self.steps, update=update, keep_best=False,
                               final_loss=False).x


@hyperparameters
class DIFGSM(MIFGSM):
    """DI²-FGSM (Xie et al. 2019): iterative FGSM through random resize-and-pad, p = 0.5, μ = 0."""

    name = "difgsm"

    momentum: float = hyper(0.0)
    diversity_prob: float = hyper(0.5)
