"""DeepFool (Moosavi-Dezfooli et al. 2016): the minimal perturbation that crosses the nearest
linearised decision boundary, iterated.

At xᵢ, with f_k = Z_k(xᵢ) − Z_y(xᵢ) and w_k = ∇Z_k(xᵢ) − ∇Z_y(xᵢ) for every class k ≠ y, the nearest
linearised boundary is l = argmin_k |f_k| / ‖w_k‖_q (q the dual norm: 2 for L2, 1 for Linf) and the
step that reaches it is::

    L2:   rᵢ = |f_l| / ‖w_l‖₂² · w_l          Linf:   rᵢ = |f_l| / ‖w_l‖₁ · sign(w_l)

The next point is xᵢ₊₁ = clip(xᵢ + (1 + overshoot) · rᵢ) — without clipping that is the reference
code's x + (1 + overshoot) · Σ rᵢ. For the [0, 1] box, coordinates sitting at a bound whose w_k points
out of the box are left out of the linearisation (they cannot move), so the step is the one that
reaches the linearised boundary along the face of the box; without this, clipping eats part of
every step and the iterates creep up to the boundary without crossing it. An example stops as soon
as it is misclassified. On an affine classifier with the point inside the box, one step lands
exactly on the nearest boundary, so the result is the closed-form minimal perturbation times
(1 + overshoot).

Defaults (paper): overshoot 0.02, at most 50 iterations, every class a candidate. Untargeted only;
minimal-norm, so there is no ε. Batched: per-class gradients come from one ``autograd.grad`` per
class on the summed logit, examples that are already fooled stop moving, and the loop ends when all
have. Examples still correctly classified after ``steps`` iterations return their last point.

Usage::

    res = DeepFool(norm="L2")(model, x, y, return_result=True)
    res.norms["L2"]        # per-example perturbation sizes
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from ..threats import check_steps, flat_norm
from .base import Attack

_DUAL = {"L2": 2.0, "Linf": 1.0}


class DeepFool(Attack):
    """DeepFool, L2 or Linf, minimal-norm and untargeted."""

    name = "deepfool"
    supports_targeted = False

    def __init__(self, *, norm: str = "L2", steps: int = 50, overshoot: float = 0.02, seed: int = 0) -> None:
        super().__init__(seed=seed)
        names = {k.lower(): k for k in _DUAL}
        if str(norm).lower() not in names:
            raise ConfigError(f"DeepFool supports norm L2 or Linf, got {norm!r}")
        self.norm = names[str(norm).lower()]
        self.steps = check_steps(steps)
        if not (math.isfinite(overshoot) and overshoot >= 0):
            raise ConfigError(f"overshoot must be a finite number ≥ 0 (the paper uses 0.02), got {overshoot}")
        self.overshoot = float(overshoot)

    def describe(self) -> dict:
        return {"attack": self.name, "norm": self.norm, "steps": self.steps, "overshoot": self.overshoot}

    @torch.enable_grad()  # also when called inside a no_grad block
    def perturb(self, model, x, y, target):
        n = x.shape[0]
        rows = torch.arange(n, device=x.device)
        view = (-1,) + (1,) * (x.ndim - 1)
        x_adv = x
        active = torch.ones(n, dtype=torch.bool, device=x.device)
        for _ in range(self.steps):
            xi = x_adv.detach().requires_grad_(True)
            logits = model(xi)
            active = active & (logits.argmax(1) == y)
            if not bool(active.any()):  # one host sync per iteration, to stop early
                break
            k = logits.shape[1]
            grads = torch.stack([torch.autograd.grad(logits[:, c].sum(), xi, retain_graph=c < k - 1)[0]
                                 for c in range(k)], dim=1)  # (N, K, ...)
            with torch.no_grad():
                f = logits - logits.gather(1, y[:, None])  # (N, K): f_k = Z_k − Z_y
                w = grads - grads[rows, y].unsqueeze(1)  # (N, K, ...)
                stuck = ((xi <= 0).unsqueeze(1) & (w < 0)) | ((xi >= 1).unsqueeze(1) & (w > 0))
                w = w.masked_fill(stuck, 0.0)
                w_norm = torch.linalg.vector_norm(w.flatten(2), ord=_DUAL[self.norm], dim=2)
                dist = f.abs() / w_norm.clamp_min(1e-12)
                dist[rows, y] = torch.inf
                nearest = dist.argmin(1)
                d = dist[rows, nearest].view(view)
                w_l = w[rows, nearest]
                if self.norm == "L2":
                    r = d * w_l / flat_norm(w_l, 2).clamp_min(1e-12).view(view)
                else:
                    r = d * w_l.sign()
                r = torch.where(active.view(view), r, torch.zeros_like(r))
                x_adv = (x_adv + (1 + self.overshoot) * r).clamp(0.0, 1.0)
        return x_adv
