"""Gradient masking and the tools that undo it: Quantize hides the gradient, BPDA restores it, EOT
averages a randomised defence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advfeatures.attacks import BPDA, EOT, PGD, GaussianNoise, Quantize
from advfeatures.errors import ConfigError


def test_quantize_levels_and_zero_gradient():
    x = torch.rand(4, 1, 5, 5, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    q = Quantize(4)(x)
    assert torch.allclose(q * 3, (q * 3).round())  # values in {0, 1/3, 2/3, 1}
    assert (q - x).abs().max() <= 1 / 6 + 1e-6
    (g,) = torch.autograd.grad(q.sum(), x)
    assert (g == 0).all()


def test_bpda_identity_is_straight_through():
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    layer = BPDA(Quantize(4))
    out = layer(x)
    assert torch.equal(out, Quantize(4)(x))
    w = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    (g,) = torch.autograd.grad((out * w).sum(), x)
    assert torch.equal(g, w)


def test_bpda_uses_the_surrogate_gradient():
    x = torch.rand(2, 1, 3, 3, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    layer = BPDA(Quantize(4), surrogate=lambda v: v**2)
    (g,) = torch.autograd.grad(layer(x).sum(), x)
    assert torch.allclose(g, 2 * x.detach())


def test_masked_model_resists_pgd_until_bpda(mlp, batch):
    x, y = batch
    masked = nn.Sequential(Quantize(4), mlp)
    through = nn.Sequential(BPDA(Quantize(4)), mlp)
    with torch.no_grad():
        ok = masked(x).argmax(1) == y
    attack = PGD(norm="Linf", eps=0.2, steps=20)
    x_masked, x_bpda = attack(masked, x, y), attack(through, x, y)
    with torch.no_grad():
        fooled_masked = (masked(x_masked).argmax(1) != y)[ok].float().mean()
        fooled_bpda = (masked(x_bpda).argmax(1) != y)[ok].float().mean()
    assert fooled_masked < 0.1  # the zero gradient stalls PGD
    assert fooled_bpda > 0.9  # the same PGD through BPDA breaks the same masked model
    assert all(p.grad is None for p in mlp.parameters())


def _gradients(model, x, y, draws: int) -> torch.Tensor:
    grads = []
    for _ in range(draws):
        xx = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xx), y, reduction="sum"), xx)
        grads.append(g)
    return torch.stack(grads)


@pytest.mark.parametrize("batched", [False, True])
def test_eot_reduces_gradient_variance(mlp, batch, batched):
    x, y = batch[0][:32], batch[1][:32]
    noisy = nn.Sequential(GaussianNoise(0.2, seed=1), mlp)
    single = _gradients(noisy, x, y, 12).var(0).sum()
    averaged = _gradients(EOT(noisy, 16, batched=batched), x, y, 12).var(0).sum()
    assert averaged < single / 4, (float(averaged), float(single))


def test_eot_outputs():
    lin = nn.Linear(4, 3)
    x = torch.rand(5, 4)
    assert torch.allclose(EOT(lin, 3)(x), lin(x), atol=1e-6)  # a deterministic model is unchanged
    logp = EOT(lin, 3, average="probs")(x)
    assert torch.allclose(logp.exp().sum(1), torch.ones(5), atol=1e-5)
    assert torch.allclose(logp, torch.log_softmax(lin(x), 1), atol=1e-5)


def test_gaussian_noise_is_seeded_and_random_per_call():
    x = torch.full((2, 1, 4, 4), 0.5)
    a, b = GaussianNoise(0.1, seed=7), GaussianNoise(0.1, seed=7)
    first = a(x)
    assert torch.equal(first, b(x))
    assert not torch.equal(first, a(x))
    assert first.min() >= 0 and first.max() <= 1


@pytest.mark.parametrize("make", [lambda: Quantize(1), lambda: Quantize(2.5), lambda: EOT(nn.Identity(), 0),
                                  lambda: EOT(nn.Identity(), 2, average="median"), lambda: GaussianNoise(0.0),
                                  lambda: BPDA(42)])
def test_bad_arguments(make):
    with pytest.raises(ConfigError) as info:
        make()
    assert "\n" not in str(info.value)
