"""The physical-world study (destruction rate known answers) and the three commands, end to end on
tiny models; the reproduce config reaches every objective through ``--set``."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from advfeatures.attacks.pgd import FGSM
from advfeatures.cli import main
from advfeatures.errors import ConfigError
from advfeatures.experiments.config import resolve_config
from advfeatures.models import save_model
from advfeatures.physical import RandomPhoto, Transform, affine, blur, destruction_rate, jpeg, physical_study, standard_transforms
from advfeatures.train import TrainConfig, train_model

from .conftest import tiny_mlp


@pytest.fixture(scope="module")
def trained(digits_small):
    train, test = digits_small
    model = tiny_mlp(0)
    train_model(model, train, TrainConfig(epochs=15, batch_size=32, lr=0.05, crop_padding=0, flip=False, milestones=()))
    return model.eval(), test


@settings(max_examples=10, deadline=None)
@given(eps=st.floats(0.02, 0.4), seed=st.integers(0, 100))
def test_destruction_rate_of_the_identity_is_zero(trained, eps, seed):
    model, test = trained
    x, y = test.images, test.labels
    x_adv = FGSM(eps=eps, random_start=True, seed=seed)(model, x, y)
    res = destruction_rate(model, x, x_adv, y, Transform("identity", lambda z, g: z))
    assert res["destruction_rate"] == 0.0


def test_destruction_rate_of_undoing_the_attack_is_one(trained):
    model, test = trained
    x, y = test.images, test.labels
    x_adv = FGSM(eps=0.3)(model, x, y)
    res = destruction_rate(model, x, x_adv, y, lambda z, g: x)  # "photographing" returns the clean image
    assert res["counted"] > 0 and res["destruction_rate"] == 1.0


def test_transformations_keep_shape_and_range_and_known_cases():
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for t in standard_transforms():
        z = t(x, torch.Generator().manual_seed(1))
        assert z.shape == x.shape and z.min() >= 0 and z.max() <= 1, t.name
    flat = torch.full((2, 1, 8, 8), 0.5)
    assert torch.allclose(blur(flat, 1.0), flat, atol=1e-6)  # blur keeps constants
    assert torch.allclose(affine(x, 0.0, (0.0, 0.0)), x, atol=1e-5)  # the identity warp
    shifted = affine(x, 0.0, (1.0, 0.0))
    assert torch.allclose(shifted[..., 1:], x[..., :-1], atol=1e-5)  # one pixel to the right
    assert (jpeg(x, 95) - x).abs().max() < 0.1


def test_random_photo_is_differentiable_and_random():
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    t = RandomPhoto(seed=0)
    a, b = t(x), t(x)
    assert not torch.equal(a, b)
    (grad,) = torch.autograd.grad(a.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_physical_study_reports_every_attack_and_transformation(trained):
    model, test = trained
    res = physical_study(model, test.images[:32], test.labels[:32], eps=0.2, eot_samples=2)
    assert set(res["attacks"]) == {"fgsm", "bim", "iter_ll", "eot_bim"}
    for entry in res["attacks"].values():
        assert entry["rates"]["identity"]["destruction_rate"] == 0.0
        assert all(0 <= r["destruction_rate"] <= 1 for r in entry["rates"].values())


# ------------------------------------------------------------------------------------------------
# the commands


@pytest.fixture(scope="module")
def model_file(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "m.safetensors"
    save_model(trained[0], path)
    return path


def _invoke(args):
    return CliRunner().invoke(main, ["--quiet", *args])


def test_certify_ibp_and_smoothing_commands(model_file, tmp_path):
    res = _invoke(["certify", "--method", "ibp", "--model", str(model_file), "--n", "40", "--eps", "0.01", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "IBP verified" in res.output
    out = tmp_path / "cert"
    res = _invoke(["certify", "--method", "smoothing", "--model", str(model_file), "--n", "5", "--sigma", "0.1",
                   "--n0", "10", "--samples", "100", "--radii", "0,0.1", "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "certify.json").read_text())
    assert saved["radii"] == [0.0, 0.1] and len(saved["radius"]) == 5
    assert (out / "smoothing.png").stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (["--method", "ibp"], "needs --eps"),
    (["--method", "smoothing"], "needs --sigma"),
    (["--method", "smoothing", "--sigma", "0.1", "--radii", "a,b"], "--radii"),
    (["--method", "smoothing", "--sigma", "0.1", "--radii", ","], "--radii lists nothing"),
    (["--method", "ibp", "--eps", "-1"], "eps must be"),
])
def test_certify_bad_input_is_one_line(model_file, args, message):
    res = _invoke(["certify", "--model", str(model_file), "--n", "4", "--device", "cpu", *args])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], res.output


def test_physical_command(model_file, tmp_path):
    out = tmp_path / "phys.json"
    res = _invoke(["physical", "--model", str(model_file), "--n", "16", "--eps", "0.2", "--eot-samples", "2",
                   "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "phys.md").read_text().count("| identity | 0.0% |") == 1
    assert "eot_bim" in res.output and json.loads(out.read_text())["attacks"]["bim"]["rates"]["identity"]["destruction_rate"] == 0


def test_defences_command_writes_the_table(tmp_path):
    out = tmp_path / "table"
    settings_ = ["epochs=1", "test_limit=12", "train_limit=128", "ensemble_steps=2", "square_queries=10", "cost_rounds=1", "smoothing_n0=5",
                 "smoothing_n=20", "smoothing_limit=4", "noise_samples=2", 'arch_kwargs={"width": 4, "hidden": 8}',
                 'defences=["standard", "fast", "ibp", "gaussian"]']
    res = _invoke(["defences", "--out", str(out), "--device", "cpu", *sum((["--set", s] for s in settings_), [])])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "results.json").read_text())
    assert [r["defence"] for r in result["rows"]] == ["standard", "fast", "ibp", "gaussian"]
    assert all(c["passed"] for c in result["checks"])
    assert "| ibp |" in (out / "defences.md").read_text()
    # resumed: the models, the evaluations and the cost measurement are reused, not recomputed
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "models").iterdir()}
    res = _invoke(["defences", "--out", str(out), "--device", "cpu", *sum((["--set", s] for s in settings_), [])])
    assert res.exit_code == 0, res.output
    again = json.loads((out / "results.json").read_text())
    assert [r["epoch_seconds"] for r in again["rows"]] == [r["epoch_seconds"] for r in result["rows"]]
    assert [r["robust_accuracy"] for r in again["rows"]] == [r["robust_accuracy"] for r in result["rows"]]
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (out / "models").iterdir()}
    res = _invoke(["defences", "--out", str(out), "--device", "cpu", "--set", "defences=[\"fast\"]"])
    assert res.exit_code == 2 and "must include 'standard'" in res.output


# ------------------------------------------------------------------------------------------------
# the reproduce config


@pytest.mark.parametrize("objective", ["trades", "fast", "free", "logit_pairing", "ibp", "gaussian", "pgd"])
def test_every_objective_is_settable_in_reproduce(objective):
    overrides = [f"adversarial.objective={objective}", f"train_d_r.objective={objective}"]
    if objective != "gaussian":  # train_d_r has no adversary by default
        overrides += ["train_d_r.adversary={\"norm\": \"Linf\", \"eps\": 0.1}"]
    if objective == "ibp":
        overrides += ["adversarial.adversary.norm=Linf"]
    cfg, _ = resolve_config("digits", overrides=overrides)
    assert cfg.adversarial.objective == objective and cfg.train_d_r.objective == objective


@pytest.mark.parametrize("override, message", [
    ("adversarial.objective=madry", "adversarial: unknown objective 'madry'"),
    ("train_d_r.objective=trades", "train_d_r: objective 'trades' needs an adversary"),
    ("adversarial.defence.beta=\"big\"", "adversarial.defence.beta must be a number"),
    ("adversarial.defence.replays=0", "defence.replays"),
    ("adversarial.objective=3", "adversarial.objective must be a string"),
])
def test_bad_objective_overrides_are_refused(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        resolve_config("digits", overrides=[override])
