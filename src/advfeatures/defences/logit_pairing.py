"""Adversarial logit pairing (Kannan et al. 2018).

    min_θ  CE(f(x'), y) + λ · ‖f(x) − f(x')‖²₂,   x' = PGD(x)

beside PGD adversarial training's loss (the adversarial examples are made exactly as in
:class:`~.base.PGDTraining`), the squared distance between the clean and the adversarial logits
pulls the two together. With λ = 0 it is PGD adversarial training; the clean logits are then not
computed at all, so the two runs take the same steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import PGDTraining


class LogitPairing(PGDTraining):
    name = "logit_pairing"

    def losses(self, net, attack_net, x, y, progress):
        x_adv = self.adversarial(attack_net, x, y)
        lam = self.cfg.pairing_weight
        if lam == 0:
            logits_adv = net(x_adv)
            return F.cross_entropy(logits_adv, y, reduction="none"), logits_adv
        both = net(torch.cat([x_adv, x]))  # one forward: the two halves share the batch statistics
        logits_adv, logits_clean = both[: x.shape[0]], both[x.shape[0]:]
        pairing = (logits_clean - logits_adv).pow(2).sum(1)
        return F.cross_entropy(logits_adv, y, reduction="none") + lam * pairing, logits_adv
