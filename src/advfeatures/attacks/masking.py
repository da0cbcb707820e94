"""Tools against obfuscated gradients (Athalye, Carlini & Wagner 2018), and layers that cause them.

* :class:`EOT` — Expectation over Transformation: wraps a *randomised* model (a defence that draws
  fresh noise, crops, dropout... on every call) and averages its logits (or probabilities) over
  ``n_samples`` calls, so that the gradient of any loss of the output is the average of the
  per-sample gradients. Usable inside any attack: ``PGD(...)(EOT(model, 32), x, y)``.
* :class:`BPDA` — Backward Pass Differentiable Approximation: a layer whose forward pass applies a
  non-differentiable ``preprocess`` and whose backward pass is that of a differentiable
  ``surrogate`` (the identity by default, i.e. the straight-through estimator), so that gradient
  attacks see through quantisation, JPEG, thermometer encodings and the like.
* :class:`Quantize` — input quantisation to ``levels`` grey levels: its gradient is exactly zero,
  the textbook masked defence used in the tests and demos (``nn.Sequential(Quantize(4), model)``).
* :class:`GaussianNoise` — a randomised input layer (x + σ·N(0, I), clamped to [0, 1]) drawing from
  its own seeded generator: a demo of a randomised defence that EOT averages over.

Usage::

    masked = nn.Sequential(Quantize(4), model)                 # PGD stalls: ∇ = 0
    unmasked = nn.Sequential(BPDA(Quantize(4)), model)         # PGD breaks it again
    x_adv = PGD(norm="Linf", eps=0.1)(EOT(noisy_model, n_samples=16), x, y)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..errors import ConfigError
from ..threats import check_steps

Surrogate = Callable[[torch.Tensor], torch.Tensor]


class EOT(nn.Module):
    """Average a randomised model's output over ``n_samples`` calls (Athalye et al. 2018).

    ``average="logits"`` returns the mean logits; ``average="probs"`` returns the log of the mean
    softmax probabilities (so cross-entropy on it is −log E[p_y], the expectation the paper's EOT
    attack maximises). With ``batched=True`` the ``n_samples`` copies of the batch go through the
    model as one batch — faster, but only correct for models that draw their randomness per
    example; the default calls the model ``n_samples`` times, which is right for any model.
    """

    def __init__(self, model: nn.Module, n_samples: int = 10, *, average: str = "logits", batched: bool = False) -> None:
        super().__init__()
        if average not in ("logits", "probs"):
            raise ConfigError(f"EOT average must be 'logits' or 'probs', got {average!r}")
        self.model = model
        self.n_samples = check_steps(n_samples, "n_samples")
        self.average = average
        self.batched = bool(batched)

    @property
    def num_classes(self) -> int | None:
        n = getattr(self.model, "num_classes", None)
        return n if isinstance(n, int) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batched:
            out = self.model(x.repeat(self.n_samples, *([1] * (x.ndim - 1))))
            out = out.view(self.n_samples, x.shape[0], *out.shape[1:])
        else:
            out = torch.stack([self.model(x) for _ in range(self.n_samples)])
        if self.average == "logits":
            return out.mean(0)
        return torch.logsumexp(torch.log_softmax(out, dim=-1), dim=0) - math.log(self.n_samples)


class _BPDAFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, preprocess, surrogate):  # noqa: D102
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        with torch.no_grad():
            return preprocess(x)

    @staticmethod
    def backward(ctx, grad_output):  # noqa: D102
        if ctx.surrogate is None:  # identity: the straight-through estimator
            return grad_output, None, None
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(ctx.surrogate(x), x, grad_output)
        return grad, None, None


class BPDA(nn.Module):
    """Forward: ``preprocess(x)``; backward: the vector-Jacobian product of ``surrogate`` at ``x``.

    ``surrogate=None`` is the identity (Athalye et al.'s choice when ``preprocess(x) ≈ x``); pass a
    smooth approximation otherwise. The gradient only flows to the input: ``preprocess`` and
    ``surrogate`` parameters receive none.
    """

    def __init__(self, preprocess: nn.Module | Surrogate, surrogate: nn.Module | Surrogate | None = None) -> None:
        super().__init__()
        if not callable(preprocess) or (surrogate is not None and not callable(surrogate)):
            raise ConfigError("BPDA needs a callable preprocess and a callable surrogate (or None for the identity)")
        self.preprocess = preprocess
        self.surrogate = surrogate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _BPDAFunction.apply(x, self.preprocess, self.surrogate)


class Quantize(nn.Module):
    """Round each pixel to one of ``levels`` evenly spaced grey levels in [0, 1].

    The rounding has zero gradient almost everywhere, so a model behind it shows no input gradient
    at all: gradient attacks stall, while black-box attacks and BPDA still break it.
    """

    def __init__(self, levels: int = 4) -> None:
        super().__init__()
        if isinstance(levels, bool) or int(levels) != levels or levels < 2:
            raise ConfigError(f"Quantize needs a whole number of levels ≥ 2, got {levels}")
        self.levels = int(levels)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.levels - 1
        return torch.round(x.clamp(0.0, 1.0) * k) / k


class GaussianNoise(nn.Module):
    """A randomised input layer: ``clamp(x + sigma·N(0, I), 0, 1)`` with its own generator.

    Every call draws fresh noise (in train and eval mode alike), as randomised defences do; the
    generator is seeded once from ``seed`` per device, never from the global RNG.
    """

    def __init__(self, sigma: float, *, seed: int = 0) -> None:
        super().__init__()
        if not float(sigma) > 0:
            raise ConfigError(f"GaussianNoise sigma must be positive, got {sigma}")
        self.sigma = float(sigma)
        self.seed = int(seed)
        self._generators: dict[torch.device, torch.Generator] = {}

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self._generators.get(x.device)
        if g is None:
            g = self._generators[x.device] = torch.Generator(device=x.device).manual_seed(self.seed)
        noise = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
        return (x + self.sigma * noise).clamp(0.0, 1.0)
