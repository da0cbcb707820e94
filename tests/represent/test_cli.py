"""The five ``advfeatures`` representation subcommands (invert, visualize, generate, saliency,
transfer) on saved tiny digits models."""

from __future__ import annotations

import importlib
import json

import pytest
from click.testing import CliRunner

from advfeatures.models import save_model


def _cli():
    try:
        return importlib.import_module("advfeatures.cli")
    except ModuleNotFoundError as exc:  # another engineer's subcommand module is not written yet
        if exc.name and exc.name.startswith("advfeatures.cli.") and exc.name != "advfeatures.cli.represent":
            pytest.skip(f"{exc.name} (listed in COMMAND_MODULES) does not exist yet")
        raise


@pytest.fixture(scope="module")
def files(standard_mlp, robust_mlp, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    save_model(standard_mlp, folder / "std.safetensors")
    save_model(robust_mlp, folder / "rob.safetensors")
    return folder / "std.safetensors", folder / "rob.safetensors"


def _run(*args):
    result = CliRunner().invoke(_cli().main, ["--quiet", *map(str, args)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_invert_compares_standard_and_robust(files, tmp_path):
    std, rob = files
    out = _run("invert", "--model", std, "--robust-model", rob, "--held-out-model", std, "--out", tmp_path, "--n", 8,
               "--steps", 60, "--interpolate", 3)
    res = json.loads((tmp_path / "inversion.json").read_text())
    assert {"standard", "robust", "robust_closer", "interpolation"} <= set(res)
    assert len(res["interpolation"]["robust"]["alphas"]) == 3
    for name in ("inversion.png", "interpolation-standard.png", "interpolation-robust.png"):
        assert (tmp_path / name).stat().st_size > 500
    assert "robust" in out and "held-out accuracy" in out


def test_visualize_generate_and_saliency_write_figures_and_json(files, tmp_path):
    std, rob = files
    _run("visualize", "--model", rob, "--out", tmp_path / "v", "--num", 4, "--steps", 30, "--units-vs-directions", "--top-k", 5)
    vis = json.loads((tmp_path / "v" / "visualize.json").read_text())
    assert len(vis["coordinates"]) == 4 and vis["units_vs_directions"]["top_k"] == 5
    assert vis["coordinate_from_noise"]["final_activation"] > vis["coordinate_from_noise"]["start_activation"]
    assert (tmp_path / "v" / "units.png").is_file() and (tmp_path / "v" / "visualize.png").is_file()

    _run("generate", "--model", rob, "--out", tmp_path / "g", "--per-class", 2, "--steps", 20)
    gen = json.loads((tmp_path / "g" / "generate.json").read_text())
    assert set(gen["per_class_target_reached"]) == {str(i) for i in range(10)} and 0 <= gen["target_reached"] <= 1
    assert (tmp_path / "g" / "generate.png").is_file() and (tmp_path / "g" / "generate-seeds.png").is_file()

    out = _run("saliency", "--model", std, "--out", tmp_path / "s", "--n", 4, "--methods", "gradient,edge")
    sal = json.loads((tmp_path / "s" / "saliency.json").read_text())
    assert sal["methods"]["edge"]["spearman"][-1] == 1.0 and sal["methods"]["gradient"]["spearman"][-1] < 0.9
    assert (tmp_path / "s" / "cascade.png").is_file() and (tmp_path / "s" / "saliency.png").is_file()
    assert "edge" in out


def test_transfer_table_from_the_command_line(files, tmp_path):
    std, rob = files
    out = _run("transfer", "--model", std, "--model", rob, "--name", "standard", "--name", "robust", "--out", tmp_path,
               "--n-train", 200, "--n-test", 100, "--epochs", 1)
    table = json.loads((tmp_path / "transfer.json").read_text())
    assert set(table["table"]) == {"standard", "robust"} and len(table["rows"]) == 4
    assert (tmp_path / "transfer.png").is_file() and "fixed-feature" in out


def test_cli_errors_are_one_line(files, tmp_path):
    std, _ = files
    result = CliRunner().invoke(_cli().main, ["transfer", "--model", str(std), "--name", "a", "--name", "b", "--out",
                                              str(tmp_path)])
    assert result.exit_code == 2 and "one --name per --model" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "option"), [
    (["visualize", "--coordinates", ","], "--coordinates"),
    (["visualize", "--coordinates", " , ,"], "--coordinates"),
    (["saliency", "--methods", ","], "--methods"),
    (["transfer", "--modes", ","], "--modes"),
])
def test_an_empty_comma_list_is_refused_in_one_line(files, tmp_path, args, option):
    std, _ = files  # an empty list after splitting would otherwise be accepted and do nothing
    result = CliRunner().invoke(_cli().main, [args[0], "--model", str(std), "--out", str(tmp_path), *args[1:]])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and f"{option} lists nothing" in lines[0], result.output
    assert "such as" in lines[0] and not any(tmp_path.iterdir())


def test_visualize_refuses_coordinates_that_are_not_whole_numbers(files, tmp_path):
    std, _ = files
    result = CliRunner().invoke(_cli().main, ["visualize", "--model", str(std), "--out", str(tmp_path), "--coordinates", "0,x"])
    assert result.exit_code == 2 and "--coordinates must be comma-separated whole numbers" in result.output
