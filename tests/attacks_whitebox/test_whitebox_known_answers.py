"""Known answers on affine classifiers, where the optimal attacks have closed forms.

For logits z = W x + b and true class y, the boundary with class j is the hyperplane
(w_y − w_j)·x' + (b_y − b_j) = 0, so the smallest perturbation that changes the class is
min_j (z_y − z_j) / ‖w_y − w_j‖_q (q = 2 for L2, q = 1 for Linf), and in the binary case the
cross-entropy rises fastest in the fixed direction w_j − w_y.
"""

from __future__ import annotations

import math

import pytest
import torch

from advfeatures.attacks import APGD, BIM, CWL2, DIFGSM, FGSM, MIFGSM, PGD, DeepFool, LBFGSAttack, minimal_eps_by_bisection
from advfeatures.attacks.apgd import checkpoints
from advfeatures.attacks.bim import kurakin_steps
from advfeatures.attacks.losses import cross_entropy

from .conftest import SHAPE, affine, random_affine


def labels_and_weights(model, x):
    layer = model[1]
    with torch.no_grad():
        z = model(x)
    return z.argmax(1), layer.weight.detach(), z


def closed_form_distance(model, x, y, dual: float) -> torch.Tensor:
    """min_j (z_y − z_j) / ‖w_y − w_j‖_dual: the exact minimal perturbation of an affine model."""
    _, w, z = labels_and_weights(model, x)
    diff = w[y].unsqueeze(1) - w.unsqueeze(0)  # (N, K, d)
    dist = (z.gather(1, y[:, None]) - z) / torch.linalg.vector_norm(diff, ord=dual, dim=2)
    dist[torch.arange(len(y)), y] = math.inf
    return dist.min(1).values


def ce_ascent_sign(model, x, y) -> torch.Tensor:
    """sign(∇ₓ CE) = sign(Σ_k p_k w_k − w_y) of an affine model, as an image batch."""
    _, w, z = labels_and_weights(model, x)
    grad = z.softmax(1) @ w - w[y]
    return grad.sign().view_as(x)


@pytest.mark.parametrize("num_classes", [2, 5])
@pytest.mark.parametrize("eps", [0.05, 0.5])  # 0.5 pushes coordinates past the box
def test_fgsm_is_the_signed_weight_difference_clipped_to_the_box(num_classes, eps):
    model, x = random_affine(num_classes, seed=num_classes)
    y, w, _ = labels_and_weights(model, x)
    expected = (x + eps * ce_ascent_sign(model, x, y)).clamp(0, 1)
    if num_classes == 2:  # binary: the direction is w_other − w_y whatever the probabilities
        other = 1 - y
        assert torch.equal(ce_ascent_sign(model, x, y), (w[other] - w[y]).sign().view_as(x))
    assert torch.allclose(FGSM(eps=eps)(model, x, y), expected, atol=1e-6)
    # one BIM step of size ε and one MI-FGSM step are FGSM too (L1 normalisation keeps the sign)
    assert torch.allclose(BIM(eps=eps, steps=1, step_size=eps)(model, x, y), expected, atol=1e-6)
    assert torch.allclose(MIFGSM(eps=eps, steps=1)(model, x, y), expected, atol=1e-6)
    assert torch.allclose(DIFGSM(eps=eps, steps=1, diversity_prob=0.0)(model, x, y), expected, atol=1e-6)


def test_bim_on_a_binary_affine_model_walks_straight_along_the_weight_sign():
    model, x = random_affine(2, seed=3)
    y, w, _ = labels_and_weights(model, x)
    direction = (w[1 - y] - w[y]).sign().view_as(x)
    out = BIM(eps=0.1, steps=3, step_size=0.02)(model, x, y)
    assert torch.allclose(out, x + 0.06 * direction, atol=1e-6)
    out = BIM(eps=0.1, steps=8, step_size=0.02)(model, x, y)  # 0.16 > ε: stops at the ball's corner
    assert torch.allclose(out, x + 0.1 * direction, atol=1e-6)


def test_kurakin_iteration_count():
    assert [kurakin_steps(e / 255) for e in (1, 2, 4, 8, 16, 32)] == [1, 2, 5, 10, 20, 36]
    assert BIM(eps=8 / 255).steps == 10 and BIM(eps=8 / 255).step_size == pytest.approx(1 / 255)


