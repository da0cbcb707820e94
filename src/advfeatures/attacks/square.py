"""Square attack (Andriushchenko, Croce, Flammarion & Hein 2020), Linf and L2: a score-based
black-box attack by random search over square-shaped updates.

Each iteration proposes, per example, a change of the perturbation inside a random s×s window
(Linf: the window is set to ±ε per channel; L2: mass is moved from a second window into the first
with the paper's "pseudo-Gaussian" pattern, keeping ‖δ‖₂ = ε) and keeps it if the loss drops. The
window side follows the paper's schedule: s = round(√(p·n_features/C)) with p starting at
``p_init`` and halved at 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of 10 000 iterations
(rescaled to the budget). Loss: the margin z_y − max_{i≠y} z_i (untargeted; minimised until it is
negative), cross-entropy to the target for targeted attacks. Linf starts from vertical ±ε stripes,
L2 from a tiling of pseudo-Gaussian squares.

Queries are counted per example: one for the start, then one per iteration while the example is
still not adversarial; examples that succeed stop querying and leave the working batch (the active
set; ``early_stop=False`` keeps them in the batch, frozen, at full cost, with the same results).
Window positions and signs are drawn per example from the attack's generator (AutoAttack's
implementation shares them across the batch), for the whole batch at every iteration, so the
randomness an example sees does not depend on which others are still active.

Defaults (AutoAttack's): p_init = 0.8, 5 000 queries.
Measured (``max_queries=5000``) on an undefended MLP (one hidden layer of 64 units) trained for a
few seconds on sklearn digits (8×8, 96% clean accuracy), first 128 test images; share of the
correctly classified images broken within 100 / 300 / 1 000 queries per image:

* Linf ε = 0.2 (50-step PGD: 100%): 79% / 98% / 100% (median 25 queries).
* L2 ε = 1.0 (PGD: 100%): 76% / 90% / 96%, 97% at 5 000 (median 23); L2 ε = 1.5: 99% within 100.

So a few hundred queries break this model. Usage::

    res = Square(norm="Linf", eps=8 / 255, max_queries=5000)(model, x, y, return_result=True)
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from ..errors import ConfigError
from .base import Attack, between, count, flag, hyper, hyperparameters, norm_of

_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_selection(p_init: float, it: int, n_iters: int) -> float:
    """The share of pixels the window covers at iteration ``it`` of ``n_iters`` (the paper's schedule)."""
    t = int(it / max(1, n_iters) * 10_000)
    return p_init / 2 ** sum(t > k for k in _HALVINGS)


def _eta_rectangles(x: int, y: int, device) -> torch.Tensor:
    delta = torch.zeros(x, y, device=device)
    cx, cy = x // 2 + 1, y // 2 + 1
    r, c = cx - 1, cy - 1
    for k in range(max(cx, cy)):
        delta[max(r, 0) : min(r + 2 * k + 1, x), max(c, 0) : min(c + 2 * k + 1, y)] += 1.0 / (k + 1) ** 2
        r, c = r - 1, c - 1
    return delta / delta.pow(2).sum().sqrt().clamp_min(1e-12)


@functools.lru_cache(maxsize=128)
def _pseudo_gaussian_cpu(s: int) -> torch.Tensor:
    delta = torch.zeros(s, s)
    if s // 2:
        delta[: s // 2] = _eta_rectangles(s // 2, s, "cpu")
    delta[s // 2 :] = -_eta_rectangles(s - s // 2, s, "cpu")
    return delta / delta.pow(2).sum().sqrt().clamp_min(1e-12)


def pseudo_gaussian(s: int, *, transpose: bool, device) -> torch.Tensor:
    """The paper's s×s L2 update: two stacked rectangles of concentric rings, +1 and −1, unit norm."""
    delta = _pseudo_gaussian_cpu(s).to(device)
    return delta.T.contiguous() if transpose else delta.clone()


@functools.lru_cache(maxsize=128)
def _flat_pattern(s: int, transpose: bool, device, dtype) -> torch.Tensor:
    """:func:`pseudo_gaussian` flattened to (s·s,), cached: the search asks for it at every query."""
    return pseudo_gaussian(s, transpose=transpose, device=device).to(dtype).view(s * s)


@functools.lru_cache(maxsize=128)
def _window_offsets(s: int, w: int, device) -> torch.Tensor:
    """Flat offsets (s·s,) of an s×s window's pixels from its top-left corner, in an image of width w."""
    ar = torch.arange(s, device=device)
    return (ar.view(s, 1) * w + ar).flatten()


def _l2(delta: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm, shaped to broadcast against ``delta``."""
    return torch.linalg.vector_norm(delta.flatten(1), dim=1).view(-1, *([1] * (delta.ndim - 1)))


@hyperparameters
class Square(Attack):
    name = "square"

    norm: str = hyper("Linf", check=norm_of(("Linf", "L2"), "Square"))
    eps: float  # checked by the threat model
    max_queries: int = hyper(5000, check=count)
    p_init: float = hyper(0.8, check=between(0.0, 1.0, low_open=True, hint="AutoAttack uses 0.8"))
    early_stop: bool = hyper(True, check=flag)

    def resolve(self) -> None:
        self.ball()
        if math.isinf(self.eps):
            raise ConfigError("Square needs a finite eps")

    # --- pieces -----------------------------------------------------------------------------------
    def _margin_and_loss(self, logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(margin, loss): margin > 0 while the example is not adversarial; the loss is minimised."""
        own = logits.gather(1, labels[:, None]).squeeze(1)
        other = logits.scatter(1, labels[:, None], -torch.inf).amax(1)
        if not targeted:
            return own - other, own - other
        return other - own, torch.nn.functional.cross_entropy(logits, labels, reduction="none")

    def _windows(self, k: int, n: int, h: int, w: int, s: int, g: torch.Generator, device, pick=None) -> torch.Tensor:
        """Flat indices (k, rows, s·s) into an h×w image of ``k`` random s×s windows per example,
        drawn for all ``n`` rows (top then left corner, window after window), then the rows ``pick``
        kept. Each window is read and written with one gather or scatter over the flattened image
        instead of advanced indexing by row, channel, row and column (several times the cost)."""
        if h == w:  # one draw; a CPU generator fills it as k separate (top, left) draws would
            corners = torch.randint(0, h - s + 1, (2 * k, n), generator=g, device=device)
        else:
            corners = torch.cat([torch.randint(0, (h, w)[j % 2] - s + 1, (1, n), generator=g, device=device)
                                 for j in range(2 * k)])
        if pick is not None:
            corners = corners[:, pick]
        return (corners[0::2] * w + corners[1::2]).unsqueeze(2) + _window_offsets(s, w, device)

    def _signs(self, shape, g: torch.Generator, device, dtype, pick=None) -> torch.Tensor:
        signs = torch.randint(0, 2, shape, generator=g, device=device).to(dtype).mul_(2).sub_(1)
        return signs if pick is None else signs[pick]

    def _init(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        if self.norm == "Linf":  # vertical stripes of ±ε
            return (x + self.eps * self._signs((n, c, 1, w), g, x.device, x.dtype)).clamp(0.0, 1.0)
        # squares of a fifth of the side, centred (AutoAttack's, whose images are square); sized by the
        # shorter side, so that on a tall narrow image they still fit across it (by the height alone
        # none did on 20×3, and the search started from the clean image)
        side = min(h, w)
        s = max(side // 5, 1)
        delta = torch.zeros_like(x)
        start = (side - 5 * s) // 2 if side >= 5 else 0
        for top in range(start, h - s + 1, s):
            for left in range(start, w - s + 1, s):
                t = torch.rand((), generator=g, device=x.device).item() > 0.5
                pattern = pseudo_gaussian(s, transpose=t, device=x.device).to(x.dtype)
                delta[:, :, top : top + s, left : left + s] += pattern * self._signs((n, c, 1, 1), g, x.device, x.dtype)
        return (x + delta / _l2(delta).clamp_min(1e-12) * self.eps).clamp(0.0, 1.0)

    def _propose(self, x: torch.Tensor, x_best: torch.Tensor, it: int, n_iters: int, g: torch.Generator,
                 pick: torch.Tensor | None, n_all: int) -> torch.Tensor:
        """A proposal for the rows ``pick`` of the batch of ``n_all`` (``x``, ``x_best``: those rows;
        ``pick=None``: all of them)."""
        n, c, h, w = x.shape
        p = p_selection(self.p_init, it, n_iters)
        delta = (x_best - x).reshape(n, c, h * w)  # a new tensor (a copy if x is not contiguous)
        if self.norm == "Linf":
            s = min(max(int(round(math.sqrt(p * c * h * w / c))), 1), h, w)
            win = self._windows(1, n_all, h, w, s, g, x.device, pick)[0].unsqueeze(1).expand(n, c, s * s)
            value = (self.eps * self._signs((n_all, c, 1), g, x.device, x.dtype, pick)).expand(n, c, s * s)
            delta.scatter_(2, win, value)
            x_new = (x + delta.view_as(x)).clamp(0.0, 1.0)
            # a window of pixels already clipped at 0 or 1 may not change at all: flip its sign once
            same = (x_new == x_best).flatten(1).all(1)
            delta.scatter_(2, win, torch.where(same.view(n, 1, 1), -value, value))
            return (x + delta.view_as(x)).clamp(0.0, 1.0)
        s = max(int(round(math.sqrt(p * c * h * w / c))), 3)
        s = min(s + 1 if s % 2 == 0 else s, h, w)
        wins = self._windows(2, n_all, h, w, s, g, x.device, pick)  # (2, n, s·s): win1 gets the update, win2 loses its mass
        win1, win2 = (v.unsqueeze(1).expand(n, c, s * s) for v in wins)
        mask = torch.zeros((n, 1, h * w), device=x.device, dtype=x.dtype)
        mask.scatter_(2, wins.permute(1, 0, 2).reshape(n, 1, 2 * s * s), 1.0)
        norm_image = _l2(delta)
        norm_windows = _l2(delta * mask)
        old = delta.gather(2, win1)
        old = old / old.pow(2).sum(2, keepdim=True).sqrt().clamp_min(1e-12)
        t = torch.rand((), generator=g, device=x.device).item() > 0.5
        new = _flat_pattern(s, t, x.device, x.dtype) * self._signs((n_all, c, 1), g, x.device, x.dtype, pick) + old
        budget = ((self.eps**2 - norm_image**2).clamp_min(0) / c + norm_windows**2).sqrt()
        new = new / new.pow(2).sum(2, keepdim=True).sqrt().clamp_min(1e-12) * budget
        delta.scatter_(2, win2, 0.0)
        delta.scatter_(2, win1, new)
        return (x + (delta / _l2(delta).clamp_min(1e-12) * self.eps).view_as(x)).clamp(0.0, 1.0)

    # --- the search -------------------------------------------------------------------------------
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None):
        targeted = target is not None
        labels = y if target is None else target
        g = self.generator(x.device)
        n_iters = self.max_queries - 1
        # The search needs no gradient at all: inference mode also skips autograd's per-tensor
        # bookkeeping (version counters, view tracking) on the thousands of small tensors of each
        # query (the same numbers as under no_grad). What leaves it is cloned outside, so the caller
        # gets ordinary tensors.
        with torch.inference_mode():
            x_best = self._init(x, g)
            margin_min, loss_min = self._margin_and_loss(model(x_best), labels, targeted)
            queries = torch.ones(x.shape[0], dtype=torch.int64, device=x.device)
            # The working batch is kept compact (rows ``idx`` of the full batch) and re-gathered only
            # when an example finishes, not at every query: on the points no query breaks, thousands
            # of queries run with the same rows, and per-query gathers and scatters were a large
            # part of their cost on small images.
            idx = torch.arange(x.shape[0], device=x.device)
            pick = None  # the rows of the full batch the proposals are for: None while it is whole
            x0, lab = x, labels
            xb, lmin, mmin, q = x_best.clone(), loss_min.clone(), margin_min.clone(), queries.clone()
            for it in range(n_iters):
                open_ = mmin >= 0
                if self.early_stop and not bool(open_.all()):  # one host sync per query
                    x_best[idx], loss_min[idx], margin_min[idx], queries[idx] = xb, lmin, mmin, q
                    keep = open_.nonzero().squeeze(1)
                    if keep.numel() == 0:
                        break
                    idx, x0, xb, lab, lmin, mmin, q, open_ = (t[keep] for t in (idx, x0, xb, lab, lmin, mmin, q, open_))
                    pick = idx
                elif not self.early_stop and not bool(open_.any()):
                    break
                x_new = self._propose(x0, xb, it, n_iters, g, pick, x.shape[0])
                margin, loss = self._margin_and_loss(model(x_new), lab, targeted)
                better = loss < lmin
                # untargeted, the loss is the margin, so on an open row (margin ≥ 0) a margin below 0 is a lower loss anyway
                if self.norm == "L2" and targeted:
                    better |= margin < 0
                if not self.early_stop:  # with the active set every row in the batch is open
                    better &= open_  # without it, finished examples stay as they are
                lmin = torch.where(better, loss, lmin)
                mmin = torch.where(better, margin, mmin) if targeted else lmin
                xb = torch.where(better.view(-1, 1, 1, 1), x_new, xb)
                q = q + 1 if self.early_stop else q + open_.long()
            x_best[idx], queries[idx] = xb, q
        return x_best.clone(), {"queries": queries.clone()}
