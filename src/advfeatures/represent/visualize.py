"""Direct feature visualisation and feature addition (Engstrom et al. 2019, "Adversarial Robustness
as a Prior for Learned Representations", Sec. 4.2).

*Visualisation*: from a seed (half noise, half test images in the paper) maximise one coordinate
g_k(x) of the representation, or its projection ⟨g(x), v⟩ on a direction v, by L2-normalised
gradient steps inside [0, 1] with no ε limit. The paper's settings: step 1, 200 iterations.
*Feature addition*: raise coordinate k of a given image while staying inside an L2 ball of radius
ε around it (PGD on ``g_k``), so the change shows what the feature adds. The default ε scales with
the image size as 0.1·√(pixels·channels), which is ≈ 40 on 224×224×3 (the large-ε L2 manipulations
of the reference code on ImageNet); the step is Madry's 2.5·ε/steps.

Both use the shared loop (:func:`advfeatures.attacks.loop.optimize_inputs`); the fake ReLU is on so
that a coordinate that is zero at the seed still has a gradient (where the model has our
``PenultimateReLU``). Both take ``layer=``: g is then the flattened output of that
``named_modules()`` layer, so any ``nn.Module`` works (by default g is its ``features``, or the
input of its last ``nn.Linear``).

    res = visualize(robust_model, seeds, coordinates=torch.tensor([3, 3, 7, 7]))
    res.final_activation - res.start_activation  # how far each coordinate was raised
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..attacks.loop import eval_mode, optimize_inputs
from ..data.dataset import check_images
from ..errors import ConfigError
from ..models.base import as_classifier, fake_relu
from ..threats import L2Ball, check_positive, check_steps


@dataclass
class VisualizationResult:
    images: torch.Tensor  # (N, C, H, W)
    directions: torch.Tensor  # (N, D) unit directions (one-hot for coordinates)
    start_activation: torch.Tensor  # (N,) ⟨g(seed), v⟩
    final_activation: torch.Tensor  # (N,) ⟨g(x), v⟩ reached
    pixel_l2: torch.Tensor  # (N,) ‖x − seed‖₂

    def summary(self) -> dict[str, float]:
        gain = (self.final_activation - self.start_activation).float()
        return {"start_activation": float(self.start_activation.float().mean()),
                "final_activation": float(self.final_activation.float().mean()),
                "activation_gain": float(gain.mean()), "share_raised": float((gain > 0).float().mean()),
                "pixel_l2": float(self.pixel_l2.float().mean())}


def representation_dim(model: nn.Module, like: torch.Tensor, layer: str | None = None) -> int:
    """The width D of ``model``'s representation (``layer``'s output) for inputs shaped like ``like``."""
    clf = as_classifier(model, layer)
    with torch.no_grad(), eval_mode(model):
        return int(clf.features(like[:1]).flatten(1).shape[1])


def random_directions(count: int, dim: int, *, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """``count`` directions uniformly distributed on the unit sphere of R^dim, shape (count, dim)."""
    shape = (check_steps(count, "count"), check_steps(dim, "dim"))
    v = torch.randn(shape, generator=generator, device=generator.device if generator is not None else device).to(device)
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)


def coordinate_directions(coordinates: torch.Tensor | list[int] | int, n: int, dim: int, device: torch.device) -> torch.Tensor:
    """One-hot directions (n, dim) for one coordinate per example (or one for all)."""
    c = torch.as_tensor(coordinates, device=device).long().flatten()
    if c.numel() == 1:
        c = c.expand(n)
    if c.numel() != n:
        raise ConfigError(f"give one coordinate, or one per seed ({n}), got {c.numel()}")
    if int(c.min()) < 0 or int(c.max()) >= dim:
        raise ConfigError(f"representation coordinates must lie in [0, {dim - 1}], got [{int(c.min())}, {int(c.max())}]")
    return torch.nn.functional.one_hot(c, dim).float()


def _resolve_directions(model, seeds, coordinates, directions, layer=None) -> torch.Tensor:
    check_images(seeds, what="visualisation seeds")
    if (coordinates is None) == (directions is None):
        raise ConfigError("give exactly one of coordinates= (representation units) or directions= (vectors)")
    dim = representation_dim(model, seeds, layer)
    n = seeds.shape[0]
    if coordinates is not None:
        return coordinate_directions(coordinates, n, dim, seeds.device)
    v = torch.as_tensor(directions, device=seeds.device, dtype=torch.float32)
    if v.ndim == 1:
        v = v.expand(n, -1)
    if v.shape != (n, dim):
        raise ConfigError(f"directions must have shape ({dim},) or ({n}, {dim}), got {tuple(v.shape)}")
    return v


def _maximize(model, seeds, v, *, threat, steps, step_size, use_fake_relu, layer=None) -> VisualizationResult:
    clf = as_classifier(model, layer)

    def activation(x: torch.Tensor) -> torch.Tensor:
        return (clf.features(x).flatten(1) * v).sum(1)

    with eval_mode(model):
        with torch.no_grad():
            start = activation(seeds)
        with fake_relu(model, use_fake_relu, layer=layer):
            res = optimize_inputs(activation, seeds, threat=threat, steps=check_steps(steps),
                                  step_size=check_positive("step_size", step_size), maximize=True, keep_best=True)
        with torch.no_grad():
            final = activation(res.x)  # with the true ReLU (the loop's value used the fake one's forward, equal)
    return VisualizationResult(res.x, v, start, final, (res.x - seeds).flatten(1).norm(dim=1))


def visualize(
    model: nn.Module,
    seeds: torch.Tensor,
    *,
    coordinates: torch.Tensor | list[int] | int | None = None,
    directions: torch.Tensor | None = None,
    steps: int = 200,
    step_size: float = 1.0,
    use_fake_relu: bool = True,
    layer: str | None = None,
) -> VisualizationResult:
    """Maximise a representation coordinate (``coordinates``: one, or one per seed) or a direction
    (``directions``: (D,) or (N, D)) from ``seeds``, unbounded inside [0, 1]; of ``layer``'s output
    when named."""
    v = _resolve_directions(model, seeds, coordinates, directions, layer)
    return _maximize(model, seeds, v, threat=L2Ball(float("inf")), steps=steps, step_size=step_size,
                     use_fake_relu=use_fake_relu, layer=layer)


def default_addition_eps(x: torch.Tensor) -> float:
    """0.1·√(C·H·W): ≈ 40 on ImageNet-sized inputs, 0.8 on 8×8 digits, 2.8 on 28×28 images."""
    return 0.1 * math.sqrt(x[0].numel())


def add_feature(
    model: nn.Module,
    x: torch.Tensor,
    *,
    coordinates: torch.Tensor | list[int] | int,
    eps: float | None = None,
    steps: int = 200,
    step_size: float | None = None,
    use_fake_relu: bool = True,
    layer: str | None = None,
) -> VisualizationResult:
    """Raise representation coordinate(s) (of ``layer``'s output when named) of the images ``x``
    within an L2 ball of radius ``eps``."""
    v = _resolve_directions(model, x, coordinates, None, layer)
    eps = default_addition_eps(x) if eps is None else check_positive("eps", eps)
    steps = check_steps(steps)
    size = 2.5 * eps / steps if step_size is None else step_size
    return _maximize(model, x, v, threat=L2Ball(eps), steps=steps, step_size=size, use_fake_relu=use_fake_relu, layer=layer)
