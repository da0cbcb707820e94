"""Universal adversarial perturbations: one δ for a whole dataset (Moosavi-Dezfooli et al. 2017),
found by stochastic gradient ascent on the average loss (Shafahi, Najibi, Xu, Dickerson, Davis &
Goldstein 2020, "Universal Adversarial Training", Algorithm 1).

Each mini-batch takes one steepest-ascent step of the threat model (sign for Linf, normalised for
L2) along ∇_δ E_batch[ℓ(f(clip(x + δ)), y)], then projects δ back onto the ball; ℓ is the
cross-entropy, clamped at ``loss_clip`` if given (Shafahi et al.'s clamped loss, which stops
already-fooled examples from dominating). The shared δ is not an input in the box (it may be
negative), so this is a small loop of its own rather than :func:`~.loop.optimize_inputs`, which
optimises per-example inputs.

The *fooling rate* is the share of examples whose predicted class changes under δ
(Moosavi-Dezfooli et al.'s definition); the error rate is the share misclassified under δ.

Defaults: 5 epochs, batch 128, step size ε/10, Linf. Usage::

    up = universal_perturbation(model, train_set, norm="Linf", eps=0.1, epochs=5)
    up.delta, up.fooling_rate, fooling_rate(model, test_set, up.delta)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import ImageDataset, check_images
from ..errors import ConfigError, DataError
from ..threats import ThreatModel, check_positive, check_steps, make_threat
from .base import Attack, count, hyper, hyperparameters, optional, positive
from .loop import eval_mode

Batches = ImageDataset | tuple[torch.Tensor, torch.Tensor] | Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class UniversalPerturbation:
    delta: torch.Tensor  # (C, H, W), one perturbation for every image
    norm: str
    eps: float
    fooling_rate: float  # on the data it was fitted on: share whose prediction changes under δ
    error_rate: float  # share misclassified under δ
    history: list[dict] = field(default_factory=list)  # per epoch: mean loss on the batches seen


def _batches(data: Batches, batch_size: int, generator: torch.Generator | None, device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches of ``data``: shuffled with ``generator`` for tensors/datasets, as given for loaders."""
    if isinstance(data, ImageDataset):
        data = (data.images, data.labels)
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        if x.shape[0] != y.shape[0]:
            raise DataError(f"images ({x.shape[0]}) and labels ({y.shape[0]}) differ in length")
        order = torch.randperm(x.shape[0], generator=generator) if generator is not None else torch.arange(x.shape[0])
        for a in range(0, x.shape[0], batch_size):
            idx = order[a : a + batch_size]
            yield x[idx].to(device), y[idx].to(device)
        return
    if not isinstance(data, Iterable):
        raise DataError(f"expected an ImageDataset, an (images, labels) pair or an iterable of batches, got {type(data).__name__}")
    for batch in data:
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
            raise DataError("each batch of the loader must be an (images, labels) pair")
        yield batch[0].to(device), batch[1].to(device)


def _device_of(model: nn.Module):
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor, target_class: int | None, loss_clip: float | None):
    logits = model((x + delta).clamp(0.0, 1.0))
    if target_class is None:
        loss = F.cross_entropy(logits, y, reduction="none")
    else:
        loss = -F.cross_entropy(logits, torch.full_like(y, target_class), reduction="none")
    return loss.clamp(max=loss_clip) if loss_clip is not None else loss


def fit_universal(model: nn.Module, data: Batches, threat: ThreatModel, *, epochs: int, step_size: float, batch_size: int,
                  loss_clip: float | None, target_class: int | None, generator: torch.Generator | None,
                  device) -> tuple[torch.Tensor, list[dict]]:
    """The SGD loop: returns δ (C, H, W) and the per-epoch mean loss."""
    delta: torch.Tensor | None = None
    history = []
    for epoch in range(epochs):
        total = torch.zeros((), device=device)
        count = 0
        for x, y in _batches(data, batch_size, generator, device):
            check_images(x, what="universal perturbation inputs")
            if delta is None:
                delta = torch.zeros((1, *x.shape[1:]), device=device, dtype=x.dtype)
            with torch.enable_grad():  # also when called under torch.no_grad()
                d = delta.detach().requires_grad_(True)
                loss = _loss(model, x, y, d, target_class, loss_clip)
                (grad,) = torch.autograd.grad(loss.mean(), d)
            with torch.no_grad():
                delta = threat.project_delta(threat.step(delta, grad, step_size))
                total += loss.detach().sum()
                count += y.shape[0]
        if delta is None:
            raise DataError("the data for the universal perturbation is empty")
        history.append({"epoch": epoch + 1, "loss": float(total) / max(1, count)})
    return delta[0].detach(), history


