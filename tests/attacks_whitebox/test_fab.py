"""FAB and FAB-T (Croce & Hein 2020): known answers on affine classifiers.

For logits z = W x + b the class region of y is the polytope {z_y ≥ z_t for all t}, so the smallest
perturbation that changes the class is min_t (z_y − z_t) / ‖w_y − w_t‖_q with q the dual norm
(q = 1 for Linf, 2 for L2, ∞ for L1), reached along sign(w_t − w_y), (w_t − w_y) / ‖·‖₂ or one
coordinate of largest |w_t − w_y|, as long as the [0, 1] box does not bind. FAB overshoots the
boundary by η = 1.05 and moves back by β = 0.9, so it lands within about 1% above that distance,
and never below it (nothing closer is adversarial).
"""

from __future__ import annotations

import math

import pytest
import torch

from advfeatures.attacks.fab import FAB, FABT, min_norm_step
from advfeatures.errors import ConfigError

from .conftest import random_affine
from .test_whitebox_known_answers import labels_and_weights

DUAL = {"Linf": 1.0, "L2": 2.0, "L1": math.inf}


def l1_distance_in_box(model, x, y):
    """The exact L1 distance to misclassification inside the box, for each point: per class t, fill
    the coordinates of largest |w_t − w_y| first (each up to its box face) until the margin is gone."""
    _, w, z = labels_and_weights(model, x)
    out = []
    for i in range(x.shape[0]):
        best = math.inf
        for t in range(w.shape[0]):
            if t == int(y[i]):
                continue
            v = (w[t] - w[y[i]]).tolist()
            need, cost = float(z[i, y[i]] - z[i, t]), 0.0
            for j in sorted(range(len(v)), key=lambda j: -abs(v[j])):
                room = 1 - float(x.flatten(1)[i, j]) if v[j] > 0 else float(x.flatten(1)[i, j])
                move = min(room, need / abs(v[j]))
                need, cost = need - move * abs(v[j]), cost + move
                if need <= 1e-12:
                    break
            best = min(best, cost if need <= 1e-9 else math.inf)
        out.append(best)
    return torch.tensor(out)


def closest_pair(model, x, y, norm):
    """Per point: the exact minimal distance and the unconstrained minimiser δ* of an affine model."""
    _, w, z = labels_and_weights(model, x)
    diff = w.unsqueeze(0) - w[y].unsqueeze(1)  # (N, K, d): w_t − w_y
    dist = (z.gather(1, y[:, None]) - z) / torch.linalg.vector_norm(diff, ord=DUAL[norm], dim=2)
    dist[torch.arange(len(y)), y] = math.inf
    d, t = dist.min(1)
    v = diff[torch.arange(len(y)), t]
    if norm == "Linf":
        delta = v.sign() * d[:, None]
    elif norm == "L2":
        delta = v / v.norm(dim=1, keepdim=True) * d[:, None]
    else:
        j = v.abs().argmax(1)
        delta = torch.zeros_like(v)
        delta[torch.arange(len(y)), j] = v[torch.arange(len(y)), j].sign() * d
    return d, delta


@pytest.mark.parametrize("attack", [FAB, FABT])
@pytest.mark.parametrize("norm", ["Linf", "L2", "L1"])
@pytest.mark.parametrize("num_classes", [2, 5])
def test_fab_reaches_the_closed_form_minimal_distance(attack, norm, num_classes):
    model, x = random_affine(num_classes, seed=num_classes + 10)
    y, _, _ = labels_and_weights(model, x)
    dist, delta = closest_pair(model, x, y, norm)
    free = ((x.flatten(1) + 1.1 * delta) >= 0).all(1) & ((x.flatten(1) + 1.1 * delta) <= 1).all(1)  # the box does not bind
    if norm == "L1":  # one coordinate would leave the box: the exact answer fills several, largest |w| first
        dist, free = l1_distance_in_box(model, x, y), torch.ones_like(free)
    assert free.sum() >= 4
    x, y, dist = x[free], y[free], dist[free]
    res = attack(norm=norm, steps=100)(model, x, y, return_result=True)
    assert res.success.all()
    ratio = res.norms[norm] / dist
    assert (ratio >= 1 - 1e-4).all() and (ratio <= 1.01).all(), ratio


