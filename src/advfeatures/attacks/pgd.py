"""Projected gradient descent (Madry et al. 2018) in Linf, L2 or L1, and FGSM (Goodfellow et al.
2015) as its one-step special case.

Untargeted: maximise CE(f(x'), y). Targeted: minimise CE(f(x'), t). Each step is the threat model's
steepest-ascent step (sign for Linf, normalised gradient for L2, sparse for L1) followed by
projection onto the ball and the [0, 1] box. With ``restarts > 1`` every example keeps its strongest
run: a successful one first, then the one with the highest loss.

Defaults: ``step_size = 2.5 · eps / steps`` (Madry et al.'s rule). Random start: ``random_start=None``
(the default) starts the first restart from x itself and every later one from a random point of the
ball, because any random start costs something against a single run (50-step L2 PGD at ε = 0.5 on
a digits CNN, benchmarks/crosscheck.py: 19.7% robust from x, 21.1% from a random start);
``True`` starts every restart at random (Madry et al.'s PGD), ``False`` none.

``early_stop`` (active sets, for evaluation; off for training and the dataset constructions, which
keep their fixed step counts): a point is frozen at its first misclassified iterate (the target
reached, for a targeted attack) and leaves the working batch, and restarts run only on the points
still robust. Random starts are drawn for the whole batch before it is narrowed, so each point sees
the same randomness with or without the active set.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Attack, choice, count, flag, hyper, hyperparameters, optional, positive
from .loop import optimize_inputs
from .losses import LOSSES


def _after_first(value):
    return "after the first restart" if value is None else value


@hyperparameters
class PGD(Attack):
    name = "pgd"

    norm: str = "Linf"
    eps: float  # checked by the threat model
    steps: int = hyper(10, check=count)
    step_size: float | None = hyper(None, check=optional(positive))  # None: 2.5 · eps / steps
    random_start: bool | None = hyper(None, check=optional(flag), shown=_after_first)
    restarts: int = hyper(1, check=count)
    loss: str = hyper("ce", check=choice(LOSSES, "loss"))
    keep_best: bool = hyper(True, check=flag, record=False)
    early_stop: bool = hyper(False, check=flag)
    sparsity: float | None = hyper(None, record=False)  # the L1 step's share of coordinates (threats.L1Ball)

    def resolve(self) -> None:
        self.ball(self.sparsity)
        if self.step_size is None:
            self.step_size = 2.5 * self.eps / self.steps

    def objective(self, model: nn.Module, y: torch.Tensor, target: torch.Tensor | None):
        loss_fn = LOSSES[self.loss]
        if target is None:
            return lambda x: loss_fn(model(x), y)
        return lambda x: -loss_fn(model(x), target)

    def _start(self, x, restart: int):
        if self.random_start is False or (self.random_start is None and restart == 0):
            return x
        return self.threat.random_start(x, self.generator(x.device))

    def perturb(self, model, x, y, target):
        if self.early_stop:
            return self._perturb_until_fooled(model, x, y, target)
        objective = self.objective(model, y, target)
        best_x, best_key = x, None
        for r in range(self.restarts):
            res = optimize_inputs(objective, x, threat=self.threat, steps=self.steps, step_size=self.step_size,
                                  x_init=self._start(x, r), keep_best=self.keep_best, final_loss=self.restarts > 1)
            if self.restarts == 1:
                return res.x
            with torch.no_grad():
                pred = model(res.x).argmax(1)
                success = (pred != y) if target is None else (pred == target)
                key = success.float() * 1e6 + res.loss.float().clamp(-1e5, 1e5)  # success first, then loss
            if best_key is None:
                best_x, best_key = res.x, key
            else:
                better = key > best_key
                best_x = torch.where(better.view(-1, 1, 1, 1), res.x, best_x)
                best_key = torch.where(better, key, best_key)
        return best_x

    _compact = True  # tests and benchmarks switch it off to check that the active set changes nothing

    def _perturb_until_fooled(self, model, x, y, target):
        loss_fn = LOSSES[self.loss]
        view = (-1,) + (1,) * (x.ndim - 1)
        out, best_loss = x.clone(), torch.full((x.shape[0],), -torch.inf, device=x.device)
        todo = torch.arange(x.shape[0], device=x.device)
        for r in range(self.restarts):
            start = self._start(x, r)  # drawn for the whole batch: the randomness does not depend on who is left
            if todo.numel() == 0:
                continue
            ys, ts = y[todo], None if target is None else target[todo]

            def objective(xb, rows, ys=ys, ts=ts):
                logits = model(xb)
                pred = logits.detach().argmax(1)
                if ts is None:
                    return loss_fn(logits, ys[rows]), pred != ys[rows]
                return -loss_fn(logits, ts[rows]), pred == ts[rows]

            res = optimize_inputs(objective, x[todo], threat=self.threat, steps=self.steps, step_size=self.step_size,
                                  x_init=start[todo], stop=True, compact=self._compact)
            better = res.decided | (res.loss.float() > best_loss[todo])
            out[todo] = torch.where(better.view(view), res.x, out[todo])
            best_loss[todo] = torch.where(better, res.loss.float(), best_loss[todo])
            todo = todo[~res.decided]
        return out


@hyperparameters
class FGSM(PGD):
    """Fast gradient sign method: one step of size ``eps`` from the clean input (Linf by default;
    ``norm="L2"`` gives the fast gradient method)."""

    name = "fgsm"

    steps: int = hyper(1, init=False)
    step_size: float | None = hyper(None, init=False)  # eps
    random_start: bool | None = hyper(False)
    restarts: int = hyper(1, init=False)
    keep_best: bool = hyper(False, init=False)
    early_stop: bool = hyper(False, init=False)
    sparsity: float | None = hyper(None, init=False)

    def resolve(self) -> None:
        self.step_size = self.eps
        super().resolve()
