"""The transfer experiment with tiny settings: well-formed rates, the plot, correlations."""

from __future__ import annotations

import json

import pytest
import torch

from advfeatures.errors import ConfigError
from advfeatures.science.common import parse_arch, seeded_model
from advfeatures.science.transfer import correlation, plot_transfer, transfer_experiment
from advfeatures.train import TrainConfig


def test_transfer_experiment_tiny(digits, digits_mlp, digits_d_rand, tmp_path):
    train, test = digits
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.05, crop_padding=0, flip=False)
    archs = [("mlp", {"hidden": [32]}), {"name": "cnn", "kwargs": {"width": 4, "hidden": 16}, "label": "tiny-cnn"}]
    res = transfer_experiment(digits_mlp, train.head(600), test, digits_d_rand, archs=archs, train_cfg=cfg, eps=1.5, steps=10,
                              n_attack=100)
    assert [r["label"] for r in res["archs"]] == ["mlp(hidden=32)", "tiny-cnn"]
    assert res["source"]["attacked"] == 100
    assert res["source"]["untargeted_success"] > 0.8  # ε = 1.5 on 8×8 digits breaks the MLP
    for row in res["archs"]:
        for key in ("transfer_untargeted", "transfer_targeted", "real_test_accuracy", "d_rand_test_accuracy"):
            assert row[key] is not None and 0.0 <= row[key] <= 1.0, key
    assert res["correlation"]["targeted_vs_d_rand"]["pearson"] is None  # two points: undefined
    json.dumps(res)  # JSON-ready
    png = plot_transfer({**res, "chance": 0.1}, tmp_path / "transfer.png")
    assert png.stat().st_size > 5_000 and not list(tmp_path.glob(".*.tmp"))


def test_correlation_known_answers():
    assert correlation([0.1, 0.2, 0.3], [0.5, 0.6, 0.7]) == pytest.approx({"pearson": 1.0, "spearman": 1.0, "n": 3})
    assert correlation([0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1])["spearman"] == pytest.approx(-1.0)
    r = correlation([0.1, 0.5, 0.2], [0.0, 1.0, 0.9])  # ranks (1,3,2) vs (1,3,2): Spearman 1, Pearson less
    assert r["spearman"] == pytest.approx(1.0) and r["pearson"] < 1.0
    assert correlation([0.1, None, 0.3], [0.2, 0.3, 0.4])["pearson"] is None
    assert correlation([0.2, 0.2, 0.2], [0.1, 0.2, 0.3])["pearson"] is None


def test_seeded_models_are_repeatable_without_the_global_rng():
    state = torch.random.get_rng_state()
    a = seeded_model("cnn", (1, 8, 8), 10, seed=5, width=4, hidden=8)
    b = seeded_model("cnn", (1, 8, 8), 10, seed=5, width=4, hidden=8)
    c = seeded_model("cnn", (1, 8, 8), 10, seed=6, width=4, hidden=8)
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point() and sa[k].numel() > 1)


def test_bad_architectures(digits, digits_mlp, digits_d_rand):
    with pytest.raises(ConfigError):
        parse_arch(("mlp",))
    with pytest.raises(ConfigError):
        parse_arch({"kwargs": {}})
    train, test = digits
    cfg = TrainConfig(epochs=1)
    with pytest.raises(ConfigError):
        transfer_experiment(digits_mlp, train, test, digits_d_rand, archs=[], train_cfg=cfg)
    with pytest.raises(ConfigError):
        transfer_experiment(digits_mlp, train, test, digits_d_rand, archs=["mlp", "mlp"], train_cfg=cfg)
