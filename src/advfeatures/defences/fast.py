"""Fast adversarial training (Wong, Rice & Kolter 2020): FGSM from a random start.

Each batch is attacked by one step of size α = 1.25·ε (``defence.fast_step``) from a uniform random
point of the ε-ball, projected back into the ball and the box, then trained on as in PGD training:
one forward-backward of attack instead of PGD's ``steps``.

Catastrophic overfitting: FGSM training can suddenly lose all robustness to PGD within an epoch
while its FGSM accuracy stays high. After every epoch the model's PGD accuracy (10 steps, random
start) on a fixed batch of training images is measured; when it falls by more than
``defence.overfit_drop`` below the previous epoch's, the previous epoch's weights are restored and
training stops (the record says ``"stopped": True``), as in the reference code's early stopping.
"""

from __future__ import annotations

import copy
import logging

import torch

from ..attacks.loop import eval_mode, optimize_inputs
from ..attacks.pgd import PGD
from .base import PGDTraining

log = logging.getLogger(__name__)


class FastAdversarialTraining(PGDTraining):
    name = "fast"

    def adversarial(self, attack_net, x, y):
        if not y.shape[0]:
            return x
        threat = self.adversary.threat
        start = threat.random_start(x, self.generator(x.device))
        with eval_mode(attack_net):
            loss = lambda z: torch.nn.functional.cross_entropy(attack_net(z), y, reduction="none")  # noqa: E731
            return optimize_inputs(loss, x, threat=threat, steps=1, step_size=self.cfg.fast_step * threat.eps,
                                   x_init=start, keep_best=False, final_loss=False).x

    def begin(self, model, data):
        self._check = None
        if not self.cfg.overfit_check:
            return
        g = torch.Generator().manual_seed(7)  # not the rank-dependent seed: every rank checks the same batch
        idx = torch.randperm(len(data), generator=g)[: self.cfg.overfit_batch]
        device = next(model.parameters()).device
        x, y = data.batch(idx)
        self._check = (x.to(device), y.to(device))
        threat = self.adversary.threat
        self._pgd = PGD(norm=threat.norm, eps=threat.eps, steps=10, random_start=True, keep_best=False, seed=11)
        self._previous = copy.deepcopy(model.state_dict())
        self._previous_accuracy = None

    def pgd_accuracy(self, model) -> float:
        x, y = self._check
        x_adv = self._pgd(model, x, y)
        with torch.no_grad(), eval_mode(model):
            return float((model(x_adv).argmax(1) == y).float().mean())

    def end_epoch(self, model, epoch):
        if self._check is None:
            return None
        acc = self.pgd_accuracy(model)
        record = {"pgd_check_accuracy": acc}
        if self._previous_accuracy is not None and acc < self._previous_accuracy - self.cfg.overfit_drop:
            log.warning("fast AT: PGD accuracy on the check batch fell from %.1f%% to %.1f%% after epoch %d "
                        "(catastrophic overfitting); restoring epoch %d's weights and stopping",
                        100 * self._previous_accuracy, 100 * acc, epoch + 1, epoch)
            model.load_state_dict(self._previous)
            return {**record, "stopped": True, "restored_epoch": epoch}
        self._previous = copy.deepcopy(model.state_dict())
        self._previous_accuracy = acc
        return record
