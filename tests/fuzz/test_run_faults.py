"""Faults of a run rather than of its arguments: a training that diverges with every loss finite,
a D_rand folder used with data it was not built from, and a disk that fills up mid-write."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from advfeatures.cli import main

from .conftest import check_promise

SRC = Path(__file__).resolve().parents[2] / "src"


# ---- divergence with finite losses ----------------------------------------------------------------
@pytest.mark.parametrize("optimizer, lr", [("sgd", 30.0), ("adam", 1e6)])
def test_a_finite_but_exploding_loss_stops_training_in_one_line(digits_split, optimizer, lr):
    from advfeatures.errors import ConfigError
    from advfeatures.models import build_model
    from advfeatures.train import TrainConfig, train_model

    train, _ = digits_split
    torch.manual_seed(0)
    model = build_model("mlp", train.image_shape, train.num_classes)
    with pytest.raises(ConfigError, match=r"training diverged in epoch 1 .*lr="):
        train_model(model, train.head(256), TrainConfig(epochs=2, batch_size=32, lr=lr, optimizer=optimizer))


def test_exploded_weights_with_a_calm_loss_are_divergence(digits_split):
    from advfeatures.errors import ConfigError
    from advfeatures.models import build_model
    from advfeatures.train import TrainConfig, _check_not_diverged, _weight_norm

    train, _ = digits_split
    model = build_model("mlp", train.image_shape, train.num_classes, hidden=[16])
    start = _weight_norm(model)
    cfg = TrainConfig(lr=1e30)
    _check_not_diverged(model, {"epoch": 1, "loss": 2.3}, 2.3, start, cfg, "train")  # as trained: fine
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e5)
    with pytest.raises(ConfigError, match="weights' norm went from .* lr=1e\\+30"):
        _check_not_diverged(model, {"epoch": 1, "loss": 2.3}, 2.3, start, cfg, "train")


def test_the_digits_presets_training_stages_do_not_trip_the_divergence_check(tmp_path):
    for stage in ("standard", "adversarial"):
        res = check_promise(["train", "--arch", "mlp:hidden=32", "--dataset", "digits", "--stage", stage, "--set",
                             "epochs=3", "--out", str(tmp_path / f"{stage}.safetensors")])
        assert res.exit_code == 0, res.output


# ---- transferability: D_rand and the data must agree -------------------------------------------
def _npz(path: Path, shape: tuple[int, int], classes: int, n: int) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.integers(0, 256, (n, *shape), dtype=np.uint8), labels=np.arange(n) % classes)
    return path


def test_transferability_refuses_a_d_rand_of_other_images_or_classes(tmp_path, files):
    from advfeatures.models import build_model, save_model

    # a 28×28 model and 28×28 data, but D_rand of 8×8 digits
    data28 = _npz(tmp_path / "x28.npz", (28, 28), 10, 200)
    res = check_promise(["transferability", "--source", str(files["model28"]), "--d-rand", str(files["d_rand"]), "--data",
                         str(data28), "--arch", "mlp", "--epochs", "1", "--out", str(tmp_path / "t1")])
    assert res.exit_code == 2 and "(1, 8, 8)" in res.output and "(1, 28, 28)" in res.output, res.output
    # 8×8 images of 12 classes and a 12-class model: D_rand's labels (0..9) fit, its class count does not
    data12 = _npz(tmp_path / "x12.npz", (8, 8), 12, 240)
    save_model(build_model("mlp", (1, 8, 8), 12, hidden=[8]), tmp_path / "m12.safetensors")
    res = check_promise(["transferability", "--source", str(tmp_path / "m12.safetensors"), "--d-rand", str(files["d_rand"]),
                         "--data", str(data12), "--arch", "mlp", "--epochs", "1", "--out", str(tmp_path / "t2")])
    assert res.exit_code == 2 and "10 classes" in res.output and "12" in res.output, res.output
    assert not (tmp_path / "t1").exists() and not (tmp_path / "t2").exists()
