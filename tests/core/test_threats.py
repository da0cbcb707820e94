import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advfeatures.errors import ConfigError
from advfeatures.threats import L1Ball, L2Ball, LinfBall, flat_norm, make_threat, project_l1_ball

NORMS = {"Linf": math.inf, "L2": 2.0, "L1": 1.0}


@settings(max_examples=40, deadline=None)
@given(norm=st.sampled_from(list(NORMS)), eps=st.floats(0.01, 5.0), seed=st.integers(0, 10_000),
       scale=st.floats(0.0, 10.0))
def test_project_stays_in_ball_and_box(norm, eps, seed, scale):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(4, 1, 5, 5, generator=g)
    x = x0 + scale * torch.randn(x0.shape, generator=g)
    threat = make_threat(norm, eps)
    p = threat.project(x, x0)
    assert p.min() >= 0 and p.max() <= 1
    assert (flat_norm(p - x0, NORMS[norm]) <= eps * (1 + 1e-5) + 1e-6).all()


@settings(max_examples=25, deadline=None)
@given(norm=st.sampled_from(list(NORMS)), eps=st.floats(0.01, 3.0), seed=st.integers(0, 10_000))
def test_random_start_and_step_then_project_valid(norm, eps, seed):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(3, 2, 4, 4, generator=g)
    threat = make_threat(norm, eps)
    x = threat.random_start(x0, g)
    assert x.min() >= 0 and x.max() <= 1
    assert (flat_norm(x - x0, NORMS[norm]) <= eps * (1 + 1e-5) + 1e-6).all()
    x = threat.project(threat.step(x, torch.randn(x.shape, generator=g), eps / 3), x0)
    assert (flat_norm(x - x0, NORMS[norm]) <= eps * (1 + 1e-5) + 1e-6).all()


def test_steps_have_the_asked_length_in_their_norm():
    g = torch.Generator().manual_seed(1)
    x = torch.full((5, 1, 6, 6), 0.5)
    grad = torch.randn(x.shape, generator=g)
    assert torch.allclose(flat_norm(LinfBall(1.0).step(x, grad, 0.1) - x, math.inf), torch.full((5,), 0.1))
    assert torch.allclose(flat_norm(L2Ball(1.0).step(x, grad, 0.3) - x, 2), torch.full((5,), 0.3), atol=1e-6)
    assert torch.allclose(flat_norm(L1Ball(1.0).step(x, grad, 0.7) - x, 1), torch.full((5,), 0.7), atol=1e-6)


def test_per_example_step_sizes():
    x = torch.full((2, 1, 2, 2), 0.5)
    out = LinfBall(1.0).step(x, torch.ones_like(x), torch.tensor([0.1, 0.2]))
    assert torch.allclose(out[0], torch.full_like(out[0], 0.6)) and torch.allclose(out[1], torch.full_like(out[1], 0.7))


def test_l1_projection_is_the_euclidean_projection():
    """Compare with the closed form on a vector whose answer is known, and check optimality by
    the KKT condition: every kept coordinate is shrunk by the same threshold."""
    v = torch.tensor([[3.0, -1.0, 0.5, 0.0]])
    p = project_l1_ball(v, 2.0)
    # soft threshold θ solves Σ max(|v|−θ, 0) = 2 → (3−θ) + (1−θ) = 2 → θ = 1
    assert torch.allclose(p, torch.tensor([[2.0, 0.0, 0.0, 0.0]]))
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 30, generator=g) * 3
    q = project_l1_ball(w, 1.5)
    assert torch.allclose(q.abs().sum(1), torch.full((8,), 1.5), atol=1e-5)
    shrink = (w.abs() - q.abs())[q != 0].view(-1)
    kept_rows = (q != 0)
    for i in range(8):
        s = (w[i].abs() - q[i].abs())[kept_rows[i]]
        assert torch.allclose(s, s[0].expand_as(s), atol=1e-5)
    assert shrink.numel() > 0
    # points already inside are unchanged, unlike a rescaling
    small = torch.tensor([[0.1, -0.2, 0.3]])
    assert torch.equal(project_l1_ball(small, 1.0), small)


def test_l1_projection_differs_from_rescaling():
    v = torch.tensor([[4.0, 1.0]])
    assert torch.allclose(project_l1_ball(v, 1.0), torch.tensor([[1.0, 0.0]]))  # a rescaling would give [0.8, 0.2]


@pytest.mark.parametrize("eps", [0.0, -1.0, float("nan")])
def test_bad_eps_is_refused(eps):
    with pytest.raises(ConfigError, match="eps"):
        LinfBall(eps)


def test_unknown_norm():
    with pytest.raises(ConfigError, match="unknown norm"):
        make_threat("L3", 1.0)
