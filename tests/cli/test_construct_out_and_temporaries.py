"""What a killed run leaves (temporaries named after their process) and what a construction's
--out may already hold.

* A run killed with SIGKILL mid-write leaves ``.NAME.~PID@HOST~XXXX.tmp`` beside the file it was
  writing; the next run removes it (its process is gone) and finishes as an uninterrupted run would
  (before: every kill left one more temporary, a shard's as large as the shard, forever).
* A temporary of a live process means another run is writing that file: refused in one line.
* ``construct --out`` into a folder of the user's files is refused before anything is written
  (before: shards, construct.json and the manifest were mixed in among them).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from advfeatures.cli import main
from advfeatures.models import build_model, save_model
from advfeatures.storage import _host_tag, write_text_atomic
from advfeatures.errors import DataError

SRC = Path(__file__).resolve().parents[2] / "src"


def _subprocess(args, cwd: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    env.pop("ADVFEATURES_FAULT", None)
    if fault:
        env["ADVFEATURES_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "advfeatures.cli", "--quiet", "--threads", "1", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def _cli(*args):
    return CliRunner().invoke(main, ["--quiet", "--threads", "1", *map(str, args)])


def _one_line_error(res, *said: str) -> None:
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert all(s in lines[0] for s in said), lines[0]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    save_model(build_model("mlp", (1, 8, 8), 10, hidden=[8]), path)
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


CONSTRUCT = ["construct", "--kind", "d_rand", "--dataset", "digits", "--n", 12, "--shard-size", 4, "--batch-size", 4,
             "--steps", 1, "--seed", 1]


def test_a_construction_killed_mid_write_leaves_a_temporary_the_rerun_removes(tmp_path, model):
    """write:1 is the second atomic write (shard 0, after construct.json): the process dies with its
    temporary written and not renamed."""
    args = [*CONSTRUCT, "--model", model, "--out"]
    assert _subprocess([*args, "whole"], tmp_path).returncode == 0
    proc = _subprocess([*args, "cut"], tmp_path, fault="write:1")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = _temporaries(tmp_path / "cut")
    assert len(left) == 1 and left[0].startswith(".shard-00000.safetensors.~") and f"@{_host_tag()}~" in left[0], left
    proc = _subprocess([*args, "cut"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _temporaries(tmp_path / "cut") == []
    whole = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    assert whole == json.loads((tmp_path / "cut" / "manifest.json").read_text())


def test_an_export_killed_mid_write_leaves_a_temporary_the_rerun_removes(tmp_path):
    args = ["export", "--dataset", "digits", "--format", "npz", "--out", "d.npz"]
    proc = _subprocess(args, tmp_path, fault="write:0")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(_temporaries(tmp_path)) == 1 and not (tmp_path / "d.npz").exists()
    proc = _subprocess(args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _temporaries(tmp_path) == [] and (tmp_path / "d.npz").is_file()


def test_a_dead_exports_temporary_folder_is_removed_and_the_export_written(tmp_path):
    stale = tmp_path / f".pngs.~{_dead_pid()}@{_host_tag()}~abc123.tmp"
    (stale / "train" / "0").mkdir(parents=True)
    (stale / "train" / "0" / "000000.png").write_bytes(b"half a png")
    res = _cli("export", "--dataset", "digits", "--split", "test", "--format", "imagefolder", "--out", tmp_path / "pngs")
    assert res.exit_code == 0, res.output
    assert not stale.exists() and (tmp_path / "pngs" / "classes.json").is_file()


@pytest.mark.parametrize("folder", [False, True])
def test_a_live_runs_temporary_is_refused_in_one_line_and_kept(tmp_path, folder):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".out.npz.~{sleeper.pid}@{_host_tag()}~abc123.tmp"
        live.mkdir() if folder else live.write_bytes(b"being written")
        res = _cli("export", "--dataset", "digits", "--format", "npz", "--out", tmp_path / "out.npz")
        _one_line_error(res, f"another run is writing {tmp_path / 'out.npz'} (process {sleeper.pid})", "wait for it")
        assert live.exists() and not (tmp_path / "out.npz").exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_temporaries_of_other_files_and_other_patterns_are_left_alone(tmp_path):
    dead = _dead_pid()
    others = [tmp_path / f".b.json.~{dead}@{_host_tag()}~abc123.tmp", tmp_path / ".a.json.x1y2z3.tmp", tmp_path / "a.json.tmp"]
    for p in others:
        p.write_text("x")
    mine = tmp_path / f".a.json.~{dead}@{_host_tag()}~abc123.tmp"
    mine.write_text("x")
    write_text_atomic(tmp_path / "a.json", "{}")
    assert not mine.exists() and all(p.exists() for p in others)


def test_another_machines_temporary_is_refused_naming_it(tmp_path):
    other = tmp_path / ".a.json.~123@elsewhere-host~abc123.tmp"
    other.write_text("x")
    with pytest.raises(DataError, match="a run on elsewhere-host .process 123. may be writing .*remove .* if that run is gone"):
        write_text_atomic(tmp_path / "a.json", "{}")
    assert other.exists()


# ---- construct --out holding the user's files -------------------------------------------------------
def test_construct_into_a_folder_of_user_files_is_refused_and_touches_nothing(tmp_path, model):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"jpeg")
    (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    res = _cli(*CONSTRUCT, "--model", model, "--out", out)
    _one_line_error(res, f"--out {out} holds files that are not a construction's (holiday.jpg, notes.txt)", "choose a new or empty")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_construct_resumes_its_own_folder_and_takes_an_empty_one(tmp_path, model):
    """A half-finished construction (shards, construct.json, a dead run's temporary and lock) is its
    own folder: resumed. An empty folder is taken."""
    args = [*CONSTRUCT, "--model", model, "--out"]
    proc = _subprocess([*args, "c"], tmp_path, fault="write:2")  # killed writing shard 1
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (tmp_path / "c" / ".advfeatures.lock").write_text(f"{socket.gethostname()} {_dead_pid()}\n")
    res = _cli(*args, tmp_path / "c")
    assert res.exit_code == 0, res.output
    assert _temporaries(tmp_path / "c") == [] and (tmp_path / "c" / "manifest.json").is_file()
    res = _cli(*args, tmp_path / "c")  # finished: found, nothing to do
    assert res.exit_code == 0 and "already holds this construction" in res.output, res.output
    (tmp_path / "empty").mkdir()
    assert _cli(*args, tmp_path / "empty").exit_code == 0


def test_a_finished_construction_of_another_kind_is_refused(tmp_path, model):
    args = ["--model", model, "--out", tmp_path / "c"]
    assert _cli(*CONSTRUCT, *args).exit_code == 0
    other = [a if a != "d_rand" else "d_det" for a in CONSTRUCT]
    before = sorted(p.name for p in (tmp_path / "c").iterdir())
    _one_line_error(_cli(*other, *args), "holds a different construction", "choose another --out")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == before
