"""The CLI's shared options: one definition, one parser for architectures, lazy command modules,
the JSON envelope."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from advfeatures.cli import COMMANDS, main
from advfeatures.cli.options import ARCH_NAMES, DATASET_NAMES, parse_arch_option, parse_json_object, write_result
from advfeatures.errors import ConfigError


def test_parse_arch_option_ours_and_factories():
    assert parse_arch_option("cnn") == ("cnn", {})
    assert parse_arch_option("cnn:width=16,hidden=64") == ("cnn", {"width": 16, "hidden": 64})
    assert parse_arch_option("mlp:hidden=64") == ("mlp", {"hidden": [64]})
    assert parse_arch_option("mynets.wide:WideResNet") == ("mynets.wide:WideResNet", {})
    assert parse_arch_option("usernet:make_net") == ("usernet:make_net", {})
    for bad in ("cnn:width", ":width=3", "cnn:width=wide", "my-nets:Net"):
        with pytest.raises(ConfigError):
            parse_arch_option(bad)


def test_parse_json_object():
    assert parse_json_object('{"depth": 28}', "--arch-kwargs") == {"depth": 28}
    assert parse_json_object(None, "--arch-kwargs") == {}
    for bad in ("[1]", "{depth: 28}", "3"):
        with pytest.raises(ConfigError, match="--arch-kwargs"):
            parse_json_object(bad, "--arch-kwargs")


def test_torch_free_name_lists_match_the_library():
    from advfeatures.data import DATASETS
    from advfeatures.models import MODELS

    assert tuple(DATASET_NAMES) == tuple(DATASETS)
    assert set(ARCH_NAMES) == set(MODELS)


def test_command_table_matches_the_commands():
    ctx = main.make_context("advfeatures", ["--help"], resilient_parsing=True)
    for name, (module, summary) in COMMANDS.items():
        command = main.get_command(ctx, name)
        assert command is not None, name
        assert command.callback.__module__ == f"advfeatures.cli.{module}", name
        first_line = (command.help or "").strip().splitlines()[0]
        assert summary == first_line, f"{name}: the summary in COMMANDS must be the docstring's first line"


def test_top_level_help_does_not_import_torch():
    code = ("import sys\nfrom advfeatures.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(), check=True).stdout
    assert "attack" in out and "train" in out and "export" in out
    assert out.strip().endswith("NO-TORCH")


def test_threads_must_be_positive():
    res = CliRunner().invoke(main, ["--threads", "0", "theory", "--help"])
    assert res.exit_code == 2 and "must be a whole number" in res.output


def test_write_result_envelope(tmp_path):
    path = tmp_path / "r.json"
    write_result(path, {"accuracy": 0.5}, command="attack", arguments={"eps": 0.1, "out": tmp_path}, seed=3)
    data = json.loads(path.read_text())
    assert data["format"] == "advfeatures-result/1" and data["command"] == "attack" and data["seed"] == 3
    assert data["arguments"] == {"eps": 0.1, "out": str(tmp_path)} and data["accuracy"] == 0.5
    assert {"advfeatures_version", "torch_version"} <= set(data)
    with pytest.raises(AssertionError):
        write_result(path, {"seed": 4}, command="attack", arguments={}, seed=3)
