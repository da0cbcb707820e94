"""The one input-optimisation loop behind every gradient attack and construction.

Attacks, adversarial training, D_R / D_NR / D_rand / D_det, inversion and feature visualisation
all run :func:`optimize_inputs` with a different objective, threat model, start and step count.

The loop stays on the device: no ``.item()``, no host synchronisation, no clones or Python loops
over examples. Gradients are taken with :func:`torch.autograd.grad` with respect to the input only,
so parameter ``.grad`` fields are never touched and no parameter gradient is computed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..threats import ThreatModel, check_steps

Objective = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class OptimizationResult:
    x: torch.Tensor  # the best iterate per example (or the last one with keep_best=False)
    loss: torch.Tensor | None  # (N,) the objective at ``x`` (None when not asked for: final_loss=False)
    trace: torch.Tensor | None = None  # (steps + 1, N) objective per step, when asked for
    decided: torch.Tensor | None = None  # (N,) bool, with stop=True: the rows frozen at a deciding iterate


class Update:
    """How the loop moves from one iterate to the next: PGD's steepest-ascent step of the threat
    model, then the projection onto its ball and the box (``step_schedule(t)`` scales the size).

    Subclass it for attacks that move differently but share the loop (MI-FGSM's momentum, APGD's
    momentum and self-halving step). :meth:`step` gets the step index ``t``, the iterate ``x`` its
    rows, their objective ``loss`` (N,), the ascent direction ``grad`` and the centres ``x0`` and
    returns the next iterate; per-row state lives on the object, and :meth:`select` narrows it when
    an active set drops rows (``keep``: a bool mask over the current rows).
    """

    def __init__(self, threat: ThreatModel, step_size: float | torch.Tensor,
                 step_schedule: Callable[[int], float] | None = None) -> None:
        self.threat, self.step_size, self.step_schedule = threat, step_size, step_schedule

    def size(self, t: int) -> float | torch.Tensor:
        return self.step_size if self.step_schedule is None else self.step_size * self.step_schedule(t)

    def step(self, t: int, x: torch.Tensor, loss: torch.Tensor, grad: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return self.threat.project(self.threat.step(x, grad, self.size(t)), x0)

    def select(self, keep: torch.Tensor) -> None:
        """Keep the per-row state of the rows ``keep`` (the plain step has none)."""


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode for the block, then restore each one's own mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def optimize_inputs(
    objective: Objective,
    x0: torch.Tensor,
    *,
    threat: ThreatModel,
    steps: int,
    step_size: float | torch.Tensor | None = None,
    x_init: torch.Tensor | None = None,
    maximize: bool = True,
    keep_best: bool = True,
    record_trace: bool = False,
    step_schedule: Callable[[int], float] | None = None,
    final_loss: bool = True,
    stop: bool = False,
    compact: bool = True,
    update: Update | None = None,
) -> OptimizationResult:
    """Maximise (or minimise) ``objective`` over inputs in ``threat``'s set around ``x0``.

    ``objective(x)`` returns one value per example, shape (N,); the loop ascends the sum, so each
    example's step does not depend on the batch size. ``x_init`` is the start (``x0`` when None).
    With ``keep_best`` the per-example best iterate (by objective) is returned, evaluated once more
    after the final step. ``step_schedule(t)`` scales the step size at step ``t``.

    With ``final_loss=False`` (and neither ``keep_best`` nor ``record_trace``) the last iterate is
    returned without evaluating the objective there, so ``loss`` is None: ``steps`` forward and
    backward passes and nothing more (Madry et al.'s PGD needs no extra forward pass, which would
    cost 5% of a 10-step attack).

    With ``stop=True`` (active sets, for evaluation) ``objective(x, rows)`` receives the indices
    ``rows`` (into ``x0``) of the rows it sees and returns ``(loss, decided)``: ``decided`` marks the
    rows whose outcome is settled at ``x`` (an attack: misclassified inside the ball). Such a row is
    frozen there, that iterate is its result, and it leaves the batch, which is compacted so that
    later steps cost less. Rows never interact, so the rows that stay see exactly the steps they
    would have seen; ``compact=False`` keeps frozen rows in the batch (same results, full cost: for
    tests and benchmarks). The step size may be a per-row tensor only without ``stop``.

    ``update`` (an :class:`Update`) replaces the step itself, for attacks with momentum or their own
    step-size rules; it then owns the step size, and ``step_size`` and ``step_schedule`` are unused.
    """
    if update is None:
        if step_size is None:
            raise ConfigError("optimize_inputs needs a step_size (or an update that sets its own steps)")
        if stop and isinstance(step_size, torch.Tensor) and step_size.ndim > 0:
            raise ConfigError("stop=True takes a scalar step size, not one per example")
        update = Update(threat, step_size, step_schedule)
    if stop:
        return _optimize_active(objective, x0, steps=steps, x_init=x_init, maximize=maximize, compact=compact,
                                update=update)
    steps = check_steps(steps)
    sign = 1.0 if maximize else -1.0
    x = (x0 if x_init is None else x_init).detach()
    best_x = x
    best_score = torch.full((x.shape[0],), -torch.inf, device=x.device, dtype=torch.float32)
    trace: list[torch.Tensor] = []
    with torch.enable_grad():  # works inside a caller's no_grad block too
        for t in range(steps):
            x = x.detach().requires_grad_(True)
            loss = objective(x)
            (grad,) = torch.autograd.grad(loss.sum(), x)
            with torch.no_grad():
                score = sign * loss.detach().float()
                if record_trace:
                    trace.append(loss.detach())
                if keep_best:
                    improved = score > best_score
                    best_score = torch.where(improved, score, best_score)
                    best_x = torch.where(improved.view(-1, *([1] * (x.ndim - 1))), x.detach(), best_x)
                x = update.step(t, x.detach(), loss.detach(), sign * grad, x0)
    if not (final_loss or keep_best or record_trace):
        return OptimizationResult(x.detach(), None)
    with torch.no_grad():
        final = objective(x).detach()
    if record_trace:
        trace.append(final)
    if keep_best:
        improved = sign * final.float() > best_score
        x = torch.where(improved.view(-1, *([1] * (x.ndim - 1))), x, best_x)
        final = torch.where(improved, final, (sign * best_score).to(final.dtype))
    return OptimizationResult(x.detach(), final, torch.stack(trace) if record_trace else None)


def _optimize_active(objective, x0, *, steps, x_init, maximize, compact, update):
    """:func:`optimize_inputs` with ``stop=True``: each row returns its first deciding iterate, or
    (never decided) its iterate of best objective, including the last one."""
    steps = check_steps(steps)
    sign = 1.0 if maximize else -1.0
    view = (-1,) + (1,) * (x0.ndim - 1)
    out = (x0 if x_init is None else x_init).detach().clone()
    out_loss = torch.full((x0.shape[0],), -torch.inf, device=x0.device, dtype=torch.float32)
    decided_all = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)
    rows = torch.arange(x0.shape[0], device=x0.device)
    x, base = out.clone(), x0.detach()
    best_x, best_score = x, torch.full_like(out_loss, -torch.inf)
    frozen = torch.zeros_like(decided_all)  # compact=False only: rows kept in the batch but done
    for t in range(steps + 1):
        if rows.numel() == 0:
            break
        last = t == steps
        with torch.set_grad_enabled(not last):  # works inside a caller's no_grad block too
            x = x.detach().requires_grad_(not last)
            loss, decided = objective(x, rows)
            grad = None if last else torch.autograd.grad(loss.sum(), x)[0]
        with torch.no_grad():
            x = x.detach()
            score = sign * loss.detach().float()
            decided = decided & ~frozen
            improved = (score > best_score) & ~frozen
            best_score = torch.where(improved, score, best_score)
            best_x = torch.where(improved.view(view), x, best_x)
            if bool(decided.any()):  # one host sync per step: the price of a shrinking batch
                done = rows[decided]
                out[done], out_loss[done], decided_all[done] = x[decided], score[decided], True
                if compact:
                    keep = ~decided
                    rows, x, base, best_x, best_score, frozen = (v[keep] for v in (rows, x, base, best_x, best_score, frozen))
                    grad = None if grad is None else grad[keep]
                    loss = loss[keep]
                    update.select(keep)
                else:
                    frozen = frozen | decided
            if grad is None:
                break
            moved = update.step(t, x, loss.detach(), sign * grad, base)
            x = torch.where(frozen.view(view), x, moved)
    with torch.no_grad():
        live = ~frozen
        out[rows[live]] = best_x[live]
        out_loss[rows[live]] = best_score[live]
    return OptimizationResult(out, sign * out_loss, decided=decided_all)
