"""Interval bound propagation training (Gowal et al. 2018).

    L = κ · CE(z(x), y) + (1 − κ) · CE(ẑ(x, ε), y)

where ẑ holds the worst case of every logit difference over the Linf ε-ball:
ẑ_j = −lower(z_y − z_j) (so ẑ_y = 0), from :func:`advfeatures.certify.bounds.margin_bounds`.
Training starts with ε = 0 and κ = 1 for ``defence.ibp_warmup`` of the batches, then ramps ε
linearly to the adversary's ε and κ linearly to ``defence.kappa_end`` (0.5) by ``defence.ibp_ramp``
of training, and holds them there: the paper's schedule, with its step counts expressed as shares
of training. The bounds are computed on the model itself (its BatchNorm layers, in train mode,
use the batch statistics of the interval centres), in one process.
"""

from __future__ import annotations

import torch.nn.functional as F

from ..certify.bounds import layers_of, margin_bounds
from ..errors import ConfigError
from .base import Objective


class IBPTraining(Objective):
    name = "ibp"
    needs_adversary = True

    def begin(self, model, data):
        if self.adversary.threat.norm != "Linf":
            raise ConfigError(f"ibp training bounds Linf balls; set adversary.norm to Linf (got {self.adversary.threat.norm})")
        layers_of(model)  # refuse unsupported layers before the first batch
        self._model = model

    def schedule(self, progress: float) -> tuple[float, float]:
        """(ε, κ) after ``progress`` of training."""
        c = self.cfg
        ramp = min(1.0, max(0.0, (progress - c.ibp_warmup) / (c.ibp_ramp - c.ibp_warmup)))
        return ramp * self.adversary.threat.eps, 1.0 - ramp * (1.0 - c.kappa_end)

    def losses(self, net, attack_net, x, y, progress):
        eps, kappa = self.schedule(progress)
        logits = net(x)
        per_example = F.cross_entropy(logits, y, reduction="none")
        if kappa < 1.0:
            worst = -margin_bounds(self._model, x, y, eps)
            per_example = kappa * per_example + (1 - kappa) * F.cross_entropy(worst, y, reduction="none")
        return per_example, logits
