"""FAB, the fast adaptive boundary attack (Croce & Hein 2020, "Minimally distorted adversarial
examples with a fast adaptive boundary attack"), untargeted and targeted (FAB-T), in Linf, L2 and L1.

FAB looks for the *smallest* perturbation that changes the class. At the current iterate x⁽ⁱ⁾ it
linearises the classifier: the boundary between the label y and a class l is approximated by the
hyperplane ``π_l = {z : f_l(x⁽ⁱ⁾) − f_y(x⁽ⁱ⁾) + ⟨∇(f_l − f_y)(x⁽ⁱ⁾), z − x⁽ⁱ⁾⟩ = 0}``. The untargeted
attack picks the closest one, ``l = argmin |f_l − f_y| / ‖∇(f_l − f_y)‖_q`` (q the dual norm of p);
FAB-T uses the target's. Then, with ``proj`` the minimal-``p``-norm projection onto ``π_l ∩ [0,1]ᵈ``
(computed exactly, see :func:`min_norm_step`)::

    δ⁽ⁱ⁾ = proj(x⁽ⁱ⁾) − x⁽ⁱ⁾,   δ_orig = proj(x_orig) − x_orig
    α = min(‖δ⁽ⁱ⁾‖ / (‖δ⁽ⁱ⁾‖ + ‖δ_orig‖), α_max)
    x⁽ⁱ⁺¹⁾ = clip_[0,1]((1 − α)(x⁽ⁱ⁾ + η δ⁽ⁱ⁾) + α (x_orig + η δ_orig))

η > 1 overshoots the linearised boundary a little; α biases the step towards the projection of the
original point, which keeps the perturbation small. When x⁽ⁱ⁺¹⁾ is adversarial it is recorded if it
is the smallest so far, and the iterate moves back towards the original, ``x_orig + β (x⁽ⁱ⁺¹⁾ −
x_orig)`` (the "backward step"). A restart after the first one starts from a random point at
distance ``0.5 · min(best norm so far, ε)`` from x_orig.

Defaults are the paper's and AutoAttack's: 100 iterations, 1 restart, α_max = 0.1, η = 1.05,
β = 0.9; FAB-T attacks the ``num_targets`` = 9 classes ranked most likely after the top one on the
clean input, each only on the points still robust (with one restart the targets share one batch of
at most ``batch_rows`` rows, which breaks the same points: see ``FAB._sweep``). With ``eps`` the attack is judged as in
AutoAttack: a point counts (and its adversarial example is returned) only if the smallest
perturbation found lies inside the ε-ball; the others get their clean input back. Without ``eps`` it
is a minimal-norm attack that returns the smallest adversarial example found (or the clean input).

``early_stop`` (on by default, for evaluation): a point leaves the working batch as soon as an
adversarial example inside the ε-ball is found, so later iterations cost less; the set of points
broken does not change (a point's trajectory does not depend on the others'). Off, or without
``eps``, every point runs all iterations and keeps shrinking its perturbation.

Usage::

    x_adv = FABT(norm="L2", eps=0.5)(model, x, y)
    res = FAB(norm="Linf")(model, x, y, return_result=True); res.norms["Linf"]  # minimal-norm
"""

from __future__ import annotations

import math

import torch

from ..threats import flat_norm
from .base import Attack, between, count, flag, hyper, hyperparameters, norm_of, optional, positive_or_inf, top_targets

_P = {"Linf": math.inf, "L2": 2.0, "L1": 1.0}
_DUAL = {"Linf": 1.0, "L2": 2.0, "L1": math.inf}


