"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks"): PGD with momentum and a step size that halves itself, per example.

Algorithm 1 of the paper, with η the step, ρ = 0.75, α = 0.75::

    x⁽¹⁾ = P(x⁽⁰⁾ + η ∇f(x⁽⁰⁾));  then for k ≥ 1:
    z⁽ᵏ⁺¹⁾ = P(x⁽ᵏ⁾ + η step(∇f(x⁽ᵏ⁾)))
    x⁽ᵏ⁺¹⁾ = P(x⁽ᵏ⁾ + α (z⁽ᵏ⁺¹⁾ − x⁽ᵏ⁾) + (1 − α)(x⁽ᵏ⁾ − x⁽ᵏ⁻¹⁾))

``step`` is the threat model's steepest-ascent direction and P the projection onto the ball and
the box. At the checkpoints w_j = ⌊p_j · N⌋ with p₀ = 0, p₁ = 0.22,
p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06), an example halves its η and restarts from its best
point x_max (with the gradient there) when

1. its loss went up in fewer than ρ·(w_j − w_{j−1}) of the steps since the last checkpoint, or
2. its η was not halved at the last checkpoint and its best loss f_max has not improved since.

Condition 2 is also checked at the first checkpoint, as the paper states (the authors' code skips it
there). Defaults: N = 100 iterations, η⁽⁰⁾ = 2ε (ε for L1), random start in the ball, losses
``"ce"`` and ``"dlr"`` (difference of logits ratio). Each example returns its last successful iterate,
otherwise the iterate of highest loss. L1 uses our threat model's sparse step, not the adaptive
sparsity of Croce & Hein's later APGD-L1.

Targeted: called with ``target=t`` APGD maximises the targeted DLR loss
``−(Z_y − Z_t) / (Z_π1 − (Z_π3 + Z_π4)/2)`` (``targeted_loss="ce"`` gives −CE to t instead).
:class:`APGDT` is the paper's APGD-T: without an explicit target it runs the targeted-DLR attack
against each of the ``num_targets`` (default 9) classes ranked most likely after the top one on the
clean input, each run only on the examples no earlier run has fooled; success is misclassification.
``restarts > 1`` likewise reruns on the examples still robust. Consecutive runs share one batch (their
rows stacked, at most ``batch_rows`` rows; ``batch_rows=1`` runs them one by one): fewer, larger
passes, an example leaving with all its rows once one run fools it (see :meth:`APGD.sweep`).

It runs on the shared loop (:func:`~.loop.optimize_inputs`): the momentum, the checkpoints and the
step halving are :class:`APGDUpdate`, the loop's active set is ``early_stop``.

``early_stop`` (on by default: APGD is an evaluation attack): an example leaves the working batch at
its first successful iterate, which is what it returns anyway, and the batch is compacted, so later
steps cost less; the examples that stay follow exactly the steps they would have (examples never
interact and the random start is drawn for the whole batch first). ``eot_iter > 1`` averages the
loss and its gradient over that many calls of a randomised model per step (AutoAttack's EOT; 20 in
its ``rand`` version); success is judged on the last call.

Usage::

    x_adv = APGD(eps=8 / 255, loss="dlr")(model, x, y)
    x_adv = APGDT(norm="L2", eps=0.5)(model, x, y)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..errors import ConfigError
from .base import Attack, between, choice, count, flag, hyper, hyperparameters, num_classes_of, top_targets
from .loop import Update, optimize_inputs
from .losses import cross_entropy, dlr, dlr_targeted

_UNTARGETED = {"ce": cross_entropy, "dlr": dlr}
_TARGETED = ("dlr", "ce")


def checkpoints(steps: int) -> dict[int, int]:
    """APGD's checkpoints w_j (iteration counts) mapped to the length w_j − w_{j−1} of the span they end."""
    p_prev, p = 0.0, 0.22
    marks: dict[int, int] = {}
    last = 0
    while p <= 1.0:
        w = max(1, math.floor(p * steps + 1e-9))
        if w > last and w <= steps:
            marks[w] = w - last
            last = w
        p_prev, p = p, p + max(p - p_prev - 0.03, 0.06)
    return marks


