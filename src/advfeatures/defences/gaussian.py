"""Gaussian data augmentation for randomized smoothing (Cohen et al. 2019).

Each training batch is replaced by ``x + σ·N(0, I)`` (not clipped to [0, 1], matching the noise the
smoothed classifier of :mod:`advfeatures.certify.smoothing` adds), so that the base classifier is
accurate under the noise that certification draws.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Objective


class GaussianAugmentation(Objective):
    name = "gaussian"

    def losses(self, net, attack_net, x, y, progress):
        noise = torch.randn(x.shape, generator=self.generator(x.device), device=x.device, dtype=x.dtype)
        logits = net(x + self.cfg.sigma * noise)
        return F.cross_entropy(logits, y, reduction="none"), logits
