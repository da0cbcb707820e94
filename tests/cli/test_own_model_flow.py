"""A user's own architecture, in a Python file of their own, through every command that takes a
model: trained with ``train``, attacked, evaluated, used for D_R and inverted, all from the CLI."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from advfeatures.cli import main

NET = textwrap.dedent('''
    import torch
    from torch import nn

    class UserNet(nn.Module):
        """No `features`/`head`: the representation is the input of its last nn.Linear."""

        def __init__(self, hidden=32, classes=10):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU())
            self.out = nn.Linear(hidden, classes)

        def forward(self, x):
            return self.out(self.body(x))
''')


def _run(*args: str):
    res = CliRunner().invoke(main, ["--quiet", "--threads", "1", *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture()
def user_folder(tmp_path, monkeypatch):
    (tmp_path / "own_user_nets.py").write_text(NET)
    monkeypatch.chdir(tmp_path)  # the factory's module sits in the folder the command runs from
    yield tmp_path
    sys.modules.pop("own_user_nets", None)


def test_own_model_through_every_command(user_folder):
    arch = ["--arch", "own_user_nets:UserNet", "--arch-kwargs", '{"hidden": 24}']
    # a state dict saved with torch.save, as a user would, is the starting point of `train`
    sys.path.append(str(user_folder))
    import own_user_nets

    torch.manual_seed(0)
    torch.save(own_user_nets.UserNet(hidden=24).state_dict(), user_folder / "init.pt")
    out = _run("train", *arch, "--model", "init.pt", "--dataset", "digits", "--epochs", "8",
               "--batch-size", "64", "--out", "mine.safetensors")
    assert "test accuracy" in out
    summary = json.loads((user_folder / "mine.json").read_text())
    assert summary["command"] == "train" and summary["test_accuracy"] > 0.5

    _run("attack", "--model", "mine.safetensors", *arch, "--attack", "pgd", "--norm", "L2", "--eps", "0.5", "--n", "40",
         "--out", "attack.json", "--save-adv", "adv.npz")
    attack = json.loads((user_folder / "attack.json").read_text())
    assert attack["robust_accuracy"] <= attack["clean_accuracy"]
    with np.load(user_folder / "adv.npz") as adv:
        assert adv["images"].shape[0] == 40

    _run("evaluate", "--model", "mine.safetensors", *arch, "--norm", "L2", "--eps", "0.5", "--n", "24", "--steps", "5",
         "--queries", "20", "--no-sanity", "--out", "eval.json")
    ev = json.loads((user_folder / "eval.json").read_text())
    assert ev["robust_accuracy"] <= attack["clean_accuracy"] + 1e-9

    _run("construct", "--kind", "d_r", "--model", "mine.safetensors", *arch, "--n", "16", "--steps", "5",
         "--out", "d_r")
    manifest = json.loads((user_folder / "d_r" / "manifest.json").read_text())
    assert manifest["count"] == 16

    _run("invert", "--model", "mine.safetensors", *arch, "--n", "4", "--steps", "5", "--out", "inv")
    assert (user_folder / "inv" / "inversion.json").is_file()
    # a named layer instead of the default representation
    _run("invert", "--model", "mine.safetensors", *arch, "--layer", "body.1", "--n", "4", "--steps", "5", "--out", "inv2")
    assert (user_folder / "inv2" / "inversion.json").is_file()


def test_model_for_other_images_is_refused(user_folder):
    torch.save({"w": torch.zeros(1)}, user_folder / "bad.pt")
    res = CliRunner().invoke(main, ["attack", "--model", "bad.pt", "--arch", "own_user_nets:UserNet", "--eps", "0.1"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "error:" in res.output
