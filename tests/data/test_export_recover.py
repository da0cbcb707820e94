"""An export replacing an earlier one renames the old one aside, puts the new one in place, then
removes the old one. A run killed between the two renames left ``.OUT.old-PID`` and no ``OUT``; the
next export puts the previous one back, so ``OUT`` is never simply lost."""

import os
import subprocess
import sys

import pytest
import torch

from advfeatures.data import ImageDataset
from advfeatures.data.export import export_dataset
from advfeatures.errors import ConfigError


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _ds(value: float) -> ImageDataset:
    return ImageDataset(torch.full((4, 1, 8, 8), value), torch.tensor([0, 1, 0, 1]), ["a", "b"], "d")


def _contents(folder):
    return sorted((p.relative_to(folder).as_posix(), p.read_bytes()) for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("fmt", ["npy", "npz"])
def test_a_previous_export_left_aside_by_a_killed_run_is_put_back(tmp_path, fmt):
    out = tmp_path / ("out" if fmt == "npy" else "out.npz")
    export_dataset(_ds(0.25), out, format=fmt)
    before = _contents(out) if out.is_dir() else out.read_bytes()
    aside = tmp_path / f".{out.name}.old-{_dead_pid()}"
    os.replace(out, aside)  # where a run killed between its two renames leaves it
    with pytest.raises(ConfigError, match="already exists"):
        export_dataset(_ds(0.75), out, format=fmt)  # without overwrite: the previous export is back, kept
    assert (_contents(out) if out.is_dir() else out.read_bytes()) == before
    assert not aside.exists()


def test_a_leftover_beside_a_newer_export_is_removed(tmp_path):
    out = tmp_path / "out"
    export_dataset(_ds(0.25), out, format="npy")
    aside = tmp_path / f".out.old-{_dead_pid()}"
    aside.mkdir()
    (aside / "images.npy").write_bytes(b"old")
    export_dataset(_ds(0.75), out, format="npy", overwrite=True)
    assert not aside.exists() and (out / "images.npy").exists()


def test_a_live_process_leftover_is_left_alone(tmp_path):
    out = tmp_path / "out"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        aside = tmp_path / f".out.old-{live.pid}"
        aside.mkdir()
        export_dataset(_ds(0.5), out, format="npy")
        assert aside.is_dir() and out.is_dir()
    finally:
        live.kill()
        live.wait()
