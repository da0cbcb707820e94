"""Inversion and interpolation: closed forms on linear representations, and the robust-vs-standard
comparison on tiny digits models."""

from __future__ import annotations

import json

import pytest
import torch

from advfeatures.errors import ConfigError
from advfeatures.represent import compare_inversions, interpolate, invert, noise_seeds

from .conftest import linear_classifier


def _orthonormal(rows: int, cols: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(max(rows, cols), min(rows, cols), generator=g, dtype=torch.float64))
    return (q if rows >= cols else q.T).float()  # orthonormal columns (rows ≥ cols) or rows


def _images(n: int, seed: int, spread: float = 0.08) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (0.5 + spread * torch.randn(n, 1, 4, 4, generator=g)).clamp(0, 1)


def test_inversion_keeps_the_seed_component_in_the_null_space():
    # g(x) = Wx with orthonormal rows (8 of 16 dims): steps move only in W's row space, so the
    # inversion is x_t + (I − WᵀW)(x₀ − x_t): the seed's part that g cannot see survives.
    w = _orthonormal(8, 16, seed=1)
    model = linear_classifier(w)
    xt, x0 = _images(6, seed=2), _images(6, seed=3)
    res = invert(model, xt, start=x0, steps=400, step_size=0.005)
    null = torch.eye(16) - w.T @ w
    expected = xt.flatten(1) + (x0 - xt).flatten(1) @ null.T
    assert (res.images.flatten(1) - expected).norm(dim=1).max() < 0.02
    assert res.representation_distance.max() < 0.01
    assert torch.allclose(res.pixel_l2, (res.images - xt).flatten(1).norm(dim=1))


def test_interpolation_through_an_injective_linear_map_is_the_pixel_mix():
    # g(x) = Wx with orthonormal columns is injective, so inverting (1−α)g(a) + αg(b) gives (1−α)a + αb.
    model = linear_classifier(_orthonormal(32, 16, seed=4))
    a, b = _images(3, seed=5), _images(3, seed=6)
    res, alphas = interpolate(model, a, b, num=5, steps=400, step_size=0.005, generator=torch.Generator().manual_seed(0))
    assert res.images.shape == (15, 1, 4, 4) and torch.allclose(alphas, torch.linspace(0, 1, 5))
    expected = ((1 - alphas.view(1, -1, 1, 1, 1)) * a[:, None] + alphas.view(1, -1, 1, 1, 1) * b[:, None]).flatten(0, 1)
    assert (res.images - expected).flatten(1).norm(dim=1).max() < 0.02
    assert res.pixel_l2 is None and res.representation_distance.max() < 0.01


def test_noise_seeds_follow_the_paper_and_leave_the_global_rng_alone():
    state = torch.random.get_rng_state()
    like = torch.zeros(4000, 1, 8, 8)
    s1 = noise_seeds(like, generator=torch.Generator().manual_seed(7))
    s2 = noise_seeds(like, generator=torch.Generator().manual_seed(7))
    assert torch.equal(s1, s2)
    assert torch.equal(state, torch.random.get_rng_state())
    assert abs(float(s1.mean()) - 0.5) < 0.002 and abs(float(s1.std()) - 0.05) < 0.002


@pytest.mark.parametrize("start", ["noise", "image"])
def test_robust_inversions_are_closer_to_their_targets(standard_cnn, robust_cnn, standard_mlp, digits, tmp_path, start):
    """Engstrom et al.: robust representations are more invertible. Same targets, same seeds, same
    architecture; the held-out classifier is an MLP (another architecture)."""
    before = {k: v.clone() for k, v in robust_cnn.state_dict().items()}
    out = compare_inversions({"standard": standard_cnn, "robust": robust_cnn}, digits[1], tmp_path, n=32, steps=300,
                             start=start, seed=0, held_out_model=standard_mlp)
    std, rob = out["standard"], out["robust"]
    assert rob["pixel_l2"] < 0.95 * std["pixel_l2"], (std, rob)  # measured: 0.83 (noise), 0.88 (image)
    assert out["robust_closer"] is True
    assert rob["pixel_l2"] < out["start_pixel_l2"]  # the robust inversion moved from its seed towards its target
    assert rob["representation_distance"] < std["representation_distance"] < 0.1
    # a classifier of another architecture recognises the robust inversions more often (measured:
    # 0.75 vs 0.19 from noise, 0.69 vs 0.41 from images; 0.94 on the targets themselves)
    assert rob["held_out_accuracy"] > std["held_out_accuracy"] + 0.1
    assert out["held_out_accuracy_on_targets"] > 0.8
    saved = json.loads((tmp_path / "inversion.json").read_text())
    assert saved["robust"]["pixel_l2"] == pytest.approx(rob["pixel_l2"]) and saved["n"] == 32
    assert (tmp_path / "inversion.png").stat().st_size > 1000
    assert all(torch.equal(before[k], v) for k, v in robust_cnn.state_dict().items())
    assert all(p.grad is None for p in robust_cnn.parameters())


def test_inversion_rejects_mismatched_seeds_and_unknown_starts(robust_mlp, digits, tmp_path):
    x = digits[1].images[:4]
    with pytest.raises(ConfigError, match="shape"):
        invert(robust_mlp, x, start=x[:3])
    with pytest.raises(ConfigError, match="start"):
        compare_inversions({"standard": robust_mlp}, digits[1], tmp_path, n=4, start="blank")
    with pytest.raises(ConfigError, match="steps"):
        invert(robust_mlp, x, steps=0)
