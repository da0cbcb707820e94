"""Known answers for certification: interval bounds are sound everywhere and exact for one affine
layer; smoothing a linear binary classifier certifies the distance to its boundary; the
Clopper–Pearson bounds match closed forms (and SciPy, where installed)."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn

from advfeatures.certify import ibp_verified_accuracy, interval_bounds, margin_bounds
from advfeatures.certify.bounds import input_box
from advfeatures.certify.smoothing import ABSTAIN, SmoothedClassifier, certified_accuracy, certify_dataset
from advfeatures.certify.stats import (beta_quantile, clopper_pearson_lower, clopper_pearson_upper, regularized_beta,
                                       two_sided_binomial_test_half)
from advfeatures.defences import DefenceConfig
from advfeatures.defences.ibp import IBPTraining
from advfeatures.errors import ModelError
from advfeatures.models import Normalize
from advfeatures.attacks.pgd import PGD
from advfeatures.train import AdversaryConfig, TrainConfig, train_model

from .conftest import tiny_cnn, tiny_mlp


def _random_bn_cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(Normalize([0.3], [0.4]), nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, stride=1), nn.ReLU(), nn.AvgPool2d(2, ceil_mode=False),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Dropout(0.5), nn.Linear(5, 4))
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        bn = model[2]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(-1.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("build", [lambda s: tiny_mlp(s, 4), lambda s: tiny_cnn(s).eval(), _random_bn_cnn])
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.floats(0.001, 0.3))
def test_interval_bounds_contain_the_outputs_of_every_point_of_the_box(build, seed, eps):
    model = build(seed % 7)
    model.eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 1, 8, 8, generator=g)
    lo, hi = input_box(x, eps)
    with torch.no_grad():
        out_lo, out_hi = interval_bounds(model, lo, hi)
        points = lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * torch.rand(3, 64, 1, 8, 8, generator=g)
        points[:, :8] = torch.where(torch.rand(3, 8, 1, 8, 8, generator=g) < 0.5, lo.unsqueeze(1), hi.unsqueeze(1))  # corners
        z = model(points.flatten(0, 1)).view(3, 64, -1)
        tol = 1e-4 * (1 + z.abs().max())
        assert (z >= out_lo.unsqueeze(1) - tol).all() and (z <= out_hi.unsqueeze(1) + tol).all()
        y = torch.randint(0, z.shape[-1], (3,), generator=g)
        margins = margin_bounds(model, x, y, eps)  # z_y − z_j over the same box
        true = z.gather(2, y.view(3, 1, 1).expand(3, 64, 1)) - z
        assert (true >= margins.unsqueeze(1) - tol).all()
        naive = out_lo.gather(1, y.view(-1, 1)) - out_hi  # elision is never looser
        assert (margins >= naive - tol).all()


def test_interval_bounds_of_one_affine_layer_are_attained_at_corners():
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(16, 3)
    model = nn.Sequential(nn.Flatten(), lin)
    x = torch.rand(4, 1, 4, 4, generator=g)
    lo, hi = input_box(x, 0.1)
    with torch.no_grad():
        out_lo, out_hi = interval_bounds(model, lo, hi)
        w = lin.weight
        for j in range(3):
            s = w[j].sign().view(1, 1, 4, 4)
            top = torch.where(s > 0, hi, lo)  # the corner that maximises logit j
            bottom = torch.where(s > 0, lo, hi)
            assert torch.allclose(model(top)[:, j], out_hi[:, j], atol=1e-5)
            assert torch.allclose(model(bottom)[:, j], out_lo[:, j], atol=1e-5)


def test_margin_bounds_of_an_affine_model_are_exact():
    """For one affine layer the elided bound on z_y − z_j is attained: min over the box of
    (w_y − w_j)·x + (b_y − b_j)."""
    g = torch.Generator().manual_seed(1)
    lin = nn.Linear(16, 3)
    model = nn.Sequential(nn.Flatten(), lin)
    x = torch.rand(4, 1, 4, 4, generator=g)
    y = torch.tensor([0, 1, 2, 1])
    lo, hi = input_box(x, 0.05)
    with torch.no_grad():
        m = margin_bounds(model, x, y, 0.05)
        for j in range(3):
            d = (lin.weight[y] - lin.weight[j]).view(-1, 1, 4, 4)
            worst = torch.where(d > 0, lo, hi)
            z = model(worst)
            assert torch.allclose(z.gather(1, y.view(-1, 1)).squeeze(1) - z[:, j], m[:, j], atol=1e-5)


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


def test_unsupported_layers_are_refused_by_name():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), Swish(), nn.Linear(8, 2))
    with pytest.raises(ModelError, match=r"layer 2 \(Swish\)"):
        interval_bounds(model, torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8))
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ModelError, match="Swish"):
        ibp_verified_accuracy(model, x, torch.tensor([0, 1]), eps=0.1)


def test_ibp_schedule_ramps_eps_up_and_kappa_down():
    obj = IBPTraining(DefenceConfig(ibp_warmup=0.1, ibp_ramp=0.5, kappa_end=0.5), PGD(norm="Linf", eps=0.2))
    assert obj.schedule(0.05) == (0.0, 1.0)
    eps, kappa = obj.schedule(0.3)
    assert math.isclose(eps, 0.1) and math.isclose(kappa, 0.75)
    assert obj.schedule(0.5) == pytest.approx((0.2, 0.5)) and obj.schedule(0.9) == pytest.approx((0.2, 0.5))


def test_ibp_training_gives_non_trivial_verified_accuracy(digits_small):
    train, test = digits_small
    eps = 0.1
    cfg = TrainConfig(epochs=15, batch_size=32, lr=0.05, crop_padding=0, flip=False, milestones=(), objective="ibp",
                      adversary=AdversaryConfig(norm="Linf", eps=eps), defence=DefenceConfig(ibp_warmup=0.1, ibp_ramp=0.5))
    ibp = tiny_mlp(0)
    train_model(ibp, train, cfg)
    plain = tiny_mlp(0)
    train_model(plain, train, TrainConfig(epochs=15, batch_size=32, lr=0.05, crop_padding=0, flip=False, milestones=()))
    v_ibp = ibp_verified_accuracy(ibp, test.images, test.labels, eps=eps)["verified_accuracy"]
    v_plain = ibp_verified_accuracy(plain, test.images, test.labels, eps=eps)["verified_accuracy"]
    assert v_ibp > 0.3 and v_ibp > v_plain + 0.1


# ------------------------------------------------------------------------------------------------
# randomized smoothing


def _linear_binary(w: torch.Tensor, b: float) -> nn.Module:
    """logits (0, w·x + b): class 1 exactly where w·x + b > 0."""
    lin = nn.Linear(w.numel(), 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        lin.weight[1] = w
        lin.bias[1] = b
    return nn.Sequential(nn.Flatten(), lin)


def test_certify_recovers_the_distance_to_a_linear_boundary():
    """Smoothing sign(w·x + b) gives P(class 1) = Φ((w·x + b) / (σ‖w‖)), so the certified radius
    σ·Φ⁻¹(p_A) is exactly |w·x + b| / ‖w‖: CERTIFY's radius lies below it (with prob. ≥ 1 − α) and,
    with n = 20 000 samples, within a few hundredths of σ."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, generator=g)
    model = _linear_binary(w, 0.0)
    sigma, alpha, n = 0.5, 0.001, 20_000
    smooth = SmoothedClassifier(model, sigma, num_classes=2, batch_size=20_000, seed=1)
    centre = torch.full((1, 4, 4), 0.5)
    b = -float(w @ centre.flatten())  # the boundary passes through the image centre
    model = _linear_binary(w, b)
    smooth.model = model
    unit = (w / w.norm()).view(1, 4, 4)
    for signed in (-0.6, -0.25, 0.15, 0.4, 0.7):  # signed distance in units of σ... times σ below
        x = centre + signed * sigma * unit
        distance = abs(signed) * sigma
        cls, radius, p_lower = smooth.certify(x, n0=100, n=n, alpha=alpha)
        assert cls == int(signed > 0)
        true_p = NormalDist().cdf(distance / sigma)
        assert p_lower <= true_p
        assert radius <= distance + 1e-9 and distance - radius < 0.1 * sigma