def min_norm_step(p: torch.Tensor, w: torch.Tensor, c: torch.Tensor, norm: str) -> torch.Tensor:
    """The smallest ``δ`` (in ``norm``) with ``⟨w, δ⟩ = c`` and ``p + δ`` in the [0, 1] box, per row.

    ``p`` and ``w`` are (N, d), ``c`` is (N,). Moving coordinate i by ``m_i ≥ 0`` in the direction
    sign(c·w_i) gains ``|w_i| m_i`` and may go at most ``room_i`` (to the box's face). The optimum:

    * L1: fill the coordinates of largest ``|w_i|`` first (the cheapest gain per unit of norm);
    * Linf: ``m_i = min(r, room_i)`` for the smallest radius r that reaches c;
    * L2: ``m_i = min(λ|w_i|, room_i)`` (the KKT conditions) for the smallest λ that reaches c.

    Linf and L2 share one exact solver: the gain ``h(t) = Σ |w_i| min(t b_i, room_i)`` (b = 1 or
    |w|) is piecewise linear and increasing in t, with breakpoints ``room_i / b_i``; sorting them
    finds the linear piece where h(t) = |c|. Where no δ in the box reaches c, the largest gain is taken.
    """
    need = c.abs()
    direction = torch.sign(c)[:, None] * torch.sign(w)
    room = torch.where(direction > 0, 1.0 - p, torch.where(direction < 0, p, torch.zeros_like(p))).clamp_min(0)
    a = w.abs()
    if norm == "L1":
        order = a.argsort(1, descending=True)
        a_s, room_s = a.gather(1, order), room.gather(1, order)
        cum = (a_s * room_s).cumsum(1)
        before = cum - a_s * room_s  # gain of the coordinates filled before this one
        partial = ((need[:, None] - before) / a_s.clamp_min(1e-30)).clamp(min=0)
        m_s = torch.where(cum <= need[:, None], room_s, torch.minimum(partial, room_s))
        m_s = torch.where(before >= need[:, None], torch.zeros_like(m_s), m_s)
        m = torch.zeros_like(m_s).scatter_(1, order, m_s)
        return direction * m
    b = torch.ones_like(a) if norm == "Linf" else a
    usable = (b > 0) & (a > 0)
    t_break = torch.where(usable, room / b.clamp_min(1e-30), torch.full_like(a, math.inf))
    order = t_break.argsort(1)
    t_s, a_s, b_s, room_s = (v.gather(1, order) for v in (t_break, a, b, room))
    ab = torch.where(t_s.isfinite(), a_s * b_s, torch.zeros_like(a_s))
    fixed = (torch.where(t_s.isfinite(), a_s * room_s, torch.zeros_like(a_s))).cumsum(1)  # saturated up to k
    slope = ab.sum(1, keepdim=True) - ab.cumsum(1)  # the gain rate of the coordinates not yet saturated
    h = fixed + torch.where(t_s.isfinite(), t_s, torch.zeros_like(t_s)) * slope  # h at each breakpoint
    k = (h < need[:, None]).sum(1, keepdim=True)  # breakpoints passed before reaching |c|
    k_prev = (k - 1).clamp(min=0)
    fixed_k = torch.where(k > 0, fixed.gather(1, k_prev), torch.zeros_like(need[:, None]))
    slope_k = torch.where(k > 0, slope.gather(1, k_prev), ab.sum(1, keepdim=True))
    t = torch.where(slope_k > 0, (need[:, None] - fixed_k) / slope_k.clamp_min(1e-30), torch.full_like(slope_k, math.inf))
    m = torch.where(usable, torch.minimum(t * b, room), torch.zeros_like(room))
    return direction * m


