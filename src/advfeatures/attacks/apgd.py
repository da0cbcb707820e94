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
``restarts > 1`` likewise reruns on the examples still robust.

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
from ..threats import check_steps, make_threat
from .base import Attack, num_classes_of
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
    x: torch.Tensor  # per example: the last successful iterate, else the iterate of highest loss
    success: torch.Tensor
    loss: torch.Tensor  # the best loss f_max
    step_size: torch.Tensor  # η at the end


class APGD(Attack):
    """Auto-PGD with the cross-entropy or DLR loss (targeted DLR when called with ``target=``)."""

    name = "apgd"

    def __init__(
        self,
        *,
        norm: str = "Linf",
        eps: float,
        steps: int = 100,
        loss: str = "ce",
        targeted_loss: str = "dlr",
        rho: float = 0.75,
        momentum: float = 0.75,
        random_start: bool = True,
        restarts: int = 1,
        early_stop: bool = True,
        eot_iter: int = 1,
        seed: int = 0,
        **threat_kwargs,
    ) -> None:
        super().__init__(seed=seed)
        self.threat = make_threat(norm, eps, **threat_kwargs)
        self.norm, self.eps = self.threat.norm, self.threat.eps
        self.steps = check_steps(steps)
        if loss not in _UNTARGETED:
            raise ConfigError(f"unknown APGD loss {loss!r}; choose one of {', '.join(_UNTARGETED)}")
        if targeted_loss not in _TARGETED:
            raise ConfigError(f"unknown APGD targeted loss {targeted_loss!r}; choose one of {', '.join(_TARGETED)}")
        if not 0.0 < rho <= 1.0:
            raise ConfigError(f"rho must be in (0, 1] (the paper uses 0.75), got {rho}")
        if not 0.0 < momentum <= 1.0:
            raise ConfigError(f"momentum α must be in (0, 1] (the paper uses 0.75; 1 means none), got {momentum}")
        self.loss, self.targeted_loss, self.rho, self.momentum = loss, targeted_loss, float(rho), float(momentum)
        self.random_start = bool(random_start)
        self.restarts = check_steps(restarts, "restarts")
        self.early_stop = bool(early_stop)
        self.eot_iter = check_steps(eot_iter, "eot_iter")
        self.initial_step = (1.0 if self.norm == "L1" else 2.0) * self.eps
        self.checkpoints = checkpoints(self.steps)

    def describe(self) -> dict:
        return {"attack": self.name, "norm": self.norm, "eps": self.eps, "steps": self.steps, "loss": self.loss,
                "targeted_loss": self.targeted_loss, "rho": self.rho, "momentum": self.momentum,
                "random_start": self.random_start, "restarts": self.restarts, "early_stop": self.early_stop,
                "eot_iter": self.eot_iter}

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
        Keeps per example the successful point, else the one of highest loss."""
        best, best_loss = x.clone(), torch.full((x.shape[0],), -math.inf, device=x.device)
        fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for target in targets:
            idx = (~fooled).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x_i, ok, loss, _ = self.run(model, x[idx], y[idx], None if target is None else target[idx],
                                        None if judge is None else judge[idx])
            keep = ok | (loss > best_loss[idx])
            best[idx] = torch.where(keep.view(-1, *([1] * (x.ndim - 1))), x_i, best[idx])
            best_loss[idx] = torch.where(keep, loss, best_loss[idx])
            fooled[idx] = ok
        return best

    _compact = True  # tests and benchmarks switch it off to check that the active set changes nothing

    @torch.enable_grad()  # also when called inside a no_grad block
    def run(self, model, x0, y, target, judge) -> APGDRun:
        """One APGD run (Algorithm 1) on a batch, ``judge`` as in :meth:`sweep`."""
        view = (-1,) + (1,) * (x0.ndim - 1)
        n = x0.shape[0]

        def evaluate(x, rows):
            x = x.detach().requires_grad_(True)
            loss_fn = self.loss_fn(y[rows], None if target is None else target[rows])
            loss = grad = 0
            for _ in range(self.eot_iter):
                logits = model(x)
                value = loss_fn(logits)
                (g,) = torch.autograd.grad(value.sum(), x)
                loss, grad = loss + value.detach(), grad + g
            pred = logits.detach().argmax(1)
            ok = (pred != y[rows]) if judge is None else (pred == judge[rows])
            return loss / self.eot_iter, grad / self.eot_iter, ok

        threat = self.threat
        x = threat.random_start(x0, self.generator(x0.device)) if self.random_start else x0
        rows = torch.arange(n, device=x0.device)
        out_x, out_found = x0.clone(), torch.zeros(n, dtype=torch.bool, device=x0.device)
        out_loss = torch.full((n,), -math.inf, device=x0.device)
        out_eta = torch.full((n,), self.initial_step, device=x0.device, dtype=x0.dtype)
        loss, grad, ok = evaluate(x, rows)
        s = {"x0": x0, "x": x, "x_max": x, "f_max": loss, "grad_max": grad, "x_adv": x, "found": ok, "grad": grad,
             "eta": out_eta.clone(), "x_prev": x, "loss_prev": loss, "increases": torch.zeros_like(loss),
             "halved_last": torch.zeros_like(ok), "f_max_last": loss, "rows": rows}

        def retire(done):
            """Write the finished examples' results out and (with compaction) drop them from the state."""
            r = s["rows"][done]
            out_x[r], out_found[r] = torch.where(s["found"][done].view(view), s["x_adv"][done], s["x_max"][done]), s["found"][done]
            out_loss[r], out_eta[r] = s["f_max"][done], s["eta"][done]
            if self._compact:
                keep = ~done
                for key in s:
                    s[key] = s[key][keep]

        for k in range(self.steps):
            if self.early_stop and self._compact and bool(s["found"].any()):  # one host sync per step
                retire(s["found"])
                if s["rows"].numel() == 0:
                    break
            x, x_prev, x0c = s["x"], s["x_prev"], s["x0"]
            a = 1.0 if k == 0 else self.momentum
            with torch.no_grad():
                z = threat.project(threat.step(x, s["grad"], s["eta"]), x0c)
                x_new = threat.project(x + a * (z - x) + (1 - a) * (x - x_prev), x0c)
                if self.early_stop and not self._compact:  # the found examples stay in the batch, frozen
                    x_new = torch.where(s["found"].view(view), x, x_new)
                s["x_prev"], x = x, x_new
            loss, grad, ok = evaluate(x, s["rows"])
            with torch.no_grad():
                if self.early_stop and not self._compact:
                    frozen = s["found"]
                    loss, grad, ok = (torch.where(frozen.view(view) if v.ndim > 1 else frozen, old, v)
                                      for v, old in ((loss, s["loss_prev"]), (grad, s["grad"]), (ok, frozen)))
                s["increases"] += (loss > s["loss_prev"]).to(loss.dtype)
                s["loss_prev"] = loss
                better = loss > s["f_max"]
                s["x_max"] = torch.where(better.view(view), x, s["x_max"])
                s["grad_max"] = torch.where(better.view(view), grad, s["grad_max"])
                s["f_max"] = torch.where(better, loss, s["f_max"])
                s["x_adv"] = torch.where((ok & ~s["found"]).view(view) if self.early_stop else ok.view(view), x, s["x_adv"])
                s["found"] = s["found"] | ok
                span = self.checkpoints.get(k + 1)
                if span is not None:
                    halve = (s["increases"] < self.rho * span) | (~s["halved_last"] & (s["f_max"] <= s["f_max_last"]))
                    s["eta"] = torch.where(halve, s["eta"] / 2, s["eta"])
                    x = torch.where(halve.view(view), s["x_max"], x)
                    grad = torch.where(halve.view(view), s["grad_max"], grad)
                    s["loss_prev"] = torch.where(halve, s["f_max"], s["loss_prev"])
                    s["halved_last"], s["f_max_last"] = halve, s["f_max"]
                    s["increases"].zero_()
                s["x"], s["grad"] = x, grad
        if s["rows"].numel():
            retire(torch.ones_like(s["rows"], dtype=torch.bool))
        return APGDRun(out_x, out_found, out_loss, out_eta)


