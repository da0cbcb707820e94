"""Units versus directions: activations by layer name, exact top-k sets, label purity."""

from __future__ import annotations

import pytest
import torch

from advfeatures.errors import ConfigError
from advfeatures.models import representation
from advfeatures.represent import layer_activations, units_vs_directions
from advfeatures.represent.units import label_purity


def test_layer_activations_by_name_and_by_default(standard_mlp, digits):
    x = digits[1].images[:50]
    with torch.no_grad():
        hidden = torch.relu(standard_mlp.features[1](x.flatten(1)))  # features = Flatten, Linear, ReLU, ...
        rep = representation(standard_mlp, x)
    assert torch.allclose(layer_activations(standard_mlp, x, layer="features.2", batch_size=16), hidden, atol=1e-6)
    assert torch.allclose(layer_activations(standard_mlp, x), rep, atol=1e-6)
    with pytest.raises(ConfigError, match="features.1"):
        layer_activations(standard_mlp, x, layer="features.99")


def test_label_purity_known_values():
    labels = torch.tensor([[1, 1, 1, 1], [0, 1, 2, 3], [2, 2, 5, 5]])
    assert torch.allclose(label_purity(labels, 6), torch.tensor([1.0, 0.25, 0.5]))


def test_units_and_directions_pick_the_most_activating_images(standard_mlp, digits):
    test = digits[1]
    out = units_vs_directions(standard_mlp, test, layer="features.2", num=3, top_k=6, seed=0)
    acts = layer_activations(standard_mlp, test.images, layer="features.2")
    assert out["dim"] == 256 and len(out["units"]) == 3 and len(out["directions"]) == 3
    for row in out["units"]:
        top = acts[:, row["unit"]].topk(6)
        assert torch.allclose(torch.tensor(row["activations"]), top.values, atol=1e-5)
        assert row["labels"] == test.labels[row["indices"]].tolist()
    # the representation's units and random directions both group images of one class far more than chance
    rep = units_vs_directions(standard_mlp, test, num=8, top_k=8, seed=1)
    assert rep["chance_purity"] < 0.4
    assert rep["mean_purity_units"] > rep["chance_purity"] + 0.15
    assert rep["mean_purity_directions"] > rep["chance_purity"] + 0.15
    with pytest.raises(ConfigError, match="units must lie"):
        units_vs_directions(standard_mlp, test, units=[64])
