"""Free adversarial training (Shafahi et al. 2019): adversarial training for free.

Each minibatch is replayed ``m`` times (``defence.replays``). On every replay one backward pass of
the loss at ``x + δ`` gives both the parameter gradient (an optimiser step) and the input gradient,
which moves δ by one step of size ε (sign for Linf, normalised for L2) and projects it back into
the ε-ball and the box. δ is carried across replays and on to the next minibatch (reset when the
batch size changes), so the perturbation keeps growing without its own backward passes.

Every batch costs ``m`` forward-backward passes, so run ``epochs / m`` epochs to spend the time of
standard training for ``epochs`` epochs (the paper's comparison). The perturbation is computed in
train mode, by the same pass as the training step: that is the method, not an attack running
beside training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Objective


class FreeAdversarialTraining(Objective):
    name = "free"
    needs_adversary = True

    def __init__(self, cfg, adversary=None, *, seed=0):
        super().__init__(cfg, adversary, seed=seed)
        self._delta: torch.Tensor | None = None

    def step(self, net, attack_net, x, y, opt, *, scale, progress):
        threat = self.adversary.threat
        if self._delta is None or self._delta.shape != x.shape or self._delta.device != x.device:
            self._delta = torch.zeros_like(x)
        loss_sum = torch.zeros((), device=x.device)
        for _ in range(self.cfg.replays):
            x_adv = (x + self._delta).clamp(0, 1).requires_grad_(True)
            logits = net(x_adv)
            per_example = F.cross_entropy(logits, y, reduction="none")
            loss = per_example.mean() if scale is None else per_example.sum() * scale
            opt.zero_grad(set_to_none=True)
            loss.backward()  # one pass: parameter gradients and x_adv.grad together
            opt.step()
            with torch.no_grad():
                moved = threat.project(threat.step(x_adv.detach(), x_adv.grad, threat.eps), x)
                self._delta = moved - x
            loss_sum = per_example.detach().sum()
        return loss_sum, logits.detach()