class APGDRun(NamedTuple):
    x: torch.Tensor  # per example: its successful iterate (the first with early_stop, else the last), else the one of highest loss
    success: torch.Tensor
    loss: torch.Tensor  # the best loss f_max (at the success, for the examples the active set retired)
    step_size: torch.Tensor  # η at the end


@hyperparameters
class APGD(Attack):
    """Auto-PGD with the cross-entropy or DLR loss (targeted DLR when called with ``target=``)."""

    name = "apgd"

    norm: str = "Linf"
    eps: float  # checked by the threat model
    steps: int = hyper(100, check=count)
    loss: str = hyper("ce", check=choice(_UNTARGETED, "APGD loss"))
    targeted_loss: str = hyper("dlr", check=choice(_TARGETED, "APGD targeted loss"))
    rho: float = hyper(0.75, check=between(0.0, 1.0, low_open=True, hint="the paper uses 0.75"))
    momentum: float = hyper(0.75, check=between(0.0, 1.0, low_open=True, hint="α; the paper uses 0.75, 1 means none"))
    random_start: bool = hyper(True, check=flag)
    restarts: int = hyper(1, check=count)
    early_stop: bool = hyper(True, check=flag)
    eot_iter: int = hyper(1, check=count)
    sparsity: float | None = hyper(None, record=False)  # the L1 step's share of coordinates (threats.L1Ball)
    batch_rows: int = hyper(256, check=count)  # runs (targets, restarts) share a batch up to this many rows; 1: one by one

    def resolve(self) -> None:
        self.ball(self.sparsity)
        self.initial_step = (1.0 if self.norm == "L1" else 2.0) * self.eps
        self.checkpoints = checkpoints(self.steps)

    def _check_classes(self, model, x, targeted: bool) -> None:
        k = num_classes_of(model, x)
        if targeted and self.targeted_loss == "dlr" and k < 4:
            raise ConfigError(f"the targeted DLR loss needs at least 4 classes, the model has {k}; use targeted_loss='ce'")
        if not targeted and self.loss == "dlr" and k < 3:
            raise ConfigError(f"the DLR loss needs at least 3 classes, the model has {k}; use loss='ce'")

    def loss_fn(self, y: torch.Tensor, target: torch.Tensor | None):
        if target is None:
            return lambda logits: _UNTARGETED[self.loss](logits, y)
        if self.targeted_loss == "dlr":
            return lambda logits: dlr_targeted(logits, y, target)
        return lambda logits: -cross_entropy(logits, target)

    def perturb(self, model, x, y, target):
        self._check_classes(model, x, target is not None)
        return self.sweep(model, x, y, [target] * self.restarts, judge=target)

    def sweep(self, model, x, y, targets, *, judge):
        """Run once per entry of ``targets`` (None: untargeted), each time only on the examples no
        run has fooled yet; ``judge`` is the target that defines success (None: misclassification).
        Keeps per example the successful point, else the one of highest loss.

        Consecutive runs share one batch (:meth:`run` on their rows stacked, run after run), as many
        as keep it within ``batch_rows`` rows: on the examples no run fools, every run goes to the
        last step anyway, and one pass over k·N rows costs less than k passes over N (the fixed cost
        of each call, the model's and ours, is paid once). An example leaves that batch with all its
        rows as soon as one of them fools it. What changes against running them one after the
        other is only the random starts (drawn for the stacked batch) and, for a fooled example,
        which run's success it returns; each row still follows its own run's steps."""
        n = x.shape[0]
        best, best_loss = x.clone(), torch.full((n,), -math.inf, device=x.device)
        fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
        view = (-1,) + (1,) * (x.ndim - 1)
        a = 0
        while a < len(targets):
            idx = (~fooled).nonzero().squeeze(1)
            m = idx.numel()
            if m == 0:
                break
            k = max(1, min(len(targets) - a, self.batch_rows // m))
            group, a = targets[a:a + k], a + k
            rows = idx.repeat(k)  # row j·m + i is run j on example idx[i]
            tr = None if group[0] is None else torch.cat([t[idx] for t in group])
            x_i, ok, loss, _ = self.run(model, x[rows], y[rows], tr, None if judge is None else judge[rows], points=m)
            ok, loss = ok.view(k, m), loss.view(k, m).to(best_loss.dtype)  # float32, as the loop's scores (float64 models)
            x_i = x_i.view(k, m, *x.shape[1:])
            first_ok = ok.float().argmax(0)  # per example its first run (in order) that fooled it, else
            top = loss.argmax(0)             # its run of highest loss
            any_ok = ok.any(0)
            pick = torch.where(any_ok, first_ok, top)
            cols = torch.arange(m, device=x.device)
            x_pick, loss_pick = x_i[pick, cols], loss[pick, cols]
            keep = any_ok | (loss_pick > best_loss[idx])
            best[idx] = torch.where(keep.view(view), x_pick, best[idx])
            best_loss[idx] = torch.where(keep, loss_pick, best_loss[idx])
            fooled[idx] = any_ok
        return best

    _compact = True  # tests and benchmarks switch it off to check that the active set changes nothing

    def run(self, model, x0, y, target, judge, points: int | None = None) -> APGDRun:
        """One APGD run (Algorithm 1) on a batch, ``judge`` as in :meth:`sweep`: the shared loop
        (:func:`~.loop.optimize_inputs`) with APGD's step (:class:`APGDUpdate`); with ``early_stop``
        its active set retires each example at its first success. ``points``: the batch holds
        several runs' rows, row r for example r mod ``points``; the active set then retires all the
        rows of an example once one of them succeeds (``success`` stays per row)."""
        view = (-1,) + (1,) * (x0.ndim - 1)
        found, x_adv = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device), x0.clone()
        hit = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)  # with the active set: the rows that succeeded
        gone = torch.zeros(points or 0, dtype=torch.bool, device=x0.device)  # the examples one of whose rows succeeded

        def objective(x, rows=None):
            """The loss (averaged over ``eot_iter`` calls, and so its gradient) and, with the active
            set, the rows fooled; without it, each example's last successful iterate is kept here."""
            nonlocal found, x_adv
            ys, ts, js = (None if v is None else v if rows is None else v[rows] for v in (y, target, judge))
            loss_fn = self.loss_fn(ys, ts)
            if self.eot_iter == 1:
                logits = model(x)
                loss = loss_fn(logits)
            else:
                loss, logits = eot_loss(model, loss_fn, x, self.eot_iter)
            pred = logits.detach().argmax(1)
            ok = (pred != ys) if js is None else (pred == js)
            if rows is not None:
                if points is None or points == x0.shape[0]:
                    hit[rows[ok]] = True
                    return loss, ok
                example = rows % points
                ok = ok & ~gone[example]  # rows kept frozen in the batch (compact=False) stay as they left
                hit[rows[ok]] = True
                gone.index_fill_(0, example[ok], True)
                return loss, gone[example]
            with torch.no_grad():
                x_adv = torch.where(ok.view(view), x.detach(), x_adv)
                found = found | ok
            return loss

        start = self.threat.random_start(x0, self.generator(x0.device)) if self.random_start else x0
        update = APGDUpdate(self.threat, self.initial_step, x0, momentum=self.momentum, rho=self.rho,
                            checkpoints=self.checkpoints)
        res = optimize_inputs(objective, x0, threat=self.threat, steps=self.steps, x_init=start, update=update,
                              stop=self.early_stop, compact=self._compact)
        if self.early_stop:
            return APGDRun(res.x, hit, res.loss, update.step_sizes())
        return APGDRun(torch.where(found.view(view), x_adv, res.x), found, res.loss, update.step_sizes())


