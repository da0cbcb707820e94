"""kill -9 in the middle of training and of a construction, then the same command again: the
result must be the one an uninterrupted run gives, tensor for tensor.

The kill lands at a known place (after epoch k's checkpoint, after shard k is on disk) through
``$ADVFEATURES_FAULT`` (:func:`advfeatures.storage.fault_point`), so the test is deterministic and
takes seconds; each run is a real subprocess that dies with SIGKILL, leaving whatever a kill
leaves (temporary files, a stale lock)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SRC = Path(__file__).resolve().parents[2] / "src"


def _cli(args: list[str], cwd: Path, fault: str | None = None, preexec_fn=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    env.pop("ADVFEATURES_FAULT", None)
    if fault:
        env["ADVFEATURES_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "advfeatures.cli", "--quiet", "--threads", "1", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, preexec_fn=preexec_fn)


def _killed(proc: subprocess.CompletedProcess) -> bool:
    return proc.returncode == -signal.SIGKILL


def _same_tensors(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{a.name}: {k} differs"


@pytest.fixture(scope="module")
def std_model(tmp_path_factory) -> Path:
    from advfeatures.data import load_digits
    from advfeatures.models import build_model, save_model

    folder = tmp_path_factory.mktemp("model")
    train, _ = load_digits()
    torch.manual_seed(0)
    model = build_model("mlp", train.image_shape, train.num_classes, hidden=[16])
    save_model(model, folder / "std.safetensors")
    return folder / "std.safetensors"


def test_adversarial_training_with_random_start_resumes_to_the_same_numbers(tmp_path):
    args = ["train", "--arch", "mlp:hidden=16", "--dataset", "digits", "--n", "96", "--epochs", "4", "--batch-size", "32",
            "--adversarial", "--eps", "0.5", "--attack-steps", "2", "--set", "adversary.random_start=true", "--out"]
    whole = tmp_path / "whole"
    whole.mkdir()
    done = _cli([*args, "m.safetensors"], whole)
    assert done.returncode == 0, done.stderr
    cut = tmp_path / "cut"
    cut.mkdir()
    for k in (1, 3):  # killed twice, after epochs 1 and 3
        proc = _cli([*args, "m.safetensors"], cut, fault=f"epoch:{k}")
        assert _killed(proc), proc.stderr
        assert not (cut / "m.safetensors").exists()
    proc = _cli([*args, "m.safetensors"], cut)
    assert proc.returncode == 0, proc.stderr
    _same_tensors(whole / "m.safetensors", cut / "m.safetensors")
    hist_a = json.loads((whole / "m.json").read_text())["history"]
    hist_b = json.loads((cut / "m.json").read_text())["history"]
    assert hist_a == hist_b
    assert not list(cut.glob(".m.safetensors.*.ckpt"))  # the checkpoint goes once the model is written


@pytest.mark.parametrize("kind", ["d_r", "d_rand"])
def test_construction_killed_three_times_ends_as_an_uninterrupted_one(tmp_path, std_model, kind):
    args = ["construct", "--kind", kind, "--model", str(std_model), "--dataset", "digits", "--n", "20", "--shard-size", "4",
            "--batch-size", "4", "--steps", "3", "--seed", "5", "--out"]
    done = _cli([*args, "whole"], tmp_path)
    assert done.returncode == 0, done.stderr
    for k in (0, 2, 3):  # three kills: after shards 0, 2 and 3 (each rerun resumes, then dies again)
        proc = _cli([*args, "cut"], tmp_path, fault=f"shard:{k}")
        assert _killed(proc), proc.stderr
        assert not (tmp_path / "cut" / "manifest.json").exists()
    proc = _cli([*args, "cut"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    a = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    b = json.loads((tmp_path / "cut" / "manifest.json").read_text())
    assert a == b
    for shard in a["shards"]:
        _same_tensors(tmp_path / "whole" / shard["file"], tmp_path / "cut" / shard["file"])
    assert not (tmp_path / "cut" / ".advfeatures.lock").exists()


def test_a_second_run_on_a_locked_folder_is_refused(tmp_path, std_model):
    """While one construction holds the folder (a live process's lock), another is refused in one
    line; a lock left by a killed process is taken over."""
    import socket

    from click.testing import CliRunner

    from advfeatures.cli import main

    out = tmp_path / "c"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".advfeatures.lock").write_text(f"{socket.gethostname()} {sleeper.pid}\n")
        args = ["--quiet", "construct", "--kind", "d_rand", "--model", str(std_model), "--n", "4", "--steps", "1",
                "--shard-size", "4", "--out", str(out)]
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2 and "in use by another construction" in res.output, res.output
        assert res.output.strip().count("\n") == 0
    finally:
        sleeper.kill()
        sleeper.wait()
    res = CliRunner().invoke(main, args)  # the owner is gone: its lock is stale
    assert res.exit_code == 0, res.output
    assert (out / "manifest.json").is_file() and not (out / ".advfeatures.lock").exists()


# ---- Ctrl-C (SIGINT) ------------------------------------------------------------------------------
# In-process (fast): the fault point sends this process a real SIGINT, whose KeyboardInterrupt
# unwinds through the command like a Ctrl-C at the terminal.
def _run(args: list[str], monkeypatch, fault: str | None = None):
    from click.testing import CliRunner

    from advfeatures import storage
    from advfeatures.cli import main

    monkeypatch.setattr(storage, "_writes", 0)
    # a process started in the background by a non-interactive shell inherits SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler: give it the terminal's (restored afterwards)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    if fault:
        monkeypatch.setenv("ADVFEATURES_FAULT", fault)
    else:
        monkeypatch.delenv("ADVFEATURES_FAULT", raising=False)
    try:
        return CliRunner().invoke(main, ["--quiet", "--threads", "1", *args])
    finally:
        monkeypatch.delenv("ADVFEATURES_FAULT", raising=False)
        signal.signal(signal.SIGINT, previous)


def _interrupted(res) -> None:
    """A Ctrl-C ends in one line and the conventional status 130, never a KeyboardInterrupt traceback."""
    assert res.exit_code == 130 and isinstance(res.exception, SystemExit), (res.exit_code, res.exception, res.output)
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: interrupted") and "Traceback" not in res.output, res.output


def _no_temporary_files(folder: Path) -> None:
    assert not [p.name for p in folder.rglob("*.tmp")], "a half-written temporary file was left behind"


# write:1 is the second atomic write of the process (epoch 2's checkpoint, shard 0 after construct.json),
# interrupted after its temporary file is written and before it is renamed
@pytest.mark.parametrize("fault", ["epoch:1:int", "write:1:int"])
def test_training_interrupted_by_ctrl_c_resumes_to_the_same_model(tmp_path, monkeypatch, fault):
    args = ["train", "--arch", "mlp:hidden=16", "--dataset", "digits", "--n", "64", "--epochs", "3", "--batch-size", "32",
            "--out"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert _run([*args, str(whole / "m.safetensors")], monkeypatch).exit_code == 0
    _interrupted(_run([*args, str(cut / "m.safetensors")], monkeypatch, fault=fault))
    _no_temporary_files(cut)
    assert not (cut / "m.safetensors").exists() and not (cut / ".m.safetensors.lock").exists()
    assert len(list(cut.glob(".m.safetensors.*.ckpt"))) == 1  # the last finished epoch's, whole
    res = _run([*args, str(cut / "m.safetensors")], monkeypatch)
    assert res.exit_code == 0, res.output
    _same_tensors(whole / "m.safetensors", cut / "m.safetensors")
    assert json.loads((whole / "m.json").read_text())["history"] == json.loads((cut / "m.json").read_text())["history"]


@pytest.mark.parametrize("fault", ["shard:1:int", "write:2:int"])
def test_construction_interrupted_by_ctrl_c_resumes_to_the_same_dataset(tmp_path, monkeypatch, std_model, fault):
    args = ["construct", "--kind", "d_rand", "--model", str(std_model), "--dataset", "digits", "--n", "12", "--shard-size",
            "4", "--batch-size", "4", "--steps", "2", "--seed", "3", "--out"]
    assert _run([*args, str(tmp_path / "whole")], monkeypatch).exit_code == 0
    _interrupted(_run([*args, str(tmp_path / "cut")], monkeypatch, fault=fault))
    _no_temporary_files(tmp_path / "cut")
    assert not (tmp_path / "cut" / "manifest.json").exists() and not (tmp_path / "cut" / ".advfeatures.lock").exists()
    res = _run([*args, str(tmp_path / "cut")], monkeypatch)
    assert res.exit_code == 0, res.output
    a = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    assert a == json.loads((tmp_path / "cut" / "manifest.json").read_text())
    for shard in a["shards"]:
        _same_tensors(tmp_path / "whole" / shard["file"], tmp_path / "cut" / shard["file"])


# ---- one run per output: train and reproduce hold their outputs too --------------------------------
def _live_lock(path: Path):
    """A lock file at ``path`` owned by a live process (a sleeping child), as a running command leaves it."""
    import socket

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{socket.gethostname()} {sleeper.pid}\n")
    return sleeper


@pytest.mark.parametrize("command", ["train", "reproduce"])
def test_train_and_reproduce_refuse_a_second_run_and_take_over_a_stale_lock(tmp_path, command):
    from click.testing import CliRunner

    from advfeatures.cli import main

    if command == "train":
        lock = tmp_path / ".m.safetensors.lock"
        args = ["train", "--arch", "mlp:hidden=8", "--dataset", "digits", "--n", "32", "--epochs", "1", "--out",
                str(tmp_path / "m.safetensors")]
        done = tmp_path / "m.json"
    else:
        lock = tmp_path / "run" / ".advfeatures.lock"
        from experiments.test_reproduce_cli_seeds import TINY  # the suite's tiny reproduce settings

        args = ["reproduce", "--out", str(tmp_path / "run"), *TINY]
        done = tmp_path / "run" / "results.json"
    sleeper = _live_lock(lock)
    try:
        res = CliRunner().invoke(main, ["--quiet", "--threads", "1", *args])
        assert res.exit_code == 2 and "in use by another" in res.output, res.output
        assert res.output.strip().splitlines()[-1].startswith("error: ") and res.output.count("error") == 1
        assert not done.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    res = CliRunner().invoke(main, ["--quiet", "--threads", "1", *args])  # its owner is gone: stale, taken over
    assert res.exit_code == 0, res.output
    assert done.is_file() and not lock.exists()
