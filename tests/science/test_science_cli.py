"""The ``planted``, ``leakage``, ``distill`` and ``transfer`` subcommands, end to end with tiny settings."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from advfeatures.cli import main
from advfeatures.cli.options import parse_list
from advfeatures.cli.science import parse_arch_option
from advfeatures.construct import MatchingConfig, RelabelConfig
from advfeatures.errors import ConfigError
from advfeatures.models import save_model
from advfeatures.science.planted import PlantedConfig, PlantedRun
from advfeatures.train import TrainConfig


def run(*args: str):
    return CliRunner().invoke(main, ["--quiet", *args], catch_exceptions=False)


def test_parse_arch_option():
    assert parse_arch_option("cnn") == ("cnn", {})
    assert parse_arch_option("cnn:width=16,hidden=64") == ("cnn", {"width": 16, "hidden": 64})
    assert parse_arch_option("mlp:hidden=256x128") == ("mlp", {"hidden": [256, 128]})
    assert parse_arch_option("mlp:hidden=64") == ("mlp", {"hidden": [64]})
    for bad in ("cnn:width", ":width=3", "cnn:width=wide"):
        with pytest.raises(ConfigError):
            parse_arch_option(bad)


def test_parse_list_drops_empty_items_and_refuses_an_empty_list():
    assert parse_list(" a, b ,", "--x", example="a,b") == ["a", "b"]
    assert parse_list("0,2", "--x", example="0,1", cast=int) == [0, 2]
    for bad, message in ((",", "--x lists nothing (','); give comma-separated names such as a,b"), ("", "--x lists nothing"),
                         ("1,y", "--x must be comma-separated names such as a,b, got '1,y'")):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_list(bad, "--x", example="a,b", cast=int)


def test_leakage_command(digits_d_rand_folder, tmp_path):
    out = tmp_path / "leak.json"
    res = run("leakage", "--constructed", str(digits_d_rand_folder), "--dataset", "digits", "--eps", "1.5", "--out", str(out))
    assert res.exit_code == 0, res.output
    audit = json.loads(out.read_text())
    assert audit["constructed"]["kind"] == "d_rand" and 0 <= audit["leakage_accuracy"] <= 1
    assert "chance 0.100" in res.output


def test_distill_and_transfer_commands(digits_mlp, digits_d_rand_folder, tmp_path):
    res = run("distill", "--arch", "mlp:hidden=16", "--epochs", "2", "--teacher-epochs", "1", "--crop-padding", "0",
              "--device", "cpu", "--out", str(tmp_path / "distill"))
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "distill" / "distill.json").read_text())["trained"] is True
    save_model(digits_mlp, tmp_path / "source.safetensors")
    res = run("transferability", "--source", str(tmp_path / "source.safetensors"), "--d-rand", str(digits_d_rand_folder),
              "--arch", "mlp:hidden=16", "--arch", "cnn:width=4,hidden=8", "--epochs", "1", "--eps", "1.5", "--steps", "5",
              "--n-attack", "50", "--device", "cpu", "--out", str(tmp_path / "transfer"))
    assert res.exit_code == 0, res.output
    table = json.loads((tmp_path / "transfer" / "transfer.json").read_text())
    assert [r["label"] for r in table["archs"]] == ["mlp(hidden=16)", "cnn(hidden=8,width=4)"]
    assert "transfer (targeted)" in res.output
    assert (tmp_path / "transfer" / "transfer.png").is_file()


def test_bad_arch_is_one_line_error(digits_mlp, digits_d_rand_folder, tmp_path):
    res = CliRunner().invoke(main, ["distill", "--arch", "cnn:width", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and res.output.startswith("error:")


def test_planted_command_wiring(tmp_path, monkeypatch):
    """The command with a miniature configuration (the real one is tested in test_planted.py)."""
    tiny = PlantedRun(data=PlantedConfig(size=8), n_train=80, n_test=40, robust_steps=1,
                      train=TrainConfig(epochs=1, batch_size=40, lr=0.05, milestones=(), crop_padding=0, flip=False),
                      matching=MatchingConfig(steps=2), relabel=RelabelConfig(eps=0.5, steps=2, step_size=0.25))
    monkeypatch.setattr(PlantedRun, "preset", classmethod(lambda cls, quick: tiny))
    res = run("planted", "--quick", "--device", "cpu", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "planted.json").is_file() and (tmp_path / "planted.png").is_file()
    assert "d_rand" in res.output and "non-robust share" in res.output
