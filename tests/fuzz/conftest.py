"""The promise every fuzz test checks, and the tiny files they corrupt.

:func:`check_promise` runs a command in-process (click's CliRunner, exceptions caught) and holds
it to the project's promise for bad input: exit 0 with every JSON it wrote finite, or exit 2 with
one line naming the problem (``error: …`` from the library, or click's usage error) — never a
traceback, never click's bare ``Aborted!``.

:func:`example_dir` gives each hypothesis example a fresh folder and removes it when the example
ends (pytest's ``tmp_path`` cannot: one function-scoped fixture is shared by all the examples of a
``@given`` test).
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, settings

from advfeatures.cli import main

# reproducible in CI (derandomize), no wall-clock deadlines, modest sizes
settings.register_profile("fuzz", max_examples=8, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FUZZ = settings.get_profile("fuzz")


def _no_constant(name: str):
    raise ValueError(f"non-finite number {name} in JSON")


def strict_json(path: Path):
    """Parse a JSON file refusing NaN/Infinity (which Python's json accepts by default)."""
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)


def check_promise(args: list[str], *, folder: Path | None = None):
    """Run ``advfeatures ARGS``; assert exit 0 with finite JSON outputs under ``folder``, or exit 2
    with one line. Returns click's result."""
    res = CliRunner().invoke(main, ["--quiet", "--threads", "1", *args], catch_exceptions=True)
    where = f"advfeatures {' '.join(args)}"
    exc = res.exception
    if exc is not None and not isinstance(exc, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        raise AssertionError(f"{where} ended in a traceback:\n{tb}")
    assert res.exit_code in (0, 2), f"{where} exited {res.exit_code}: {res.output}"
    assert "Traceback" not in res.output and "Aborted!" not in res.output, f"{where}: {res.output}"
    if res.exit_code == 2:
        # one error line, last (before it only the command's own notes, or click's Usage/Try lines)
        lines = [line for line in res.output.splitlines() if line.strip()]
        errors = [line for line in lines if line.lower().startswith("error: ")]
        assert len(errors) == 1 and lines[-1] == errors[0], f"{where}: not one error line at the end: {res.output!r}"
    elif folder is not None:
        for p in folder.rglob("*.json"):
            strict_json(p)
    return res


@contextlib.contextmanager
def example_dir(root: Path, prefix: str = "ex-"):
    """A new empty folder under ``root`` for one hypothesis example, deleted (with whatever the
    command wrote there) when the ``with`` block ends, passed or failed."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture(scope="session")
def fresh_dir(tmp_path_factory):
    """``with fresh_dir() as out:`` — :func:`example_dir` under one folder of pytest's basetemp for
    the session, so nothing lands in the system temp dir and a folder left by a crash is pruned with
    the basetemp (pytest keeps the last 3 runs)."""
    return functools.partial(example_dir, tmp_path_factory.mktemp("examples"))


@pytest.fixture(scope="session")
def digits_split():
    from advfeatures.data import load_digits

    return load_digits()


@pytest.fixture(scope="session")
def files(tmp_path_factory, digits_split) -> dict[str, Path]:
    """Valid tiny inputs of every format, made once: models (ours for 8×8 digits and for 28×28
    images, a state dict), a finished D_rand construction, a config file."""
    from advfeatures.models import build_model, save_model

    root = tmp_path_factory.mktemp("fuzz-inputs")
    train, _ = digits_split
    torch.manual_seed(0)
    save_model(build_model("mlp", train.image_shape, train.num_classes, hidden=[8]), root / "digits.safetensors")
    save_model(build_model("mlp", (1, 28, 28), 10, hidden=[8]), root / "mnist.safetensors")
    torch.save(build_model("mlp", train.image_shape, train.num_classes, hidden=[8]).state_dict(), root / "state.pt")
    res = CliRunner().invoke(main, ["--quiet", "--threads", "1", "construct", "--kind", "d_rand", "--model",
                                    str(root / "digits.safetensors"), "--n", "12", "--shard-size", "6", "--steps", "2",
                                    "--out", str(root / "d_rand")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (root / "train.toml").write_text("epochs = 1\nbatch_size = 16\n")
    return {"model": root / "digits.safetensors", "model28": root / "mnist.safetensors", "state": root / "state.pt",
            "d_rand": root / "d_rand", "toml": root / "train.toml"}
