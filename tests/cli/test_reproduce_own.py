"""``reproduce --data`` on the user's own files and ``reproduce --robust-model`` with a robust model
the user already has (a tiny, one-epoch pipeline: the wiring, not the science)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from advfeatures.cli import main
from advfeatures.data import load_digits
from advfeatures.experiments.config import choose_preset
from advfeatures.models import build_model

TINY = [f"{stage}.epochs=1" for stage in ("standard", "adversarial", "train_d_r", "train_d_nr", "train_d_rand", "train_d_det")]
TINY += ["construction.matching.steps=3", "construction.relabel.steps=3", "evaluation.worst_case.enabled=false",
         "evaluation.sanity.enabled=false", "extras.inversion=false", "extras.leakage=false", "extras.transfer=false",
         "extras.distillation=false", "train_limit=200", "evaluation.test_limit=60"]


def _reproduce(*args: str):
    sets = [a for s in TINY for a in ("--set", s)]
    res = CliRunner().invoke(main, ["--quiet", "--threads", "1", "reproduce", "--no-estimate", *sets, *args],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    train, test = load_digits()
    path = tmp_path_factory.mktemp("own") / "my_digits.npz"
    np.savez(path, x_train=(train.images.numpy() * 255).round().astype(np.uint8), y_train=train.labels.numpy().astype(np.int32),
             x_test=(test.images.numpy() * 255).round().astype(np.uint8), y_test=test.labels.numpy().astype(np.int16))
    return path


def test_choose_preset_by_image_size():
    assert choose_preset((1, 8, 8), 100)[0] == "digits" and choose_preset((1, 8, 8), 100)[1] == {}
    name, settings, why = choose_preset((3, 28, 28), 100)
    assert name == "fashion-mnist" and "√" in why
    assert settings["adversarial"]["adversary"]["eps"] == pytest.approx(1.5 * 3**0.5, rel=1e-3)
    assert choose_preset((3, 32, 32), 10)[0] == "cifar10" and choose_preset((3, 64, 64), 10)[0] == "cifar10"


def test_reproduce_on_own_data_and_robust_model(digits_npz, tmp_path):
    out = _reproduce("--data", str(digits_npz), "--out", str(tmp_path / "run"))
    assert "the digits preset" in out
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["resolved"]["data"] == str(digits_npz)
    assert {"standard", "adversarial", "d_r"} <= set(results["models"])

    robust = build_model("cnn", (1, 8, 8), 10, width=4, hidden=16)
    torch.save(robust.state_dict(), tmp_path / "robust.pt")  # a plain state dict: its architecture is given
    _reproduce("--data", str(digits_npz), "--robust-model", str(tmp_path / "robust.pt"), "--robust-arch", "cnn:width=4,hidden=16",
               "--out", str(tmp_path / "run2"))
    steps = json.loads((tmp_path / "run2" / "results.json").read_text())["timing"]["steps"]
    assert "train_adversarial" not in steps and "construct_d_r" in steps


def test_robust_model_for_other_images_is_refused(digits_npz, tmp_path):
    other = build_model("cnn", (1, 28, 28), 10, width=4, hidden=16)
    torch.save(other.state_dict(), tmp_path / "other.pt")
    sets = [a for s in TINY for a in ("--set", s)]
    res = CliRunner().invoke(main, ["reproduce", "--no-estimate", *sets, "--data", str(digits_npz), "--robust-model",
                                    str(tmp_path / "other.pt"), "--robust-arch", "cnn:width=4,hidden=16", "--out", str(tmp_path / "r")])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and lines[-1].startswith("error:") and "other.pt" in lines[-1] and len(lines) <= 2, res.output
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_choose_preset_says_when_the_preset_uses_part_of_the_data():
    why = choose_preset((1, 28, 28), 40000)[2]
    assert "trains on 20000 of the training images" in why and "at most 5000 test images" in why and "train_limit=null" in why
    assert "trains on" not in choose_preset((1, 28, 28), 15000)[2] and "trains on" not in choose_preset((1, 8, 8), 40000)[2]


def test_the_chosen_preset_line_states_the_values_after_set(digits_npz, tmp_path):
    """The line naming the preset chosen for --data is printed after --set is applied: it states the
    subset that will run, not the preset's. (A robust model for other images stops the run right after.)"""
    other = build_model("cnn", (1, 28, 28), 10, width=4, hidden=16)
    torch.save(other.state_dict(), tmp_path / "other.pt")
    res = CliRunner().invoke(main, ["reproduce", "--no-estimate", "--set", "train_limit=100", "--data", str(digits_npz),
                                    "--robust-model", str(tmp_path / "other.pt"), "--robust-arch", "cnn:width=4,hidden=16",
                                    "--out", str(tmp_path / "r")])
    line = next(x for x in res.output.splitlines() if x.startswith("reproduce on"))
    assert "the digits preset" in line and "trains on 100 of the training images" in line, res.output


def test_choose_preset_with_the_resolved_config_states_its_values():
    from advfeatures.experiments.config import resolve_config

    name, settings, _ = choose_preset((1, 28, 28), 40000)
    sets = [f"{k}" for k in ("train_limit=null", "evaluation.test_limit=null", "adversarial.adversary.eps=2.5")]
    cfg, _ = resolve_config(name, overrides=sets)
    why = choose_preset((1, 28, 28), 40000, resolved=cfg)[2]
    assert "trains on" not in why, why
    cfg, _ = resolve_config(name, overrides=["train_limit=30000"])
    assert "it trains on 30000 of the training images" in choose_preset((1, 28, 28), 40000, resolved=cfg)[2]
    why = choose_preset((3, 28, 28), 100, resolved=resolve_config("fashion-mnist", overrides=["adversarial.adversary.eps=2.5"])[0])[2]
    assert "L2 ε = 2.5" in why, why
