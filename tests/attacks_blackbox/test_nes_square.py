"""NES and Square: they break the undefended digits model within a stated query budget, count their
queries exactly, stop querying solved examples, and stay inside the threat model."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advfeatures.attacks import NES, PGD, Square
from advfeatures.attacks.nes import dct_matrix, low_frequency_noise, nes_gradient
from advfeatures.attacks.square import p_selection, pseudo_gaussian
from advfeatures.errors import ConfigError, DataError

from .conftest import CountingModel

BUDGET = 1000  # queries per image, stated in the attacks' docstrings


@pytest.mark.parametrize(
    ("attack", "norm", "eps", "min_success"),
    [
        (NES, "Linf", 0.2, 0.9),
        (NES, "L2", 1.0, 0.9),
        (Square, "Linf", 0.2, 0.95),
        (Square, "L2", 1.0, 0.9),
    ],
)
def test_black_box_breaks_undefended_model_within_budget(mlp, batch, correct, attack, norm, eps, min_success):
    x, y = batch
    res = attack(norm=norm, eps=eps, max_queries=BUDGET)(mlp, x, y, return_result=True)
    success = res.success[correct].float().mean()
    white = PGD(norm=norm, eps=eps, steps=50)(mlp, x, y, return_result=True).success[correct].float().mean()
    assert white == 1.0  # the budget is one the white-box attack fully uses
    assert success >= min_success, f"{attack.name} {norm} ε={eps}: {success:.3f} within {BUDGET} queries"
    assert int(res.queries.max()) <= BUDGET
    assert (res.norms[norm] <= eps + 1e-5).all()


@pytest.mark.parametrize("make", [lambda: NES(norm="Linf", eps=0.2, max_queries=300, n_samples=20),
                                  lambda: NES(norm="L2", eps=1.0, max_queries=300, dct_size=4),
                                  lambda: Square(norm="Linf", eps=0.1, max_queries=150),
                                  lambda: Square(norm="L2", eps=0.5, max_queries=150)])
def test_queries_counted_exactly(mlp, batch, make):
    x, y = batch
    counter = CountingModel(mlp)
    res = make()(counter, x[:40], y[:40], return_result=True)
    # the base class asks the model once more, for the result's predictions
    assert counter.images_seen == int(res.queries.sum()) + 40
    # per example: an image alone in its batch costs exactly what it is charged
    for i in (0, 1, 2):
        counter = CountingModel(mlp)
        one = make()(counter, x[i : i + 1], y[i : i + 1], return_result=True)
        assert counter.images_seen == int(one.queries[0]) + 1


def test_nes_query_accounting_structure(mlp, batch):
    x, y = batch
    attack = NES(norm="Linf", eps=0.05, max_queries=500, n_samples=10)
    res = attack(mlp, x, y, return_result=True)
    q = res.queries
    assert ((q - 1) % 11 == 0).all()  # one clean query, then n_samples + 1 per step
    full = 1 + ((500 - 1) // 11) * 11  # the most an example can use without passing the budget
    assert (q <= full).all()
    assert (q[~res.success] == full).all()  # failures used the whole budget
    assert res.success.any() and (q[res.success] < full).any()  # some successes stopped early


@pytest.mark.parametrize("attack", [NES(norm="Linf", eps=0.1, max_queries=200), Square(norm="L2", eps=0.5, max_queries=200)])
def test_examples_already_adversarial_stop_querying(mlp, batch, attack):
    x, y = batch
    with torch.no_grad():
        wrong_labels = (mlp(x[:16]).argmax(1) + 1) % 10  # every image is "already adversarial"
    counter = CountingModel(mlp)
    res = attack(counter, x[:16], wrong_labels, return_result=True)
    assert (res.queries == 1).all()
    assert counter.images_seen == 16 + 16
    if attack.name == "nes":
        assert torch.equal(res.x_adv, x[:16])  # never moved


def test_successful_examples_stop_early(mlp, batch, correct):
    x, y = batch
    res = Square(norm="Linf", eps=0.2, max_queries=2000)(mlp, x, y, return_result=True)
    solved = res.success & correct
    assert solved.any()
    assert int(res.queries[solved].max()) < 2000  # solved examples stopped before the budget


def test_targeted_square_reaches_targets(mlp, batch, correct):
    x, y = batch
    res = Square(norm="Linf", eps=0.3, max_queries=1000)(mlp, x[:64], y[:64], target="random", return_result=True)
    assert res.target is not None and (res.target != y[:64]).all()
    assert res.success[correct[:64]].float().mean() >= 0.8


def test_nes_gradient_recovers_a_linear_function():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 1, 6, 6, generator=g)
    x = torch.rand(3, 1, 6, 6, generator=g)
    score = lambda p: (p * w.repeat(p.shape[0] // 3, 1, 1, 1)).flatten(1).sum(1)  # noqa: E731
    u = torch.randn(2000, *x.shape, generator=g)
    est = nes_gradient(score, x, u, sigma=1e-3)
    cos = torch.nn.functional.cosine_similarity(est.flatten(1), w.flatten(1))
    assert (cos > 0.95).all()
    # in the low-frequency subspace it estimates the projection of the gradient onto that subspace
    u = low_frequency_noise((2000, *x.shape), 3, generator=g, device="cpu", dtype=torch.float32)
    est = nes_gradient(score, x, u, sigma=1e-3)
    d = dct_matrix(6)[:3]
    proj = d.T @ (d @ w @ d.T) @ d
    cos = torch.nn.functional.cosine_similarity(est.flatten(1), proj.flatten(1))
    assert (cos > 0.95).all()


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 33))
def test_dct_matrix_is_orthonormal(n):
    d = dct_matrix(n, dtype=torch.float64)
    assert torch.allclose(d @ d.T, torch.eye(n, dtype=torch.float64), atol=1e-10)
    # the DCT-II of a constant is all in the first coefficient
    assert torch.allclose(d @ torch.ones(n, dtype=torch.float64), torch.eye(n, dtype=torch.float64)[0] * math.sqrt(n), atol=1e-10)


def test_low_frequency_noise_lives_in_the_low_block():
    g = torch.Generator().manual_seed(0)
    u = low_frequency_noise((5, 2, 8, 8), 3, generator=g, device="cpu", dtype=torch.float64)
    d = dct_matrix(8, dtype=torch.float64)
    coef = d @ u @ d.T
    assert coef[..., 3:, :].abs().max() < 1e-10 and coef[..., :, 3:].abs().max() < 1e-10
    assert coef[..., :3, :3].abs().max() > 0.1


def test_square_schedule_and_pattern():
    assert p_selection(0.8, 0, 10_000) == 0.8
    assert p_selection(0.8, 11, 10_000) == 0.4
    assert p_selection(0.8, 9_000, 10_000) == pytest.approx(0.8 / 512)
    assert p_selection(0.8, 2_500, 5_000) == p_selection(0.8, 5_000, 10_000)  # rescaled to the budget
    for s in (1, 3, 5, 8):
        pat = pseudo_gaussian(s, transpose=False, device="cpu")
        assert pat.norm() == pytest.approx(1.0, abs=1e-6)
        if s > 1:
            assert (pat[: s // 2] >= 0).all() and (pat[s // 2 :] <= 0).all()


class _TinyLinear(torch.nn.Module):
    num_classes = 3

    def __init__(self):
        super().__init__()
        self.w = torch.randn(3, 2 * 6 * 6, generator=torch.Generator().manual_seed(1))

    def forward(self, x):
        return x.flatten(1) @ self.w.T


@settings(max_examples=6, deadline=None)
@given(eps=st.floats(0.01, 0.5), norm=st.sampled_from(["Linf", "L2"]), which=st.sampled_from(["nes", "square"]),
       seed=st.integers(0, 3))
def test_outputs_stay_in_ball_and_box(eps, norm, which, seed):
    x = torch.rand(4, 2, 6, 6, generator=torch.Generator().manual_seed(seed))
    y = torch.arange(4) % 3
    attack = NES(norm=norm, eps=eps, max_queries=60, n_samples=10, seed=seed) if which == "nes" else \
        Square(norm=norm, eps=eps, max_queries=60, seed=seed)
    res = attack(_TinyLinear(), x, y, return_result=True)
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert (res.norms[norm] <= eps * (1 + 1e-5) + 1e-6).all()


def test_seeded_and_reproducible(mlp, batch):
    x, y = batch
    a = Square(norm="Linf", eps=0.1, max_queries=100, seed=5)(mlp, x[:20], y[:20])
    b = Square(norm="Linf", eps=0.1, max_queries=100, seed=5)(mlp, x[:20], y[:20])
    c = Square(norm="Linf", eps=0.1, max_queries=100, seed=6)(mlp, x[:20], y[:20])
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    "make",
    [
        lambda: NES(eps=0.0),
        lambda: NES(eps=0.1, n_samples=7),
        lambda: NES(eps=0.1, n_samples=50, max_queries=40),
        lambda: NES(eps=0.1, norm="L1"),
        lambda: NES(eps=0.1, loss="dlr"),
        lambda: NES(eps=0.1, sigma=-1),
        lambda: Square(eps=0.1, norm="L0"),
        lambda: Square(eps=0.1, p_init=1.5),
        lambda: Square(eps=0.1, max_queries=0),
        lambda: Square(eps=float("inf"), norm="L2"),
    ],
)
def test_bad_arguments_raise_one_clear_error(make):
    with pytest.raises(ConfigError) as info:
        make()
    assert "\n" not in str(info.value)


def test_bad_inputs_and_block_size(mlp, batch):
    x, y = batch
    with pytest.raises(ConfigError, match="dct_size"):
        NES(eps=0.1, dct_size=9)(mlp, x[:2], y[:2])
    with pytest.raises(DataError):
        Square(eps=0.1)(mlp, x[:2] * 3, y[:2])