def fooling_rate(model: nn.Module, data: Batches, delta: torch.Tensor, *, batch_size: int = 256) -> dict[str, float]:
    """``{"fooling_rate", "error_rate", "clean_error_rate"}`` of ``delta`` (C, H, W) on ``data``."""
    device = _device_of(model)
    changed = wrong = clean_wrong = n = 0
    with torch.no_grad(), eval_mode(model):
        for x, y in _batches(data, batch_size, None, device):
            clean = model(x).argmax(1)
            pert = model((x + delta.to(device)).clamp(0.0, 1.0)).argmax(1)
            changed += int((clean != pert).sum())
            wrong += int((pert != y).sum())
            clean_wrong += int((clean != y).sum())
            n += y.shape[0]
    n = max(1, n)
    return {"fooling_rate": changed / n, "error_rate": wrong / n, "clean_error_rate": clean_wrong / n}


def universal_perturbation(
    model: nn.Module,
    data: Batches,
    *,
    norm: str = "Linf",
    eps: float,
    epochs: int = 5,
    step_size: float | None = None,
    batch_size: int = 128,
    loss_clip: float | None = None,
    target_class: int | None = None,
    seed: int = 0,
) -> UniversalPerturbation:
    """One perturbation δ in the ``norm`` ball of radius ``eps`` that raises the loss on all of ``data``.

    ``data``: an :class:`~advfeatures.data.ImageDataset`, an ``(images, labels)`` pair (shuffled each
    epoch with a generator seeded by ``seed``) or any re-iterable loader of ``(images, labels)``.
    ``target_class`` makes it targeted (every image pushed towards that class).
    """
    threat = make_threat(norm, eps)
    epochs = check_steps(epochs, "epochs")
    batch_size = check_steps(batch_size, "batch_size")
    step = check_positive("step_size", step_size) if step_size is not None else threat.eps / 10
    if loss_clip is not None:
        loss_clip = check_positive("loss_clip", loss_clip)
    if target_class is not None and (isinstance(target_class, bool) or int(target_class) != target_class or target_class < 0):
        raise ConfigError(f"target_class must be a class index ≥ 0, got {target_class}")
    device = _device_of(model)
    gen = torch.Generator().manual_seed(int(seed))
    with eval_mode(model):
        delta, history = fit_universal(model, data, threat, epochs=epochs, step_size=step, batch_size=batch_size,
                                       loss_clip=loss_clip, target_class=target_class, generator=gen, device=device)
    rates = fooling_rate(model, data, delta, batch_size=max(batch_size, 256))
    return UniversalPerturbation(delta, threat.norm, threat.eps, rates["fooling_rate"], rates["error_rate"], history)


@hyperparameters
class Universal(Attack):
    """The universal perturbation as an attack: fit one δ on the batch it is given, then add it to
    every image (for the CLI and ensembles; use :func:`universal_perturbation` to fit on a
    training set and evaluate on another)."""

    name = "universal"
    supports_targeted = False

    norm: str = "Linf"
    eps: float  # checked by the threat model
    epochs: int = hyper(20, check=count)
    step_size: float | None = hyper(None, check=optional(positive))  # None: eps / 10
    batch_size: int = hyper(128, check=count, record=False)
    loss_clip: float | None = hyper(None, check=optional(positive), record=False)

    def resolve(self) -> None:
        self.ball()
        if self.step_size is None:
            self.step_size = self.eps / 10

    def perturb(self, model, x, y, target):
        gen = torch.Generator().manual_seed(self.seed)
        delta, history = fit_universal(model, (x, y), self.threat, epochs=self.epochs, step_size=self.step_size,
                                       batch_size=self.batch_size, loss_clip=self.loss_clip, target_class=None,
                                       generator=gen, device=x.device)
        return (x + delta).clamp(0.0, 1.0), {"delta": delta, "history": history}
