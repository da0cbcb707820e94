"""The three numbers every evaluation reports, defined once.

* :func:`predict` — the model's classes, batch by batch, in eval mode, without gradients;
* :func:`accuracy` — the share of points classified correctly;
* :func:`robust_accuracy` — the share classified correctly on ``x`` *and* on the attack's ``x_adv``,
  as AutoAttack and RobustBench count it: a point the model already gets wrong is not robust, even
  if the attack (say, a targeted one) happens to move it onto its label.

For an attack made with ``stochastic=True`` (a model whose randomness is its Dropout) both checks run
with the model's stochastic layers on, as the attack saw it (:mod:`advfeatures.attacks.stochastic`):
"correct on x" is one draw per point, as AutoAttack's ``rand`` version counts it (one clean pass;
the points it gets wrong are not attacked), and "correct on x_adv" one more draw; the draws are
seeded from the attack's ``seed``, so the numbers are reproducible.

Data is either an :class:`~advfeatures.data.dataset.ImageDataset` or an ``(x, y)`` pair of tensors.
:func:`attack_summary` is what ``advfeatures attack`` prints: one attack's robust accuracy, success
rate, median perturbation norm and queries over a set of images.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..attacks.base import Attack, explained_mismatch
from ..attacks.stochastic import evaluation_draws, model_mode
from ..data.dataset import ImageDataset, check_images
from ..errors import ConfigError, DataError
from ..progress import progress, progress_batches
from ..storage import iter_chunks


def _nonempty(n: int) -> int:
    """The size of a set an accuracy is taken over: an empty set has no accuracy (not 0.0)."""
    if n == 0:
        raise DataError("no images to measure accuracy on (an empty set); give data with at least one image")
    return n

Data = ImageDataset | tuple[torch.Tensor, torch.Tensor]


def device_of(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    if p is None:
        p = next(iter(model.buffers()), None)
    return p.device if p is not None else torch.device("cpu")


def _checked(data: Data) -> Data:
    if isinstance(data, ImageDataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return data[0], data[1]
    raise DataError(f"evaluation data must be an ImageDataset or an (images, labels) pair of tensors, got {type(data).__name__}")


def take(data: Data, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels ``index`` of ``data``: a dataset is read just there (a streamed one from
    disk), so nothing walks more than a batch of it at a time."""
    data = _checked(data)
    if isinstance(data, ImageDataset):
        return data.batch(index)
    x, y = data
    return x[index.to(x.device)], y[index.to(y.device)]


