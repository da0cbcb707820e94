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


# -- (c) BIM with a chosen step count reaches ε ------------------------------------------------

def _affine_binary():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    x = torch.full((4, 1, 4, 4), 0.5)
    y = model(x).argmax(1)
    return model, x, y


@pytest.mark.parametrize("eps, steps", [(16 / 255, 10), (8 / 255, 3), (0.3, 7), (4 / 255, 1)])
def test_bim_with_chosen_steps_reaches_the_ball_surface(eps, steps):
    """On an affine model the loss gradient's sign is constant, so BIM walks straight along it; after
    ``steps`` steps every pixel sits at ±ε exactly when steps · α ≥ ε (was α = 1/255: 10/255 < 16/255)."""
    from advfeatures.attacks import BIM

    model, x, y = _affine_binary()
    attack = BIM(eps=eps, steps=steps)
    assert attack.steps * attack.step_size >= eps
    delta = attack(model, x, y) - x
    assert torch_allclose(delta.abs(), eps)


def test_bim_paper_defaults_unchanged():
    from advfeatures.attacks import BIM
    from advfeatures.attacks.bim import bim_step_size

    assert BIM(eps=8 / 255).step_size == pytest.approx(1 / 255) and BIM(eps=8 / 255).steps == 10
    assert BIM(eps=8 / 255, steps=100).step_size == pytest.approx(1 / 255)  # many steps: Kurakin's α
    assert BIM(eps=0.1, steps=4, step_size=0.01).step_size == 0.01  # an explicit α wins
    assert bim_step_size(16 / 255, 10) == pytest.approx(2 / 255) and bim_step_size(0.1, 1) == pytest.approx(0.1)


def torch_allclose(t, value, tol=1e-6):
    return bool(((t - value).abs() <= tol).all())
