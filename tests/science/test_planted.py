"""The planted-features benchmark: its construction (known answers, invariants) and the end-to-end
ground-truth checks of D_R, D_NR, D_rand and D_det."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advfeatures.errors import ConfigError
from advfeatures.science.planted import (
    PlantedConfig,
    feature_scores,
    feature_signal,
    planted_dataset,
    planted_features,
    render,
    swap_behaviour,
    swap_dataset,
    texture_energy,
)

from .conftest import fixed_affine


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@settings(max_examples=8, deadline=None)
@given(size=st.integers(6, 16), classes=st.integers(2, 9))
def test_templates_are_orthonormal_zero_mean_and_mutually_orthogonal(size, classes):
    if size // math.ceil(math.sqrt(classes)) < 2:
        with pytest.raises(ConfigError):
            planted_features(PlantedConfig(size=size, num_classes=classes))
        return
    f = planted_features(PlantedConfig(size=size, num_classes=classes))
    t = torch.cat([f.robust, f.non_robust]).flatten(1).double()
    assert torch.allclose(t @ t.T, torch.eye(2 * classes, dtype=torch.float64), atol=1e-5)
    assert t.sum(1).abs().max() < 1e-5  # zero mean: orthogonal to the grey image
    # non-robust codes are pixel checkerboards inside their own block (the QR step moves them by a
    # few per cent), robust ones carry almost no pixel-scale texture
    checker = torch.tensor([[(-1.0) ** (i + j) for j in range(size)] for i in range(size)])
    for c in range(classes):
        code = f.non_robust[c, 0]
        inside = f.blocks[c] > 0
        assert float(code[~inside].abs().max()) < 0.1 * float(code[inside].abs().max())
        assert bool(((code * checker)[inside] > 0).all())
    robust_texture = texture_energy(0.5 + 0.1 * f.robust, f).sum(1)
    code_texture = texture_energy(0.5 + 0.1 * f.non_robust, f).sum(1)
    assert float(robust_texture.max()) < 0.1 * float(code_texture.min())


def test_clean_shares_match_the_construction():
    """Known answers: non-robust share ≈ 1; robust share ≈ p − (1 − p)/(C − 1); robust agreement ≈ p."""
    cfg = PlantedConfig(size=12, num_classes=4, robust_agreement=0.7)
    f = planted_features(cfg)
    data = planted_dataset(f, 4000, generator=gen(1))
    sig = feature_signal(data.images, data.labels, f)
    p, c = cfg.robust_agreement, cfg.num_classes
    assert sig["robust"]["share"] == pytest.approx(p - (1 - p) / (c - 1), abs=0.04)
    assert sig["robust"]["agreement"] == pytest.approx(p, abs=0.03)
    assert sig["non_robust"]["share"] == pytest.approx(1.0, abs=0.05)
    assert sig["non_robust"]["template_share"] == pytest.approx(1.0, abs=0.02)
    assert sig["non_robust"]["agreement"] > 0.98
    # the per-image bookkeeping agrees with the images themselves
    assert bool((feature_scores(data.images, f, "robust").argmax(1) == data.info["robust_class"]).float().mean() > 0.99)


def test_swap_set_and_feature_free_images():
    f = planted_features(PlantedConfig())
    swap = swap_dataset(f, 1000, generator=gen(2))
    assert bool((swap.info["robust_class"] != swap.info["nonrobust_class"]).all())
    # measured against the non-robust class, the non-robust signal is whole and the robust one negative
    sig = feature_signal(swap.images, swap.info["nonrobust_class"], f)
    assert sig["non_robust"]["share"] == pytest.approx(1.0, abs=0.06)
    assert sig["robust"]["share"] == pytest.approx(-1 / 3, abs=0.03)
    # images without either feature carry no signal towards any label
    y = torch.randint(0, 4, (1000,), generator=gen(3))
    blank = render(f, y, y, generator=gen(4), robust_amplitude=0.0, nonrobust_amplitude=0.0)
    sig = feature_signal(blank, y, f)
    assert abs(sig["robust"]["share"]) < 0.02 and abs(sig["non_robust"]["share"]) < 0.05


def test_texture_energy_is_phase_free_and_local():
    """A checkerboard of either sign in block c, or scrambled pixel-scale noise there, reads as class c."""
    f = planted_features(PlantedConfig())
    a = f.amplitude("non_robust")
    for c in range(4):
        for sign in (1.0, -1.0):
            e = texture_energy(0.5 + sign * a * f.non_robust[c : c + 1], f)[0]
            assert int(e.argmax()) == c
    noise = torch.randn(1, 1, 12, 12, generator=gen(5)) * 0.05 * f.blocks[2]
    assert int(texture_energy(0.5 + noise, f)[0].argmax()) == 2


def test_swap_behaviour_of_oracle_models():
    """Linear models that read exactly one family of templates follow exactly that family."""
    f = planted_features(PlantedConfig())
    swap = swap_dataset(f, 300, generator=gen(6))
    for family, key in (("robust", "follows_robust"), ("non_robust", "follows_non_robust")):
        w = f.templates(family).flatten(1)
        model = fixed_affine(w, -0.5 * w.sum(1))
        res = swap_behaviour(model, swap)
        assert res[key] == 1.0 and res["neither"] == 0.0


def test_bad_configs_raise_one_line_errors():
    for bad in (PlantedConfig(num_classes=1), PlantedConfig(robust_agreement=1.5), PlantedConfig(noise=-0.1),
                PlantedConfig(size=4, num_classes=9), PlantedConfig(nonrobust_amplitude=0.0)):
        with pytest.raises(ConfigError) as err:
            planted_features(bad)
        assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------------
# end to end (one quick run shared by the tests below)


def test_d_r_keeps_robust_and_loses_non_robust(planted_run):
    _, res = planted_run
    sig = res["signal"]
    assert sig["d_r"]["robust"]["share"] >= 0.75 * sig["D"]["robust"]["share"]
    assert sig["d_r"]["non_robust"]["share"] <= 0.3 * sig["D"]["non_robust"]["share"]


def test_d_nr_keeps_non_robust_and_loses_robust(planted_run):
    _, res = planted_run
    sig = res["signal"]
    assert sig["d_nr"]["non_robust"]["share"] >= 0.75 * sig["D"]["non_robust"]["share"]
    assert sig["d_nr"]["robust"]["share"] <= 0.3 * sig["D"]["robust"]["share"]


def test_relabelled_sets_move_non_robust_features_only(planted_run):
    _, res = planted_run
    for kind in ("d_rand", "d_det"):
        entry = res["constructed"][kind]
        assert entry["summary"]["share"] > 0.95  # targets reached
        assert entry["signal"]["non_robust"]["share"] >= 0.75 * res["signal"]["D"]["non_robust"]["share"]
        assert entry["signal"]["robust"]["share"] < 0.0  # robust features still say the source class...
        assert entry["signal_vs_source_label"]["robust"]["share"] >= 0.75 * res["signal"]["D"]["robust"]["share"]


def test_models_follow_the_feature_their_training_set_carries(planted_run):
    _, res = planted_run
    models = {**res["models"], **{k: v["model"] for k, v in res["constructed"].items()}}
    assert models["standard"]["swap"]["follows_non_robust"] > 0.9
    assert models["robust"]["swap"]["follows_robust"] > 0.9
    assert models["d_r"]["swap"]["follows_robust"] > 0.9
    for kind in ("d_nr", "d_rand", "d_det"):
        assert models[kind]["swap"]["follows_non_robust"] > 0.8, kind
        assert models[kind]["test_accuracy"] > 0.9, kind  # ...yet they generalise to the real test set
    # the D_R model is the only retrained one that resists attacks
    eps_key = next(k for k in models["d_r"] if k.startswith("robust_accuracy"))
    assert models["d_r"][eps_key] > max(models[k][eps_key] for k in ("d_nr", "d_rand", "d_det")) + 0.1
    assert all(res["checks"].values()), res["checks"]


def test_planted_writes_json_and_figure(planted_run):
    out, res = planted_run
    on_disk = json.loads((out / "planted.json").read_text())
    assert on_disk["checks"] == res["checks"]
    assert (out / "planted.png").stat().st_size > 10_000
    assert (out / "planted_examples.png").stat().st_size > 10_000
    assert not list(out.glob(".*.tmp"))