def batches(data: Data, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``data`` in consecutive chunks of ``batch_size`` (a dataset read from its source per chunk)."""
    data = _checked(data)
    if isinstance(data, ImageDataset):
        yield from data.iter_batches(batch_size)
    else:
        for a, b in iter_chunks(data[0].shape[0], batch_size):
            yield data[0][a:b], data[1][a:b]


def size_of(data: Data) -> int:
    data = _checked(data)
    return len(data) if isinstance(data, ImageDataset) else int(data[0].shape[0])


def check_inputs(x: torch.Tensor | ImageDataset, y: torch.Tensor | None) -> None:
    """Refuse evaluation images and labels that do not fit together (one clear error each); a
    dataset brings its own labels (and was checked when it was made)."""
    if isinstance(x, ImageDataset):
        if y is not None:
            raise ConfigError("a dataset brings its own labels: pass y only with a tensor of images")
        if len(x) == 0:
            raise DataError("no images to evaluate; pass at least one")
        return
    check_images(x, what="evaluation images")
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataError(f"labels must be a vector with one entry per image ({x.shape[0]})")
    if x.shape[0] == 0:
        raise DataError("no images to evaluate; pass at least one")


def predict(model: nn.Module, x: torch.Tensor | ImageDataset, *, batch_size: int = 500,
            device: str | torch.device | None = None, stochastic: bool = False,
            seed: int | torch.Generator = 0) -> torch.Tensor:
    """The model's classes for ``x`` (images, or a dataset read a batch at a time), on the model's
    device unless ``device`` is given; in eval mode, or with ``stochastic`` with the model's
    stochastic layers on, one draw per image seeded from ``seed`` (:func:`~advfeatures.attacks.model_mode`)."""
    device = device_of(model) if device is None else torch.device(device)
    data = x if isinstance(x, ImageDataset) else (x, torch.empty(x.shape[0], dtype=torch.int64))
    with torch.no_grad(), model_mode(model, stochastic=stochastic, seed=seed, device=device):
        preds = []
        for xb, _ in batches(data, batch_size):
            xb = xb.to(device)
            with explained_mismatch(model, xb):
                preds.append(model(xb).argmax(1))
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.int64, device=device)


def correct_mask(model: nn.Module, data: Data, *, batch_size: int = 500, device: str | torch.device | None = None,
                 stochastic: bool = False, seed: int | torch.Generator = 0) -> torch.Tensor:
    data = _checked(data)
    images, labels = (data, data.labels) if isinstance(data, ImageDataset) else data
    pred = predict(model, images, batch_size=batch_size, device=device, stochastic=stochastic, seed=seed)
    return pred == labels.to(pred.device)


def accuracy(model: nn.Module, data: Data, *, batch_size: int = 500, device: str | torch.device | None = None) -> float:
    """Share of ``data`` the model classifies correctly."""
    ok = correct_mask(model, data, batch_size=batch_size, device=device)
    return int(ok.sum()) / _nonempty(ok.numel())


def robust_mask(model: nn.Module, data: Data, attack: Attack, *, batch_size: int = 500,
                device: str | torch.device | None = None, clean_correct: torch.Tensor | None = None,
                desc: str = "attack") -> torch.Tensor:
    """Per point: correct on x and on ``attack``'s x_adv (the attack runs only on the points
    classified correctly, since the others cannot count as robust whatever it returns). For a
    ``stochastic`` attack both are one draw of the model with its stochastic layers on (see the
    module docstring)."""
    device = device_of(model) if device is None else torch.device(device)
    draws = evaluation_draws(attack.seed)  # used only by a stochastic attack
    if clean_correct is None:
        clean_correct = correct_mask(model, data, batch_size=batch_size, device=device, stochastic=attack.stochastic,
                                     seed=draws)
    robust = clean_correct.to(device).clone()
    idx = robust.nonzero().squeeze(1)
    for a, b in progress(list(iter_chunks(idx.numel(), batch_size)), desc=desc):
        ii = idx[a:b]
        xb, yb = (t.to(device) for t in take(data, ii))
        x_adv = attack(model, xb, yb)
        with torch.no_grad(), model_mode(model, stochastic=attack.stochastic, seed=draws, device=device):
            robust[ii] = model(x_adv).argmax(1) == yb
    return robust


def robust_accuracy(model: nn.Module, data: Data, attack: Attack, *, batch_size: int = 500,
                    device: str | torch.device | None = None, clean_correct: torch.Tensor | None = None,
                    desc: str = "attack") -> float:
    """Share of ``data`` classified correctly both clean and after ``attack`` (untargeted); for a
    ``stochastic`` attack, on one draw of the randomised model each (see the module docstring)."""
    robust = robust_mask(model, data, attack, batch_size=batch_size, device=device, clean_correct=clean_correct, desc=desc)
    return int(robust.sum()) / _nonempty(robust.numel())


def attack_summary(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack, *, norm: str,
                   eps: float | None = None, target: Any = None, batch_size: int = 256,
                   return_adversarial: bool = False) -> dict[str, Any]:
    """One attack over ``(x, y)``: ``{"n", "clean_accuracy", "robust_accuracy", "success_rate",
    "median_norm_of_successes", "mean_queries"?, "median_queries_of_successes"?}``, and with
    ``return_adversarial`` the adversarial inputs themselves under ``"adversarial"`` (on the CPU).

    ``success_rate`` is the attack's own success (misclassified, or the target reached) on the
    points classified correctly. A minimal-norm attack (no ε of its own) breaks a point for
    ``robust_accuracy`` only inside the ``eps``-ball when ``eps`` is given; norms are in ``norm``.
    For a ``stochastic`` attack "correct on x" is one draw of the model with its stochastic layers
    on (seeded from the attack's ``seed``) and the attack's own result is judged on one more.
    """
    n = x.shape[0]
    draws = evaluation_draws(attack.seed)  # used only by a stochastic attack
    correct, fooled, success, norms, queries, adversarial = [], [], [], [], [], []
    for a, b in progress_batches(n, batch_size, desc=type(attack).__name__):  # a bar on a terminal only
        res = attack(model, x[a:b], y[a:b], target=target, return_result=True)
        if return_adversarial:
            adversarial.append(res.x_adv.cpu())
        with torch.no_grad(), model_mode(model, stochastic=attack.stochastic, seed=draws, device=x.device):
            ok = model(x[a:b]).argmax(1) == y[a:b]
        size = res.norms[norm] if norm in res.norms else res.norms["L2"]
        wrong = res.predictions != y[a:b]
        if eps is not None:
            wrong &= size <= eps * (1 + 1e-4) + 1e-6
        correct.append(ok), fooled.append(wrong), success.append(res.success), norms.append(size)
        if res.queries is not None:
            queries.append(res.queries.float())
    ok, wrong, succ, size = (torch.cat(t) for t in (correct, fooled, success, norms))
    hit = succ & ok
    out: dict[str, Any] = {
        "n": n,
        "clean_accuracy": int(ok.sum()) / _nonempty(n),
        "robust_accuracy": int((ok & ~wrong).sum()) / max(1, n),
        "success_rate": int(hit.sum()) / max(1, int(ok.sum())),
        "median_norm_of_successes": float(size[hit].median()) if hit.any() else None,
    }
    if queries:
        q = torch.cat(queries)
        out["mean_queries"] = float(q.mean())
        out["median_queries_of_successes"] = float(q[hit].median()) if hit.any() else None
    if return_adversarial:
        out["adversarial"] = torch.cat(adversarial)
    return out
