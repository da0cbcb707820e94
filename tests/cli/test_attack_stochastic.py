"""``advfeatures attack --stochastic/--no-stochastic`` (the option ``evaluate`` has, shared), and
``evaluate`` passing its stochastic setting on to the sanity checks."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

import advfeatures.evaluate as evaluate_pkg
from advfeatures.cli import main
from advfeatures.models import build_model, save_model


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "m.safetensors"
    save_model(build_model("cnn", (1, 8, 8), 10, width=4, hidden=16), path)
    return path


def _attack(model_file, *extra):
    return CliRunner().invoke(main, ["--quiet", "--threads", "1", "attack", "--model", str(model_file), "--dataset", "digits",
                                     "--attack", "fgsm", "--norm", "Linf", "--eps", "0.1", "--n", "8", *extra])


@pytest.fixture
def seen(monkeypatch):
    """The attacks ``attack`` hands to attack_summary (the real one still runs)."""
    attacks = []
    real = evaluate_pkg.attack_summary

    def spy(model, x, y, attack, **kw):
        attacks.append(attack)
        return real(model, x, y, attack, **kw)

    monkeypatch.setattr(evaluate_pkg, "attack_summary", spy)
    return attacks


@pytest.mark.parametrize("flag, expected", [((), False), (("--no-stochastic",), False), (("--stochastic",), True)])
def test_attack_stochastic_flag_reaches_the_attack(model_file, seen, flag, expected):
    res = _attack(model_file, *flag)
    assert res.exit_code == 0, res.output
    assert [a.stochastic for a in seen] == [expected]


def test_attack_and_evaluate_share_the_stochastic_option():
    from advfeatures.cli.attack import attack_command, evaluate_command

    def option(cmd):
        (opt,) = [p for p in cmd.params if p.name == "stochastic"]
        return opt

    a, e = option(attack_command), option(evaluate_command)
    assert a.opts == e.opts == ["--stochastic"] and a.secondary_opts == e.secondary_opts == ["--no-stochastic"]
    assert a.default is None and e.default is None
    assert a.help.split(" Default:")[0] == e.help.split(" Default:")[0]


@pytest.mark.parametrize("flag, expected", [(("--stochastic",), True), (("--no-stochastic",), False)])
def test_evaluate_runs_the_sanity_checks_as_stochastic_as_the_evaluation(model_file, monkeypatch, flag, expected):
    calls = []

    def spy(*args, **kw):
        calls.append(kw.get("stochastic", False))
        return []

    monkeypatch.setattr(evaluate_pkg, "sanity_checks", spy)
    res = CliRunner().invoke(main, ["--quiet", "--threads", "1", "evaluate", "--model", str(model_file), "--dataset", "digits",
                                    "--norm", "Linf", "--eps", "0.1", "--n", "8", "--version", "custom", "--attacks", "fgsm",
                                    "--steps", "2", *flag])
    assert res.exit_code == 0, res.output
    assert calls == [expected]