def test_fab_with_eps_returns_the_clean_input_outside_the_ball():
    model, x = random_affine(5, seed=3)
    y, _, _ = labels_and_weights(model, x)
    dist, _ = closest_pair(model, x, y, "L2")
    eps = float(dist.median())
    res = FABT(norm="L2", eps=eps)(model, x, y, return_result=True)
    inside = dist * 1.01 <= eps
    outside = dist > eps
    assert res.success[inside].all() and not res.success[outside].any()
    assert torch.equal(res.x_adv[outside], x[outside])
    assert (res.norms["L2"] <= eps * (1 + 1e-5) + 1e-6).all()


def test_early_stop_breaks_the_same_points_and_stops_at_eps():
    model, x = random_affine(5, seed=4)
    y, _, _ = labels_and_weights(model, x)
    dist, _ = closest_pair(model, x, y, "Linf")
    eps = float(dist.median()) * 1.02
    on = FABT(norm="Linf", eps=eps, early_stop=True)(model, x, y, return_result=True)
    off = FABT(norm="Linf", eps=eps, early_stop=False)(model, x, y, return_result=True)
    assert torch.equal(on.success, off.success)
    assert (off.norms["Linf"][off.success] <= on.norms["Linf"][on.success] + 1e-6).all()  # off keeps shrinking


@pytest.mark.parametrize("norm", ["Linf", "L2", "L1"])
def test_min_norm_step_is_the_box_constrained_projection(norm):
    """Against a brute-force check: the step meets the hyperplane, stays in the box, and no random
    feasible step on the hyperplane is shorter."""
    g = torch.Generator().manual_seed(0)
    p = torch.rand(6, 5, generator=g)
    w = torch.randn(6, 5, generator=g)
    c = torch.randn(6, generator=g) * 0.3
    d = min_norm_step(p, w, c, norm)
    assert torch.allclose((w * d).sum(1), c, atol=1e-5)
    assert ((p + d) >= -1e-6).all() and ((p + d) <= 1 + 1e-6).all()
    q = {"Linf": math.inf, "L2": 2.0, "L1": 1.0}[norm]
    best = torch.linalg.vector_norm(d, ord=q, dim=1)
    for _ in range(200):  # random box points, moved onto the hyperplane along a coordinate where possible
        z = torch.rand(6, 5, generator=g) - p
        j = w.abs().argmax(1)
        rows = torch.arange(6)
        z[rows, j] += (c - (w * z).sum(1)) / w[rows, j]
        ok = ((p + z) >= 0).all(1) & ((p + z) <= 1).all(1)
        assert (torch.linalg.vector_norm(z, ord=q, dim=1)[ok] >= best[ok] - 1e-5).all()


def test_fab_bad_settings_are_one_line_errors():
    for kwargs in ({"norm": "L3"}, {"alpha_max": 2.0}, {"eta": 0.5}, {"beta": 0.0}, {"steps": 0}, {"eps": -1.0}):
        with pytest.raises(ConfigError) as info:
            FAB(**kwargs)
        assert "\n" not in str(info.value)


def test_fab_t_with_its_targets_in_one_batch_equals_one_by_one():
    """FAB's first run is deterministic and rows never interact: stacking the targets' rows in one
    batch finds, per point and target, the same examples; minimal-norm (no ε) keeps per point the
    smallest over the targets, so the result is the same; with ε the same points are broken."""
    model, x = random_affine(5, seed=4)
    y, _, _ = labels_and_weights(model, x)
    kw = dict(norm="Linf", steps=20, num_targets=3)
    stacked = FABT(**kw)(model, x, y, return_result=True)
    one_by_one = FABT(batch_rows=1, **kw)(model, x, y, return_result=True)
    assert torch.allclose(stacked.x_adv, one_by_one.x_adv, atol=1e-6)
    eps = float(stacked.norms["Linf"].median())
    stacked = FABT(eps=eps, **kw)(model, x, y, return_result=True)
    one_by_one = FABT(eps=eps, batch_rows=1, **kw)(model, x, y, return_result=True)
    assert torch.equal(stacked.success, one_by_one.success)
    assert 0 < int(stacked.success.sum()) < len(y)
