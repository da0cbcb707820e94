"""Box-constrained L-BFGS (Szegedy et al. 2014, "Intriguing properties of neural networks"), the
first adversarial-example attack.

For a target class t it solves, per example::

    minimise  c · ‖r‖₂² + CE(f(x + r), t)   subject to  x + r ∈ [0, 1]

and searches c for each example: the largest c whose solution is still classified as t gives the
smallest perturbation. (Szegedy et al. penalise c·|r| and line-search c; the squared norm is the
usual modern form and what Foolbox implements.) Untargeted, the cross-entropy becomes
``−log(1 − p_y) = logsumexp_i Z_i − logsumexp_{i≠y} Z_i``, the cross-entropy of "any class but y".

The inner problem uses ``torch.optim.LBFGS`` (strong-Wolfe line search) on the whole batch at once:
the batch objective is a sum of per-example terms, so its minimiser is every example's minimiser.
Szegedy et al. used L-BFGS-B; here the box is kept by evaluating the model at ``clamp(x + r, 0, 1)``
and projecting the iterate back into the box every ``restart_every`` iterations, where L-BFGS starts
afresh (so stale curvature pairs from before the projection are dropped) — a projected L-BFGS, not
L-BFGS-B. The search on c starts at ``initial_const``, moves ×10 up after a success and ÷10 down after
a failure until a success and a failure bracket it, then bisects geometrically. Each example keeps
its smallest successful perturbation; examples never fooled come back unchanged. Minimal-norm, so
there is no ε.

Usage::

    res = LBFGSAttack()(model, x, y, target=t, return_result=True)
"""

from __future__ import annotations

import math

import torch

from .base import Attack, count, hyper, hyperparameters, positive
from .losses import cross_entropy


def not_label_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``−log(1 − p_y)``: small exactly when the model puts its mass on classes other than ``y``."""
    others = logits.scatter(1, y[:, None], -torch.inf)
    return torch.logsumexp(logits, 1) - torch.logsumexp(others, 1)


@hyperparameters
class LBFGSAttack(Attack):
    """Szegedy et al.'s box-constrained L-BFGS attack with a per-example search on c."""

    name = "lbfgs"
    norm = "L2"

    steps: int = hyper(100, check=count)
    search_steps: int = hyper(8, check=count)
    initial_const: float = hyper(0.1, check=positive)
    restart_every: int = hyper(25, check=count)
    history_size: int = hyper(10, check=count, record=False)

    def _solve(self, model, x, loss_fn, const):
        """Minimise c·‖r‖² + loss over x + r in the box; returns the (clamped) solution."""
        xv = x.clone().requires_grad_(True)

        def closure():
            xc = xv.clamp(0.0, 1.0)
            objective = (const * (xc - x).flatten(1).pow(2).sum(1) + loss_fn(model(xc))).sum()
            (xv.grad,) = torch.autograd.grad(objective, xv)
            return objective.detach()

        done = 0
        while done < self.steps:
            chunk = min(self.restart_every, self.steps - done)
            optimizer = torch.optim.LBFGS([xv], lr=1.0, max_iter=chunk, history_size=self.history_size,
                                          line_search_fn="strong_wolfe")
            optimizer.step(closure)
            with torch.no_grad():
                xv.clamp_(0.0, 1.0)
            done += chunk
        return xv.detach()

    @torch.enable_grad()  # also when called inside a no_grad block
    def perturb(self, model, x, y, target):
        n, view = x.shape[0], (-1,) + (1,) * (x.ndim - 1)

        def loss_fn(logits):
            return not_label_cross_entropy(logits, y) if target is None else cross_entropy(logits, target)

        const = torch.full((n,), self.initial_const, device=x.device)
        largest_ok = torch.zeros(n, device=x.device)  # largest c that succeeded (0: none yet)
        smallest_bad = torch.full((n,), math.inf, device=x.device)  # smallest c that failed
        best_l2 = torch.full((n,), math.inf, device=x.device)
        best_x = x.clone()
        for _ in range(self.search_steps):
            x_new = self._solve(model, x, loss_fn, const)
            with torch.no_grad():
                pred = model(x_new).argmax(1)
                ok = pred != y if target is None else pred == target
                l2 = (x_new - x).flatten(1).pow(2).sum(1)
                better = ok & (l2 < best_l2)
                best_l2 = torch.where(better, l2, best_l2)
                best_x = torch.where(better.view(view), x_new, best_x)
                largest_ok = torch.where(ok, torch.maximum(largest_ok, const), largest_ok)
                smallest_bad = torch.where(ok, smallest_bad, torch.minimum(smallest_bad, const))
                const = torch.where(torch.isinf(smallest_bad), const * 10,
                                    torch.where(largest_ok == 0, const / 10, (largest_ok * smallest_bad).sqrt()))
        return best_x
