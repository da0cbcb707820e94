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
