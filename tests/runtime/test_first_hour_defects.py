"""Regression tests for the first hour's defects (issue 13, part 5): each failed before its fix."""

from __future__ import annotations

import math
import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advfeatures.train import TrainConfig, lr_at


# -- (a) the step schedule never decays at epoch 0 ---------------------------------------------

@pytest.mark.parametrize("epochs, expected", [
    (1, [0.1]),  # was [0.001]: both milestones at epoch 0
    (2, [0.1, 0.001]),  # was [0.01, 0.001]
    (3, [0.1, 0.01, 0.001]),  # unchanged from here on
    (6, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]),
])
def test_short_runs_start_at_the_requested_rate(epochs, expected):
    cfg = TrainConfig(epochs=epochs, lr=0.1)
    assert [lr_at(e, cfg) for e in range(epochs)] == pytest.approx(expected, rel=1e-12)


def test_the_papers_schedule_is_unchanged():
    cfg = TrainConfig(epochs=150, lr=0.1)
    rates = [lr_at(e, cfg) for e in range(150)]
    assert rates[:50] == [0.1] * 50 and rates[50:100] == pytest.approx([0.01] * 50) and rates[100:] == pytest.approx([0.001] * 50)


@settings(max_examples=60, deadline=None)
@given(epochs=st.integers(1, 400), milestones=st.lists(st.floats(0.01, 0.99), min_size=1, max_size=4))
def test_first_epoch_full_rate_and_rate_never_rises(epochs, milestones):
    cfg = TrainConfig(epochs=epochs, lr=0.5, milestones=tuple(milestones), gamma=0.1)
    rates = [lr_at(e, cfg) for e in range(epochs)]
    assert rates[0] == 0.5
    assert all(b <= a for a, b in zip(rates, rates[1:]))
    # each milestone is passed at epoch max(1, floor(m·epochs)) and not before
    for m in milestones:
        at = max(1, math.floor(m * epochs + 1e-9))
        if at < epochs:
            assert rates[at] < rates[at - 1]


# -- (b) written files are as readable as the user's umask says ---------------------------------

@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    before = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(before)


def test_atomic_writers_follow_the_umask(tmp_path, umask):
    import torch

    from advfeatures.storage import atomic_path, current_umask, save_safetensors_atomic, write_json_atomic, write_text_atomic

    assert current_umask() == umask
    files = [tmp_path / "new" / "deeper" / "results.json", tmp_path / "report.md", tmp_path / "model.safetensors",
             tmp_path / "raw.bin"]
    write_json_atomic(files[0], {"a": 1})
    write_text_atomic(files[1], "# report\n")
    save_safetensors_atomic({"w": torch.zeros(2)}, files[2])
    with atomic_path(files[3]) as tmp:
        tmp.write_bytes(b"x")
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f  # was 0o600 whatever the umask
    for d in (tmp_path / "new", tmp_path / "new" / "deeper"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o777 & ~umask, d
    assert not list(tmp_path.rglob("*.tmp"))  # no temporary file left behind


def test_an_overwritten_file_gets_the_umask_mode_too(tmp_path, umask):
    from advfeatures.storage import write_text_atomic

    p = tmp_path / "r.txt"
    p.write_text("old")
    p.chmod(0o600)
    write_text_atomic(p, "new")
    assert p.read_text() == "new" and stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask
