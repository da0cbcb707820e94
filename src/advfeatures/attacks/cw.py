"""Carlini & Wagner 2017, "Towards evaluating the robustness of neural networks": the L2 attack,
and the "CW∞" attack of the later literature.

**CWL2** (the paper's L2 attack). Change of variables x' = ½(tanh w + 1), so the box holds for free,
and minimise with Adam, per example::

    ‖x' − x‖₂² + c · max(max_{i≠t} Z_i(x') − Z_t(x'), −κ)      (targeted, class t)
    ‖x' − x‖₂² + c · max(Z_y(x') − max_{i≠y} Z_i(x'), −κ)      (untargeted)

with a binary search on c per example: after each run, a success lowers the upper bound (and c
becomes the midpoint), a failure raises the lower bound (and c grows ×10 until some run succeeds).
Every example keeps the smallest successful perturbation seen in any iterate of any run; examples
never fooled come back unchanged. A point counts as successful when the adversarial margin exceeds
both 0 and κ. Defaults follow the authors' reference code (``l2_attack.py``): Adam lr 0.01, 9
binary-search steps, initial c 1e-3, κ 0, abort a run early once no example's loss has fallen by
0.01% over a tenth of the iterations (the reference code, run one example per batch, does this per
example) — except ``steps`` (iterations per c): 1000 here, 10 000 there, for CPU budgets. Minimal-norm,
so there is no ε.

**The step budget is a distance in w.** Adam moves each coordinate of w by about ``lr`` per step
whatever the size of its gradient, and every run on c starts again from x, so one run travels at
most about ``steps · lr`` in w per coordinate (1 at 100 steps and lr 0.01). As in the reference code,
w starts at atanh((2x − 1)·(1 − 10⁻⁶)): a pixel at 1/16 starts at w ≈ −1.35 and can move by about
0.27 in 100 steps at lr 0.01, but a pixel at exactly 0 or 1 starts at |w| ≈ 7.25 and needs about
(7.25 − 1.47) / lr ≈ 580 steps before it moves by 0.05. The authors' 10 000 steps, or our 1000,
leave room for that; a short budget does not. Measured on the digits CNNs of
``benchmarks/crosscheck.py`` (58% of their pixels at 0 or 1), on the adversarially trained one:
100 steps × 5 runs (c₀ = 1, lr 0.01) leave every such pixel within 10⁻⁵ of x and break 75.7% of
the correctly classified points; 9 runs, or c₀ = 100, leave that at 75.7%; 600 steps × 5, or lr 0.1
at 100 steps, break every point (median L2 0.748 and 0.754), and so do the defaults (median 0.738;
lr 0.05: 0.716). IBM ART's C&W (plain gradient steps, with a line search that doubles its step size up to 5
times an iteration and keeps it, without bound) moves none of those pixels either and breaks 95.5%
at 100 steps × 5, and as many at 16 steps × 5 (about our forward passes at 100): what it has there
and ours lacks is the distance in w, not compute. For a short budget, raise ``lr`` (about
10 / ``steps``) rather than c.

**CWLinf** is *not* the paper's L∞ attack (its iterated τ-penalty with a search on c). It is what
later work calls "CW∞" (Madry et al.'s MNIST challenge, TRADES, ...): Linf PGD at a fixed ε on the CW
margin loss min(max_{i≠y} Z_i − Z_y, κ) (targeted: min(Z_t − max_{i≠t} Z_i, κ)), κ = 50 as in the
challenge code, 20 steps of 2.5·ε/steps with a random start by default. It shares PGD's loop.

Usage::

    res = CWL2(steps=1000)(model, x, y, return_result=True)      # res.norms["L2"]
    x_adv = CWLinf(eps=8 / 255)(model, x, y)
"""

from __future__ import annotations

import math

import torch

from .base import Attack, between, count, flag, hyper, hyperparameters, positive
from .losses import margin
from .pgd import PGD


_CONFIDENCE = between(0.0, allow_inf=True, hint="κ; 0 finds the closest adversarial example")


def adversarial_margin(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """How far past the decision boundary an example is: positive exactly when the attack succeeds
    (``max_{i≠y} Z_i − Z_y`` untargeted, ``Z_t − max_{i≠t} Z_i`` targeted)."""
    return margin(logits, y) if target is None else -margin(logits, target)


@hyperparameters
class CWL2(Attack):
    """Carlini–Wagner L2: tanh box, Adam, binary search on c, smallest successful perturbation."""

    name = "cw_l2"
    norm = "L2"

    steps: int = hyper(1000, check=count)
    search_steps: int = hyper(9, check=count)
    initial_const: float = hyper(1e-3, check=positive)
    lr: float = hyper(0.01, check=positive)
    confidence: float = hyper(0.0, check=_CONFIDENCE)
    abort_early: bool = hyper(True, check=flag, record=False)

    @torch.enable_grad()  # also when called inside a no_grad block
    def perturb(self, model, x, y, target):
        n, view = x.shape[0], (-1,) + (1,) * (x.ndim - 1)
        w0 = torch.atanh((2 * x - 1) * (1 - 1e-6))
        const = torch.full((n,), self.initial_const, device=x.device)
        lower = torch.zeros(n, device=x.device)
        upper = torch.full((n,), math.inf, device=x.device)
        best_l2 = torch.full((n,), math.inf, device=x.device)
        best_x = x.clone()
        check_every = max(1, self.steps // 10)
        for _ in range(self.search_steps):
            w = w0.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([w], lr=self.lr)
            succeeded = torch.zeros(n, dtype=torch.bool, device=x.device)
            previous = torch.full((n,), math.inf, device=x.device)
            for it in range(self.steps):
                x_new = 0.5 * (torch.tanh(w) + 1)
                adv = adversarial_margin(model(x_new), y, target)
                l2 = (x_new - x).flatten(1).pow(2).sum(1)
                loss = l2 + const * (-adv).clamp_min(-self.confidence)
                (w.grad,) = torch.autograd.grad(loss.sum(), w)
                optimizer.step()
                with torch.no_grad():
                    ok = (adv > 0) & (adv >= self.confidence)
                    better = ok & (l2 < best_l2)
                    best_l2 = torch.where(better, l2, best_l2)
                    best_x = torch.where(better.view(view), x_new, best_x)
                    succeeded |= ok
                if self.abort_early and (it + 1) % check_every == 0:
                    current = loss.detach()
                    if bool((current > previous - 1e-4 * previous.abs()).all()):  # a sync per tenth of the run
                        break
                    previous = current
            upper = torch.where(succeeded, torch.minimum(upper, const), upper)
            lower = torch.where(succeeded, lower, torch.maximum(lower, const))
            const = torch.where(torch.isfinite(upper), (lower + upper) / 2, const * 10)
        return best_x.detach()


@hyperparameters
class CWLinf(PGD):
    """"CW∞": Linf PGD at fixed ε on the CW margin loss capped at κ (not the paper's τ-iteration)."""

    name = "cw_linf"

    norm: str = hyper("Linf", init=False)
    steps: int = hyper(20)
    random_start: bool | None = hyper(True)
    loss: str = hyper("margin", init=False)
    keep_best: bool = hyper(True, init=False)
    early_stop: bool = hyper(False, init=False)
    sparsity: float | None = hyper(None, init=False)
    confidence: float = hyper(50.0, check=_CONFIDENCE)

    def objective(self, model, y, target):
        return lambda x: adversarial_margin(model(x), y, target).clamp(max=self.confidence)
