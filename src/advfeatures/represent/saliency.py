"""Saliency maps and their sanity check (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

Maps, each (N, C, H, W) for the class ``target`` of every image:

* ``gradient``: ∂z_t/∂x, the input gradient of the target logit (Simonyan et al. 2014);
* ``gradient_x_input``: x ⊙ ∂z_t/∂x (Shrikumar et al. 2016);
* ``smoothgrad``: the mean gradient at x + N(0, σ²), σ = 0.15 (the [0, 1] range times Smilkov et
  al. 2017's 15%), 50 samples;
* ``edge``: a Sobel edge detector on the image, which ignores the model: the baseline a method
  that explains the *model* must differ from.

*Cascading randomisation*: re-initialise the model's weight layers (linear and convolutional) one
by one from the top (the head first), cumulatively, and score how similar each method's map stays to
its map on the trained model: the Spearman rank correlation of the absolute maps (channels summed)
per image, and optionally SSIM. A method that depends on the weights falls towards 0; the edge
detector stays at 1. (The paper's second test, retraining on random labels, is not run here.)

    out = cascading_randomization(model, x, seed=0)
    out["methods"]["gradient"]["spearman"]  # one score per randomisation stage
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.loop import eval_mode
from ..data.dataset import check_images
from ..errors import ConfigError
from ..threats import check_positive, check_steps

SaliencyMethod = Callable[..., torch.Tensor]


def _target_logit_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    logit = model(x).gather(1, target[:, None]).sum()
    (grad,) = torch.autograd.grad(logit, x)
    return grad.detach()


def input_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor, **_: Any) -> torch.Tensor:
    """∂z_target/∂x."""
    with eval_mode(model):
        return _target_logit_gradient(model, x, target)


def gradient_times_input(model: nn.Module, x: torch.Tensor, target: torch.Tensor, **_: Any) -> torch.Tensor:
    """x ⊙ ∂z_target/∂x."""
    return x * input_gradient(model, x, target)


def smooth_grad(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, samples: int = 50, noise: float = 0.15,
                generator: torch.Generator | None = None, **_: Any) -> torch.Tensor:
    """The input gradient averaged over ``samples`` Gaussian perturbations of std ``noise``."""
    samples = check_steps(samples, "samples")
    noise = check_positive("noise", noise)
    total = torch.zeros_like(x)
    with eval_mode(model):
        for _ in range(samples):  # a loop over noise draws; each draw is one batched gradient
            eps = torch.randn(x.shape, generator=generator, device=generator.device if generator is not None else x.device,
                              dtype=x.dtype).to(x.device)
            total += _target_logit_gradient(model, x + noise * eps, target)
    return total / samples


_SOBEL = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])


def edge_detector(model: nn.Module | None, x: torch.Tensor, target: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
    """Sobel gradient magnitude of each channel of ``x``; ``model`` and ``target`` are ignored."""
    c = x.shape[1]
    k = torch.stack([_SOBEL, _SOBEL.T]).to(x).unsqueeze(1).repeat(c, 1, 1, 1)  # (2C, 1, 3, 3)
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=c).view(x.shape[0], c, 2, *x.shape[2:])
    return g.pow(2).sum(2).sqrt()


METHODS: dict[str, SaliencyMethod] = {
    "gradient": input_gradient,
    "gradient_x_input": gradient_times_input,
    "smoothgrad": smooth_grad,
    "edge": edge_detector,
}


def saliency(model: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str, *,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The saliency map of ``method`` (one of :data:`METHODS`)."""
    if method not in METHODS:
        raise ConfigError(f"unknown saliency method {method!r}; choose one of {', '.join(METHODS)}")
    check_images(x, what="saliency inputs")
    return METHODS[method](model, x, target.to(x.device).long(), generator=generator)


