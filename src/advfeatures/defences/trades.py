"""TRADES (Zhang et al. 2019): trade natural accuracy against robustness with one weight β.

    min_θ  CE(f(x), y) + β · KL( softmax f(x) ‖ softmax f(x') ),
    x' = argmax_{x' ∈ B(x, ε)} KL( softmax f(x) ‖ softmax f(x') )

The inner maximisation is PGD on the KL (the adversary's norm, ε, steps and step size), started at
``x + 0.001·N(0, I)`` as in the reference code (the KL's gradient is zero at x' = x itself), made
against the model in eval mode. With β = 0 the objective is standard training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attacks.loop import eval_mode, optimize_inputs
from .base import Objective


def kl_per_example(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """KL(softmax(clean) ‖ softmax(adv)) per example."""
    log_p = F.log_softmax(logits_clean, dim=1)
    return (log_p.exp() * (log_p - F.log_softmax(logits_adv, dim=1))).sum(1)


class TRADES(Objective):
    name = "trades"
    needs_adversary = True

    def adversarial(self, attack_net, x, y):
        adv = self.adversary
        with eval_mode(attack_net), torch.no_grad():
            clean = attack_net(x).detach()
        start = 0.001 * torch.randn(x.shape, generator=self.generator(x.device), device=x.device, dtype=x.dtype)
        start = adv.threat.project(x + start, x)
        with eval_mode(attack_net):
            res = optimize_inputs(lambda z: kl_per_example(clean, attack_net(z)), x, threat=adv.threat, steps=adv.steps,
                                  step_size=adv.step_size, x_init=start, keep_best=False, final_loss=False)
        return res.x

    def losses(self, net, attack_net, x, y, progress):
        x_adv = self.adversarial(attack_net, x, y) if y.shape[0] else x
        logits = net(x)
        per_example = F.cross_entropy(logits, y, reduction="none") + self.cfg.beta * kl_per_example(logits, net(x_adv))
        return per_example, logits
