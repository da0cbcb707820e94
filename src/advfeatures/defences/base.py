"""What every training objective shares: one training step on a batch, and an end-of-epoch hook.

An objective turns a batch ``(x, y)`` into per-example losses to minimise (and the logits whose
accuracy the history reports); :meth:`Objective.step` then takes one optimiser step on their
batch mean, exactly as the standard loop does. Objectives that need more than one step per batch
(free adversarial training) or a check between epochs (fast adversarial training) override
:meth:`step` or :meth:`end_epoch`.

Inner maximisations run on ``attack_net`` in eval mode and take gradients with
:func:`torch.autograd.grad` with respect to the input only, so they never leave gradients in the
parameters (free adversarial training is the one exception, by design: its single backward pass
gives the parameter and the input gradient together). Randomness comes from the objective's own
generator (``seed``), never from the training loop's, so a defence does not change the epoch
permutation or the augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..threats import check_positive, check_steps


@dataclass
class DefenceConfig:
    """Hyperparameters of the training objectives (each used only by its objective).

    Defaults: TRADES β = 6 (Zhang et al. 2019's CIFAR value; their MNIST runs used 1–6); logit
    pairing λ = 0.5 (verify); fast AT step 1.25·ε and a collapse threshold of 20 points of PGD
    accuracy (Wong et al. 2020's code); free AT m = 8 replays (Shafahi et al. 2019's CIFAR value);
    IBP: ε held at 0 for the first 5% of training, ramped linearly to its value by 50%, κ from 1 to
    0.5 along the same ramp (Gowal et al. 2018's shape; their steps are absolute); Gaussian noise
    σ = 0.25 (Cohen et al. 2019 train at 0.12–1.0).
    """

    beta: float = 6.0
    pairing_weight: float = 0.5
    fast_step: float = 1.25
    overfit_check: bool = True
    overfit_drop: float = 0.2
    overfit_batch: int = 256
    replays: int = 8
    ibp_warmup: float = 0.05
    ibp_ramp: float = 0.5
    kappa_end: float = 0.5
    sigma: float = 0.25

    def validate(self) -> DefenceConfig:
        if self.beta < 0 or self.pairing_weight < 0:
            raise ConfigError(f"defence.beta and defence.pairing_weight must be ≥ 0, got {self.beta} and {self.pairing_weight}")
        check_positive("defence.fast_step", self.fast_step)
        check_positive("defence.sigma", self.sigma)
        check_steps(self.replays, "defence.replays")
        check_steps(self.overfit_batch, "defence.overfit_batch")
        if not 0 < self.overfit_drop <= 1:
            raise ConfigError(f"defence.overfit_drop is a drop in accuracy in (0, 1], got {self.overfit_drop}")
        if not 0 <= self.ibp_warmup < self.ibp_ramp <= 1:
            raise ConfigError(f"need 0 ≤ defence.ibp_warmup < defence.ibp_ramp ≤ 1 (fractions of training), "
                              f"got {self.ibp_warmup} and {self.ibp_ramp}")
        if not 0 <= self.kappa_end <= 1:
            raise ConfigError(f"defence.kappa_end must lie in [0, 1], got {self.kappa_end}")
        return self


class Objective:
    """Standard training: cross-entropy on the batch as given."""

    name = "standard"
    needs_adversary = False

    def __init__(self, cfg: DefenceConfig, adversary=None, *, seed: int = 0) -> None:
        self.cfg = cfg
        self.adversary = adversary
        self.seed = int(seed)
        self._generators: dict[torch.device, torch.Generator] = {}

    def generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def begin(self, model: nn.Module, data) -> None:
        """Called once before the first epoch with the (unaugmented) training set, an
        :class:`~advfeatures.data.ImageDataset` (read it with ``data.batch(index)``)."""

    def losses(self, net: nn.Module, attack_net: nn.Module, x: torch.Tensor, y: torch.Tensor,
               progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example losses (N,) and the logits (N, K) whose accuracy the history reports.
        ``progress`` is the share of training done before this batch, in [0, 1)."""
        logits = net(x)
        return F.cross_entropy(logits, y, reduction="none"), logits

    def step(self, net: nn.Module, attack_net: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
             *, scale: float | None, progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step; returns the summed loss (detached) and the logits (detached).

        ``scale`` None: minimise the batch mean; otherwise the sum times ``scale`` (data-parallel
        training passes world size / global batch, so that DDP's average is the batch mean)."""
        per_example, logits = self.losses(net, attack_net, x, y, progress)
        loss = per_example.mean() if scale is None else per_example.sum() * scale
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return per_example.detach().sum(), logits.detach()

    def end_epoch(self, model: nn.Module, epoch: int) -> dict | None:
        """Called after each epoch; return a dict to add to the epoch's record (``{"stopped": True}``
        ends training)."""
        return None


class PGDTraining(Objective):
    """Madry et al. 2018: cross-entropy on PGD examples made against the current model in eval mode."""

    name = "pgd"
    needs_adversary = True

    def adversarial(self, attack_net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not y.shape[0]:
            return x
        # the batch comes from a checked dataset: skip Attack.__call__'s checks and their host
        # synchronisations on every batch
        return self.adversary.run_unchecked(attack_net, x, y)

    def losses(self, net, attack_net, x, y, progress):
        logits = net(self.adversarial(attack_net, x, y))
        return F.cross_entropy(logits, y, reduction="none"), logits