@pytest.mark.parametrize("num_classes", [2, 5, 10])
@pytest.mark.parametrize("norm,dual", [("L2", 2.0), ("Linf", 1.0)])
def test_deepfool_gives_the_closed_form_minimal_perturbation(num_classes, norm, dual):
    model, x = random_affine(num_classes, seed=10 + num_classes, scale=0.3)
    y, w, _ = labels_and_weights(model, x)
    res = DeepFool(norm=norm)(model, x, y, return_result=True)
    expected = 1.02 * closed_form_distance(model, x, y, dual)
    assert res.success.all()
    assert torch.allclose(res.norms[norm], expected, rtol=1e-4)
    if num_classes == 2 and norm == "L2":  # and it points along w_other − w_y
        direction = (w[1 - y] - w[y])
        cos = torch.nn.functional.cosine_similarity((res.x_adv - x).flatten(1), direction, dim=1)
        assert torch.allclose(cos, torch.ones_like(cos), atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("margin", [0.05, 0.2])
def test_deepfool_at_a_corner_of_the_box_reaches_the_box_constrained_minimum(seed, margin):
    """x = 0 and a binary affine model with margin m: only the coordinates where w₁ − w₀ > 0 can
    move, so the smallest perturbation inside the box is m / ‖(w₁ − w₀)₊‖₂ (m small enough that no
    coordinate reaches 1). The box clips every DeepFool step here; the iterates must still cross
    the boundary, stay in the box, and land within the overshoot of that minimum."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(2, SHAPE[0] * SHAPE[1] * SHAPE[2], generator=g)
    model = affine(w, torch.tensor([margin, 0.0]))
    x, y = torch.zeros(1, *SHAPE), torch.zeros(1, dtype=torch.long)
    res = DeepFool(norm="L2")(model, x, y, return_result=True)
    expected = margin / float(torch.linalg.vector_norm((w[1] - w[0]).clamp_min(0)))
    assert res.success.all()
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert expected * (1 - 1e-4) <= float(res.norms["L2"][0]) <= expected * 1.03 + 2e-4


@pytest.mark.parametrize("num_classes,seed", [(2, 0), (5, 0), (10, 0)])
def test_cw_l2_finds_the_closed_form_minimal_distance(num_classes, seed):
    model, x = random_affine(num_classes, seed=seed, scale=0.3)
    y, _, _ = labels_and_weights(model, x)
    res = CWL2(steps=300, search_steps=6, initial_const=1.0)(model, x, y, return_result=True)
    d = closed_form_distance(model, x, y, 2.0)
    assert res.success.all()
    assert (res.norms["L2"] >= d * (1 - 1e-4)).all()  # nothing beats the minimum...
    assert (res.norms["L2"] <= d * 1.03 + 2e-3).all()  # ...and CW comes within 3% (+ Adam's step)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cw_l2_leaves_the_box_corner_only_with_room_to_travel_in_w(seed):
    """x = 0 and a binary affine model with margin 0.2 (the DeepFool corner case above): the reference
    start puts every pixel at w ≈ −7.25, and Adam moves w by about lr per step, so 100 steps at
    lr 0.01 (a travel of 1) never leave the corner, whatever c (5 runs take c from 1 to 10⁴); 1000
    steps at lr 0.01, or 100 at lr 0.1 (a travel of 10), reach the box-constrained minimum."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(2, SHAPE[0] * SHAPE[1] * SHAPE[2], generator=g)
    model = affine(w, torch.tensor([0.2, 0.0]))
    x, y = torch.zeros(1, *SHAPE), torch.zeros(1, dtype=torch.long)
    expected = 0.2 / float(torch.linalg.vector_norm((w[1] - w[0]).clamp_min(0)))
    short = CWL2(steps=100, search_steps=5, initial_const=1.0)(model, x, y, return_result=True)
    assert not short.success.any() and torch.equal(short.x_adv, x)
    for attack in (CWL2(steps=1000, search_steps=5, initial_const=1.0),
                   CWL2(steps=100, search_steps=5, initial_const=1.0, lr=0.1)):
        res = attack(model, x, y, return_result=True)
        assert res.success.all()
        assert expected * (1 - 1e-4) <= float(res.norms["L2"][0]) <= expected * 1.01


def test_lbfgs_finds_the_minimal_distance_of_a_binary_affine_model():
    model, x = random_affine(2, seed=0, scale=0.3)
    y, _, _ = labels_and_weights(model, x)
    res = LBFGSAttack()(model, x, y, return_result=True)
    d = closed_form_distance(model, x, y, 2.0)
    assert res.success.all()
    assert (res.norms["L2"] >= d * (1 - 1e-4)).all()
    assert (res.norms["L2"] <= d * 1.06).all()


def test_targeted_lbfgs_reaches_the_target_at_the_distance_of_its_hyperplane():
    model, x = random_affine(5, seed=4, scale=0.3)
    y, w, z = labels_and_weights(model, x)
    target = (y + 1) % 5
    res = LBFGSAttack()(model, x, y, target=target, return_result=True)
    assert res.success.all() and torch.equal(res.predictions, target)
    # reaching t means crossing every hyperplane z_t = z_k, so at least the farthest of them
    rows = torch.arange(len(y))
    dist = (z - z[rows, target][:, None]) / torch.linalg.vector_norm(w.unsqueeze(0) - w[target].unsqueeze(1), dim=2)
    dist[rows, target] = 0
    assert (res.norms["L2"] >= dist.max(1).values * (1 - 1e-4)).all()


@pytest.mark.parametrize("norm,eps", [("Linf", 0.1), ("L2", 0.5)])
def test_apgd_reaches_the_closed_form_worst_case_of_a_binary_affine_model(norm, eps):
    # inside the box, the CE of a binary affine model is maximised at x + ε·sign(w_j − w_y) (Linf)
    # or x + ε·(w_j − w_y)/‖w_j − w_y‖₂ (L2)
    model, x = random_affine(2, seed=5)
    y, w, _ = labels_and_weights(model, x)
    direction = (w[1 - y] - w[y])
    step = direction.sign() if norm == "Linf" else direction / direction.norm(dim=1, keepdim=True)
    best = x + eps * step.view_as(x)
    assert (best >= 0).all() and (best <= 1).all()
    with torch.no_grad():
        optimum = cross_entropy(model(best), y)
    # (PGD from a random start needs far more steps here: in L2 its small fixed steps shrink the
    # start's component orthogonal to the optimum only slowly; APGD's 2ε steps remove it at once)
    for attack in (APGD(norm=norm, eps=eps, steps=30), PGD(norm=norm, eps=eps, steps=30, random_start=False)):
        x_adv = attack(model, x, y)
        with torch.no_grad():
            reached = cross_entropy(model(x_adv), y)
        assert torch.allclose(reached, optimum, rtol=1e-3), type(attack).__name__


def test_apgd_checkpoints_follow_the_paper():
    # p0 = 0, p1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06), as iteration counts for N = 100
    assert list(checkpoints(100)) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(100)[41] == 19
    assert list(checkpoints(10)) == [2, 4, 5, 7, 8, 9]


@pytest.mark.parametrize("norm,dual,make", [
    ("L2", 2.0, lambda e: PGD(norm="L2", eps=e, steps=10, random_start=False)),
    ("Linf", 1.0, lambda e: PGD(norm="Linf", eps=e, steps=10, random_start=False)),
])
def test_minimal_eps_by_bisection_recovers_the_closed_form(norm, dual, make):
    model, x = random_affine(2, seed=6, scale=0.3)
    y, _, _ = labels_and_weights(model, x)
    d = closed_form_distance(model, x, y, dual)
    assert (d < 0.3).all()
    eps = minimal_eps_by_bisection(make, model, x, y, lo=0.0, hi=1.0, iters=12)
    assert (eps >= d - 1e-5).all()
    assert (eps <= d + 1.0 / 2**12 + 1e-5).all()


def test_minimal_eps_is_zero_when_already_wrong_and_inf_when_out_of_reach():
    model, x = random_affine(2, seed=7, scale=0.3)
    y, _, _ = labels_and_weights(model, x)
    wrong = y.clone()
    wrong[:3] = 1 - wrong[:3]
    eps = minimal_eps_by_bisection(lambda e: PGD(eps=e, steps=5), model, x, wrong, lo=0.0, hi=1e-4, iters=3)
    assert torch.equal(eps[:3], torch.zeros(3))
    assert torch.isinf(eps[3:]).all()


def test_apgd_halves_its_step_at_every_checkpoint_once_the_loss_stops_rising():
    # binary affine, Linf, no random start: the first step (2ε) lands on the optimal corner, after
    # which the loss never rises again, so condition 1 halves η at each of the 8 checkpoints of N = 100
    model, x = random_affine(2, seed=5)
    y, w, _ = labels_and_weights(model, x)
    attack = APGD(eps=0.1, steps=100, random_start=False)
    run = attack.run(model, x, y, None, None)
    corner = x + 0.1 * (w[1 - y] - w[y]).sign().view_as(x)
    assert torch.allclose(run.x, corner, atol=1e-6)
    assert torch.allclose(run.step_size, torch.full_like(run.step_size, 0.2 / 2**8))
    # N = 21: checkpoints 4, 8, 11, 14, 16, 18, 19, 20. N = 3: checkpoints 1, 2, but the one step of
    # the first span rose (1 ≥ ρ·1), so only the second halves
    for steps, halvings in ((21, 8), (3, 1)):
        eta = APGD(eps=0.1, steps=steps, random_start=False).run(model, x, y, None, None).step_size
        assert torch.allclose(eta, torch.full_like(eta, 0.2 / 2**halvings)), steps
