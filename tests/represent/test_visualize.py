"""Feature visualisation and addition: closed forms for a linear representation, and raised
activations on the tiny robust model."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advfeatures.errors import ConfigError
from advfeatures.represent import add_feature, noise_seeds, random_directions, visualize
from advfeatures.represent.units import layer_activations

from .conftest import linear_classifier


def _weights(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # magnitudes bounded away from 0, so every pixel is pushed to its box bound in a few steps
    return torch.where(torch.rand(3, 16, generator=g) < 0.5, -1.0, 1.0) * (0.5 + torch.rand(3, 16, generator=g))


def test_maximising_a_linear_coordinate_reaches_the_box_corner():
    # max_x w_k·x over [0, 1]^d is Σ max(w_ki, 0), at x_i = 1 where w_ki > 0 and 0 elsewhere
    w = _weights(0)
    model = linear_classifier(w)
    seeds = noise_seeds(torch.zeros(3, 1, 4, 4), generator=torch.Generator().manual_seed(1))
    res = visualize(model, seeds, coordinates=torch.arange(3), steps=50, step_size=1.0)
    corner = (w > 0).float().view(3, 1, 4, 4)
    assert torch.equal(res.images, corner)
    assert torch.allclose(res.final_activation, w.clamp(min=0).sum(1), atol=1e-5)
    assert torch.all(res.final_activation > res.start_activation)


def test_feature_addition_moves_eps_along_the_weight_inside_the_ball():
    # from x = 0.5 with a small ball the box never binds: the best point is x + ε·w_k/‖w_k‖,
    # which raises the coordinate by exactly ε‖w_k‖
    w = _weights(2)
    model = linear_classifier(w)
    x = torch.full((3, 1, 4, 4), 0.5)
    eps = 0.3
    res = add_feature(model, x, coordinates=[0, 1, 2], eps=eps, steps=20)
    assert torch.allclose(res.final_activation - res.start_activation, eps * w.norm(dim=1), rtol=1e-4)
    assert torch.all(res.pixel_l2 <= eps + 1e-5)
    expected = x.flatten(1) + eps * w / w.norm(dim=1, keepdim=True)
    assert torch.allclose(res.images.flatten(1), expected, atol=1e-5)


def test_visualisation_raises_the_chosen_activation_of_the_robust_model(robust_mlp, digits):
    x = digits[1].images[:8]
    live = (layer_activations(robust_mlp, digits[1].images).std(0) > 0).nonzero().flatten()[:8]
    state = torch.random.get_rng_state()
    for seeds in (noise_seeds(x, generator=torch.Generator().manual_seed(0)), x):  # the paper's two kinds of seeds
        res = visualize(robust_mlp, seeds, coordinates=live, steps=100)
        assert torch.all(res.final_activation > res.start_activation + 0.5), res.summary()
        # the reported activation is the coordinate itself
        acts = layer_activations(robust_mlp, res.images)
        assert torch.allclose(acts[torch.arange(8), live], res.final_activation, atol=1e-4)
    add = add_feature(robust_mlp, x, coordinates=live)
    assert torch.all(add.final_activation >= add.start_activation) and add.summary()["share_raised"] > 0.5
    assert torch.all(add.pixel_l2 <= 0.1 * 8 + 1e-5)  # the default ε = 0.1·√64
    dirs = random_directions(8, 64, generator=torch.Generator().manual_seed(3))
    res = visualize(robust_mlp, x, directions=dirs, steps=100)
    assert torch.all(res.final_activation > res.start_activation)
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(p.grad is None for p in robust_mlp.parameters())


def test_visualisation_refuses_ambiguous_or_out_of_range_requests(robust_mlp, digits):
    x = digits[1].images[:2]
    with pytest.raises(ConfigError, match="exactly one"):
        visualize(robust_mlp, x)
    with pytest.raises(ConfigError, match="exactly one"):
        visualize(robust_mlp, x, coordinates=0, directions=torch.ones(64))
    with pytest.raises(ConfigError, match=r"\[0, 63\]"):
        visualize(robust_mlp, x, coordinates=[0, 64])
    with pytest.raises(ConfigError, match="shape"):
        visualize(robust_mlp, x, directions=torch.ones(3))


@settings(max_examples=15, deadline=None)
@given(count=st.integers(1, 6), dim=st.integers(1, 40), seed=st.integers(0, 2**31 - 1))
def test_random_directions_are_unit_vectors(count, dim, seed):
    v = random_directions(count, dim, generator=torch.Generator().manual_seed(seed))
    assert v.shape == (count, dim)
    assert torch.allclose(v.norm(dim=1), torch.ones(count), atol=1e-5)