@hyperparameters
class FAB(Attack):
    """Untargeted FAB: each step heads for the closest linearised boundary."""

    name = "fab"
    targeted_variant = False

    norm: str = hyper("Linf", check=norm_of(tuple(_P), "FAB"))
    eps: float | None = hyper(None, check=optional(positive_or_inf))  # None: minimal-norm
    steps: int = hyper(100, check=count)
    restarts: int = hyper(1, check=count)
    alpha_max: float = hyper(0.1, check=between(0.0, 1.0, hint="the paper uses 0.1"))
    eta: float = hyper(1.05, check=between(1.0, hint="the overshoot; the paper uses 1.05"))
    beta: float = hyper(0.9, check=between(0.0, 1.0, low_open=True, hint="the backward step; the paper uses 0.9"))
    early_stop: bool = hyper(True, check=flag)
    batch_rows: int = hyper(256, check=count)  # with one restart, targets share a batch up to this many rows; 1: one by one

    # --- one run ----------------------------------------------------------------------------------
    def _boundary(self, model, x, y, target):
        """Logit difference ``f_l − f_y`` (N,) and its input gradient (N, d) for the chosen class l,
        both in the input's dtype (a model may return float64 logits on float32 inputs)."""
        x = x.detach().requires_grad_(True)
        logits = model(x).to(x.dtype)
        n = x.shape[0]
        if target is not None:
            diff = logits.gather(1, target[:, None]).squeeze(1) - logits.gather(1, y[:, None]).squeeze(1)
            (grad,) = torch.autograd.grad(diff.sum(), x)
            return diff.detach(), grad.flatten(1)
        k = logits.shape[1]
        grads = torch.stack([torch.autograd.grad(logits[:, j].sum(), x, retain_graph=j < k - 1)[0].flatten(1)
                             for j in range(k)], 1)  # (N, K, d): the Jacobian, one backward pass per class
        rows = torch.arange(n, device=x.device)
        diff = (logits - logits.gather(1, y[:, None])).detach()
        w = grads - grads[rows, y][:, None]
        dist = diff.abs() / (torch.linalg.vector_norm(w, ord=_DUAL[self.norm], dim=2) + 1e-12)
        dist[rows, y] = math.inf
        l = dist.argmin(1)
        return diff[rows, l], w[rows, l]

    @torch.enable_grad()
    def run(self, model, x0, y, target, start_radius, points: int | None = None):
        """One FAB run; returns (best adversarial point (N, ...), its norm (N,), inf where none).
        ``points``: the batch holds several targets' rows, row r for point r mod ``points``; with
        ``early_stop`` all the rows of a point then leave once one of them is inside the ε-ball."""
        shape, n = x0.shape, x0.shape[0]
        flat0 = x0.flatten(1)
        eps = math.inf if self.eps is None else self.eps
        x = flat0.clone()
        if start_radius is not None:
            g = self.generator(x0.device)
            if self.norm == "Linf":
                u = 2 * torch.rand(flat0.shape, generator=g, device=x0.device, dtype=x0.dtype) - 1
            else:
                u = torch.randn(flat0.shape, generator=g, device=x0.device, dtype=x0.dtype)
            u = u / flat_norm(u, _P[self.norm]).clamp_min(1e-12)[:, None]
            x = torch.where(start_radius.isfinite()[:, None], (flat0 + 0.5 * start_radius.nan_to_num(posinf=0)[:, None] * u)
                            .clamp(0, 1), flat0)
        best = flat0.clone()
        best_norm = torch.full((n,), math.inf, device=x0.device, dtype=x0.dtype)
        active = torch.arange(n, device=x0.device)
        gone = torch.zeros(points or 0, dtype=torch.bool, device=x0.device)  # the points one of whose rows is inside the ball
        for _ in range(self.steps):
            if active.numel() == 0:
                break
            xa, x0a, ya = x[active], flat0[active], y[active]
            ta = None if target is None else target[active]
            diff, w = self._boundary(model, xa.view(-1, *shape[1:]), ya, ta)
            with torch.no_grad():
                d1 = min_norm_step(xa, w, -diff, self.norm)
                d2 = min_norm_step(x0a, w, -diff - (w * (x0a - xa)).sum(1), self.norm)
                a1 = flat_norm(d1, _P[self.norm]).clamp_min(1e-8)
                a2 = flat_norm(d2, _P[self.norm]).clamp_min(1e-8)
                alpha = (a1 / (a1 + a2)).clamp(0.0, self.alpha_max)[:, None]
                xa = ((1 - alpha) * (xa + self.eta * d1) + alpha * (x0a + self.eta * d2)).clamp(0.0, 1.0)
                adv = model(xa.view(-1, *shape[1:])).argmax(1) != ya
                size = flat_norm(xa - x0a, _P[self.norm])
                better = adv & (size < best_norm[active])
                best[active] = torch.where(better[:, None], xa, best[active])
                best_norm[active] = torch.where(better, size, best_norm[active])
                x[active] = torch.where(adv[:, None], x0a + self.beta * (xa - x0a), xa)
                if self.early_stop and math.isfinite(eps):
                    if points is None:
                        active = active[best_norm[active] > eps]
                    else:
                        point = active % points
                        gone.index_fill_(0, point[best_norm[active] <= eps], True)
                        active = active[~gone[point]]
        return best.view(shape), best_norm

    # --- restarts and targets ---------------------------------------------------------------------
    def _sweep(self, model, x, y, targets):
        """Run per entry of ``targets`` (None: untargeted) and restart, each time on the points not yet
        broken inside the ε-ball (all points when there is no ε); keep the smallest example per point.

        With one restart, consecutive targets share one batch (their rows stacked, target after
        target), as many as keep it within ``batch_rows`` rows: on the points no target breaks, each
        target runs to the last step anyway, and one pass over k·N rows costs less than k passes
        over N. A point leaves that batch with all its rows once one of them breaks it inside the
        ε-ball. Each row follows exactly its own target's run (FAB's first run has no random start),
        so the points broken are the same as one target after the other; a broken point may return
        another target's example (the smallest of those found when it left)."""
        eps = math.inf if self.eps is None else self.eps
        tol = 1e-6 + 1e-5 * (eps if math.isfinite(eps) else 0.0)
        with torch.no_grad():
            wrong = model(x).argmax(1) != y
        best, best_norm = x.clone(), torch.where(wrong, 0.0, math.inf).to(x.device, x.dtype)
        view = (-1,) + (1,) * (x.ndim - 1)

        def pending() -> torch.Tensor:  # the points not yet broken (inside the ε-ball where there is one)
            return ((best_norm > eps + tol) if math.isfinite(eps) else ~wrong).nonzero().squeeze(1)

        def merge(idx, x_i, n_i) -> None:  # keep per point the smaller example
            keep = n_i < best_norm[idx]
            best[idx] = torch.where(keep.view(view), x_i, best[idx])
            best_norm[idx] = torch.where(keep, n_i, best_norm[idx])

        a = 0
        while a < len(targets):
            idx = pending()
            m = idx.numel()
            if m == 0:
                return best, best_norm
            k = 1 if self.restarts > 1 or targets[a] is None else max(1, min(len(targets) - a, self.batch_rows // m))
            if k > 1:
                group, a = targets[a:a + k], a + k
                rows = idx.repeat(k)  # row j·m + i is target j on point idx[i]
                x_i, n_i = self.run(model, x[rows], y[rows], torch.cat([t[idx] for t in group]), None, points=m)
                n_i = n_i.view(k, m)
                j = n_i.argmin(0)  # per point its smallest example (the first target's on ties)
                cols = torch.arange(m, device=x.device)
                merge(idx, x_i.view(k, m, *x.shape[1:])[j, cols], n_i[j, cols])
                continue
            target, a = targets[a], a + 1
            for r in range(self.restarts):
                if r > 0:  # the first run takes the points found above
                    idx = pending()
                    if idx.numel() == 0:
                        return best, best_norm
                radius = None if r == 0 else best_norm[idx].clamp(max=eps)
                x_i, n_i = self.run(model, x[idx], y[idx], None if target is None else target[idx], radius)
                merge(idx, x_i, n_i)
        return best, best_norm

    def _finish(self, x, best, best_norm):
        eps = math.inf if self.eps is None else self.eps
        tol = 1e-6 + 1e-5 * (eps if math.isfinite(eps) else 0.0)
        ok = best_norm <= eps + tol
        return torch.where(ok.view(-1, *([1] * (x.ndim - 1))), best, x), {"minimal_norm": best_norm}

    def perturb(self, model, x, y, target):
        best, best_norm = self._sweep(model, x, y, [target])
        return self._finish(x, best, best_norm)


@hyperparameters
class FABT(FAB):
    """FAB-T: targeted FAB against each of the top ``num_targets`` classes in turn (AutoAttack's
    ``fab-t``); success is misclassification, as in AutoAttack."""

    name = "fab_t"

    num_targets: int = hyper(9, check=count)

    def perturb(self, model, x, y, target):
        if target is not None:
            return super().perturb(model, x, y, target)
        best, best_norm = self._sweep(model, x, y, top_targets(model, x, self.num_targets))
        return self._finish(x, best, best_norm)
