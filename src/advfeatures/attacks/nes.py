"""NES black-box attack (Ilyas, Engstrom, Athalye & Lin 2018, "Black-box Adversarial Attacks with
Limited Queries and Information"), optionally in the low-frequency DCT subspace of Guo, Frank &
Weinberger 2019 ("Low Frequency Adversarial Perturbation").

The attack only sees the model's scores. Each step estimates the gradient of the loss by natural
evolution strategies with antithetic Gaussian samples::

    g ≈ 1/(n σ) · Σ_{i ≤ n/2} [L(x + σ u_i) − L(x − σ u_i)] · u_i,     u_i ~ N(0, I)

and takes the threat model's steepest-ascent step along it (sign for Linf, normalised for L2),
then projects onto the ball and the [0, 1] box — PGD with an estimated gradient. Probes are not
clipped to the box, so the estimate stays unbiased (σ is tiny). With ``dct_size = r`` each u_i is
an r×r block of Gaussian low-frequency coefficients per channel mapped back to pixels by an
orthonormal inverse DCT-II (matrix products), so the search runs in an r²-dimensional subspace.

Queries are counted per example: one for the clean input, then ``n_samples + 1`` per step (the
probes and the check of the new iterate). An example stops querying as soon as it is adversarial;
the others continue, batched, until ``max_queries``.

Defaults (the paper's ImageNet settings): σ = 0.001, n_samples = 50, step size ε/5 (η = 0.01 at
ε = 0.05), 10 000 queries. Loss: cross-entropy (``loss="margin"`` for the logit margin).

Measured (``max_queries=5000``) on an undefended MLP (one hidden layer of 64 units) trained for a
few seconds on sklearn digits (8×8, 96% clean accuracy), first 128 test images; share of the
correctly classified images broken within 300 / 1 000 / 2 000 queries per image:

* Linf ε = 0.2 (50-step PGD: 100%): 68% / 97% / 99% (median 256 queries); ``dct_size=4``: 77% / 91% / 94%.
* L2 ε = 1.0 (PGD: 100%): 43% / 99% / 100% (median 307); ``dct_size=4``: 46% / 85% / 88%.

So about 1 000 queries break this model. Usage::

    res = NES(norm="Linf", eps=0.1, max_queries=1000)(model, x, y, return_result=True)
    res.queries  # per-example query counts
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..errors import ConfigError
from .base import Attack, choice, count, hyper, hyperparameters, norm_of, optional, positive
from .losses import cross_entropy, margin

NES_LOSSES = {"ce": cross_entropy, "margin": margin}


def dct_matrix(n: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The orthonormal DCT-II matrix D (n×n): ``D @ v`` is the DCT of ``v`` and ``D.T`` its inverse."""
    k = torch.arange(n, device=device, dtype=torch.float64)[:, None]
    i = torch.arange(n, device=device, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(dtype)


def low_frequency_noise(shape: tuple[int, ...], size: int, *, generator: torch.Generator | None, device, dtype) -> torch.Tensor:
    """Gaussian noise (…, C, H, W) living in the lowest ``size``×``size`` DCT frequencies of each
    channel: ``D_Hᵀ[:, :r] · Z · D_W[:r, :]`` with Z ~ N(0, I) of shape (…, C, r, r). The map has
    orthonormal columns, so the noise is a standard Gaussian of that subspace."""
    h, w = shape[-2], shape[-1]
    z = torch.randn((*shape[:-2], size, size), generator=generator, device=device, dtype=dtype)
    dh = dct_matrix(h, device=device, dtype=dtype)[:size]  # (r, H)
    dw = dct_matrix(w, device=device, dtype=dtype)[:size]  # (r, W)
    return dh.T @ z @ dw


def nes_gradient(score: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, u: torch.Tensor, sigma: float) -> torch.Tensor:
    """The antithetic NES estimate of ∇ score at each example of ``x`` (N, ...), from the search
    directions ``u`` (P, N, ...): ``1/(2Pσ) · Σ_p [score(x + σu_p) − score(x − σu_p)] · u_p``.
    ``score`` maps a batch (M, ...) to (M,) and is called once, on all 2·P·N probes."""
    pairs = u.shape[0]
    probes = torch.cat([x + sigma * u, x - sigma * u]).flatten(0, 1)
    scores = score(probes).view(2, pairs, x.shape[0]).to(x.dtype)
    diff = (scores[0] - scores[1]).view(pairs, x.shape[0], *([1] * (x.ndim - 1)))
    return (diff * u).sum(0) / (2 * pairs * sigma)


@hyperparameters
class NES(Attack):
    name = "nes"

    norm: str = hyper("Linf", check=norm_of(("Linf", "L2"), "NES"))
    eps: float  # checked by the threat model
    sigma: float = hyper(0.001, check=positive)
    n_samples: int = hyper(50, check=count)
    step_size: float | None = hyper(None, check=optional(positive))  # None: eps / 5
    max_queries: int = hyper(10_000, check=count)
    loss: str = hyper("ce", check=choice(NES_LOSSES, "NES loss"))
    dct_size: int | None = hyper(None, check=optional(count))

    def resolve(self) -> None:
        self.ball()
        if self.n_samples % 2:
            raise ConfigError(f"n_samples counts antithetic pairs twice and must be even, got {self.n_samples}")
        if self.step_size is None:
            self.step_size = self.eps / 5
        if self.max_queries < self.n_samples + 2:
            raise ConfigError(f"max_queries must allow one step (≥ n_samples + 2 = {self.n_samples + 2}), got {self.max_queries}")

    def _noise(self, pairs: int, x: torch.Tensor) -> torch.Tensor:
        g = self.generator(x.device)
        shape = (pairs, *x.shape)
        if self.dct_size is None:
            return torch.randn(shape, generator=g, device=x.device, dtype=x.dtype)
        return low_frequency_noise(shape, self.dct_size, generator=g, device=x.device, dtype=x.dtype)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None):
        if self.dct_size is not None and self.dct_size > min(x.shape[-2:]):
            raise ConfigError(f"dct_size {self.dct_size} exceeds the image size {tuple(x.shape[-2:])}; use a smaller block")
        loss_fn = NES_LOSSES[self.loss]
        ref = y if target is None else target
        sign = 1.0 if target is None else -1.0  # ascend the loss to y, or descend the loss to the target
        pairs = self.n_samples // 2
        per_step = self.n_samples + 1
        n = x.shape[0]

        def is_adversarial(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return logits.argmax(1) != labels if target is None else logits.argmax(1) == labels

        x_adv = x.clone()
        with torch.no_grad():
            done = is_adversarial(model(x), ref)
            queries = torch.ones(n, dtype=torch.int64, device=x.device)
            for _ in range((self.max_queries - 1) // per_step):
                active = (~done).nonzero().squeeze(1)  # one host sync per step, as in AutoAttack
                if active.numel() == 0:
                    break
                xa, x0, labels = x_adv[active], x[active], ref[active]
                u = self._noise(pairs, xa)  # (pairs, A, C, H, W)
                probe_labels = labels.repeat(2 * pairs)
                grad = nes_gradient(lambda p: sign * loss_fn(model(p), probe_labels), xa, u, self.sigma)
                xa = self.threat.project(self.threat.step(xa, grad, self.step_size), x0)
                x_adv[active] = xa
                done[active] = is_adversarial(model(xa), labels)
                queries[active] += per_step
        return x_adv, {"queries": queries}