def _average_ranks(a: torch.Tensor) -> torch.Tensor:
    """Ranks of each row's values (1 … D), ties sharing their average rank, (N, D)."""
    srt = a.sort(dim=1).values.contiguous()
    lo = torch.searchsorted(srt, a.contiguous(), side="left")
    hi = torch.searchsorted(srt, a.contiguous(), side="right")
    return (lo + hi + 1).to(torch.float64) / 2


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-example Spearman rank correlation of the absolute maps (channels summed), (N,)."""
    ra = _average_ranks(a.detach().abs().sum(1).flatten(1))
    rb = _average_ranks(b.detach().abs().sum(1).flatten(1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    den = (ra.norm(dim=1) * rb.norm(dim=1))
    corr = (ra * rb).sum(1) / den.clamp_min(1e-300)
    return torch.where(den > 0, corr, torch.ones_like(corr) * float("nan")).float()


def ssim(a: torch.Tensor, b: torch.Tensor, *, sigma: float = 1.5) -> torch.Tensor:
    """Per-example SSIM (Wang et al. 2004) of the absolute maps, channels summed and each scaled to
    [0, 1] by its maximum; Gaussian window of width ≤ 7 (smaller for tiny images), (N,)."""

    def prep(m: torch.Tensor) -> torch.Tensor:
        m = m.detach().abs().sum(1, keepdim=True).double()
        return m / m.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)

    a, b = prep(a), prep(b)
    size = min(7, a.shape[2], a.shape[3])
    size -= 1 - size % 2
    r = torch.arange(size, dtype=torch.float64, device=a.device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    w = (g[:, None] * g[None, :] / g.sum() ** 2).view(1, 1, size, size)
    mu_a, mu_b = F.conv2d(a, w), F.conv2d(b, w)
    var_a = F.conv2d(a * a, w) - mu_a**2
    var_b = F.conv2d(b * b, w) - mu_b**2
    cov = F.conv2d(a * b, w) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1).float()


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The linear and convolutional layers of ``model`` in registration (≈ forward) order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]


@torch.no_grad()
def randomize_layer(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw the weight (and bias) of one layer from U(−1/√fan_in, 1/√fan_in), PyTorch's default
    scale, using ``generator`` (never the global RNG)."""
    w = module.weight
    bound = 1.0 / math.sqrt(max(1, w[0].numel()))
    w.copy_((torch.rand(w.shape, generator=generator, device="cpu") * 2 - 1).mul_(bound).to(w))
    if getattr(module, "bias", None) is not None:
        b = module.bias
        b.copy_((torch.rand(b.shape, generator=generator, device="cpu") * 2 - 1).mul_(bound).to(b))


def cascading_randomization(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    methods: tuple[str, ...] = ("gradient", "gradient_x_input", "smoothgrad", "edge"),
    seed: int = 0,
    with_ssim: bool = False,
    return_maps: bool = False,
) -> dict[str, Any]:
    """Similarity of each method's map to its trained-model map as weight layers are randomised
    cumulatively from the top. ``target`` defaults to the trained model's predictions.

    Returns ``{"layers": ["none", "head", ...], "target": [...], "methods": {name: {"spearman":
    [...], "ssim": [...] (with_ssim)}}}``; mean over images at each stage, stage 0 being the trained
    model (similarity 1). With ``return_maps`` also ``"maps": {name: (stages, N, C, H, W)}``.
    """
    check_images(x, what="saliency inputs")
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"unknown saliency method {m!r}; choose one of {', '.join(METHODS)}")
    work = copy.deepcopy(model)  # the caller's model is never modified
    layers = weight_layers(work)
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no linear or convolutional layer to randomise")
    device = next(work.parameters()).device
    x = x.to(device)
    if target is None:
        with torch.no_grad(), eval_mode(work):
            target = work(x).argmax(1)
    target = target.to(device).long()
    gen = torch.Generator().manual_seed(int(seed))

    def maps_now() -> dict[str, torch.Tensor]:
        # the same SmoothGrad noise at every stage, so only the weights change between stages
        return {m: saliency(work, x, target, m, generator=torch.Generator(device=device).manual_seed(int(seed)))
                for m in methods}

    original = maps_now()
    stages = [original]
    names = ["none"]
    for name, layer in reversed(layers):
        randomize_layer(layer, gen)
        stages.append(maps_now())
        names.append(name)
    out: dict[str, Any] = {"layers": names, "target": target.tolist(), "methods": {}}
    for m in methods:
        scores: dict[str, list[float]] = {"spearman": [float(spearman(original[m], s[m]).nanmean()) for s in stages]}
        if with_ssim:
            scores["ssim"] = [float(ssim(original[m], s[m]).mean()) for s in stages]
        out["methods"][m] = scores
    if return_maps:
        out["maps"] = {m: torch.stack([s[m] for s in stages]).cpu() for m in methods}
    return out