class APGDT(APGD):
    """APGD-T: targeted-DLR APGD against each of the top ``num_targets`` classes in turn."""

    name = "apgd_t"

    def __init__(self, *, norm: str = "Linf", eps: float, steps: int = 100, num_targets: int = 9,
                 targeted_loss: str = "dlr", rho: float = 0.75, momentum: float = 0.75, random_start: bool = True,
                 restarts: int = 1, early_stop: bool = True, eot_iter: int = 1, seed: int = 0, **threat_kwargs) -> None:
        super().__init__(norm=norm, eps=eps, steps=steps, targeted_loss=targeted_loss, rho=rho, momentum=momentum,
                         random_start=random_start, restarts=restarts, early_stop=early_stop, eot_iter=eot_iter, seed=seed,
                         **threat_kwargs)
        self.num_targets = check_steps(num_targets, "num_targets")

    def describe(self) -> dict:
        return {**super().describe(), "num_targets": self.num_targets}

    def perturb(self, model, x, y, target):
        if target is not None:
            return super().perturb(model, x, y, target)
        self._check_classes(model, x, targeted=True)
        with torch.no_grad():
            ranked = model(x).argsort(1, descending=True)
        count = min(self.num_targets, ranked.shape[1] - 1)
        targets = [ranked[:, j] for j in range(1, count + 1) for _ in range(self.restarts)]
        return self.sweep(model, x, y, targets, judge=None)
