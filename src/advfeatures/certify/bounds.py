"""Interval bound propagation (Gowal et al. 2018): sound elementwise bounds on a network's outputs
over an input box.

A box is carried as its centre μ and radius r (r ≥ 0). Through an affine layer ``W·z + b`` the image
of the box lies in the box with centre ``W·μ + b`` and radius ``|W|·r``; that box is the tightest
one (each output coordinate reaches ``±(|W| r)ᵢ`` at the corner ``μ ± r·sign(Wᵢ)``), so for a single
affine layer the bounds are exact. Monotone layers (ReLU, max-pooling) map the lower and upper ends
separately. Supported: Linear, Conv2d, ReLU (and the models' PenultimateReLU), Flatten, max, average
and adaptive-average pooling, :class:`~advfeatures.models.base.Normalize`, BatchNorm (eval mode: the
running statistics; train mode: the batch statistics of the centres, held fixed), Identity and
Dropout (identity at evaluation); anything else is refused with the layer's name.

The final linear layer is *elided* with the specification of robustness: instead of bounding each
logit and comparing bounds, :func:`margin_bounds` bounds ``z_y − z_j`` directly through the merged
layer ``(W_y − W_j)``, which is never looser (Gowal et al.'s trick). A point is verified at ε when
every lower bound of ``z_y − z_j`` (j ≠ y) is positive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from ..models.base import Classifier, Normalize, PenultimateReLU

_MONOTONE = (nn.ReLU, PenultimateReLU, nn.MaxPool2d, nn.MaxPool1d, nn.Flatten)
_LINEAR_NONNEG = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AvgPool1d)
_IDENTITY = (nn.Identity, nn.Dropout)
SUPPORTED = "Linear, Conv2d, ReLU, Flatten, MaxPool, AvgPool, AdaptiveAvgPool, Normalize, BatchNorm, Identity, Dropout"


def layers_of(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model as a flat list of (name, layer), refusing what interval bounds cannot pass."""
    out: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, m: nn.Module) -> None:
        if isinstance(m, Classifier) and type(m).forward is Classifier.forward:
            walk(f"{prefix}features.", m.features)
            walk(f"{prefix}head.", m.head)
        elif type(m) is nn.Sequential:
            for name, child in m.named_children():
                walk(f"{prefix}{name}.", child)
        elif isinstance(m, (nn.Linear, nn.Conv2d, Normalize, nn.BatchNorm1d, nn.BatchNorm2d)
                        + _MONOTONE + _LINEAR_NONNEG + _IDENTITY):
            out.append((prefix.rstrip("."), m))
        else:
            name = prefix.rstrip(".") or "the model"
            raise ModelError(f"interval bounds cannot pass layer {name} ({type(m).__name__}); supported layers: {SUPPORTED} "
                             "inside nn.Sequential or an advfeatures Classifier")

    walk("", model)
    return out


def _bn_affine(bn: nn.modules.batchnorm._BatchNorm, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dims = [0] + list(range(2, mu.ndim))
    if bn.training or bn.running_mean is None:
        mean, var = mu.mean(dims), mu.var(dims, unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -mean * scale + (bn.bias if bn.bias is not None else 0)
    view = [1, -1] + [1] * (mu.ndim - 2)
    return scale.view(view), shift.view(view)


def _propagate(layer: nn.Module, mu: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(layer, nn.Linear):
        return layer(mu), F.linear(r, layer.weight.abs())
    if isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros":
            raise ModelError(f"interval bounds support zero-padded Conv2d only, got padding_mode={layer.padding_mode!r}")
        return layer(mu), F.conv2d(r, layer.weight.abs(), None, layer.stride, layer.padding, layer.dilation, layer.groups)
    if isinstance(layer, Normalize):
        return layer(mu), r / layer.std.abs()
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        scale, shift = _bn_affine(layer, mu)
        return mu * scale + shift, r * scale.abs()
    if isinstance(layer, _LINEAR_NONNEG):
        return layer(mu), layer(r)
    if isinstance(layer, _IDENTITY):
        return mu, r
    lo, hi = layer(mu - r), layer(mu + r)  # monotone non-decreasing
    return (hi + lo) / 2, (hi - lo) / 2


def input_box(x: torch.Tensor, eps: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Linf ε-ball around ``x`` intersected with the [0, 1] box, as (lower, upper)."""
    if isinstance(eps, torch.Tensor) and eps.ndim:
        eps = eps.view(-1, *([1] * (x.ndim - 1)))
    return (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)


def interval_bounds(model: nn.Module, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Elementwise bounds (lower, upper) on ``model``'s output over the box [lower, upper]."""
    mu, r = (upper + lower) / 2, (upper - lower) / 2
    for _, layer in layers_of(model):
        mu, r = _propagate(layer, mu, r)
    return mu - r, mu + r


def margin_bounds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """Lower bounds (N, K) on ``z_y − z_j`` over the Linf ε-ball (and box) around each ``x``, with the
    last linear layer merged into the specification; the column j = y is 0."""
    layers = layers_of(model)
    lower, upper = input_box(x, eps)
    mu, r = (upper + lower) / 2, (upper - lower) / 2
    last = layers[-1][1] if layers else None
    body = layers[:-1] if isinstance(last, nn.Linear) else layers
    for _, layer in body:
        mu, r = _propagate(layer, mu, r)
    if isinstance(last, nn.Linear):
        w, b = last.weight, last.bias if last.bias is not None else torch.zeros(last.out_features, device=x.device)
        diff_w = w[y].unsqueeze(1) - w.unsqueeze(0)  # (N, K, D): rows W_y − W_j
        diff_b = b[y].unsqueeze(1) - b.unsqueeze(0)
        centre = torch.einsum("nkd,nd->nk", diff_w, mu.flatten(1)) + diff_b
        radius = torch.einsum("nkd,nd->nk", diff_w.abs(), r.flatten(1))
        return centre - radius
    lo, hi = mu - r, mu + r
    return lo.gather(1, y.view(-1, 1)) - hi


def verified(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """(N,) bool: every j ≠ y has a positive lower bound on z_y − z_j over the ε-ball."""
    m = margin_bounds(model, x, y, eps)
    m = m.scatter(1, y.view(-1, 1), torch.inf)
    return m.amin(1) > 0