def test_predict_abstains_on_the_boundary_and_answers_far_from_it():
    w = torch.ones(16)
    centre = torch.full((1, 4, 4), 0.5)
    model = _linear_binary(w, -float(w.sum()) * 0.5)
    smooth = SmoothedClassifier(model, 0.25, num_classes=2, seed=0)
    assert smooth.predict(centre, n=2000, alpha=0.001) == ABSTAIN
    assert smooth.predict(centre + 0.2, n=2000, alpha=0.001) == 1
    assert smooth.predict(centre - 0.2, n=2000, alpha=0.001) == 0
    cls, radius, _ = smooth.certify(centre, n0=100, n=2000, alpha=0.001)
    assert cls == ABSTAIN and radius == 0.0


def test_certified_accuracy_counts_abstentions_as_wrong():
    w = torch.ones(16)
    model = _linear_binary(w, -8.0)
    x = torch.stack([torch.full((1, 4, 4), 0.5 + d) for d in (0.2, -0.2, 0.0, 0.1)])
    y = torch.tensor([1, 0, 1, 0])  # the third is on the boundary (abstain), the fourth mislabelled
    res = certify_dataset(model, x, y, sigma=0.25, n0=50, n=2000, alpha=0.001)
    assert res["prediction"].tolist()[:2] == [1, 0] and res["prediction"][2] == ABSTAIN
    curve = certified_accuracy(res, [0.0, 0.5, 10.0])
    assert curve[0] == 0.5 and curve[1] == 0.5 and curve[2] == 0.0  # distances 0.8: radius < 0.8 < 10


