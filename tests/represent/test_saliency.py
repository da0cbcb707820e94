"""Saliency maps and the cascading-randomisation sanity check (Adebayo et al. 2018)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advfeatures.represent import (cascading_randomization, edge_detector, gradient_times_input, input_gradient,
                                   smooth_grad, spearman, ssim)

from .conftest import linear_classifier


def test_maps_of_a_linear_model_are_its_weights():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 16, generator=g)
    model = linear_classifier(w, num_classes=4)  # logits = H·W·x: the gradient of logit t is (H·W)[t]
    x = torch.rand(5, 1, 4, 4, generator=g)
    t = torch.tensor([0, 1, 2, 3, 0])
    expected = (model.head.weight @ w)[t].view(5, 1, 4, 4)
    assert torch.allclose(input_gradient(model, x, t), expected, atol=1e-5)
    assert torch.allclose(gradient_times_input(model, x, t), x * expected, atol=1e-5)
    # a linear model's gradient does not depend on where it is taken: SmoothGrad equals it
    assert torch.allclose(smooth_grad(model, x, t, samples=5, generator=g), expected, atol=1e-5)


def test_edge_detector_sees_edges_not_flat_regions():
    x = torch.zeros(1, 1, 8, 8)
    x[..., 4:] = 1.0  # a vertical step between columns 3 and 4
    e = edge_detector(None, x)
    assert torch.all(e[..., [3, 4]] > 0) and torch.all(e[..., :3] == 0) and torch.all(e[..., 5:] == 0)
    assert torch.count_nonzero(edge_detector(None, torch.full((2, 3, 6, 6), 0.3))) == 0


def test_cascading_randomisation_separates_model_dependent_maps_from_the_edge_baseline(standard_mlp, digits):
    x = digits[1].images[:16]
    before = {k: v.clone() for k, v in standard_mlp.state_dict().items()}
    state = torch.random.get_rng_state()
    out = cascading_randomization(standard_mlp, x, methods=("gradient", "smoothgrad", "edge"), seed=0, with_ssim=True)
    assert out["layers"] == ["none", "head", "features.3", "features.1"]
    for name in ("gradient", "smoothgrad"):
        rho = out["methods"][name]["spearman"]
        assert rho[0] == 1.0
        assert rho[1] < 0.6 and rho[-1] < 0.4, rho  # the map changes once the weights are random
        assert out["methods"][name]["ssim"][-1] < 0.6
    assert out["methods"]["edge"]["spearman"] == [1.0] * 4  # ignores the weights: never changes
    assert out["methods"]["edge"]["ssim"] == [1.0] * 4
    assert all(torch.equal(before[k], v) for k, v in standard_mlp.state_dict().items())
    assert all(p.grad is None for p in standard_mlp.parameters())
    assert torch.equal(state, torch.random.get_rng_state())
    again = cascading_randomization(standard_mlp, x, methods=("gradient",), seed=0)
    assert again["methods"]["gradient"]["spearman"] == out["methods"]["gradient"]["spearman"]


def test_cascading_randomisation_reaches_every_conv_layer():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        from advfeatures.models import build_model

        cnn = build_model("cnn", (1, 8, 8), 10, width=4, hidden=8).eval()
    out = cascading_randomization(cnn, torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)),
                                  methods=("gradient",), return_maps=True)
    convs = [n for n, m in cnn.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert out["layers"] == ["none", *reversed(convs)]
    assert out["maps"]["gradient"].shape == (len(convs) + 1, 3, 1, 8, 8)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), power=st.sampled_from([0.5, 2.0, 3.0]))
def test_rank_correlation_and_ssim_invariants(seed, power):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(3, 2, 8, 8, generator=g)
    b = torch.randn(3, 2, 8, 8, generator=g)
    assert torch.allclose(spearman(a, a), torch.ones(3))
    assert torch.allclose(spearman(a, -a), torch.ones(3))  # absolute maps: the sign is ignored
    # ranks are unchanged by a monotone transform of the absolute map
    mono = a.abs().sum(1, keepdim=True).pow(power)
    assert torch.allclose(spearman(a, mono), torch.ones(3), atol=1e-6)
    assert torch.allclose(spearman(a, b), spearman(b, a))
    assert torch.all(spearman(a, b).abs() <= 1 + 1e-6)
    assert torch.allclose(ssim(a, 2 * a), torch.ones(3), atol=1e-6)  # each map is scaled to its maximum
    assert torch.all(ssim(a, b) < 1)
