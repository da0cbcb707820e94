"""Every command that reads a construction beside ``--dataset`` / ``--data`` refuses data the
construction was not built from (other image shapes, another class count, another source) in one
line naming the problem and the fix; before, ``leakage`` and ``transferability`` took other images of
the same shape and classes silently and gave numbers about nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from advfeatures.cli import main
from advfeatures.models import build_model, save_model


def _cli(*args):
    return CliRunner().invoke(main, ["--quiet", "--threads", "1", *map(str, args)])


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """A D_rand of 12 digits built by `advfeatures construct`, its model, and npz data that differ from
    digits in shape, in class count, in source (same shape and classes), and one that is digits itself."""
    folder = tmp_path_factory.mktemp("built")
    model = folder / "m.safetensors"
    save_model(build_model("mlp", (1, 8, 8), 10, hidden=[8]), model)
    res = _cli("construct", "--kind", "d_rand", "--model", model, "--dataset", "digits", "--n", 12, "--steps", 1,
               "--shard-size", 6, "--out", folder / "d_rand")
    assert res.exit_code == 0, res.output
    rng = np.random.default_rng(0)
    files = {"d_rand": folder / "d_rand", "model": model}
    for name, shape, classes in (("shape", (1, 12, 12), 10), ("classes", (1, 8, 8), 12), ("source", (1, 8, 8), 10)):
        files[name] = folder / f"{name}.npz"
        n = 24 * classes
        np.savez(files[name], images=rng.integers(0, 256, (n, *shape), dtype=np.uint8), labels=np.arange(n) % classes)
    res = _cli("export", "--dataset", "digits", "--format", "npz", "--out", folder / "digits-again.npz")
    assert res.exit_code == 0, res.output
    files["same"] = folder / "digits-again.npz"
    return files


def _command(which: str, files: dict[str, Path], data: Path, out: Path) -> list:
    if which == "leakage":
        return ["leakage", "--constructed", files["d_rand"], "--data", data, "--eps", 0.5, "--k", 2, "--out", out / "l.json"]
    if which == "transferability":
        return ["transferability", "--source", files["model"], "--d-rand", files["d_rand"], "--data", data, "--arch", "mlp:hidden=8",
                "--epochs", 1, "--n-attack", 4, "--steps", 1, "--out", out / "t"]
    return ["export", "--constructed", files["d_rand"], "--data", data, "--format", "npz", "--out", out / "e.npz"]


def _one_line_error(res) -> str:
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "Traceback" not in res.output
    return lines[0]


@pytest.mark.parametrize("which", ["leakage", "transferability", "export"])
@pytest.mark.parametrize("mismatch, said", [("shape", ["(1, 8, 8)", "(1, 12, 12)"]), ("classes", ["10 classes", "12"]),
                                            ("source", ["built from digits-train, not from source-train"])])
def test_a_construction_beside_other_data_is_refused_in_one_line(built, tmp_path, which, mismatch, said):
    res = _cli(*_command(which, built, built[mismatch], tmp_path))
    if which == "export" and mismatch == "source":  # export takes only the class names: it warns and writes
        assert res.exit_code == 0, res.output
        return
    line = _one_line_error(res)
    assert all(s in line for s in said) and ("--data it was built from" in line or "dataset it was built from" in line), line
    assert not list(tmp_path.iterdir()), "a refused command wrote something"


@pytest.mark.parametrize("which", ["leakage", "export"])
def test_the_same_images_under_another_name_are_the_same_source(built, tmp_path, which):
    """An export of digits read back is digits under another name: its first images are the ones
    the construction recorded, so it is accepted."""
    res = _cli(*_command(which, built, built["same"], tmp_path))
    assert res.exit_code == 0, res.output


@pytest.fixture(scope="module")
def unsplit(tmp_path_factory) -> dict[str, Path]:
    """npz data with no split of its own (drawn by seed) and a D_rand construct built on it."""
    folder = tmp_path_factory.mktemp("unsplit")
    data = folder / "mine.npz"
    rng = np.random.default_rng(1)
    np.savez(data, images=rng.integers(0, 256, (200, 1, 8, 8), dtype=np.uint8), labels=np.arange(200) % 10)
    model = folder / "m.safetensors"
    save_model(build_model("mlp", (1, 8, 8), 10, hidden=[8]), model)
    res = _cli("construct", "--kind", "d_rand", "--model", model, "--data", data, "--n", 12, "--steps", 1,
               "--out", folder / "d_rand")
    assert res.exit_code == 0, res.output
    return {"data": data, "model": model, "d_rand": folder / "d_rand"}


def test_transferability_uses_the_split_the_construction_used(unsplit, tmp_path):
    """Before, `transferability --seed 1` split unsplit data by its --seed while construct had split
    it by the default: D_rand's source images could sit in the test set it was scored on."""
    from advfeatures.data import load_data

    res = _cli("transferability", "--source", unsplit["model"], "--d-rand", unsplit["d_rand"], "--data", unsplit["data"],
               "--arch", "mlp:hidden=8", "--epochs", 1, "--n-attack", 4, "--steps", 1, "--seed", 1, "--out", tmp_path / "t")
    assert res.exit_code == 0, res.output
    train0, test0 = load_data(None, unsplit["data"])
    _, test1 = load_data(None, unsplit["data"], seed=1)
    assert test1.digest() != test0.digest()  # the seed does move this data's split: the case is real


def test_the_same_source_with_other_images_is_refused(unsplit, tmp_path):
    """The data file rewritten since the construction (same name, same shape and classes)."""
    changed = tmp_path / "mine.npz"
    rng = np.random.default_rng(2)
    np.savez(changed, images=rng.integers(0, 256, (200, 1, 8, 8), dtype=np.uint8), labels=np.arange(200) % 10)
    res = _cli("leakage", "--constructed", unsplit["d_rand"], "--data", changed, "--eps", 0.5, "--k", 2)
    line = _one_line_error(res)
    assert "other images of" in line and "split as it was then" in line, line