# ------------------------------------------------------------------------------------------------
# the statistics


@settings(max_examples=40, deadline=None)
@example(x=0.671875, a=0.6875, b=23.5)  # q = 1 − 1.3e-12: the flat end of the CDF
@given(x=st.floats(0.001, 0.999), a=st.floats(0.2, 50), b=st.floats(0.2, 50))
def test_regularized_beta_closed_forms(x, a, b):
    assert math.isclose(regularized_beta(x, a, 1.0), x**a, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(regularized_beta(x, 1.0, b), 1 - (1 - x) ** b, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(regularized_beta(0.5, a, a), 0.5, rel_tol=1e-9)
    assert math.isclose(regularized_beta(x, a, b), 1 - regularized_beta(1 - x, b, a), abs_tol=1e-12)
    q = regularized_beta(x, a, b)
    if 1e-12 < q < 1 - 1e-12:
        # the quantile inverts the CDF: exactly in probability; in x only where the CDF is not flat
        # (near q = 1 a change of 1e-6 in x moves q by less than float64 resolves)
        assert math.isclose(regularized_beta(beta_quantile(q, a, b), a, b), q, rel_tol=1e-9, abs_tol=1e-12)
    if 1e-6 < q < 1 - 1e-6:
        assert math.isclose(beta_quantile(q, a, b), x, rel_tol=1e-6, abs_tol=1e-9)


@pytest.mark.parametrize("n", [1, 10, 1000, 100_000])
@pytest.mark.parametrize("alpha", [0.05, 0.001])
def test_clopper_pearson_at_the_extremes(n, alpha):
    # all successes: P(all n | p) = pⁿ = α at the lower bound; no successes: (1 − p)ⁿ = α at the upper
    assert math.isclose(clopper_pearson_lower(n, n, alpha), alpha ** (1 / n), rel_tol=1e-9)
    assert math.isclose(clopper_pearson_upper(0, n, alpha), 1 - alpha ** (1 / n), rel_tol=1e-9)
    assert clopper_pearson_lower(0, n, alpha) == 0.0 and clopper_pearson_upper(n, n, alpha) == 1.0


def test_binomial_test_known_values():
    assert math.isclose(two_sided_binomial_test_half(5, 10), 1.0)
    assert math.isclose(two_sided_binomial_test_half(10, 10), 2 * 0.5**10, rel_tol=1e-9)
    assert math.isclose(two_sided_binomial_test_half(8, 10), 2 * (45 + 10 + 1) / 1024, rel_tol=1e-9)


def test_clopper_pearson_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for k, n, a in [(5, 10, 0.05), (990, 1000, 0.001), (1, 3, 0.1), (99_990, 100_000, 0.001), (37, 50, 0.01)]:
        assert math.isclose(clopper_pearson_lower(k, n, a), stats.beta.ppf(a, k, n - k + 1), rel_tol=1e-9)
        assert math.isclose(clopper_pearson_upper(k, n, a), stats.beta.ppf(1 - a, k + 1, n - k), rel_tol=1e-9)
    for k, n in [(60, 100), (530, 1000), (3, 4)]:
        assert math.isclose(two_sided_binomial_test_half(k, n), stats.binomtest(k, n).pvalue, rel_tol=1e-9)
