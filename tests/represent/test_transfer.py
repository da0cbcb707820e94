"""Transfer from a source representation: input adaptation and a well-formed comparison table."""

from __future__ import annotations

import pytest
import torch

from advfeatures.data import ImageDataset
from advfeatures.errors import ConfigError, ModelError
from advfeatures.represent import adapt_images, transfer_table
from advfeatures.represent.transfer import linear_probe
from advfeatures.train import TrainConfig


def test_adapt_images_resizes_and_matches_channels():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 8, 8, generator=g)
    up = adapt_images(x, (3, 28, 28))
    assert up.shape == (4, 3, 28, 28) and float(up.min()) >= 0 and float(up.max()) <= 1
    assert torch.equal(up[:, 0], up[:, 1]) and torch.equal(up[:, 1], up[:, 2])  # channel repetition
    flat = adapt_images(torch.full((2, 1, 8, 8), 0.3), (1, 28, 28))
    assert torch.allclose(flat, torch.full_like(flat, 0.3))  # resizing keeps a constant image constant
    down = adapt_images(torch.rand(2, 3, 28, 28, generator=g), (1, 14, 14))
    assert down.shape == (2, 1, 14, 14)
    # area averaging when shrinking by a whole factor: each pixel is its 2×2 block's mean
    x28 = torch.rand(1, 1, 28, 28, generator=g)
    assert torch.allclose(adapt_images(x28, (1, 14, 14)), x28.view(1, 1, 14, 2, 14, 2).mean((3, 5)), atol=1e-6)
    with pytest.raises(ConfigError, match="channels"):
        adapt_images(torch.rand(1, 2, 8, 8), (3, 8, 8))


def _upsampled_digits(data: ImageDataset, n: int) -> ImageDataset:
    """Digits at 16×16: a target whose shape differs from the 8×8 source's."""
    sub = data.head(n)
    return ImageDataset(adapt_images(sub.images, (1, 16, 16)), sub.labels, sub.classes, f"{sub.name}@16")


def test_transfer_table_compares_sources_in_both_modes(standard_mlp, robust_mlp, digits):
    train, test = _upsampled_digits(digits[0], 400), _upsampled_digits(digits[1], 200)
    before = {k: v.clone() for k, v in standard_mlp.state_dict().items()}
    state = torch.random.get_rng_state()
    table = transfer_table({"standard": standard_mlp, "robust": robust_mlp}, train, test,
                           fine_tune_config=TrainConfig(epochs=2, batch_size=64, lr=0.01, crop_padding=0, flip=False))
    assert table["source_shapes"] == {"standard": [1, 8, 8], "robust": [1, 8, 8]}
    assert table["target_shape"] == [1, 16, 16] and table["n_train"] == 400 and table["n_test"] == 200
    assert [(r["source"], r["mode"]) for r in table["rows"]] == [
        ("standard", "fixed-feature"), ("standard", "full-fine-tuning"),
        ("robust", "fixed-feature"), ("robust", "full-fine-tuning")]
    for r in table["rows"]:
        assert 0.0 <= r["test_accuracy"] <= 1.0 and 0.0 <= r["train_accuracy"] <= 1.0
        assert table["table"][r["source"]][r["mode"]] == r["test_accuracy"]
    # a linear probe on a trained digits representation is far above chance on (resized) digits
    assert table["table"]["standard"]["fixed-feature"] > 0.7 and table["table"]["robust"]["fixed-feature"] > 0.7
    assert torch.equal(state, torch.random.get_rng_state())
    # fine-tuning trains a copy: the source model is untouched
    assert all(torch.equal(before[k], v) for k, v in standard_mlp.state_dict().items())


def test_linear_probe_needs_a_known_input_shape(standard_mlp, digits):
    from advfeatures.models import as_classifier

    bare = as_classifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)))
    with pytest.raises(ModelError, match="input_shape"):
        linear_probe(bare, digits[0].head(50), digits[1].head(20))
    res = linear_probe(bare, digits[0].head(200), digits[1].head(100), input_shape=(1, 8, 8))
    assert res["feature_dim"] == 64 and res["train_accuracy"] > 0.9  # 200 points are separable in 64 pixels
    with pytest.raises(ConfigError, match="mode"):
        transfer_table({"s": standard_mlp}, digits[0].head(20), digits[1].head(20), modes=("frozen",))