def eot_loss(model, loss_fn, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss averaged over ``n`` calls of a randomised model, and the last call's logits. Where
    ``x`` requires a gradient, the returned loss carries the average of the ``n`` per-call
    gradients (each call's graph is freed before the next, so memory does not grow with ``n``)."""
    total = grad = 0
    for _ in range(n):
        logits = model(x)
        value = loss_fn(logits)
        if x.requires_grad:
            (g,) = torch.autograd.grad(value.sum(), x)
            grad = grad + g
        total = total + value.detach()
    loss = total / n
    if not x.requires_grad:
        return loss, logits
    carrier = (x * (grad / n)).flatten(1).sum(1)  # value 0 after the subtraction, gradient the mean
    return loss + (carrier - carrier.detach()), logits


class APGDUpdate(Update):
    """APGD's step (Algorithm 1): momentum α between the projected step and the last move, and per
    example a step size η that halves at the checkpoints, where the iterate and its gradient go back
    to the best point so far. The first call (the start) sets the state; each later call first
    records the new iterate's loss, then checks a checkpoint, then steps."""

    def __init__(self, threat, initial_step: float, x0: torch.Tensor, *, momentum: float, rho: float,
                 checkpoints: dict[int, int]) -> None:
        super().__init__(threat, initial_step)
        self.momentum, self.rho, self.checkpoints = momentum, rho, checkpoints
        n, device = x0.shape[0], x0.device
        self.s = {"eta": torch.full((n,), initial_step, device=device, dtype=x0.dtype), "rows": torch.arange(n, device=device)}
        self._final_eta = self.s["eta"].clone()  # η of the examples the active set retired, per example of x0

    def select(self, keep):
        gone = self.s["rows"][~keep]
        self._final_eta[gone] = self.s["eta"][~keep]
        for key in self.s:
            self.s[key] = self.s[key][keep]

    def step_sizes(self) -> torch.Tensor:
        """η per example of ``x0`` at the end (or when the active set retired it)."""
        out = self._final_eta.clone()
        out[self.s["rows"]] = self.s["eta"]
        return out

    def step(self, t, x, loss, grad, x0):
        s, view = self.s, (-1,) + (1,) * (x.ndim - 1)
        if t == 0:
            s.update(x_max=x, f_max=loss, grad_max=grad, x_prev=x, loss_prev=loss, increases=torch.zeros_like(loss),
                     halved_last=torch.zeros(loss.shape, dtype=torch.bool, device=loss.device), f_max_last=loss)
        else:
            s["increases"] = s["increases"] + (loss > s["loss_prev"]).to(loss.dtype)
            s["loss_prev"] = loss
            better = loss > s["f_max"]
            s["x_max"] = torch.where(better.view(view), x, s["x_max"])
            s["grad_max"] = torch.where(better.view(view), grad, s["grad_max"])
            s["f_max"] = torch.where(better, loss, s["f_max"])
            span = self.checkpoints.get(t)
            if span is not None:
                halve = (s["increases"] < self.rho * span) | (~s["halved_last"] & (s["f_max"] <= s["f_max_last"]))
                s["eta"] = torch.where(halve, s["eta"] / 2, s["eta"])
                x = torch.where(halve.view(view), s["x_max"], x)
                grad = torch.where(halve.view(view), s["grad_max"], grad)
                s["loss_prev"] = torch.where(halve, s["f_max"], s["loss_prev"])
                s["halved_last"], s["f_max_last"] = halve, s["f_max"]
                s["increases"] = torch.zeros_like(s["increases"])
        a = 1.0 if t == 0 else self.momentum
        z = self.threat.project(self.threat.step(x, grad, s["eta"]), x0)
        x_new = self.threat.project(x + a * (z - x) + (1 - a) * (x - s["x_prev"]), x0)
        s["x_prev"] = x
        return x_new


@hyperparameters
class APGDT(APGD):
    """APGD-T: targeted-DLR APGD against each of the top ``num_targets`` classes in turn."""

    name = "apgd_t"

    loss: str = hyper("ce", init=False)
    num_targets: int = hyper(9, check=count)

    def perturb(self, model, x, y, target):
        if target is not None:
            return super().perturb(model, x, y, target)
        self._check_classes(model, x, targeted=True)
        return self.sweep(model, x, y, top_targets(model, x, self.num_targets, repeat=self.restarts), judge=None)
