"""Regression tests for the first hour's defects (issue 13, part 5): each failed before its fix."""

from __future__ import annotations

import math

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
