"""The leakage audit: chance on random labels, the real accuracy on real labels, below chance on a
D_det-like relabelling, and certified accuracy that is exact for linear models."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advfeatures.data.dataset import ImageDataset
from advfeatures.errors import ConfigError, DataError
from advfeatures.science.leakage import (
    certified_accuracy,
    dual_exponent,
    fit_linear,
    leakage_audit,
)


def relabelled(data: ImageDataset, labels: torch.Tensor, name: str) -> ImageDataset:
    return ImageDataset(data.images, labels, data.classes, name, {"source_labels": data.labels})


def test_random_labels_give_chance_and_real_labels_the_real_accuracy(digits):
    train, test = digits
    real = leakage_audit(train, train, test, eps=0.5, k=10)
    assert real["leakage_accuracy"] == pytest.approx(real["real_accuracy"])
    assert real["real_accuracy"] > 0.85
    accs = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        noise = relabelled(train, torch.randint(0, 10, (len(train),), generator=g), "random")
        accs.append(leakage_audit(noise, train, test, eps=0.5, k=10)["leakage_accuracy"])
    assert sum(accs) / len(accs) < 0.2  # chance is 0.1; one draw maps whole clusters to a label
    assert max(accs) < 0.3


def test_deterministic_relabelling_is_read_as_the_wrong_class(digits):
    """D_det's situation without any perturbation: robust features say y, the label says y + 1, so the
    classifier learns y → y + 1 and scores ≈ 0 on real labels (Goh: no leakage in D_det)."""
    train, test = digits
    shifted = relabelled(train, (train.labels + 1) % 10, "shifted")
    res = leakage_audit(shifted, train, test, eps=0.5, k=10)
    assert res["leakage_accuracy"] < 0.05
    assert res["leakage_fit_accuracy"] > 0.85
    assert res["real_classifier_on_constructed"]["agrees_with_source_label"] > 0.85
    assert res["real_classifier_on_constructed"]["agrees_with_new_label"] < 0.05


def test_audit_of_a_real_d_rand(digits, digits_d_rand):
    train, test = digits
    for features in ("pca", "robust_linear"):
        res = leakage_audit(digits_d_rand, train, test, eps=0.5, k=10, features=features)
        for key in ("leakage_accuracy", "real_accuracy", "leakage_certified_accuracy", "real_certified_accuracy", "chance"):
            assert 0.0 <= res[key] <= 1.0
        assert res["leakage_certified_accuracy"] <= res["leakage_accuracy"] + 1e-12
        assert res["real_certified_accuracy"] <= res["real_accuracy"] + 1e-12
        assert res["k"] == 10 and len(res["bound_per_feature"]) == 10
        if features == "robust_linear":
            spec = res["robust_linear_model"]
            assert spec["certified_test_accuracy"] <= spec["test_accuracy"] and spec["test_accuracy"] > 0.8
    pca = leakage_audit(digits_d_rand, train, test, eps=0.5, k=10)
    assert pca["bound_per_feature"] == pytest.approx([0.5] * 10)  # unit principal directions: |Δz_i| ≤ ε


def test_exact_certificate_of_a_linear_classifier():
    """Two classes, logits = ±x₁: a point at x₁ = m is certified at L2 radius ε iff 2m > 2ε (the
    weight difference has norm 2), and at Linf the same because only one coordinate counts."""
    a = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    c = torch.zeros(2, dtype=torch.float64)
    x = torch.tensor([[0.30, 0.0], [0.49, 0.0], [0.51, 0.0], [-0.8, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1])
    assert certified_accuracy(a, c, x, y, eps=0.5, q=2.0) == pytest.approx(0.5)  # 0.51 and −0.8 survive
    assert certified_accuracy(a, c, x, y, eps=0.5, q=1.0) == pytest.approx(0.5)
    assert certified_accuracy(a, c, x, y, eps=0.9, q=2.0) == 0.0


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.floats(0.0, 2.0))
def test_certified_accuracy_is_at_most_clean_and_shrinks_with_eps(seed, eps):
    g = torch.Generator().manual_seed(seed)
    a, c = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    x, y = torch.randn(50, 6, generator=g, dtype=torch.float64), torch.randint(0, 4, (50,), generator=g)
    clean = float(((x @ a.T + c).argmax(1) == y).double().mean())
    small, big = certified_accuracy(a, c, x, y, eps=eps, q=2.0), certified_accuracy(a, c, x, y, eps=eps + 0.5, q=2.0)
    assert big <= small <= clean + 1e-12


def test_fit_linear_separates_separable_data_and_dual_exponents():
    x = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]])
    y = torch.tensor([0, 0, 1, 1])
    w, b = fit_linear(x, y, 2)
    assert bool(((x.double() @ w.T + b).argmax(1) == y).all())
    assert (dual_exponent("L2"), dual_exponent("Linf"), dual_exponent("L1")) == (2.0, 1.0, math.inf)


def test_bad_arguments(digits):
    train, test = digits
    with pytest.raises(ConfigError):
        leakage_audit(train, train, test, eps=0.0)
    with pytest.raises(ConfigError):
        leakage_audit(train, train, test, eps=0.5, features="nope")
    with pytest.raises(ConfigError):
        leakage_audit(train, train, test, eps=0.5, k=10_000)
    with pytest.raises(ConfigError, match="collapsed"):
        leakage_audit(train, train, test, eps=5.0, features="robust_linear")
    small = ImageDataset(torch.rand(5, 1, 4, 4), torch.zeros(5, dtype=torch.int64), train.classes, "other")
    with pytest.raises(DataError):
        leakage_audit(small, train, test, eps=0.5)
